"""A row per command an apply runs: argv, exit code, start, duration and bounded output."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from django.utils import timezone

from devices.services import gpu_inventory_rescan
from gpuconfig import selectors as config_selectors
from gpuconfig.domain import StrategyName
from gpuconfig.services import gpu_config_save
from orchestration import executor, podman, probe
from orchestration.models import ApplyCommand, ApplyRun, RunStatus
from orchestration.podman.commands import _trim

pytestmark = pytest.mark.django_db

STATUS = "/api/system/gpu-config/status"


def _fake_compose(directory: Path, script: str) -> Path:
    path = directory / "podman-compose"
    path.write_text("#!/bin/sh\n" + script, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _run() -> ApplyRun:
    gpu_inventory_rescan()
    version = gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED).version
    return ApplyRun.objects.create(version=version, status=RunStatus.RUNNING)


def _context(run: ApplyRun, tmp_path: Path) -> executor.ApplyContext:
    return executor.ApplyContext(
        run=run,
        target=config_selectors.version_configuration(run.version),
        previous=None,
        services=["ai-clip", "ai-llm"],
        override=tmp_path / "override.yml",
        previous_text=None,
        env=dict(os.environ),
        say=lambda message: None,
    )


def test_recreate_records_the_command_its_exit_code_and_the_first_error_line(
    tmp_path, settings, monkeypatch
):
    # 9000 characters of noise after the error: a tail-only cut would lose the error.
    fake = _fake_compose(
        tmp_path,
        'echo "Error: unresolvable CDI devices nvidia.com/gpu=7"\n'
        "i=0; while [ $i -lt 300 ]; do echo 'podman-compose: carrying on ............'; "
        "i=$((i+1)); done\nexit 125\n",
    )
    monkeypatch.setattr(
        probe, "compose_tool", lambda **kw: podman.ComposeTool(argv=(str(fake),), version="1.6")
    )
    run = _run()
    before = timezone.now()

    result = executor.recreate(_context(run, tmp_path), override=tmp_path / "override.yml")

    (row,) = ApplyCommand.objects.filter(run=run)
    assert row.argv == list(result.argv)
    assert row.argv[0] == str(fake) and row.argv[-2:] == ["ai-clip", "ai-llm"]
    assert "--force-recreate" in row.argv and "--no-deps" in row.argv
    assert (row.exit_code, row.timed_out) == (125, False)
    assert row.started_at >= before and row.duration_s >= 0
    assert row.output.startswith("Error: unresolvable CDI devices nvidia.com/gpu=7")
    assert "characters cut" in row.output and len(row.output) < 7000
    assert row.output.rstrip().endswith("carrying on ............")


def test_a_command_killed_at_its_timeout_has_no_exit_code(tmp_path, settings, monkeypatch):
    fake = _fake_compose(tmp_path, "echo started\nsleep 30\n")
    monkeypatch.setattr(
        probe, "compose_tool", lambda **kw: podman.ComposeTool(argv=(str(fake),), version="1.6")
    )
    settings.GPUCONFIG_COMPOSE_TIMEOUT_SECONDS = 0.5
    run = _run()

    executor.recreate(_context(run, tmp_path), override=None)

    (row,) = ApplyCommand.objects.filter(run=run)
    assert (row.exit_code, row.timed_out) == (None, True)
    assert row.outcome.startswith("killed after") and "started" in row.output


def test_the_status_api_shows_each_command_row(member_api):
    run = _run()
    started = timezone.now()
    ApplyCommand.objects.create(
        run=run,
        argv=["podman-compose", "-p", "ai", "up", "-d", "ai-clip"],
        exit_code=125,
        started_at=started,
        duration_s=1.25,
        output="Error: unresolvable CDI devices nvidia.com/gpu=7\n",
    )
    ApplyCommand.objects.create(
        run=run,
        argv=["podman-compose", "-p", "ai", "up", "-d", "ai clip"],
        exit_code=0,
        started_at=started,
        duration_s=0.5,
        output="",
    )

    body = member_api.get(STATUS, {"run": str(run.id)}).json()["run"]

    first, second = body["commands"]
    assert first["argv"] == ["podman-compose", "-p", "ai", "up", "-d", "ai-clip"]
    assert (first["exit_code"], first["timed_out"], first["duration_s"]) == (125, False, 1.25)
    assert first["outcome"] == "exit 125 after 1.2 s"
    assert first["output"].startswith("Error: unresolvable CDI devices")
    assert second["command"] == "podman-compose -p ai up -d 'ai clip'"
    assert "$ podman-compose -p ai up -d ai-clip\nError: unresolvable" in body["output"]


def test_podman_output_keeps_its_head_and_its_tail():
    text = "first error\n" + "x" * 10_000 + "\nlast line"

    trimmed = _trim(text)

    assert trimmed.startswith("first error\n") and trimmed.endswith("\nlast line")
    assert f"[... {len(text) - 6000} characters cut ...]" in trimmed
    assert _trim("short") == "short"


def test_the_page_shows_each_command_and_opens_the_one_that_failed(staff_user, monkeypatch):
    from django.test import Client

    from orchestration import selectors

    monkeypatch.setattr(
        selectors,
        "container_health",
        lambda: {
            "available": True,
            "unavailable_reason": "",
            "containers": {},
            "drifted": [],
            "summary": "",
        },
    )
    run = _run()
    ApplyRun.objects.filter(pk=run.pk).update(status=RunStatus.ROLLED_BACK)
    for argv, code, output in [
        (["podman-compose", "up", "-d", "ai-clip"], 125, "Error: unresolvable CDI devices"),
        (["podman-compose", "up", "-d", "ai-clip"], 0, "ai-clip started"),
    ]:
        ApplyCommand.objects.create(
            run=run,
            argv=argv,
            exit_code=code,
            started_at=timezone.now(),
            duration_s=1.25,
            output=output,
        )
    client = Client()
    client.force_login(staff_user)

    html = client.get("/settings/gpu/", {"part": "apply-status"}, headers={"HX-Request": "true"})

    text = html.content.decode()
    assert "<details open><summary>Command 1: exit 125 after 1.2 s</summary>" in text
    assert "<details><summary>Command 2: exit 0 after 1.2 s</summary>" in text
    assert "$ podman-compose up -d ai-clip</code>\nError: unresolvable CDI devices" in text


def test_the_admin_shows_a_runs_commands_read_only(admin_client):
    run = _run()
    ApplyCommand.objects.create(
        run=run,
        argv=["podman-compose", "up", "-d", "ai clip"],
        exit_code=0,
        started_at=timezone.now(),
        duration_s=0.5,
        output="done",
    )

    html = admin_client.get(f"/admin/orchestration/applyrun/{run.pk}/change/").content.decode()

    assert "podman-compose up -d &#x27;ai clip&#x27;" in html
    assert "exit 0 after 0.5 s" in html
    assert 'name="commands-0-output"' not in html, "no editable field"
    assert 'name="commands-MAX_NUM_FORMS" value="0"' in html, "no row can be added"
