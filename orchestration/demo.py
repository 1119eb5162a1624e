"""Demo mode: stand-in containers for the managed services, so a user without GPUs can watch
Apply, verification and rollback work for real (``bin/run --demo``).

Each service becomes a busybox container that sleeps; a CDI spec in /var/run/cdi stands in
for the simulated GPUs, so podman resolves ``nvidia.com/gpu=N`` for real and the containers
show which GPU they were given. CLIP's health check fails on GPU 1 on purpose: moving CLIP
there shows a verification failure and the automatic rollback.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from common.files import write_atomic
from gpuconfig.registry import RegistryError, load_registry
from orchestration import podman

logger = logging.getLogger(__name__)

STANDIN_IMAGE = "localhost/gpuconfig-standin:latest"
DEMO_PROJECT = "gpuconfig-demo"
CDI_SPEC_PATH = Path("/var/run/cdi/gpuconfig-demo.yaml")
BUSYBOX = Path("/bin/busybox")
# This VM forbids raising rlimits and crun refuses its hybrid cgroups; harmless elsewhere.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]

[engine]
runtime = "runc"
"""
CONTAINERFILE = (
    "FROM scratch\n"
    "COPY busybox /bin/busybox\n"
    "COPY busybox /bin/sh\n"  # so shell-form health checks work too
    'ENTRYPOINT ["/bin/busybox"]\n'
)
FAILS_ON_GPU_1 = ["CMD", "/bin/busybox", "sh", "-c", 'test "$$GPUCONFIG_GPU_INDEX" != 1']


class DemoUnavailable(Exception):
    """The demo cannot run here; the message says what to install."""


def _podman(*args: str, env: Mapping[str, str], timeout_s: float = 120) -> podman.CommandResult:
    """A podman command through the podman layer (argument list, cwd /, timeout); must pass."""
    result = podman.run_command(("podman", *args), env=env, timeout_s=timeout_s)
    if not result.ok:
        raise DemoUnavailable(f"podman {args[0]} failed: {result.output[-800:]}")
    return result


def build_standin_image(env: Mapping[str, str], image: str = STANDIN_IMAGE) -> str:
    """Build the busybox-from-scratch image (no registry needed) unless it exists."""
    if podman.run_command(("podman", "image", "exists", image), env=env, timeout_s=60).ok:
        return image
    with tempfile.TemporaryDirectory() as build_dir:
        shutil.copy2(BUSYBOX, Path(build_dir) / "busybox")
        (Path(build_dir) / "Containerfile").write_text(CONTAINERFILE, encoding="utf-8")
        _podman("build", "-t", image, build_dir, env=env, timeout_s=300)
    return image


def cdi_spec(gpu_indexes: Sequence[int]) -> str:
    """A CDI spec naming one stand-in device per GPU; each sets STANDIN_GPU=<index>."""
    lines = ['cdiVersion: "0.5.0"', "kind: nvidia.com/gpu", "devices:"]
    for index in gpu_indexes:
        lines += [f'  - name: "{index}"', f"    containerEdits: {{env: [STANDIN_GPU={index}]}}"]
    return "\n".join(lines) + "\n"


def demo_compose(
    base: Mapping[str, Any], image: str, *, failing_clip: bool = True
) -> dict[str, Any]:
    """Stand-ins for the labelled services of ``base``, keeping their labels and environment.

    ``failing_clip``: CLIP's health check fails on GPU 1, to show a rollback.
    """
    services: dict[str, Any] = {}
    for name, definition in (base.get("services") or {}).items():
        labels = definition.get("labels") or {}
        if not any(str(k).startswith("gpuconfig.") for k in labels):
            continue
        failing = failing_clip and name == "ai-clip"
        test = FAILS_ON_GPU_1 if failing else ["CMD", "/bin/busybox", "true"]
        service: dict[str, Any] = {
            "image": image,
            "command": ["sleep", "infinity"],
            "stop_grace_period": "1s",  # sleep ignores SIGTERM as PID 1
            "labels": dict(labels),
            "healthcheck": {"test": test, "interval": "30s", "retries": 2},
        }
        if definition.get("environment"):
            service["environment"] = definition["environment"]
        services[name] = service
    return {"services": services}


@dataclass(frozen=True)
class DemoSetup:
    compose_file: Path
    containers_conf: Path
    project: str


