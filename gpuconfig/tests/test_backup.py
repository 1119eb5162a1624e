"""Backup and restore: manage.py export_gpu_config / import_gpu_config on PostgreSQL.

Round trips on the same host and onto hosts whose GPUs differ (matched by UUID, then index),
every kind of bad file (nothing changes, the message names the field), and --dry-run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.db import connection
from ruamel.yaml import YAML

from devices.services import gpu_inventory_rescan
from gpuconfig import selectors
from gpuconfig.backup import FORMAT, SCHEMA_VERSION, BackupError, parse_backup
from gpuconfig.domain import StrategyName
from gpuconfig.models import ConfigVersion, GpuConfiguration, SystemSetting
from gpuconfig.services import (
    ASSIGNMENTS_FILE,
    AssignmentChange,
    gpu_config_save,
    system_settings_update,
)
from gpuconfig.system_settings import RESERVE_KEY

pytestmark = pytest.mark.django_db

A5500_UUID = "GPU-00000000-0000-0000-0000-000000000000"
A400_UUID = "GPU-00000000-0000-0000-0000-000000000001"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _inventory(db: Any) -> None:
    gpu_inventory_rescan()


def _assignments_file() -> Path:
    return Path(django_settings.GPUCONFIG_OUTPUT_DIR) / ASSIGNMENTS_FILE


def _saved_setup() -> int:
    """A configuration with a pin, a budget override, a disabled service and a setting."""
    system_settings_update(values={RESERVE_KEY: 1024})
    return gpu_config_save(
        user=None,
        strategy=StrategyName.VRAM_BASED,
        changes=(
            AssignmentChange("ai-llm", gpu_index=0),
            AssignmentChange("ai-enrichment", gpu_index=1, vram_budget_override=3.2),
            AssignmentChange("ai-clip", enabled=False),
        ),
    ).version.number


def _export(tmp_path: Path, *args: str, name: str = "backup.yml") -> Path:
    path = tmp_path / name
    call_command("export_gpu_config", "-o", str(path), *args, stderr=StringIO())
    return path


def _import(path: Path, *args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("import_gpu_config", str(path), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def _state() -> dict[str, Any]:
    """What a user would compare: the rows, the strategy and the settings."""
    rows = {
        r.service_name: (r.gpu_index, r.resolved_gpu_index, r.vram_budget_override, r.enabled)
        for r in GpuConfiguration.objects.all()
    }
    latest = selectors.latest_version()
    return {
        "rows": rows,
        "strategy": latest.strategy if latest else None,
        "settings": dict(SystemSetting.objects.values_list("key", "value")),
    }


def _load(path: Path) -> dict[str, Any]:
    return YAML(typ="safe").load(path.read_text())


def _write_yaml(path: Path, doc: Any) -> Path:
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    with path.open("w") as f:
        yaml.dump(doc, f)
    return path


def _host(settings: Any, tmp_path: Path, gpus: list[dict[str, Any]]) -> None:
    """From now on this host has ``gpus`` (a simulated inventory), re-scanned."""
    path = tmp_path / "other-host.json"
    path.write_text(json.dumps({"gpus": gpus}))
    settings.GPUCONFIG_SIMULATED_GPUS = path
    gpu_inventory_rescan()


def _gpu(index: int, name: str, total: int, uuid: str | None = None) -> dict[str, Any]:
    gpu: dict[str, Any] = {
        "index": index,
        "name": name,
        "vram_total_mb": total,
        "vram_used_mb": 100,
        "compute_capability": "8.6",
    }
    if uuid:
        gpu["uuid"] = uuid
    return gpu


# --- export -----------------------------------------------------------------------------------


def test_export_writes_a_versioned_document_with_this_hosts_gpus(tmp_path: Path):
    number = _saved_setup()
    doc = _load(_export(tmp_path))
    assert doc["format"] == FORMAT
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["generated_at"].endswith("Z")
    assert doc["configuration_version"] == number
    assert doc["gpus"] == [
        {"index": 0, "uuid": A5500_UUID, "name": "NVIDIA RTX A5500", "vram_total_mb": 24564},
        {"index": 1, "uuid": A400_UUID, "name": "NVIDIA RTX A400", "vram_total_mb": 4094},
    ]
    assert doc["strategy"] == "vram_based"
    by_service = {a["service"]: a for a in doc["assignments"]}
    assert by_service["ai-llm"]["gpu_index"] == 0
    assert by_service["ai-enrichment"] == {
        "service": "ai-enrichment",
        "gpu_index": 1,
        "resolved_gpu_index": 1,
        "vram_budget_override": 3.2,
        "vram_budget": 3.2,
        "enabled": True,
    }
    assert by_service["ai-clip"]["enabled"] is False
    assert by_service["ai-yolo26"]["gpu_index"] is None  # the strategy decides
    assert doc["system_settings"]["vram_reserve_mb"] == 1024
    assert "versions" not in doc


def test_export_to_stdout_as_json_with_the_version_history():
    _saved_setup()
    gpu_config_save(user=None, strategy=StrategyName.BALANCED)
    out = StringIO()
    call_command("export_gpu_config", "--format", "json", "--versions", stdout=out)
    doc = json.loads(out.getvalue())
    assert doc["format"] == FORMAT
    assert doc["strategy"] == "balanced"
    assert [v["number"] for v in doc["versions"]] == [1, 2]
    assert doc["versions"][0]["strategy"] == "vram_based"
    assert doc["versions"][0]["assignments"]["ai-llm"]["pinned"] is True


def test_export_before_anything_is_saved_imports_as_the_default_strategy(tmp_path: Path):
    path = _export(tmp_path)
    doc = _load(path)
    assert doc["configuration_version"] is None
    assert doc["assignments"] == []
    out, _ = _import(path)
    assert "Imported as version 1." in out
    assert ConfigVersion.objects.get().strategy == "vram_based"


# --- round trip on the same host ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_round_trip_on_the_same_host_gives_the_same_configuration_and_a_new_version(
    tmp_path: Path, fmt: str
):
    _saved_setup()
    path = _export(tmp_path, "--format", fmt)
    before = _state()
    before_file = _assignments_file().read_text()
    # Change everything the backup holds, so the import has something to restore.
    system_settings_update(values={RESERVE_KEY: 0, "gpu_poll_seconds": 10})
    gpu_config_save(
        user=None,
        strategy=StrategyName.BALANCED,
        changes=(AssignmentChange("ai-clip", enabled=True),),
    )
    assert _state() != before

    out, err = _import(path)

    assert "Imported as version 3." in out
    assert ConfigVersion.objects.count() == 3
    assert _state() == {**before, "settings": {**before["settings"], "gpu_poll_seconds": 3}}
    # gpu-assignments.yml says the same as before, apart from its version and time.
    after_file = _assignments_file().read_text()
    strip = ("generated_at", "version", "# config/")
    assert [line for line in after_file.splitlines() if not line.startswith(strip)] == [
        line for line in before_file.splitlines() if not line.startswith(strip)
    ]
    assert "version: 3" in after_file
    assert err == ""  # same host: no warnings


def test_importing_the_same_configuration_again_reports_no_changes(tmp_path: Path):
    _saved_setup()
    path = _export(tmp_path)
    out, _ = _import(path, "--dry-run")
    assert "Changes: none." in out


# --- another host ------------------------------------------------------------------------------


def test_import_onto_a_host_with_the_gpus_swapped_follows_the_uuids(tmp_path: Path, settings: Any):
    gpu_config_save(
        user=None,
        strategy=StrategyName.MANUAL,
        changes=(
            *(
                AssignmentChange(name, gpu_index=0)
                for name in ("ai-llm", "ai-yolo26", "ai-florence", "ai-clip")
            ),
            AssignmentChange("ai-enrichment", gpu_index=1),
        ),
    )
    path = _export(tmp_path)
    # The same two cards, the other way round (e.g. moved to other slots).
    _host(
        settings,
        tmp_path,
        [
            _gpu(0, "NVIDIA RTX A400", 4094, A400_UUID),
            _gpu(1, "NVIDIA RTX A5500", 24564, A5500_UUID),
        ],
    )

    _, err = _import(path)

    rows = {r.service_name: r for r in GpuConfiguration.objects.all()}
    assert rows["ai-llm"].gpu_index == 1  # still on the A5500
    assert rows["ai-llm"].resolved_gpu_index == 1
    assert rows["ai-enrichment"].gpu_index == 0  # still on the A400
    assert ConfigVersion.objects.count() == 2
    assert (
        f"GPU 0 (NVIDIA RTX A5500, 24.0 GiB, {A5500_UUID}) from the file is GPU 1 on this host "
        "(same UUID); its services follow it." in err
    )


def test_import_onto_a_smaller_host_matches_by_index_and_warns_about_missing_gpus(
    tmp_path: Path, settings: Any
):
    _saved_setup()
    path = _export(tmp_path)
    # One card, not the file's A5500 (another UUID) but at index 0; no GPU 1.
    _host(settings, tmp_path, [_gpu(0, "NVIDIA RTX 6000 Ada", 49140, "GPU-1234abcd-0000")])

    out, err = _import(path)

    assert "Imported as version 2." in out
    rows = {r.service_name: r for r in GpuConfiguration.objects.all()}
    assert rows["ai-llm"].gpu_index == 0  # matched by index
    # ai-enrichment was pinned to the A400, which this host lacks: the strategy places it.
    assert rows["ai-enrichment"].gpu_index is None
    assert rows["ai-enrichment"].resolved_gpu_index == 0
    assert rows["ai-enrichment"].vram_budget_override == 3.2
    assert (
        f"Warning: GPU 0 (NVIDIA RTX A5500, 24.0 GiB, {A5500_UUID}) from the file is not on this "
        "host by UUID; matched by index to GPU 0 "
        "(NVIDIA RTX 6000 Ada, 48.0 GiB, GPU-1234abcd-0000)." in err
    )
    assert (
        f"Warning: GPU 1 (NVIDIA RTX A400, 4.0 GiB, {A400_UUID}) from the file is not on this host."
        in err
    )
    assert (
        "Warning: ai-enrichment was pinned to GPU 1 "
        f"(NVIDIA RTX A400, 4.0 GiB, {A400_UUID}), which this host lacks; "
        "the vram_based strategy places it." in err
    )


def test_import_where_the_a400_was_pulled_keeps_the_a5500_by_uuid(
    tmp_path: Path, a400_removed: Path
):
    _saved_setup()
    path = _export(tmp_path)
    gpu_inventory_rescan()  # the A400 is gone (it stays in the inventory, marked absent)

    _, err = _import(path)

    assert GpuConfiguration.objects.get(service_name="ai-llm").gpu_index == 0
    assert "GPU 1 (NVIDIA RTX A400, 4.0 GiB, " in err
    assert "from the file is not on this host." in err
    assert "matched by index" not in err  # the A5500 was matched by its UUID


def test_manual_pins_to_a_missing_gpu_go_to_the_largest_gpu_with_a_warning(
    tmp_path: Path, a400_removed: Path
):
    gpu_config_save(
        user=None,
        strategy=StrategyName.MANUAL,
        changes=(
            AssignmentChange("ai-llm", gpu_index=0),
            AssignmentChange("ai-yolo26", gpu_index=0),
            AssignmentChange("ai-florence", gpu_index=1),
            AssignmentChange("ai-clip", gpu_index=1),
            AssignmentChange("ai-enrichment", gpu_index=1),
        ),
    )
    path = _export(tmp_path)
    gpu_inventory_rescan()

    _, err = _import(path)

    assert GpuConfiguration.objects.get(service_name="ai-clip").gpu_index == 0
    assert "ai-clip was on GPU 1 (NVIDIA RTX A400, 4.0 GiB, " in err
    assert "placed on GPU 0 (NVIDIA RTX A5500). Check it before applying." in err


def test_services_the_compose_file_and_the_backup_do_not_share_are_warned_about(
    tmp_path: Path,
):
    _saved_setup()
    doc = _load(_export(tmp_path))
    doc["assignments"] = [a for a in doc["assignments"] if a["service"] != "ai-florence"]
    doc["assignments"].append({"service": "ai-retired", "gpu_index": 0, "enabled": True})
    path = _write_yaml(tmp_path / "edited.yml", doc)

    out, err = _import(path)

    assert "Imported as version 2." in out
    assert "Warning: ai-retired is in the file but not in this compose file; it is left out." in err
    assert (
        "Warning: ai-florence is in this compose file but not in the backup; it keeps its "
        "current choice." in err
    )


# --- bad files change nothing -------------------------------------------------------------------


def _good_doc(tmp_path: Path) -> dict[str, Any]:
    return _load(_export(tmp_path, name="good.yml"))


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set a value at a dotted path such as ``assignments.0.gpu_index``."""
    *parents, last = path.split(".")
    target: Any = doc
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return doc


