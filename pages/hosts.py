"""The Settings page's GPU hosts (issue 20): the Hosts section's rows, and where each GPU
is, so that the page can name a remote host's GPU by its host.

A remote host's GPU has a global index (100 x its host's number + its index there): the page
names it "gpu-box-2 / GPU 1", as the operator knows it on that host. A local GPU keeps its
plain "GPU 1", so that a one-host install reads as it always did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.http import HttpRequest
from django.utils import timezone

from devices.hosts import host_state
from devices.models import HOST_INDEX_STRIDE, GpuDevice, Host, HostStatus
from gpuconfig.domain import gpu_label as domain_gpu_label

# --- where a GPU is ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuPlace:
    """A remote host's GPU: its host's name and its index on that host."""

    host: str
    index: int


# Global index -> place, for remote hosts' GPUs only: a GPU not in it is on the local host.
GpuPlaces = Mapping[int, GpuPlace]
_PLACES_ATTRIBUTE = "_gpuconfig_gpu_places"


def _place(host: str, gpu: GpuDevice) -> GpuPlace:
    # An agent's GPU row keeps its index on the host as device_index (devices.hosts).
    on_host = gpu.gpu_index % HOST_INDEX_STRIDE if gpu.device_index is None else gpu.device_index
    return GpuPlace(host, on_host)


def gpu_places() -> dict[int, GpuPlace]:
    """Every remote host's GPU, present or not (one query)."""
    gpus = GpuDevice.objects.filter(host__is_local=False).select_related("host")
    return {gpu.gpu_index: _place(gpu.host.name, gpu) for gpu in gpus}


def gpu_places_for(request: HttpRequest) -> GpuPlaces:
    """``gpu_places``, read once per request: the cards, the form and the Hosts section of
    one page all name the remote GPUs."""
    places: GpuPlaces | None = getattr(request, _PLACES_ATTRIBUTE, None)
    if places is None:
        places = gpu_places()
        remember_gpu_places(request, places)
    return places


def remember_gpu_places(request: HttpRequest, places: GpuPlaces) -> None:
    """What ``gpu_places_for`` answers for the rest of this request (read another way)."""
    setattr(request, _PLACES_ATTRIBUTE, places)


def gpu_label(index: int, places: GpuPlaces) -> str:
    """ "GPU 1" for a local GPU, "gpu-box-2 / GPU 1" for a remote host's (the words every
    sentence uses: `gpuconfig.domain.gpu_label`)."""
    place = places.get(index)
    return domain_gpu_label(index, "" if place is None else place.host)


def gpu_host(index: int | None, places: GpuPlaces, local_name: str) -> str:
    """The name of the host GPU ``index`` is on ("" for no GPU)."""
    if index is None:
        return ""
    place = places.get(index)
    return local_name if place is None else place.host


# --- the Hosts section ---------------------------------------------------------------------


@dataclass(frozen=True)
class HostGpu:
    index: int  # global
    on_host: int  # its index on its host
    label: str
    name: str
    present: bool


@dataclass(frozen=True)
class HostRow:
    """One host as the Hosts section shows it."""

    name: str
    local: bool
    state: str  # joining | online | offline | maintenance | revoked (devices.hosts.host_state)
    state_text: str  # "Offline since 2026-12-03 08:40 UTC"
    badge: str  # the badge's CSS class
    agent_version: str
    last_heartbeat_at: datetime | None
    queue: str  # "" for the local host (no agent)
    gpus: tuple[HostGpu, ...]
    can_revoke: bool
    can_new_token: bool  # its agent has not joined yet


STATE_BADGES = {
    "online": "ok",
    "joining": "info",
    "maintenance": "warn",
    "offline": "error",
    "revoked": "muted",
}


def _state_text(label: str, since: datetime | None) -> str:
    text = label.capitalize()
    if since is not None and label in ("offline", "revoked"):
        text += f" since {timezone.localtime(since):%Y-%m-%d %H:%M %Z}"
    return text


def places_of(rows: Sequence[HostRow]) -> dict[int, GpuPlace]:
    """The remote hosts' GPUs of ``host_rows`` (what ``gpu_places`` reads, without a query)."""
    return {
        g.index: GpuPlace(row.name, g.on_host) for row in rows if not row.local for g in row.gpus
    }


def host_rows(*, now: datetime | None = None) -> list[HostRow]:
    """Every host, the local one first (two queries)."""
    now = now or timezone.now()
    rows = []
    for host in Host.objects.prefetch_related("gpus").order_by("number"):
        state = host_state(host, now=now)
        gpus = sorted(host.gpus.all(), key=lambda g: g.gpu_index)
        places = {} if host.is_local else {g.gpu_index: _place(host.name, g) for g in gpus}
        rows.append(
            HostRow(
                name=host.name,
                local=host.is_local,
                state=state.label,
                state_text=_state_text(state.label, state.since),
                badge=STATE_BADGES.get(state.label, "info"),
                agent_version=host.agent_version,
                last_heartbeat_at=host.last_heartbeat_at,
                queue="" if host.is_local else host.queue,
                gpus=tuple(
                    HostGpu(
                        index=g.gpu_index,
                        on_host=_place(host.name, g).index,
                        label=gpu_label(g.gpu_index, places),
                        name=g.name,
                        present=g.present,
                    )
                    for g in gpus
                ),
                can_revoke=not host.is_local and host.status != HostStatus.REVOKED,
                # Only a host still joining: a new token for a revoked host would let it join
                # again, and one that has joined holds its credential already.
                can_new_token=state.label == "joining",
            )
        )
    return rows
