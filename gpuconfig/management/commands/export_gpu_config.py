"""``manage.py export_gpu_config``: write the whole GPU configuration as one backup document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.files import write_atomic
from gpuconfig.backup import OutputFormat, render_backup
from gpuconfig.backup_services import gpu_config_export


class Command(BaseCommand):
    help = (
        "Write the GPU configuration (strategy, assignments, system settings, this host's GPUs "
        "and optionally the version history) as a YAML or JSON backup. See docs/backup.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--versions", action="store_true", help="include the version history")
        parser.add_argument(
            "--format",
            choices=[f.value for f in OutputFormat],
            default=OutputFormat.YAML.value,
            help="document format (default: yaml)",
        )
        parser.add_argument(
            "-o", "--output", metavar="FILE", help="write to FILE instead of standard output"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        backup = gpu_config_export(include_versions=options["versions"])
        text = render_backup(backup, OutputFormat(options["format"]))
        if not options["output"]:
            self.stdout.write(text, ending="")
            return
        path = Path(options["output"])
        try:
            # Atomic: an interrupted export never leaves a truncated backup behind.
            write_atomic(path, text)
        except OSError as exc:
            raise CommandError(f"Could not write {path}: {exc.strerror or exc}") from exc
        version = backup.configuration_version
        self.stderr.write(
            f"Wrote {path}: "
            + (f"configuration version {version}" if version else "no saved configuration yet")
            + (
                f", {len(backup.versions)} versions of history"
                if backup.versions is not None
                else ""
            )
            + "."
        )
