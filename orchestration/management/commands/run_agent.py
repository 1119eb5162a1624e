"""``manage.py run_agent``: the agent of a GPU host (the image's ``agent`` mode).

Joins GPU Config once (GPUCONFIG_JOIN_TOKEN -> a credential in GPUCONFIG_AGENT_STATE_DIR),
reports the host's GPUs and labelled services, then becomes a Celery worker that consumes
only this host's queue, as ``agent@<GPUCONFIG_HOST_NAME>``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from orchestration.agent.client import ensure_credential, report_now
from orchestration.agent.environment import AgentEnvironment, AgentError, agent_environment


def worker_argv(env: AgentEnvironment, *, loglevel: str, concurrency: int) -> list[str]:
    """The Celery worker of this host: its queue only, under its node name.

    Threads, not forked processes: the agent's tasks wait on HTTP and podman, and a pool
    thread busy with one never keeps the worker from answering GPU Config's ping. No beat:
    the periodic tasks are the central worker's. No mingle or gossip: agents need nothing
    from each other."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        f"--queues={env.queue}",
        f"--hostname={env.node_name}",
        "--pool=threads",
        f"--concurrency={concurrency}",
        "--without-mingle",
        "--without-gossip",
        f"--loglevel={loglevel}",
    ]


class Command(BaseCommand):
    help = (
        "Run the agent of a GPU host: join GPU Config once (GPUCONFIG_JOIN_TOKEN), report "
        "this host's GPUs and labelled services, then run a Celery worker on the host's own "
        "queue. Settings: GPUCONFIG_URL, GPUCONFIG_HOST_NAME, CELERY_BROKER_URL, "
        "GPUCONFIG_AGENT_STATE_DIR (default: GPUCONFIG_DATA_DIR/agent)."
    )
    # The agent has no database and no secret key: the checks that ask for them (the data
    # folder's) belong to GPU Config's own processes. Its own settings are checked below.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--concurrency", type=int, default=2, help="Worker threads (default 2)."
        )
        parser.add_argument(
            "--report-only",
            action="store_true",
            help="Join if needed and report once, then exit (no worker).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            env = agent_environment()
            credential = ensure_credential(env)
            answer = report_now(env, credential)
        except AgentError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"Host {env.host_name}: {len(answer.get('gpus') or [])} GPU(s), "
            f"{len(answer.get('services') or [])} labelled service(s) reported to {env.url}; "
            f"state {answer.get('state')}."
        )
        if options["report_only"]:
            return
        argv = worker_argv(
            env,
            loglevel=os.environ.get("GPUCONFIG_LOG_LEVEL", "INFO"),
            concurrency=max(1, options["concurrency"]),
        )
        self.stdout.write(f"Starting the Celery worker {env.node_name} on queue {env.queue}.")
        self.stdout.flush()
        sys.stderr.flush()
        # The project folder, where `-A config` is found, whatever folder we were started in.
        os.chdir(settings.BASE_DIR)
        # Celery runs Django's system checks when a worker starts, and on SQLite (the
        # settings' default, never created on an agent) one of them opens the database. The
        # agent has none: its own settings were checked above.
        os.environ["CELERY_SKIP_CHECKS"] = "1"
        os.execv(sys.executable, argv)  # noqa: S606 (our own interpreter, fixed arguments)
