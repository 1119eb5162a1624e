"""``manage.py uncordon_gpu INDEX``: take a GPU out of maintenance."""

from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.errors import Refusal
from devices.maintenance import gpu_maintenance_end
from devices.services import gpu_sample


class Command(BaseCommand):
    help = "Take a GPU out of maintenance: plans may place new services on it again."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("gpu_index", type=int, help="The GPU's index (GPU Config's number).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            state = gpu_maintenance_end(
                gpu_index=options["gpu_index"],
                by=f"shell:{getpass.getuser()}",
                health=gpu_sample().health,
            )
        except Refusal as refusal:
            raise CommandError(refusal.user_message) from None
        self.stdout.write(f"GPU {state.gpu_index} is out of maintenance: plans may use it again.")
