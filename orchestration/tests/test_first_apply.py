"""A failed first apply (issue 11, item 5): refused up front when an image is missing, never
"rolled back" to a state that was never applied, and the first error line shown first."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from devices.services import gpu_inventory_rescan
from gpuconfig.domain import StrategyName
from gpuconfig.services import gpu_config_save
from orchestration import executor, podman, probe, services
from orchestration.models import ApplyCommand, ApplyRun, RunStatus, ServiceStep, StepStatus

pytestmark = pytest.mark.django_db

APPLY = "/api/system/gpu-config/apply"
STATUS = "/api/system/gpu-config/status"


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    """A probed-looking compose tool whose podman answers `image exists` from a list."""
    present = tmp_path / "present-images"
    present.write_text("", encoding="utf-8")
    fake_podman = _script(
        tmp_path / "podman",
        f'[ "$1 $2" = "image exists" ] || exit 125\ngrep -qxF "$3" {present} && exit 0\nexit 1\n',
    )
    tool = podman.ComposeTool(argv=("podman-compose",), version="1.6.0", podman=str(fake_podman))
    services.forget_probe()
    monkeypatch.setattr(services, "compose_tool", lambda **kwargs: tool)
    monkeypatch.setattr(services, "_enqueue", lambda run_id: None)
    return present


def test_an_apply_is_refused_when_an_image_is_not_in_podmans_store(
    staff_api, fake_tools, settings, monkeypatch
):
    monkeypatch.delenv("AI_LLM_IMAGE", raising=False)
    # Every image of docker-compose.prod.yml is there except the LLM's (its default).
    fake_tools.write_text(
        "\n".join(f"localhost/{name}:latest" for name in ("ai-yolo26", "ai-florence", "ai-clip"))
        + "\nlocalhost/my-enrichment:2\n",
        encoding="utf-8",
    )
    (Path(settings.GPUCONFIG_COMPOSE_FILE).parent / ".env").write_text(
        "AI_ENRICHMENT_IMAGE=localhost/my-enrichment:2\n", encoding="utf-8"
    )
    gpu_inventory_rescan()
    gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED)

    response = staff_api.post(APPLY)

    assert response.status_code == 503, response.json()
    message = str(response.json())
    assert (
        "the image localhost/ai-llm:latest of ai-llm is not in podman's store: build or pull "
        "it, then apply again" in message
    ), message
    assert "enrichment" not in message, ".env's image was used"
    assert not ApplyRun.objects.exists()
    assert not executor.override_path().exists()


def test_an_env_file_that_cannot_be_read_is_named_instead_of_every_image(
    staff_api, fake_tools, settings
):
    # podman-compose would fall back to the compose file's defaults without a word, and the
    # image check would then blame all five images (the stack's worker could not read .env).
    dotenv = Path(settings.GPUCONFIG_COMPOSE_FILE).parent / ".env"
    dotenv.write_bytes(b"AI_LLM_IMAGE=localhost/llm:\xff\n")
    gpu_inventory_rescan()
    gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED)

    response = staff_api.post(APPLY)

    assert response.status_code == 503, response.json()
    message = response.json()["error"]
    assert message.startswith(f"Cannot apply: {dotenv} exists but cannot be read (")
    assert "podman-compose would silently use the compose file's defaults" in message
    assert "not in podman's store" not in message
    assert not ApplyRun.objects.exists()
    assert not executor.override_path().exists()


def test_an_apply_starts_when_every_image_is_there(staff_api, fake_tools, monkeypatch):
    monkeypatch.setenv("AI_LLM_IMAGE", "localhost/llm-from-env:1")
    fake_tools.write_text(
        "\n".join(
            ["localhost/llm-from-env:1"]
            + [f"localhost/{n}:latest" for n in ("ai-yolo26", "ai-florence", "ai-clip")]
            + ["localhost/ai-enrichment:latest"]
        )
        + "\n",
        encoding="utf-8",
    )
    gpu_inventory_rescan()
    gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED)

    response = staff_api.post(APPLY)

    assert response.status_code == 202, response.json()


@pytest.mark.django_db(transaction=True)  # the run's heartbeat thread has its own connection
def test_a_failed_first_apply_ends_failed_and_rolls_nothing_back(
    tmp_path, settings, monkeypatch, member_api
):
    noise = (
        "i=0; while [ $i -lt 400 ]; do echo 'podman-compose: carrying on ......'; "
        "i=$((i+1)); done\n"
    )
    fake = _script(
        tmp_path / "podman-compose",
        "echo 'podman run --name ai-clip ... localhost/ai-clip:latest'\n"
        "echo 'Trying to pull localhost/ai-clip:latest...'\n"
        "echo 'Error: localhost/ai-clip:latest: image not known'\n" + noise + "exit 125\n",
    )
    tool = podman.ComposeTool(argv=(str(fake),), version="1.6")
    monkeypatch.setattr(probe, "compose_tool", lambda **kw: tool)
    monkeypatch.setattr(podman, "inspect_services", lambda *a, **kw: {})
    gpu_inventory_rescan()
    version = gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED).version
    run = ApplyRun.objects.create(version=version, previous_version=None)
    ServiceStep.objects.bulk_create(
        ServiceStep(run=run, service_name=name) for name in ("ai-clip", "ai-llm")
    )

    outcome = executor.apply_run_execute(run.pk)

    run.refresh_from_db()
    assert outcome == RunStatus.FAILED == run.status
    first_line = run.error.splitlines()[0]
    assert first_line == "Error: localhost/ai-clip:latest: image not known"
    assert "nothing was applied before, so there was nothing to roll back to" in run.error.lower()
    assert "ROLLBACK" not in run.error
    assert ApplyCommand.objects.filter(run=run).count() == 1, "no rollback recreate was run"
    assert not executor.override_path().exists(), "the override it wrote is removed again"
    assert set(run.steps.values_list("status", flat=True)) == {StepStatus.FAILED}
    body = member_api.get(STATUS, {"run": str(run.id)}).json()["run"]
    assert body["status"] == "failed"
    assert body["error"].startswith("Error: localhost/ai-clip:latest: image not known")


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("ok\nError: x: image not known\nError: later\n", "Error: x: image not known"),
        ('level=error msg="no systemd"\nError: x: image not known\n', "Error: x: image not known"),
        ('time="..." level=error msg="boom"\n', 'time="..." level=error msg="boom"'),
        ("Traceback (most recent call last):\n  ...\nValueError: bad\n", "ValueError: bad"),
        ("all fine\nerrors: 0 is not an error line\n", None),
    ],
)
def test_first_error_line(output, expected):
    assert podman.first_error_line(output) == expected
