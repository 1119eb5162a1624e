"""The Settings page's change lines name another host's GPU by its host (issue 20), as its
cards and selects do; a one-host install reads as before."""

from __future__ import annotations

from gpuconfig.changes import config_changes
from gpuconfig.domain import Configuration, ResolvedAssignment
from pages.hosts import GpuPlace
from pages.presenters import described

PLACES = {101: GpuPlace("gpu-box-2", 1)}


def _config(**where: int | None) -> Configuration:
    return Configuration(tuple(ResolvedAssignment(name, gpu) for name, gpu in where.items()))


def test_change_lines_name_the_remote_gpu_by_its_host() -> None:
    changes = config_changes(_config(clip=0), _config(clip=101, yolo=101))
    assert described(changes, PLACES) == [
        {"service": "clip", "text": "GPU 0 → gpu-box-2 / GPU 1"},
        {"service": "yolo", "text": "new: gpu-box-2 / GPU 1"},
    ]


def test_without_places_the_lines_read_as_before() -> None:
    changes = config_changes(_config(clip=0), _config(clip=1, yolo=101))
    assert described(changes) == [
        {"service": "clip", "text": "GPU 0 → GPU 1"},
        {"service": "yolo", "text": "new: GPU 101"},
    ]
