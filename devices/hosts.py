"""GPU hosts: adding one, its agent joining and reporting, revoking it, and when it counts as
offline.

A host other than the local one runs an agent (a Celery worker on the host's own queue). It
joins once with a one-time join token and receives a long-lived credential; both are shown
once and only their SHA-256 hashes are stored. With the credential the agent reports its own
GPUs and labelled services, and nothing else: `host_report_record` writes rows of that host
only, so a host can never change another host's configuration.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from common.errors import FieldsRefusal, Refusal
from devices.models import (
    HOST_INDEX_STRIDE,
    GpuDevice,
    GpuVendorChoice,
    Host,
    HostService,
    HostStatus,
    local_host_pk,
)

JOIN_TOKEN_PREFIX = "gcj_"  # noqa: S105 (a prefix that tells tokens apart, not a secret)
CREDENTIAL_PREFIX = "gch_"
HOST_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
SERVICE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
MAX_REPORTED_GPUS = HOST_INDEX_STRIDE
MAX_REPORTED_SERVICES = 500


class HostRefused(Refusal):
    status_code = 400


class HostNotFound(Refusal):
    status_code = 404


class AgentRefused(Refusal):
    """A join token or credential that is unknown, used, expired or revoked (401)."""

    status_code = 401


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def offline_after() -> timedelta:
    return timedelta(seconds=settings.GPUCONFIG_HOST_OFFLINE_SECONDS)


@dataclass(frozen=True)
class HostState:
    """What the page and the API say of a host now."""

    label: str  # joining | online | offline | maintenance | revoked
    since: datetime | None  # offline: when it was last heard from
    plannable: bool  # whether plans may place services on its GPUs


def host_state(host: Host, *, now: datetime | None = None) -> HostState:
    """The host's state, judged from its row and the time since its last heartbeat, so that
    a host whose agent died reads offline even before the check task has written so."""
    now = now or timezone.now()
    if host.status == HostStatus.REVOKED:
        return HostState("revoked", host.revoked_at, False)
    if host.is_local:
        return HostState(
            "maintenance" if host.maintenance else "online", None, not host.maintenance
        )
    if host.status == HostStatus.JOINING:
        return HostState("joining", None, False)
    heard = host.last_heartbeat_at
    if host.status == HostStatus.OFFLINE or heard is None or now - heard > offline_after():
        return HostState("offline", host.offline_since or heard, False)
    if host.maintenance:
        return HostState("maintenance", None, False)
    return HostState("online", None, True)


def host_add(name: str) -> tuple[Host, str]:
    """A new host, joining, and its one-time join token (shown once)."""
    name = name.strip().lower()
    if not HOST_NAME.match(name):
        raise FieldsRefusal(
            {
                "name": "A host name is 1-63 lowercase letters, digits and hyphens, "
                "starting and ending with a letter or digit."
            }
        )
    token = JOIN_TOKEN_PREFIX + secrets.token_urlsafe(32)
    local_host_pk()  # the local host holds number 0
    try:
        with transaction.atomic():
            if Host.objects.filter(name=name).exists():
                raise FieldsRefusal({"name": f"A host named {name!r} already exists."})
            number = (Host.objects.aggregate(top=Max("number"))["top"] or 0) + 1
            host = Host.objects.create(
                name=name,
                number=number,
                status=HostStatus.JOINING,
                join_token_hash=_digest(token),
                join_token_expires_at=timezone.now()
                + timedelta(hours=settings.GPUCONFIG_JOIN_TOKEN_HOURS),
            )
    except IntegrityError:  # two adds at once: the database kept one
        raise FieldsRefusal({"name": f"A host named {name!r} already exists."}) from None
    return host, token


def host_new_join_token(host: Host) -> str:
    """A fresh join token for a host whose agent has not joined (the old one stops working)."""
    if host.status == HostStatus.REVOKED:
        raise HostRefused(f"Host {host.name} is revoked: add it again under a new name.")
    if host.is_local or host.joined_at is not None:
        raise HostRefused(f"Host {host.name} has already joined; revoke it and add it again.")
    token = JOIN_TOKEN_PREFIX + secrets.token_urlsafe(32)
    host.join_token_hash = _digest(token)
    host.join_token_expires_at = timezone.now() + timedelta(
        hours=settings.GPUCONFIG_JOIN_TOKEN_HOURS
    )
    host.save(update_fields=["join_token_hash", "join_token_expires_at"])
    return token


def host_join(token: str, *, agent_version: str) -> tuple[Host, str]:
    """Exchange a join token for the host's credential. The token works once."""
    if not isinstance(token, str) or not token.startswith(JOIN_TOKEN_PREFIX):
        raise AgentRefused("This is not a GPU Config join token.")
    credential = CREDENTIAL_PREFIX + secrets.token_urlsafe(32)
    now = timezone.now()
    with transaction.atomic():
        host = (
            Host.objects.select_for_update()
            .filter(join_token_hash=_digest(token), is_local=False)
            .first()
        )
        if host is None:
            raise AgentRefused(
                "Unknown or already used join token: add the host again, or ask for a new "
                "token in Settings."
            )
        if host.join_token_expires_at is None or host.join_token_expires_at < now:
            raise AgentRefused(
                f"The join token of host {host.name} has expired: ask for a new one."
            )
        host.join_token_hash = ""
        host.join_token_expires_at = None
        host.credential_hash = _digest(credential)
        host.joined_at = now
        host.status = HostStatus.ONLINE
        host.last_heartbeat_at = now
        host.offline_since = None
        host.agent_version = agent_version[:64]
        host.save()
    return host, credential


