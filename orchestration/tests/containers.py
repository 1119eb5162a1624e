"""Real podman containers for tests: a stand-in image, a stand-in CDI spec, a compose project.

The stand-ins behave like the real system where GPU Config touches it: five AI services with the
labels GPU Config reads, health checks, and GPUs named through CDI exactly as on an NVIDIA host
(``--device nvidia.com/gpu=N``), minus the GPUs: the CDI spec only sets ``STANDIN_GPU=N``, so a
container shows which device podman really resolved for it.

This module needs nothing from outside the repository at run time; the podman settings below
are the two this kind of VM requires (see .ci/setup-podman.sh).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from orchestration.demo import CONTAINERS_CONF, build_standin_image, demo_compose

STANDIN_IMAGE = "localhost/gpuconfig-standin:test"
BUSYBOX = Path("/bin/busybox")
INSTALL_HINT = "apt-get install podman runc busybox-static"

# podman 4.3 reads CDI specs only from /etc/cdi and /var/run/cdi; the latter is for generated,
# temporary specs like this one.
CDI_DIR = Path("/var/run/cdi")
CDI_SPEC_PATH = CDI_DIR / "gpuconfig-test.yaml"
CDI_SPEC = """\
cdiVersion: "0.5.0"
kind: nvidia.com/gpu
devices:
  - name: "0"
    containerEdits: {env: [STANDIN_GPU=0]}
  - name: "1"
    containerEdits: {env: [STANDIN_GPU=1]}
"""

# The same for AMD GPUs: what `amd-ctk cdi generate` writes on a ROCm host, kind
# amd.com/gpu, devices named by amd-ctk's index (cards in PCI bus order).
AMD_CDI_SPEC_PATH = CDI_DIR / "gpuconfig-test-amd.yaml"
AMD_CDI_SPEC = """\
cdiVersion: "0.5.0"
kind: amd.com/gpu
devices:
  - name: "0"
    containerEdits: {env: [STANDIN_AMD_GPU=0]}
  - name: "1"
    containerEdits: {env: [STANDIN_AMD_GPU=1]}
"""

COMMAND_TIMEOUT_S = 120

# The label scheme GPU Config reads from compose services (others parse these names).
STANDIN_SERVICES: dict[str, dict[str, str]] = {
    # The design's five services with the design's estimates (as in docker-compose.prod.yml).
    "ai-llm": {
        "gpuconfig.model": "Nemotron-3-Nano-30B (Q4_K_M)",
        "gpuconfig.vram_estimate_mb": "21700",
        "gpuconfig.role": "llm",
    },
    "ai-yolo26": {
        "gpuconfig.model": "YOLO26",
        "gpuconfig.vram_estimate_mb": "650",
        "gpuconfig.role": "critical",
    },
    "ai-florence": {
        "gpuconfig.model": "Florence-2-Large",
        "gpuconfig.vram_estimate_mb": "1500",
        "gpuconfig.role": "standard",
    },
    "ai-clip": {
        "gpuconfig.model": "CLIP ViT-L",
        "gpuconfig.vram_estimate_mb": "1200",
        "gpuconfig.role": "standard",
    },
    "ai-enrichment": {
        "gpuconfig.model": "Model Zoo (9 models)",
        "gpuconfig.vram_estimate_mb": "6800",
        "gpuconfig.role": "standard",
        "gpuconfig.budget_env": "VRAM_BUDGET_GB",
        "gpuconfig.vram_min_mb": "2000",
    },
}


def missing_tools() -> list[str]:
    """What of podman, runc and a static busybox this machine lacks."""
    missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    if not _is_static_binary(BUSYBOX):
        missing.append("busybox-static")
    return missing


def _is_static_binary(path: Path) -> bool:
    # A FROM-scratch image has no dynamic loader, so a dynamically linked busybox (the plain
    # `busybox` package) would not run in it. The loader's path sits in the ELF header area.
    try:
        with path.open("rb") as binary:
            head = binary.read(4096)
    except OSError:
        return False
    return head.startswith(b"\x7fELF") and b"/ld-" not in head


def podman_environment(conf_dir: Path) -> dict[str, str]:
    """Write the containers.conf into ``conf_dir`` and return an environment that uses it."""
    conf = conf_dir / "containers.conf"
    conf.write_text(CONTAINERS_CONF, encoding="utf-8")
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "CONTAINERS_CONF": str(conf),
    }
    if "XDG_RUNTIME_DIR" in os.environ:  # rootless podman keeps its state there
        env["XDG_RUNTIME_DIR"] = os.environ["XDG_RUNTIME_DIR"]
    return env


def podman(
    *args: str, env: Mapping[str, str], check: bool = True, timeout_s: float = COMMAND_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run one podman command for test setup or teardown."""
    return subprocess.run(
        ["podman", *args],
        cwd="/",
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=check,
    )


