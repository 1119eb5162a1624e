"""``manage.py suggest_estimates``: the measured VRAM peak of each service, as a compose label.

GPU Config never edits the compose file: this prints the line to put there.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from devices.services import service_peaks_reset
from gpuconfig.suggested_estimates import suggested_estimates


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


class Command(BaseCommand):
    help = (
        "Print, per managed service, its measured peak VRAM and the gpuconfig.vram_estimate_mb "
        "label line to put in the compose file (which GPU Config never edits)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Forget the stored peaks afterwards (e.g. after changing a model).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        suggestions = suggested_estimates()
        self.stdout.write(f"Compose file: {settings.GPUCONFIG_COMPOSE_FILE}")
        rows = [("Service", "Estimate MiB", "Peak MiB", "Now MiB", "Suggested label")]
        for s in suggestions:
            label = s.label_line or "(not measured yet)"
            if s.suggested_mb is not None and not s.changes_estimate:
                label += "  (unchanged)"
            rows.append(
                (s.service, _mb(s.estimate_mb), _mb(s.peak_mb), _mb(s.measured_now_mb), label)
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            self.stdout.write("  ".join([*cells, row[-1]]).rstrip())
        changed = [s for s in suggestions if s.changes_estimate]
        if changed:
            self.stdout.write("")
            self.stdout.write("Under each service's labels in the compose file:")
            for s in changed:
                self.stdout.write(f"  {s.service}:")
                self.stdout.write(f"    labels:\n      {s.label_line}")
        if options["reset"]:
            self.stdout.write(f"Forgot {service_peaks_reset()} stored peak(s).")