def host_authenticate(credential: str) -> Host:
    """The host a credential belongs to; refused when unknown or revoked."""
    if not isinstance(credential, str) or not credential.startswith(CREDENTIAL_PREFIX):
        raise AgentRefused("This is not a GPU Config host credential.")
    digest = _digest(credential)
    host = Host.objects.filter(credential_hash=digest, is_local=False).first()
    # compare_digest: the lookup found it by hash; the comparison is for the record's sake.
    if host is None or not hmac.compare_digest(host.credential_hash, digest):
        raise AgentRefused("Unknown or revoked host credential.")
    if host.status == HostStatus.REVOKED:
        raise AgentRefused(f"Host {host.name}'s credential is revoked.")
    return host


def host_revoke(host: Host) -> None:
    """Refuse the host's credential everywhere from now on; its GPUs leave every plan."""
    if host.is_local:
        raise HostRefused("The local host has no agent credential to revoke.")
    host.status = HostStatus.REVOKED
    host.credential_hash = ""
    host.join_token_hash = ""
    host.revoked_at = timezone.now()
    host.save(update_fields=["status", "credential_hash", "join_token_hash", "revoked_at"])


def host_heartbeat(host: Host, *, agent_version: str | None = None) -> None:
    """The agent answered: online again (or still), as of now."""
    now = timezone.now()
    fields = ["last_heartbeat_at", "status", "offline_since"]
    host.last_heartbeat_at = now
    host.status = HostStatus.ONLINE
    host.offline_since = None
    if agent_version is not None:
        host.agent_version = agent_version[:64]
        fields.append("agent_version")
    Host.objects.filter(pk=host.pk).exclude(status=HostStatus.REVOKED).update(
        **{field: getattr(host, field) for field in fields}
    )


def hosts_mark_silent_offline(*, now: datetime | None = None) -> list[str]:
    """Hosts whose agent has not been heard from within GPUCONFIG_HOST_OFFLINE_SECONDS are
    written offline, since the last time it was heard from. Returns their names."""
    now = now or timezone.now()
    silent = Host.objects.filter(
        is_local=False, status=HostStatus.ONLINE, last_heartbeat_at__lt=now - offline_after()
    )
    names = []
    for host in silent:
        Host.objects.filter(pk=host.pk, status=HostStatus.ONLINE).update(
            status=HostStatus.OFFLINE, offline_since=host.last_heartbeat_at
        )
        names.append(host.name)
    return names


# --- what an agent reports ----------------------------------------------------------


def _refuse(field: str, message: str) -> FieldsRefusal:
    return FieldsRefusal({field: message})


