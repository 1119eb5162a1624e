"""``manage.py cordon_gpu INDEX --reason TEXT``: put a GPU in maintenance."""

from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.errors import Refusal
from devices.maintenance import gpu_maintenance_start


class Command(BaseCommand):
    help = "Put a GPU in maintenance: no new services are planned onto it until uncordoned."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("gpu_index", type=int, help="The GPU's index (GPU Config's number).")
        parser.add_argument("--reason", required=True, help="Why (shown on the GPU's card).")
        parser.add_argument(
            "--by", default="", help="Who to name (default: the shell user, 'shell:NAME')."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        by = options["by"] or f"shell:{getpass.getuser()}"
        try:
            state = gpu_maintenance_start(
                gpu_index=options["gpu_index"], reason=options["reason"], by=by
            )
        except Refusal as refusal:
            raise CommandError(refusal.user_message) from None
        self.stdout.write(f"GPU {state.gpu_index}: {state.sentence}")