def ensure_standin_image(env: Mapping[str, str], build_dir: Path | None = None) -> str:
    """Build the stand-in image (busybox FROM scratch) unless it exists; return its name.

    The same recipe as demo mode's, under the tests' own tag.
    """
    return build_standin_image(env, image=STANDIN_IMAGE)


@contextlib.contextmanager
def installed_cdi_spec() -> Iterator[Path]:
    """Install the stand-in CDI spec for as long as the block runs.

    Several pytest processes (xdist workers, other apps' suites) may use it at once, and two
    spec files naming the same devices would make podman drop both as conflicting, so they
    share one file: each holder registers its pid, and the last one out removes the file.
    """
    with _shared_spec(CDI_SPEC_PATH, CDI_SPEC, "nvidia.com/gpu") as path:
        yield path


@contextlib.contextmanager
def installed_amd_cdi_spec() -> Iterator[Path]:
    """The AMD stand-in spec (kind amd.com/gpu), shared between processes the same way."""
    with _shared_spec(AMD_CDI_SPEC_PATH, AMD_CDI_SPEC, "amd.com/gpu") as path:
        yield path


@contextlib.contextmanager
def _shared_spec(spec_path: Path, spec: str, kind: str) -> Iterator[Path]:
    CDI_DIR.mkdir(parents=True, exist_ok=True)
    holders = CDI_DIR / f".{spec_path.stem}.holders"
    lock_path = CDI_DIR / f".{spec_path.stem}.lock"
    # One file per use, not per process: a session fixture and a test in the same process
    # may hold the spec at once, and the first to finish must not remove it under the other.
    me = holders / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with _locked(lock_path):
        _refuse_conflicting_specs(spec_path, kind)
        holders.mkdir(exist_ok=True)
        me.touch()
        if not spec_path.exists() or spec_path.read_text(encoding="utf-8") != spec:
            tmp = spec_path.with_name(f".{spec_path.name}.{os.getpid()}.tmp")
            tmp.write_text(spec, encoding="utf-8")
            tmp.replace(spec_path)  # podman never sees a half-written spec
    try:
        yield spec_path
    finally:
        with _locked(lock_path):
            me.unlink(missing_ok=True)
            live = [h for h in holders.iterdir() if _pid_alive(h.name.split("-")[0])]
            if not live:
                for stale in holders.iterdir():
                    stale.unlink(missing_ok=True)
                holders.rmdir()
                spec_path.unlink(missing_ok=True)
                lock_path.unlink(missing_ok=True)


