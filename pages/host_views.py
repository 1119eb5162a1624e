"""The Hosts section's actions (staff): add a host, give a joining host a new join token,
revoke a host. Each calls one service of ``devices.hosts`` and answers the section (htmx) or
the whole page.

Adding a host and a new join token answer with the page itself, not a redirect: the token is
shown this once and is stored only as a hash, so a redirect would have nothing to show.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.views.decorators.http import require_POST

from common.errors import FieldsRefusal, Refusal
from devices.hosts import (
    agent_command,
    host_add,
    host_by_name,
    host_new_join_token,
    host_revoke,
)
from devices.models import Host
from pages import contexts
from pages.errors import refusal
from pages.responses import (
    SETTINGS_TEMPLATE,
    HtmxHttpRequest,
    fragments,
    page,
    readable_errors,
    staff_only,
)


def _answer(request: HtmxHttpRequest, status: int = 200, **hosts: Any) -> HttpResponse:
    context = contexts.hosts_context(request, **hosts)
    if request.htmx:
        return fragments(request, SETTINGS_TEMPLATE, "hosts", context, status=status)
    return page(request, SETTINGS_TEMPLATE, {**contexts.full_context(request), **context}, status)


def _refused(request: HtmxHttpRequest, exc: Refusal, **hosts: Any) -> HttpResponse:
    message, status = refusal(exc)
    return _answer(request, status, notices=[("error", f"{message} Nothing was changed.")], **hosts)


def _joining(request: HtmxHttpRequest, host: Host, token: str) -> dict[str, str]:
    return {
        "host": host.name,
        "token": token,
        "command": agent_command(host, token, request.build_absolute_uri("/")),
    }


@require_POST
@readable_errors
@staff_only
def host_add_view(request: HtmxHttpRequest) -> HttpResponse:
    """Add a host by ``name``: its join token and the agent's command, shown once."""
    name = request.POST.get("name", "")
    try:
        host, token = host_add(name)
    except FieldsRefusal as exc:  # beside the field, what was typed kept
        return _answer(request, exc.status_code, errors=exc.errors, typed_name=name)
    except Refusal as exc:
        return _refused(request, exc, typed_name=name)
    notice = f"Host {host.name} added. Run the command below on it to start its agent."
    return _answer(request, joining=_joining(request, host, token), notices=[("success", notice)])


@require_POST
@readable_errors
@staff_only
def host_join_token_view(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """A new join token for a host still joining (the old one stops working)."""
    try:
        host = host_by_name(name)
        token = host_new_join_token(host)  # refuses a revoked or joined host
    except Refusal as exc:
        return _refused(request, exc)
    notice = f"New join token for {host.name}: the previous one no longer works."
    return _answer(request, joining=_joining(request, host, token), notices=[("success", notice)])


@require_POST
@readable_errors
@staff_only
def host_revoke_view(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """Revoke a host: its agent's credential is refused everywhere from now on."""
    try:
        host = host_by_name(name)
        host_revoke(host)
    except Refusal as exc:
        return _refused(request, exc)
    notice = (
        f"Host {host.name} is revoked: its agent is refused from now on, and no plan places "
        "services on its GPUs."
    )
    return _answer(request, notices=[("success", notice)])
