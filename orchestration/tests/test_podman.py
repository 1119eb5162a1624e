"""podman-compose and podman for real: probing the tools, recreating one service on a GPU,
reading back what each container got, and health checks.

GPUs are stood in for by a CDI spec (see containers.py), which podman resolves exactly as it
resolves NVIDIA's: a container given ``nvidia.com/gpu=1`` gets ``STANDIN_GPU=1``.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from common.files import write_atomic
from gpuconfig.config_files import render_override
from gpuconfig.domain import ResolvedAssignment
from orchestration.podman import (
    CommandResult,
    ComposeTool,
    ComposeUnavailable,
    compose_container_names,
    compose_up,
    inspect_services,
    inspect_services_named,
    probe_compose,
    read_containers,
    run_healthcheck,
    wait_healthy,
)
from orchestration.tests.containers import (
    STANDIN_SERVICES,
    ComposeProject,
    new_project_name,
    standin_compose,
)

containers = pytest.mark.containers
ENRICHMENT_ON_GPU_1 = ResolvedAssignment(
    "ai-enrichment",
    1,
    3.5,
    gpu_uuid="GPU-5d0c1e2a-a400",
    gpu_name="NVIDIA RTX A400",
    budget_env="VRAM_BUDGET_GB",
)


def _fake_tool(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _with_path_first(env: Mapping[str, str], directory: Path) -> dict[str, str]:
    return {**env, "PATH": f"{directory}{os.pathsep}{env['PATH']}"}


def _write_override(project: ComposeProject, *entries: ResolvedAssignment) -> Path:
    path = project.directory / "docker-compose.gpu-override.yml"
    text = render_override(entries, version=1, generated_at=datetime.now(UTC))
    write_atomic(path, text)
    return path


def _tool(project: ComposeProject) -> ComposeTool:
    return probe_compose(project.compose_command, cwd=project.directory, env=project.env)


def _up(
    project: ComposeProject, override: Path | None, *services: str, timeout_s: float = 120
) -> CommandResult:
    return compose_up(
        _tool(project),
        base=project.base,
        override=override,
        services=services,
        project_name=project.name,
        cwd=project.directory,
        timeout_s=timeout_s,
        env=project.env,
    )


# --- probe_compose -----------------------------------------------------------------------


@containers
def test_probe_accepts_the_installed_podman_compose(
    compose_command: tuple[str, ...], podman_env: dict[str, str], tmp_path: Path
) -> None:
    tool = probe_compose(compose_command, cwd=tmp_path, env=podman_env)

    assert tool.version == "1.6.0"
    assert tool.argv == compose_command


@containers
def test_probe_refuses_podman_compose_older_than_1_4(
    podman_env: dict[str, str], tmp_path: Path
) -> None:
    # What Debian's package prints: it would accept the override and ignore the GPUs.
    _fake_tool(
        tmp_path / "bin",
        "podman-compose",
        'echo "podman-compose version: 1.0.3"\necho "podman version 4.3.1"\n',
    )

    with pytest.raises(ComposeUnavailable, match=r"1\.0\.3 is too old.*podman-compose>=1\.4"):
        probe_compose(
            ["podman-compose"], cwd=tmp_path, env=_with_path_first(podman_env, tmp_path / "bin")
        )


@containers
def test_probe_refuses_a_podman_compose_that_hands_over_to_docker_compose(
    podman_env: dict[str, str], tmp_path: Path
) -> None:
    # Newer podman delegates `podman compose` to an external provider; on the original host
    # that was docker-compose v2, which dropped every GPU reservation without a word.
    _fake_tool(
        tmp_path / "bin",
        "podman",
        'if [ "$1" = compose ]; then\n'
        '  echo ">>>> Executing external compose provider \\"/usr/local/bin/docker-compose\\"."\n'
        '  echo "Docker Compose version v2.29.7"\n'
        "  exit 0\n"
        "fi\n"
        'exec /usr/bin/podman "$@"\n',
    )

    with pytest.raises(ComposeUnavailable, match="docker-compose, which silently drops GPU"):
        probe_compose(
            ["podman", "compose"],
            cwd=tmp_path,
            env=_with_path_first(podman_env, tmp_path / "bin"),
        )


def test_probe_without_podman_says_how_to_install_it(
    compose_command: tuple[str, ...], tmp_path: Path
) -> None:
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}  # nothing on PATH at all

    with pytest.raises(ComposeUnavailable, match=r"podman not found.*apt-get install -y podman"):
        probe_compose(compose_command, cwd=tmp_path, env=env)


def test_probe_without_podman_compose_says_how_to_install_it(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}

    with pytest.raises(ComposeUnavailable, match=r"pip install 'podman-compose>=1\.4'"):
        probe_compose(["podman-compose"], cwd=tmp_path, env=env)


@containers
def test_probe_refuses_a_podman_that_cannot_run_containers(
    compose_command: tuple[str, ...], podman_env: dict[str, str], tmp_path: Path
) -> None:
    conf = tmp_path / "containers.conf"
    conf.write_text('[engine]\nruntime = "no-such-runtime"\n', encoding="utf-8")

    with pytest.raises(ComposeUnavailable, match=r"podman info` failed.*no-such-runtime"):
        probe_compose(
            compose_command, cwd=tmp_path, env={**podman_env, "CONTAINERS_CONF": str(conf)}
        )


# --- compose_up and inspect_services ----------------------------------------------------


@containers
def test_compose_up_moves_one_service_to_its_gpu_and_leaves_the_others_running(
    compose_project: ComposeProject,
) -> None:
    compose_project.start()
    before = inspect_services(compose_project.name, env=compose_project.env)
    assert sorted(before) == sorted(STANDIN_SERVICES)
    assert all(state.running and state.cdi_devices == () for state in before.values())

    result = _up(
        compose_project, _write_override(compose_project, ENRICHMENT_ON_GPU_1), "ai-enrichment"
    )

    assert result.ok, result.output
    after = inspect_services(compose_project.name, env=compose_project.env)
    moved = after["ai-enrichment"]
    assert moved.id != before["ai-enrichment"].id
    assert moved.running
    assert moved.cdi_devices == ("nvidia.com/gpu=1",)
    assert moved.env["GPUCONFIG_GPU_UUID"] == "GPU-5d0c1e2a-a400"
    assert moved.env["GPUCONFIG_GPU_INDEX"] == "1"
    assert moved.env["VRAM_BUDGET_GB"] == "3.5"
    assert moved.env["STANDIN_GPU"] == "1"  # CDI edits show in Config.Env
    for service in set(STANDIN_SERVICES) - {"ai-enrichment"}:
        assert after[service].id == before[service].id, f"{service} was recreated"
        assert after[service].running


@containers
def test_the_recreated_service_process_really_got_the_cdi_device(
    compose_project: ComposeProject,
) -> None:
    compose_project.start()
    result = _up(
        compose_project, _write_override(compose_project, ENRICHMENT_ON_GPU_1), "ai-enrichment"
    )
    assert result.ok, result.output
    moved = inspect_services(compose_project.name, ["ai-enrichment"], env=compose_project.env)

    # The service's own process (PID 1), not `podman exec ... env`: podman 4.3 builds an exec
    # session's environment without the CDI edits, so STANDIN_GPU is missing there.
    environ = subprocess.run(
        ["podman", "exec", moved["ai-enrichment"].id, "/bin/busybox", "cat", "/proc/1/environ"],
        cwd="/",
        env=dict(compose_project.env),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split("\0")

    assert "STANDIN_GPU=1" in environ
    assert "GPUCONFIG_GPU_UUID=GPU-5d0c1e2a-a400" in environ


@containers
def test_a_gpu_missing_from_the_cdi_spec_leaves_the_container_created_but_not_running(
    compose_project: ComposeProject,
) -> None:
    compose_project.start()
    bad = ResolvedAssignment("ai-enrichment", 7, gpu_uuid="GPU-not-there", gpu_name="NVIDIA ghost")

    result = _up(compose_project, _write_override(compose_project, bad), "ai-enrichment")

    # podman-compose exits non-zero and names the device, yet carries on with other services:
    # the caller must look at the containers, which it can do with inspect_services.
    assert result.returncode != 0 and not result.timed_out
    assert "unresolvable CDI devices nvidia.com/gpu=7" in result.output
    state = inspect_services(compose_project.name, env=compose_project.env)["ai-enrichment"]
    assert not state.running
    assert state.status == "created"
    assert state.cdi_devices == ("nvidia.com/gpu=7",)
    healthy, reason = wait_healthy(state.id, timeout_s=10, env=compose_project.env)
    assert not healthy
    assert "is created" in reason


@containers
def test_compose_up_without_override_returns_a_service_to_the_base_definition(
    compose_project: ComposeProject,
) -> None:
    compose_project.start()
    assert _up(
        compose_project, _write_override(compose_project, ENRICHMENT_ON_GPU_1), "ai-enrichment"
    ).ok

    result = _up(compose_project, None, "ai-enrichment")

    assert result.ok, result.output
    state = inspect_services(compose_project.name, env=compose_project.env)["ai-enrichment"]
    assert state.running
    assert state.cdi_devices == ()
    assert "GPUCONFIG_GPU_UUID" not in state.env and "STANDIN_GPU" not in state.env


@containers
def test_compose_up_past_its_timeout_is_killed_and_reported(
    compose_project: ComposeProject,
) -> None:
    result = _up(compose_project, None, *STANDIN_SERVICES, timeout_s=0.2)

    assert result.timed_out
    assert result.duration_s < 10
    assert "killed after 0.2 s" in result.output


@containers
def test_inspect_services_of_an_unknown_project_finds_nothing(podman_env: dict[str, str]) -> None:
    assert inspect_services(new_project_name(), env=podman_env) == {}


@containers
def test_containers_read_by_name_are_those_found_by_label_and_anything_odd_falls_back(
    compose_project: ComposeProject,
) -> None:
    compose_project.start()
    project, env = compose_project.name, compose_project.env
    services = list(STANDIN_SERVICES)
    names = compose_container_names(project, services, {})
    by_label = inspect_services(project, env=env)

    # One `podman container inspect` by compose's names: the same containers, the same facts.
    assert inspect_services_named(project, names, env=env) == by_label
    assert read_containers(project, services, names=names, env=env) == by_label

    # A container gone, or stopped: not plain, so the read by name declines and the read by
    # label answers (it is how drift is found: the gone one is absent, the stopped one shown).
    gone, stopped = services[0], services[1]
    subprocess.run(["podman", "rm", "-f", names[gone]], env=env, check=True, capture_output=True)
    subprocess.run(
        ["podman", "stop", "-t", "0", names[stopped]], env=env, check=True, capture_output=True
    )
    assert inspect_services_named(project, names, env=env) is None
    now = read_containers(project, services, names=names, env=env)
    assert gone not in now and not now[stopped].running
    assert now == inspect_services(project, env=env)
    # A name of another project's container is not taken for this project's service.
    assert inspect_services_named("someone-else", {stopped: names[stopped]}, env=env) is None


# --- health checks -----------------------------------------------------------------------


@containers
def test_wait_healthy_accepts_a_passing_health_check(compose_project: ComposeProject) -> None:
    compose_project.start()
    state = inspect_services(compose_project.name, ["ai-llm"], env=compose_project.env)["ai-llm"]
    assert state.health == "starting"  # no systemd here: the timer never ran a check

    assert wait_healthy(state.id, timeout_s=30, env=compose_project.env) == (True, "healthy")
    after = inspect_services(compose_project.name, ["ai-llm"], env=compose_project.env)
    assert after["ai-llm"].health == "healthy"


@containers
def test_wait_healthy_gives_up_on_a_failing_health_check(
    compose_project: ComposeProject, standin_image: str
) -> None:
    compose_project.write_base(
        standin_compose(standin_image, healthchecks={"ai-clip": ["CMD", "/bin/busybox", "false"]})
    )
    compose_project.start()
    clip = inspect_services(compose_project.name, ["ai-clip"], env=compose_project.env)["ai-clip"]

    assert run_healthcheck(clip.id, timeout_s=30, env=compose_project.env) is False
    healthy, reason = wait_healthy(clip.id, timeout_s=30, interval_s=0.1, env=compose_project.env)

    assert not healthy
    assert reason.startswith("unhealthy after 2 failed checks")  # the stand-ins retry twice


@containers
def test_a_container_without_health_check_counts_as_healthy_while_running(
    compose_project: ComposeProject, standin_image: str
) -> None:
    compose_project.write_base(standin_compose(standin_image, healthchecks={"ai-clip": None}))
    compose_project.start()
    clip = inspect_services(compose_project.name, ["ai-clip"], env=compose_project.env)["ai-clip"]

    assert clip.health is None
    assert run_healthcheck(clip.id, timeout_s=30, env=compose_project.env) is None
    assert wait_healthy(clip.id, timeout_s=30, env=compose_project.env) == (
        True,
        "running; it has no health check",
    )