BAD_DOCUMENTS = [
    # (what, edit of the good document, the message the user sees)
    ("wrong type", ("assignments.0.gpu_index", "zero"), "assignments[0].gpu_index: must be a GPU"),
    (
        "unknown strategy",
        ("strategy", "fastest"),
        "strategy: unknown strategy 'fastest'; one of: manual, vram_based",
    ),
    (
        "unknown top-level key",
        ("assignmentz", []),
        "assignmentz: unknown field; expected one of: format, schema_version",
    ),
    (
        "foreign document",
        ("format", "docker-compose"),
        "format: expected 'gpuconfig-backup', got 'docker-compose': this is not a GPU Config "
        "backup",
    ),
    (
        "newer schema",
        ("schema_version", SCHEMA_VERSION + 1),
        f"schema_version: {SCHEMA_VERSION + 1} is newer than this GPU Config reads "
        f"({SCHEMA_VERSION}); upgrade GPU Config before importing this file",
    ),
    (
        "gpu index out of range",
        ("assignments.0.gpu_index", 7),
        "assignments[0].gpu_index: GPU 7 is not among the file's gpus (indexes: 0, 1)",
    ),
    (
        "negative budget",
        ("assignments.1.vram_budget_override", -2),
        "assignments[1].vram_budget_override: must be a number of GiB from 0.1 to 2000, or null; "
        "got -2",
    ),
    (
        "budget for a service that takes none",
        ("assignments.3.vram_budget_override", 2.0),  # ai-llm
        "assignments[3].vram_budget_override: ai-llm takes no VRAM budget",
    ),
    (
        "bad system setting",
        ("system_settings.vram_reserve_mb", -1),
        "system_settings.vram_reserve_mb: VRAM reserve (MiB): must be between 0 and 65536 MiB, "
        "got -1",
    ),
    (
        "unknown system setting",
        ("system_settings.theme", "dark"),
        "system_settings.theme: unknown setting 'theme'",
    ),
    (
        "duplicate service",
        ("assignments.2.service", "ai-clip"),
        "assignments[2].service: ai-clip is already assignments[0]",
    ),
    ("boolean as enabled", ("assignments.0.enabled", "yes"), "assignments[0].enabled: must be"),
]


