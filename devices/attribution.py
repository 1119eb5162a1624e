"""Whose is this GPU memory? From a host PID to a podman container to a compose service.

NVML and nvidia-smi name the processes holding GPU memory by *host* PID. A PID is turned
into a container through ``/proc/<pid>/cgroup`` (podman puts every container in a cgroup
named after its full id, under both cgroup layouts, checked on this VM with podman 4.3):

* cgroup v1 (and v2 with podman's cgroupfs manager): ``4:memory:/libpod_parent/libpod-<id>``
* cgroup v2 with the systemd manager: ``0::/machine.slice/libpod-<id>.scope`` (rootless:
  ``.../user.slice/libpod-<id>.scope``, sometimes with a ``/container`` child)

and the container into a service through the labels podman-compose gives it
(``io.podman.compose.project``/``.service``, or the ``com.docker.compose.*`` twins).

Only a process in the host's PID namespace reads host PIDs in ``/proc``: elsewhere (a
container without ``pid: host``) the same number may name one of its own processes, and
attributing by it would blame the wrong service. So outside the host's PID namespace every
process is reported as "attribution unavailable", never guessed (see docs/vram.md).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from devices.detection import GpuProcess

logger = logging.getLogger(__name__)

# The inode of the initial (host) PID namespace: PROC_PID_INIT_INO, fixed since Linux 3.8.
HOST_PID_NAMESPACE: Final = "pid:[4026531836]"

# A container's full id in a cgroup path: libpod-<id>[.scope] (podman) or docker-<id>.scope
# and /docker/<id> (Docker, for completeness: its containers are not GPU Config's but a
# process in one is still "in a container", not on the host). "libpod-conmon-<id>" is
# podman's monitor process, not the container, and does not match.
_CONTAINER_IN_CGROUP: Final = re.compile(
    r"(?:^|/)(?:libpod-|docker-|docker/)([0-9a-f]{64})(?:\.scope)?(?=/|$)"
)

PROJECT_LABELS: Final = ("io.podman.compose.project", "com.docker.compose.project")
SERVICE_LABELS: Final = ("io.podman.compose.service", "com.docker.compose.service")

# A container id podman did not know is asked about again only after this long, so a
# process in a foreign container costs one `podman ps` per interval, not one per sample.
UNKNOWN_RETRY_S: Final = 30.0
PODMAN_TIMEOUT_S: Final = 10.0


class Owner(StrEnum):
    """What a GPU process was traced to."""

    CONTAINER = "container"  # a container podman knows (labels read)
    HOST = "host"  # not in any container: a process on the host itself
    UNAVAILABLE = "unavailable"  # cannot be traced; never guessed


@dataclass(frozen=True)
class ContainerLabels:
    """What identifies a container to GPU Config."""

    container_id: str
    name: str
    project: str
    service: str


@dataclass(frozen=True)
class AttributedProcess:
    """A GPU process and what it was traced to."""

    process: GpuProcess
    owner: Owner
    container: ContainerLabels | None = None
    reason: str = ""  # why attribution is unavailable

    @property
    def pid(self) -> int:
        return self.process.pid


def container_id_from_cgroup(text: str) -> str | None:
    """The container id named in the text of a ``/proc/<pid>/cgroup`` file, if any.

    Both layouts name the same container, so the first line that names one decides.
    """
    for line in text.splitlines():
        # "hierarchy-id:controllers:path"; the path may itself contain ':' in theory.
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        match = _CONTAINER_IN_CGROUP.search(parts[2].strip())
        if match is not None:
            return match.group(1)
    return None


def labels_of(row: Mapping[str, Any]) -> ContainerLabels | None:
    """A ``podman ps --format json`` row as :class:`ContainerLabels` (None if malformed)."""
    container_id = row.get("Id")
    if not isinstance(container_id, str):
        return None
    labels = row.get("Labels") or {}
    names = row.get("Names") or []
    name = names[0] if isinstance(names, list) and names else container_id[:12]
    return ContainerLabels(
        container_id=container_id,
        name=str(name),
        project=next((str(labels[k]) for k in PROJECT_LABELS if labels.get(k)), ""),
        service=next((str(labels[k]) for k in SERVICE_LABELS if labels.get(k)), ""),
    )


def podman_containers(env: Mapping[str, str] | None = None) -> list[ContainerLabels]:
    """Every container podman knows, with its compose labels (one ``podman ps`` call)."""
    completed = subprocess.run(
        ["podman", "ps", "--all", "--no-trunc", "--format", "json"],
        cwd="/",
        env=dict(os.environ if env is None else env),
        capture_output=True,
        text=True,
        timeout=PODMAN_TIMEOUT_S,
        check=False,
    )
    if completed.returncode != 0:
        detail = completed.stderr.strip()[:300]
        raise OSError(f"podman ps failed (exit status {completed.returncode}): {detail}")
    rows = json.loads(completed.stdout or "[]")
    found = [labels_of(row) for row in rows if isinstance(row, dict)]
    return [c for c in found if c is not None]


ContainerLister = Callable[[], Sequence[ContainerLabels]]


class ProcessAttributor:
    """Traces GPU processes to containers, keeping what podman said between samples.

    Container labels never change for a container id, so a known id is never asked about
    again; an unknown id triggers one ``podman ps`` (which refreshes every container at
    once) and is not retried for :data:`UNKNOWN_RETRY_S`. ``/proc/<pid>/cgroup`` is read on
    every sample: it is a small in-memory file, and a PID can be reused by a new process.
    """

    def __init__(
        self,
        *,
        proc_root: Path = Path("/proc"),
        list_containers: ContainerLister | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.proc_root = proc_root
        self._list_containers = list_containers or podman_containers
        self._clock = clock
        self._known: dict[str, ContainerLabels] = {}
        self._unknown_until: dict[str, float] = {}
        self.podman_calls = 0  # tests and the benchmark read it

    def host_pid_namespace(self) -> bool:
        """Whether this process sees host PIDs in ``proc_root`` (the host's PID namespace)."""
        try:
            return os.readlink(self.proc_root / "self" / "ns" / "pid") == HOST_PID_NAMESPACE
        except OSError:
            return False

    def attribute(self, processes: Sequence[GpuProcess]) -> tuple[AttributedProcess, ...]:
        """Trace each process; one ``podman ps`` at most, and only for unseen containers."""
        if not processes:
            return ()
        if not self.host_pid_namespace():
            reason = (
                "this sampler does not run in the host's PID namespace, so the driver's host "
                "PIDs cannot be looked up (run it with pid: host, see docs/vram.md)"
            )
            return tuple(AttributedProcess(p, Owner.UNAVAILABLE, reason=reason) for p in processes)

        container_ids: dict[int, str | None] = {}
        missing_pid: set[int] = set()
        # Plain string paths and bytes: pathlib's overhead was half the sampler's cost.
        root = os.fspath(self.proc_root)
        for process in processes:
            try:
                with open(f"{root}/{process.pid}/cgroup", "rb") as cgroup:
                    text = cgroup.read().decode("utf-8", errors="replace")
            except OSError:
                missing_pid.add(process.pid)
                continue
            container_ids[process.pid] = container_id_from_cgroup(text)

        wanted = {cid for cid in container_ids.values() if cid is not None}
        podman_error = self._learn(wanted)

        result = []
        for process in processes:
            if process.pid in missing_pid:
                result.append(
                    AttributedProcess(
                        process,
                        Owner.UNAVAILABLE,
                        reason=f"PID {process.pid} is not in /proc (it may have just exited)",
                    )
                )
                continue
            cid = container_ids[process.pid]
            if cid is None:
                result.append(AttributedProcess(process, Owner.HOST))
                continue
            labels = self._known.get(cid)
            if labels is None:
                why = podman_error or "podman does not know it (another container engine?)"
                result.append(
                    AttributedProcess(
                        process,
                        Owner.UNAVAILABLE,
                        reason=f"PID {process.pid} is in container {cid[:12]}, but {why}",
                    )
                )
                continue
            result.append(AttributedProcess(process, Owner.CONTAINER, container=labels))
        return tuple(result)

    def _learn(self, container_ids: set[str]) -> str:
        """Ask podman about container ids not seen before; return why it failed, if it did."""
        now = self._clock()
        ask = [
            cid
            for cid in container_ids
            if cid not in self._known and self._unknown_until.get(cid, 0.0) <= now
        ]
        if not ask:
            return ""
        self.podman_calls += 1
        try:
            listed = self._list_containers()
        except (OSError, ValueError, subprocess.TimeoutExpired) as error:
            logger.warning("cannot list containers to attribute GPU memory: %s", error)
            for cid in ask:
                self._unknown_until[cid] = now + UNKNOWN_RETRY_S
            return f"podman cannot be asked ({error})"
        current = {c.container_id: c for c in listed}
        # Keep only containers that still exist: ids never come back, so the cache stays
        # as large as the set of containers on the host.
        self._known = current
        for cid in ask:
            if cid not in current:
                self._unknown_until[cid] = now + UNKNOWN_RETRY_S
        self._unknown_until = {c: t for c, t in self._unknown_until.items() if t > now}
        return ""
