"""``manage.py demo up|down``: stand-in containers for demo mode (see orchestration/demo.py)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from devices import detection
from orchestration.demo import DemoUnavailable, demo_down, demo_up


class Command(BaseCommand):
    help = "Start (up) or remove (down) the demo's stand-in containers and CDI spec."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["up", "down"])
        parser.add_argument(
            "--env-file", type=Path, help="Write the settings the app needs as shell exports."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "down":
            demo_down(data_dir=settings.DATA_DIR)
            self.stdout.write("Demo containers and CDI spec removed.")
            return
        simulated = settings.GPUCONFIG_SIMULATED_GPUS
        if simulated is None:
            raise CommandError("demo mode runs on simulated GPUs: set GPUCONFIG_SIMULATED_GPUS")
        try:
            gpus = detection.read_simulated(simulated)
            setup = demo_up(
                base_compose=Path(settings.GPUCONFIG_COMPOSE_FILE),
                gpu_indexes=[g.index for g in gpus],
                data_dir=settings.DATA_DIR,
            )
        except (DemoUnavailable, detection.DetectionError) as exc:
            raise CommandError(str(exc)) from exc
        exports = {
            "GPUCONFIG_COMPOSE_FILE": str(setup.compose_file),
            "GPUCONFIG_COMPOSE_PROJECT": setup.project,
            "CONTAINERS_CONF": str(setup.containers_conf),
        }
        if options["env_file"]:
            options["env_file"].write_text(
                "".join(f"export {k}={shlex.quote(v)}\n" for k, v in exports.items())
            )
        self.stdout.write(
            f"Demo containers are up (project {setup.project}, {setup.compose_file}); "
            f"stand-in GPUs: {', '.join(str(g.index) for g in gpus)}."
        )