def _assert_nothing_changed(before: dict[str, Any], file_bytes: bytes) -> None:
    assert ConfigVersion.objects.count() == before["versions"]
    assert _state() == before["state"]
    assert _assignments_file().read_bytes() == file_bytes


@pytest.mark.parametrize(
    ("edit", "message"),
    [(edit, message) for _, edit, message in BAD_DOCUMENTS],
    ids=[what for what, _, _ in BAD_DOCUMENTS],
)
def test_a_bad_file_changes_nothing_and_names_the_field(
    tmp_path: Path, edit: tuple[str, Any], message: str
):
    _saved_setup()
    doc = _good_doc(tmp_path)
    # The exported order is by service name: ai-clip, ai-enrichment, ai-florence, ai-llm...
    assert [a["service"] for a in doc["assignments"]][:5] == [
        "ai-clip",
        "ai-enrichment",
        "ai-florence",
        "ai-llm",
        "ai-yolo26",
    ]
    bad = _write_yaml(tmp_path / "bad.yml", _set(doc, *edit))
    before = {"versions": ConfigVersion.objects.count(), "state": _state()}
    file_bytes = _assignments_file().read_bytes()

    with pytest.raises(CommandError) as caught:
        _import(bad)

    assert f"{bad}: nothing imported: {message}" in str(caught.value)
    _assert_nothing_changed(before, file_bytes)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("format: gpuconfig-backup\nstrategy: [manual\n", "not valid YAML: "),
        (
            '{"format": "gpuconfig-backup", "strategy": ',
            "not valid JSON: Expecting value at line 1",
        ),
        ("", "the file is empty"),
        ("- just\n- a list\n", "expected a mapping with format: gpuconfig-backup, got a list"),
        ("services:\n  ai-llm: {image: x}\n", "format: expected 'gpuconfig-backup', got no format"),
        ("format: gpuconfig-backup\nschema_version: '1'\n", "schema_version: must be a whole"),
    ],
    ids=["yaml syntax", "truncated json", "empty", "a list", "compose file", "schema as text"],
)
def test_an_unreadable_or_foreign_file_changes_nothing(tmp_path: Path, text: str, message: str):
    _saved_setup()
    bad = tmp_path / "bad.yml"
    bad.write_text(text)
    before = {"versions": ConfigVersion.objects.count(), "state": _state()}
    file_bytes = _assignments_file().read_bytes()

    with pytest.raises(CommandError, match="nothing imported") as caught:
        _import(bad)

    assert message in str(caught.value)
    _assert_nothing_changed(before, file_bytes)


