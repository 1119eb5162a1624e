"""``manage.py drain_gpu INDEX``: plans move the services of a GPU in maintenance elsewhere."""

from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.errors import Refusal
from devices.maintenance import gpu_maintenance_drain


class Command(BaseCommand):
    help = (
        "Drain a GPU in maintenance: every plan moves its services elsewhere; then save and "
        "apply (manage.py apply_gpu_config) to carry it out."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("gpu_index", type=int, help="The GPU's index (GPU Config's number).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            state = gpu_maintenance_drain(
                gpu_index=options["gpu_index"], by=f"shell:{getpass.getuser()}"
            )
        except Refusal as refusal:
            raise CommandError(refusal.user_message) from None
        self.stdout.write(
            f"GPU {state.gpu_index} is being drained: the next save moves its services "
            "elsewhere; apply it to restart them there."
        )
