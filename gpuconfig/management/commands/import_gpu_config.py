"""``manage.py import_gpu_config FILE``: restore a backup as a new configuration version."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gpuconfig.backup import MAX_BYTES, BackupError, parse_backup
from gpuconfig.backup_services import ImportResult, gpu_config_import
from gpuconfig.registry import RegistryError
from gpuconfig.services import ConfigConflict, ConfigFileError


class Command(BaseCommand):
    help = (
        "Validate a backup made by export_gpu_config and save it as a new configuration version "
        "(matching GPUs by UUID, then index). Nothing changes unless all of it can be saved. "
        "See docs/backup.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the backup (YAML or JSON); '-' reads standard input")
        parser.add_argument(
            "--dry-run", action="store_true", help="print what would change; change nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["file"]
        data = _read(name)
        try:
            backup = parse_backup(data)
            result = gpu_config_import(backup=backup, user=None, dry_run=options["dry_run"])
        except BackupError as exc:
            # Every problem on stdout for the operator; the one-line reason on stderr.
            for line in exc.lines():
                self.stdout.write(f"  {line}")
            raise CommandError(f"{name}: nothing imported: {exc.summary()}") from None
        except RegistryError as exc:
            raise CommandError(exc.user_message) from None
        except (ConfigConflict, ConfigFileError) as exc:
            raise CommandError(str(exc)) from None
        self._report(result)

    def _report(self, result: ImportResult) -> None:
        if result.dry_run:
            self.stdout.write(
                f"Dry run: importing would save version {result.base_version + 1}. "
                "Nothing was changed."
            )
        else:
            self.stdout.write(f"Imported as version {result.new_version}.")
        self.stdout.write("Changes:" if result.changes else "Changes: none.")
        for line in result.changes:
            self.stdout.write(f"  {line}")
        for line in result.warnings:
            self.stderr.write(f"Warning: {line}")
        for line in result.config_warnings:
            self.stdout.write(f"Configuration warning: {line}")


def _read(name: str) -> bytes:
    if name == "-":
        # One byte over the limit is enough to refuse a file that is too large.
        return sys.stdin.buffer.read(MAX_BYTES + 1)
    path = Path(name)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise CommandError(f"{name}: nothing imported: {size} bytes; the limit is {MAX_BYTES}")
        return path.read_bytes()
    except OSError as exc:
        raise CommandError(f"{name}: cannot read: {exc.strerror or exc}") from None
