"""``manage.py prepare_data_dir``: create what the embedded defaults keep in the data folder."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from common.data_dir import needs_of, prepare


class Command(BaseCommand):
    help = (
        "Create what the embedded defaults need in GPUCONFIG_DATA_DIR (.data/): a random "
        "secret key, the SQLite database file and the filesystem broker's folders, private "
        "(0600 files in a 0700 folder). Only what is missing; nothing in production mode. "
        "bin/run and the image's entrypoint run it first."
    )
    # It creates what the system checks would report missing: they must not stop it.
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        for sentence in prepare(needs_of(settings)):
            self.stdout.write(sentence)
