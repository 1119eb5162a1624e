"""The pure part of backups: GPU matching and parsing, without a database."""

from __future__ import annotations

from gpuconfig.backup import (
    BackupGpu,
    MatchedBy,
    OutputFormat,
    backup_from_saved,
    match_gpus,
    parse_backup,
    render_backup,
)
from gpuconfig.domain import Configuration, Gpu, ResolvedAssignment, StrategyName

X = "GPU-aaaaaaaa-0000-0000-0000-000000000000"
Y = "GPU-bbbbbbbb-0000-0000-0000-000000000000"
Z = "GPU-cccccccc-0000-0000-0000-000000000000"


def _file(*gpus: tuple[int, str]) -> list[BackupGpu]:
    return [BackupGpu(index=i, uuid=u, name=f"card {i}", vram_total_mb=8192) for i, u in gpus]


def _host(*gpus: tuple[int, str], absent: tuple[int, ...] = ()) -> list[Gpu]:
    return [Gpu(i, f"host {i}", 8192, uuid=u, present=i not in absent) for i, u in gpus]


def test_a_uuid_wins_over_the_index():
    match = match_gpus(_file((0, X), (1, Y)), _host((0, Y), (1, X)))
    assert match.host_index == {0: 1, 1: 0}
    assert match.how == {0: MatchedBy.UUID, 1: MatchedBy.UUID}


def test_a_host_gpu_taken_by_uuid_is_not_matched_again_by_index():
    # The file's GPU 0 (X) is the host's GPU 1 now; the file's GPU 1 (Y) is gone, and the
    # host's GPU 1 must not be given to it by index as well.
    match = match_gpus(_file((0, X), (1, Y)), _host((0, Z), (1, X)))
    assert match.host_index == {0: 1, 1: None}
    assert (
        match.warnings[-1]
        == "GPU 1 (card 1, 8.0 GiB, " + Y + ") from the file is not on this host."
    )


def test_an_absent_gpu_is_not_a_match():
    match = match_gpus(_file((0, X), (1, Y)), _host((0, X), (1, Y), absent=(1,)))
    assert match.host_index == {0: 0, 1: None}


def test_a_file_without_uuids_matches_by_index_silently():
    match = match_gpus(_file((0, ""), (1, "")), _host((0, X), (1, Y)))
    assert match.host_index == {0: 0, 1: 1}
    assert match.how == {0: MatchedBy.INDEX, 1: MatchedBy.INDEX}
    assert match.warnings == ()


def test_what_is_rendered_parses_back_to_the_same_backup():
    backup = backup_from_saved(
        generated_at="2026-11-27T07:00:00Z",
        gpus=_host((0, X), (1, Y)),
        strategy=StrategyName.BALANCED,
        configuration_version=4,
        configuration=Configuration(
            (
                ResolvedAssignment("a", 0, pinned=True),
                ResolvedAssignment("b", 1, 2.5, vram_budget_override=2.5),
                ResolvedAssignment("c", None, enabled=False),
            )
        ),
        system_settings={"vram_reserve_mb": 256},
    )
    for output in OutputFormat:
        assert parse_backup(render_backup(backup, output)) == backup
