"""The agent's tasks: they reach it on its host's queue only (``host.<name>``)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from orchestration.agent.client import report_now
from orchestration.agent.environment import agent_environment

REPORT_TASK = "agent.report"


@shared_task(name=REPORT_TASK, ignore_result=True)
def agent_report_task() -> dict[str, Any]:
    """Post a fresh report of this host's GPUs and labelled services to GPU Config (sent by
    GPU Config's host check when the host comes back). Runs in the agent only."""
    return report_now(agent_environment())
