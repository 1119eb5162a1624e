"""``manage.py detect_gpus``: re-scan GPUs, update the inventory and print what was found."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from devices.models import GpuDevice
from devices.services import gpu_inventory_rescan


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


class Command(BaseCommand):
    help = "Detect GPUs (NVML, nvidia-smi or the simulated file), update the inventory, print it."

    def handle(self, *args: Any, **options: Any) -> None:
        result = gpu_inventory_rescan()
        sample = result.sample
        if sample.error:
            raise CommandError(f"GPU detection failed; inventory left unchanged: {sample.error}")
        self.stdout.write(f"Source: {sample.source}")
        if sample.message:
            self.stdout.write(sample.message)
        rows = [("GPU", "Name", "VRAM total MB", "VRAM used MB", "Reserved MB", "Compute", "UUID")]
        for r in sample.readings:
            rows.append(
                (
                    str(r.index),
                    r.name,
                    _mb(r.vram_total_mb),
                    _mb(r.vram_used_mb),
                    # The driver's own reserve: neither used nor free (NVML memory info v2).
                    _mb(r.vram_reserved_mb),
                    r.compute_capability or "-",
                    r.uuid or "-",
                )
            )
        for d in GpuDevice.objects.filter(gpu_index__in=result.disappeared):
            rows.append(
                (
                    str(d.gpu_index),
                    f"{d.name} (DISAPPEARED)",
                    _mb(d.vram_total_mb),
                    "-",
                    _mb(d.vram_reserved_mb),
                    "-",
                    d.uuid,
                )
            )
        if len(rows) == 1:
            self.stdout.write("No GPUs detected.")
            return
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        self.stdout.write(
            f"{len(sample.readings)} GPU(s); added {result.added or 'none'}, "
            f"disappeared {result.disappeared or 'none'}."
        )
