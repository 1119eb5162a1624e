"""``manage.py add_host NAME --url URL``: add a GPU host and print its one-time join token
and the command that starts its agent there."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.errors import Refusal
from devices.hosts import agent_command, host_add


class Command(BaseCommand):
    help = "Add a GPU host: prints its one-time join token and the agent's start command."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The host's name: lowercase letters, digits, hyphens.")
        parser.add_argument(
            "--url",
            default="https://<this server>/",
            help="GPU Config's address as the new host reaches it (put in the command).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            host, token = host_add(options["name"])
        except Refusal as refusal:
            raise CommandError(refusal.user_message) from None
        self.stdout.write(
            f"Host {host.name} added (queue {host.queue}). Its join token works once, for "
            f"the next {self._hours()} hours; it is not shown again.\n"
            f"On {host.name}, beside the AI system's compose file, run:\n\n"
            + agent_command(host, token, options["url"])
        )

    @staticmethod
    def _hours() -> int:
        return int(settings.GPUCONFIG_JOIN_TOKEN_HOURS)