def _refuse_conflicting_specs(spec_path: Path, kind: str) -> None:
    # Specs in /etc/cdi (a real host's nvidia.yaml) rank below /var/run/cdi, so ours wins there;
    # another spec of the same kind in /var/run/cdi itself would make both unresolvable.
    for other in CDI_DIR.iterdir():
        if other == spec_path or other.name.startswith(".") or not other.is_file():
            continue
        if kind in other.read_text(encoding="utf-8", errors="replace"):
            raise RuntimeError(
                f"{other} also defines {kind} devices, so podman would drop both specs'"
                f" devices as conflicting; move it to /etc/cdi or remove it to run these tests"
            )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_alive(name: str) -> bool:
    try:
        os.kill(int(name), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def standin_compose(
    image: str, *, healthchecks: Mapping[str, Sequence[str] | None] | None = None
) -> dict[str, Any]:
    """The base compose definition of the five stand-in services.

    ``healthchecks`` replaces the health-check test of the named services, e.g.
    ``{"ai-clip": ["CMD", "/bin/busybox", "false"]}`` for one that never becomes healthy, or
    ``{"ai-clip": None}`` for one without a health check.
    """
    # The same stand-ins as demo mode, from the labels of STANDIN_SERVICES.
    base = {"services": {name: {"labels": labels} for name, labels in STANDIN_SERVICES.items()}}
    definition = demo_compose(base, image, failing_clip=False)
    for name, test in (healthchecks or {}).items():
        service = definition["services"][name]
        if test is None:
            del service["healthcheck"]
        else:
            service["healthcheck"]["test"] = list(test)
    return definition


@dataclass(frozen=True)
class ComposeProject:
    """A stand-in compose project in its own folder, under a name no other test uses."""

    directory: Path
    name: str
    compose_command: tuple[str, ...]
    env: Mapping[str, str]

    @property
    def base(self) -> Path:
        return self.directory / "docker-compose.yml"

    def write_base(self, definition: Mapping[str, Any]) -> Path:
        """Write ``definition`` as the project's base compose file."""
        write_yaml(self.base, definition)
        return self.base

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run podman-compose on the base file alone, for setup and teardown."""
        return subprocess.run(
            [*self.compose_command, "-p", self.name, "-f", str(self.base), *args],
            cwd=self.directory,
            env=dict(self.env),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=check,
        )

    def start(self) -> None:
        """Bring every service up from the base file, as the system runs before GPU Config."""
        self.compose("up", "-d")

    def remove(self) -> None:
        """Remove the project's containers, pod and network, whatever state they are in."""
        # By label rather than `podman-compose down`: that also catches containers of a
        # half-failed up, and `-t 0` skips the stop grace period the test has no use for.
        label = f"label=io.podman.compose.project={self.name}"
        ids = podman("ps", "-aq", "--filter", label, env=self.env, check=False).stdout.split()
        if ids:
            podman("rm", "-f", "-t", "0", *ids, env=self.env, check=False)
        podman("pod", "rm", "-f", "--ignore", f"pod_{self.name}", env=self.env, check=False)
        networks = podman(
            "network", "ls", "-q", "--filter", label, env=self.env, check=False
        ).stdout.split()
        if networks:
            podman("network", "rm", "-f", *networks, env=self.env, check=False)


def new_project_name() -> str:
    """A compose project name unique to one test."""
    return f"gpuctest{uuid.uuid4().hex[:10]}"


def write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    """Dump plain data as YAML (block style, keys in insertion order)."""
    yaml = YAML()  # round-trip mode keeps insertion order; the safe dumper sorts keys
    yaml.default_flow_style = False
    with path.open("w", encoding="utf-8") as out:
        yaml.dump(dict(data), out)


def project_leftovers(name: str, env: Mapping[str, str]) -> list[str]:
    """Containers, pods and networks of project ``name`` still present (for cleanup checks)."""
    label = f"label=io.podman.compose.project={name}"
    left = podman("ps", "-aq", "--filter", label, env=env, check=False).stdout.split()
    left += podman("network", "ls", "-q", "--filter", label, env=env, check=False).stdout.split()
    pods = podman("pod", "ps", "-q", "--filter", f"name=^pod_{name}$", env=env, check=False)
    return left + pods.stdout.split()