def demo_up(
    *,
    base_compose: Path,
    gpu_indexes: Sequence[int],
    data_dir: Path,
    failing_clip: bool = True,
) -> DemoSetup:
    """Prepare and start the demo project; return what the app must be pointed at."""
    missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    if not BUSYBOX.exists():
        missing.append("busybox-static")
    if missing:
        raise DemoUnavailable(
            f"demo mode needs {', '.join(missing)}: apt-get install -y podman runc busybox-static"
        )
    if os.geteuid() != 0:
        raise DemoUnavailable("demo mode writes a CDI spec to /var/run/cdi: run it as root")
    demo_dir = data_dir / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    conf = demo_dir / "containers.conf"
    conf.write_text(CONTAINERS_CONF, encoding="utf-8")
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    image = build_standin_image(env)
    CDI_SPEC_PATH.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(CDI_SPEC_PATH, cdi_spec(gpu_indexes))
    try:
        # The registry's reader: the one place the compose file is parsed and checked.
        base = load_registry(base_compose).compose
    except RegistryError as exc:
        raise DemoUnavailable(f"the compose file cannot be used: {exc}") from exc
    compose_file = demo_dir / "docker-compose.yml"
    yaml = YAML()
    yaml.default_flow_style = False
    out = StringIO()
    out.write("# Demo stand-ins generated from " + str(base_compose) + " by bin/run --demo.\n")
    yaml.dump(demo_compose(base, image, failing_clip=failing_clip), out)
    write_atomic(compose_file, out.getvalue())
    compose = Path(shutil.which("podman-compose", path=str(Path(sys.executable).parent)) or "")
    if not compose.name:
        raise DemoUnavailable("podman-compose is missing from the virtualenv")
    result = podman.run_command(
        (str(compose), "-p", DEMO_PROJECT, "-f", str(compose_file), "up", "-d"),
        cwd=demo_dir,
        env=env,
        timeout_s=300,
    )
    if not result.ok:
        raise DemoUnavailable(f"starting the demo containers failed: {result.output[-800:]}")
    return DemoSetup(compose_file=compose_file, containers_conf=conf, project=DEMO_PROJECT)


def demo_down(*, data_dir: Path) -> None:
    """Remove the demo containers, pod and network, and the CDI spec."""
    conf = data_dir / "demo" / "containers.conf"
    env = {**os.environ, **({"CONTAINERS_CONF": str(conf)} if conf.exists() else {})}
    try:
        ids = podman.project_container_ids(DEMO_PROJECT, env=env)
    except podman.PodmanCommandError as exc:
        logger.warning("cannot list the demo containers: %s", exc)
        ids = []
    # Best effort, each with a timeout: whatever is left is reported, not fatal.
    commands: list[tuple[str, ...]] = [
        ("podman", "pod", "rm", "-f", "--ignore", f"pod_{DEMO_PROJECT}")
    ]
    if ids:
        commands.insert(0, ("podman", "rm", "-f", "-t", "0", *ids))
    for argv in commands:
        result = podman.run_command(argv, env=env, timeout_s=60)
        if not result.ok:
            logger.warning("%s failed: %s", " ".join(argv[:3]), result.output[-400:])
    # podman-compose created the project's network ("gpuconfig-demo_default") and labels it
    # with the project, as it does the containers: remove it too, or every demo leaves one.
    for network in _project_networks(env):
        result = podman.run_command(
            ("podman", "network", "rm", "-f", network), env=env, timeout_s=60
        )
        if not result.ok:
            logger.warning("podman network rm %s failed: %s", network, result.output[-400:])
    CDI_SPEC_PATH.unlink(missing_ok=True)


def _project_networks(env: Mapping[str, str]) -> list[str]:
    """The networks podman-compose created for the demo project (by its project label)."""
    listed = podman.run_command(
        (
            "podman",
            "network",
            "ls",
            "--filter",
            f"label={podman.PROJECT_LABEL}={DEMO_PROJECT}",
            "--format",
            "{{.Name}}",
        ),
        env=env,
        timeout_s=60,
    )
    if not listed.ok:
        logger.warning("cannot list the demo networks: %s", listed.output[-400:])
        return []
    return [name for name in listed.output.split() if name.startswith(DEMO_PROJECT)]
