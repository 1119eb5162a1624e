"""The agent's two calls to GPU Config, over HTTP(S) with the standard library: join (once,
with the join token) and report (with the credential as a Bearer token).

The credential lives in the state folder, 0600 in a 0700 folder, written once at join.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

from common.files import private_dir, private_file_create, read_or_none
from orchestration.agent.environment import AgentEnvironment, AgentError, agent_version
from orchestration.agent.inventory import report_body

logger = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 20.0
_MAX_ERROR_CHARS = 300


class AgentHttpRefused(AgentError):
    """GPU Config answered with an error status (its sentence is the message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _refusal(error: urllib.error.HTTPError) -> str:
    """GPU Config's sentence from an error answer ({"error": ..., "errors": {...}})."""
    try:
        body = json.loads(error.read(64 * 1024) or b"{}")
    except (ValueError, OSError):
        body = {}
    message = body.get("error") if isinstance(body, dict) else None
    fields = body.get("errors") if isinstance(body, dict) else None
    if isinstance(fields, dict) and fields:
        message = f"{message or 'refused'} ({json.dumps(fields)})"
    return str(message or error.reason)[:_MAX_ERROR_CHARS]


def _post(env: AgentEnvironment, path: str, body: dict[str, Any], *, credential: str = "") -> Any:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if credential:
        headers["Authorization"] = f"Bearer {credential}"
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked: http or https)
        f"{env.url}{path}", data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as answer:  # noqa: S310
            return json.loads(answer.read())
    except urllib.error.HTTPError as error:
        raise AgentHttpRefused(error.code, _refusal(error)) from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise AgentError(f"GPU Config at {env.url} did not answer: {reason}") from None
    except ValueError:
        raise AgentError(f"GPU Config at {env.url} answered {path} with no JSON") from None


def stored_credential(env: AgentEnvironment) -> str:
    return (read_or_none(env.credential_file) or "").strip()


def _check_name(env: AgentEnvironment, answer: Any, what: str) -> None:
    name = answer.get("name") if isinstance(answer, dict) else None
    if name != env.host_name:
        raise AgentError(
            f"{what} belongs to host {name!r}, but GPUCONFIG_HOST_NAME is {env.host_name!r}: "
            f"set GPUCONFIG_HOST_NAME={name} (the agent consumes the queue of that name)"
        )


def ensure_credential(env: AgentEnvironment) -> str:
    """The stored credential; on first start, join with the token and store the credential."""
    credential = stored_credential(env)
    if credential:
        return credential
    if not env.join_token:
        raise AgentError(
            f"No credential in {env.credential_file} and no GPUCONFIG_JOIN_TOKEN: give the "
            "agent the host's join token (Settings > Hosts) for its first start"
        )
    try:
        answer = _post(
            env, "/api/hosts/join", {"token": env.join_token, "agent_version": agent_version()}
        )
    except AgentHttpRefused as refused:
        if refused.status != 401:
            raise
        raise AgentError(
            f"GPU Config refused the join token: {refused}. A join token works once: if this "
            f"host has joined before, its credential file {env.credential_file} is lost (a "
            "new state volume?); ask for a new join token in GPU Config (or revoke the host "
            "and add it again) and restart the agent with it"
        ) from None
    issued = answer.get("credential") if isinstance(answer, dict) else None
    if not isinstance(issued, str) or not issued:
        raise AgentError(f"GPU Config at {env.url} answered the join without a credential")
    # Stored before anything else can fail: the token is spent, the credential is all there is.
    private_dir(env.state_dir)
    private_file_create(env.credential_file, issued + "\n")
    logger.info(
        "Joined GPU Config as host %s; credential in %s", env.host_name, env.credential_file
    )
    _check_name(env, answer, "The join token")
    return issued


def report_now(env: AgentEnvironment, credential: str | None = None) -> dict[str, Any]:
    """Post a fresh report (GPUs and labelled services); GPU Config's answer for this host."""
    credential = credential or stored_credential(env)
    if not credential:
        raise AgentError(f"No credential in {env.credential_file}: start the agent to join first")
    body = report_body()
    try:
        answer = _post(env, "/api/hosts/report", body, credential=credential)
    except AgentHttpRefused as refused:
        if refused.status in (401, 403):
            raise AgentError(
                f"GPU Config refused this host's credential: {refused} (revoked? then add "
                f"the host again, delete {env.credential_file} and start with the new token)"
            ) from None
        raise AgentError(f"GPU Config refused the report: {refused}") from None
    _check_name(env, answer, "The credential")
    logger.info(
        "Reported %d GPU(s) and %d labelled service(s) to GPU Config",
        len(body["gpus"]),
        len(body["services"]),
    )
    return dict(answer)
