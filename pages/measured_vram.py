"""Measured VRAM, ready for the Settings page: the GPU cards' "Measured VRAM" blocks and the
assignment table's "Measured" column, as display text.

Each helper takes what the views already have (an inventory GPU dict, the shared sample) and
returns plain dicts of display text; nothing here queries NVML or podman.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devices.services import Sample, gpu_sample
from gpuconfig.domain import format_vram
from gpuconfig.measured import gpu_memory_uses


def mb_text(mb: int | None) -> str:
    """`format_vram` ("650 MiB", "1.5 GiB"), or "?" when nothing was measured."""
    if mb is None:
        return "?"
    return format_vram(mb)


def gpu_card_memory(gpu: Mapping[str, Any]) -> dict[str, Any]:
    """One GPU card's "Measured VRAM" block, from a GPU of ``measured.gpu_inventory_view()``."""
    use = gpu.get("memory_use") or {}
    return {
        "measured": bool(use.get("measured")),
        "note": use.get("note", ""),
        "services": [
            {
                "service": s["service"],
                "measured_text": mb_text(s["measured_mb"]),
                "estimate_text": mb_text(s["estimate_mb"]),
                "over": s["over_estimate"],
            }
            for s in use.get("services", [])
        ],
        "outside_text": mb_text(use.get("outside_gpu_config_mb")),
        "outside_processes": use.get("outside_processes", []),
        "unattributed_mb": use.get("unattributed_mb") or 0,
        "unattributed_text": mb_text(use.get("unattributed_mb")),
        "reserved_text": mb_text(gpu.get("vram_reserved_mb"))
        if gpu.get("vram_reserved_mb") is not None
        else "",
    }


def measured_text_by_service(sample: Sample | None = None) -> dict[str, dict[str, Any]]:
    """For the assignment table: service -> {"text": "1.5 GiB on GPU 1", "over": bool}.

    Empty when processes are not measured (simulated GPUs): the column then shows a dash.
    """
    sample = sample or gpu_sample()
    index_of = {r.uuid: r.index for r in sample.readings}
    out: dict[str, dict[str, Any]] = {}
    for uuid, use in gpu_memory_uses(sample).items():
        for s in use.services:
            if s.measured_mb == 0 and s.service in out:
                continue
            where = f" on GPU {index_of[uuid]}" if uuid in index_of else ""
            entry = out.get(s.service)
            if entry is None or s.measured_mb > entry["mb"]:
                out[s.service] = {
                    "mb": s.measured_mb,
                    "text": f"{mb_text(s.measured_mb)}{where}",
                    "over": s.over_estimate,
                }
    return out
