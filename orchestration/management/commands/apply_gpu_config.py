"""``manage.py apply_gpu_config``: apply the saved configuration from the command line."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from orchestration.executor import apply_run_execute
from orchestration.models import RunStatus
from orchestration.services import ApplyRefused, apply_run_start, rollback_run_start


class Command(BaseCommand):
    help = (
        "Apply the latest saved GPU configuration: write the override, recreate the changed "
        "services with podman-compose, verify them, and roll back on failure. Runs here, "
        "without the Celery worker, printing progress."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--rollback",
            action="store_true",
            help="Roll back to the configuration applied before the current one instead.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        start = rollback_run_start if options["rollback"] else apply_run_start
        try:
            run = start(user=None, enqueue=False)
        except ApplyRefused as exc:
            raise CommandError(str(exc)) from exc
        steps = list(run.steps.values_list("service_name", flat=True))
        self.stdout.write(
            f"Run {run.id}: version {run.version.number}; "
            f"services to recreate: {', '.join(steps) or 'none (nothing changed)'}"
        )
        outcome = apply_run_execute(run.id, progress=lambda line: self.stdout.write(f"  {line}"))
        run.refresh_from_db()
        if outcome != RunStatus.SUCCEEDED:
            raise CommandError(f"Run {run.id} ended {run.status}: {run.error}")
        self.stdout.write(self.style.SUCCESS(f"Run {run.id} succeeded."))