def test_a_truncated_yaml_backup_is_refused_with_the_missing_fields(tmp_path: Path):
    _saved_setup()
    text = _export(tmp_path).read_text()
    cut = tmp_path / "cut.yml"
    cut.write_text(text[: text.index("strategy:")])
    with pytest.raises(BackupError) as caught:
        parse_backup(cut.read_bytes())
    assert ("strategy", "missing") in caught.value.errors
    assert ("assignments", "missing") in caught.value.errors


def test_every_problem_is_listed_with_its_path(tmp_path: Path):
    _saved_setup()
    doc = _good_doc(tmp_path)
    doc["strategy"] = "fastest"
    doc["gpus"][1]["vram_total_mb"] = -5
    doc["assignments"][0]["gpu"] = 1
    with pytest.raises(BackupError) as caught:
        parse_backup(json.dumps(doc))
    paths = [path for path, _ in caught.value.errors]
    assert paths == ["gpus[1].vram_total_mb", "strategy", "assignments[0].gpu"]
    assert caught.value.summary().endswith("(and 2 more problems)")


def test_a_file_over_the_size_limit_is_refused_before_parsing(tmp_path: Path):
    from gpuconfig.backup import MAX_BYTES

    big = tmp_path / "big.yml"
    big.write_bytes(b"#" * (MAX_BYTES + 1))
    with pytest.raises(CommandError, match=f"the limit is {MAX_BYTES}"):
        _import(big)