def _int(value: Any, field: str, *, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _refuse(field, f"must be a whole number >= {minimum}")
    if maximum is not None and value > maximum:
        raise _refuse(field, f"must be at most {maximum}")
    return value


def _text(value: Any, field: str, *, max_length: int, required: bool = True) -> str:
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > max_length:
        raise _refuse(field, f"must be text of 1-{max_length} characters")
    return value.strip()


@dataclass(frozen=True)
class ReportedGpu:
    index: int  # on its host
    uuid: str
    name: str
    vram_total_mb: int
    vram_used_mb: int | None
    vendor: str


_CONTAINER_TEXT = {"id": 128, "name": 256, "status": 32, "created": 64}
_CONTAINER_FIELDS = {*_CONTAINER_TEXT, "running", "health", "cdi_devices", "device_nodes", "env"}


def _container(raw: Any, where: str) -> dict[str, Any] | None:
    """A reported container (checked for shape and size; its meaning is judged where drift
    is, in orchestration.observed), or None for a service without one."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) - _CONTAINER_FIELDS:
        raise _refuse(where, f"must be an object with only {', '.join(sorted(_CONTAINER_FIELDS))}")
    out: dict[str, Any] = {}
    for key, limit in _CONTAINER_TEXT.items():
        value = raw.get(key, "")
        if not isinstance(value, str) or len(value) > limit:
            raise _refuse(f"{where}.{key}", f"must be text of at most {limit} characters")
        out[key] = value
    if not isinstance(raw.get("running"), bool):
        raise _refuse(f"{where}.running", "must be true or false")
    out["running"] = raw["running"]
    health = raw.get("health")
    if health is not None and (not isinstance(health, str) or len(health) > 32):
        raise _refuse(f"{where}.health", "must be null or a short text")
    out["health"] = health
    for key in ("cdi_devices", "device_nodes"):
        value = raw.get(key, [])
        if (
            not isinstance(value, list)
            or len(value) > 16
            or not all(isinstance(v, str) and len(v) <= 128 for v in value)
        ):
            raise _refuse(f"{where}.{key}", "must be a list of at most 16 short texts")
        out[key] = list(value)
    env = raw.get("env", {})
    if (
        not isinstance(env, Mapping)
        or len(env) > 32
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 128 and len(v) <= 256
            for k, v in env.items()
        )
    ):
        raise _refuse(f"{where}.env", "must map at most 32 variable names to short texts")
    out["env"] = dict(env)
    return out


def report_parse(body: Any) -> tuple[list[ReportedGpu], dict[str, dict[str, str]], str]:
    """An agent's report (GPUs, services, agent version) checked whole; refused with the
    first bad field's path. Its ``containers`` are read by `report_containers`."""
    if not isinstance(body, Mapping):
        raise _refuse("body", "must be a JSON object")
    unknown = set(body) - {"gpus", "services", "agent_version", "containers"}
    if unknown:
        raise _refuse(sorted(unknown)[0], "unknown field")
    raw_gpus = body.get("gpus")
    if not isinstance(raw_gpus, list) or len(raw_gpus) > MAX_REPORTED_GPUS:
        raise _refuse("gpus", f"must be a list of at most {MAX_REPORTED_GPUS} GPUs")
    gpus: list[ReportedGpu] = []
    for number, raw in enumerate(raw_gpus):
        where = f"gpus[{number}]"
        if not isinstance(raw, Mapping):
            raise _refuse(where, "must be an object")
        vendor = raw.get("vendor", GpuVendorChoice.NVIDIA)
        if vendor not in GpuVendorChoice.values:
            raise _refuse(f"{where}.vendor", f"must be one of {', '.join(GpuVendorChoice.values)}")
        used = raw.get("vram_used_mb")
        gpus.append(
            ReportedGpu(
                index=_int(
                    raw.get("index"), f"{where}.index", minimum=0, maximum=HOST_INDEX_STRIDE - 1
                ),
                uuid=_text(raw.get("uuid"), f"{where}.uuid", max_length=96),
                name=_text(raw.get("name"), f"{where}.name", max_length=128),
                vram_total_mb=_int(raw.get("vram_total_mb"), f"{where}.vram_total_mb", minimum=1),
                vram_used_mb=None
                if used is None
                else _int(used, f"{where}.vram_used_mb", minimum=0),
                vendor=vendor,
            )
        )
    if len({g.index for g in gpus}) != len(gpus) or len({g.uuid for g in gpus}) != len(gpus):
        raise _refuse("gpus", "two GPUs share an index or a UUID")
    raw_services = body.get("services")
    if not isinstance(raw_services, Mapping) or len(raw_services) > MAX_REPORTED_SERVICES:
        raise _refuse("services", f"must be an object of at most {MAX_REPORTED_SERVICES} services")
    services: dict[str, dict[str, str]] = {}
    for name, labels in raw_services.items():
        if not isinstance(name, str) or not SERVICE_NAME.match(name):
            raise _refuse("services", f"{name!r} is not a compose service name")
        if not isinstance(labels, Mapping) or not all(
            isinstance(k, str)
            and isinstance(v, str)
            and k.startswith("gpuconfig.")
            and len(v) <= 256
            for k, v in labels.items()
        ):
            raise _refuse(f"services.{name}", "must map gpuconfig.* labels to text")
        services[name] = dict(labels)
    version = _text(body.get("agent_version", ""), "agent_version", max_length=64, required=False)
    return gpus, services, version


def report_containers(body: Any, services: Mapping[str, Any]) -> dict[str, Any] | None:
    """The report's containers by service (each checked; None: no container), or None when
    the agent sent none (it could not read podman): then what was stored stays."""
    raw = body.get("containers") if isinstance(body, Mapping) else None
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not set(raw) <= set(services):
        raise _refuse("containers", "must be an object keyed by the reported services")
    return {str(name): _container(value, f"containers.{name}") for name, value in raw.items()}


def host_report_record(
    host: Host,
    gpus: Sequence[ReportedGpu],
    services: Mapping[str, Mapping[str, str]],
    *,
    agent_version: str,
    containers: Mapping[str, Any] | None = None,
) -> None:
    """Store what the host's agent reported, for that host only, in one transaction: its GPUs
    (global index = the host's base + the index there; a GPU no longer reported is marked not
    present) and its labelled services (replaced whole)."""
    if host.is_local:
        raise HostRefused("The local host is detected here, not reported by an agent.")
    now = timezone.now()
    with transaction.atomic():
        locked = Host.objects.select_for_update().get(pk=host.pk)
        if locked.status == HostStatus.REVOKED:
            raise AgentRefused(f"Host {host.name}'s credential is revoked.")
        seen = []
        for gpu in gpus:
            index = locked.index_base + gpu.index
            seen.append(index)
            GpuDevice.objects.update_or_create(
                gpu_index=index,
                defaults={
                    "host": locked,
                    "device_index": gpu.index,
                    "uuid": gpu.uuid,
                    "name": gpu.name,
                    "vendor": gpu.vendor,
                    "vram_total_mb": gpu.vram_total_mb,
                    "vram_available_mb": None
                    if gpu.vram_used_mb is None
                    else max(0, gpu.vram_total_mb - gpu.vram_used_mb),
                    "present": True,
                    "last_seen_at": now,
                },
            )
        GpuDevice.objects.filter(host=locked).exclude(gpu_index__in=seen).update(present=False)
        HostService.objects.filter(host=locked).exclude(service_name__in=list(services)).delete()
        for name, labels in services.items():
            defaults: dict[str, Any] = {"labels": dict(labels), "reported_at": now}
            if containers is not None:
                defaults["container"] = containers.get(name)
            HostService.objects.update_or_create(host=locked, service_name=name, defaults=defaults)
        Host.objects.filter(pk=locked.pk).update(reported_at=now)
        host_heartbeat(locked, agent_version=agent_version or None)


def host_by_name(name: str) -> Host:
    host = Host.objects.filter(name=name).first()
    if host is None:
        raise HostNotFound(f"There is no host {name!r}.")
    return host


def agent_command(host: Host, token: str, url: str) -> str:
    """What the operator runs on the new host, beside its AI system's compose file: the
    agent's settings in an env file (the join token is read once, then replaced by the
    credential in the agent's volume) and the compose command that starts it."""
    broker = settings.GPUCONFIG_AGENT_BROKER_URL or "redis://<this server's address>:6379/0"
    # An unquoted here-document: $(pwd), the AI system's folder the command is run in, is
    # written out as an absolute path (the token and the URL hold no shell characters).
    return "\n".join(
        [
            "cat > gpuconfig-agent.env <<EOF",
            f"GPUCONFIG_URL={url}",
            "GPUCONFIG_HOST_PROJECT_DIR=$(pwd)",
            f"GPUCONFIG_HOST_NAME={host.name}",
            f"GPUCONFIG_JOIN_TOKEN={token}",
            f"CELERY_BROKER_URL={broker}",
            "EOF",
            "podman-compose --env-file gpuconfig-agent.env -f docker-compose.agent.yml up -d",
        ]
    )