def test_a_save_that_fails_after_the_settings_changed_leaves_the_settings_as_they_were(
    tmp_path: Path,
):
    """Settings and the configuration are one import: a refused save keeps the old settings."""
    _saved_setup()
    doc = _good_doc(tmp_path)
    doc["system_settings"]["vram_reserve_mb"] = 2048
    doc["strategy"] = "manual"
    # Under Manual every enabled service needs a GPU; a new service without one cannot be
    # placed, which only the save service finds out (after the settings were written).
    for entry in doc["assignments"]:
        entry["gpu_index"] = entry["resolved_gpu_index"] = None
    GpuConfiguration.objects.all().delete()
    before = {"versions": ConfigVersion.objects.count(), "state": _state()}
    file_bytes = _assignments_file().read_bytes()
    path = _write_yaml(tmp_path / "manual.yml", doc)

    with pytest.raises(CommandError, match="strategy: Manual strategy: ai-llm has no GPU assigned"):
        _import(path)

    _assert_nothing_changed(before, file_bytes)
    assert SystemSetting.objects.get(key=RESERVE_KEY).value == 1024


# --- dry run -----------------------------------------------------------------------------------


def test_dry_run_prints_what_would_change_and_changes_nothing(tmp_path: Path):
    _saved_setup()
    path = _export(tmp_path)
    system_settings_update(values={RESERVE_KEY: 0})
    gpu_config_save(
        user=None,
        strategy=StrategyName.BALANCED,
        changes=(AssignmentChange("ai-clip", enabled=True),),
    )
    before = {"versions": ConfigVersion.objects.count(), "state": _state()}
    file_bytes = _assignments_file().read_bytes()

    out, _ = _import(path, "--dry-run")

    assert "Dry run: importing would save version 3. Nothing was changed." in out
    assert "  strategy: balanced → vram_based" in out
    assert "  ai-clip: disabled (no GPU reservation)" in out
    assert "  VRAM reserve (MiB): 0 → 1024" in out
    _assert_nothing_changed(before, file_bytes)


def test_the_command_exits_non_zero_with_one_line_on_stderr(tmp_path: Path):
    """As an operator runs it: a real process, its exit code and its stderr."""
    bad = tmp_path / "bad.yml"
    bad.write_text("format: gpuconfig-backup\nschema_version: 99\n")
    if connection.vendor != "postgresql":
        pytest.skip("the subprocess reaches the test database by URL, which needs PostgreSQL")
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    env = {
        **os.environ,
        "DATABASE_URL": (
            f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:"
            f"{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "GPUCONFIG_SIMULATED_GPUS": str(django_settings.GPUCONFIG_SIMULATED_GPUS),
        "GPUCONFIG_COMPOSE_FILE": str(django_settings.GPUCONFIG_COMPOSE_FILE),
        "GPUCONFIG_OUTPUT_DIR": str(django_settings.GPUCONFIG_OUTPUT_DIR),
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "import_gpu_config", str(bad)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"CommandError: {bad}: nothing imported: schema_version: 99 is newer than this GPU "
        f"Config reads ({SCHEMA_VERSION}); upgrade GPU Config before importing this file"
    ]
