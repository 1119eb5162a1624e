"""Run podman-compose and podman, and read back what the containers really got.

Everything here runs a subprocess from an argument list with an explicit cwd, environment and
timeout, and keeps the head and the tail of its output (:mod:`.commands`). Command failures are
returned, not raised, where the caller decides what they mean (``compose_up``); reads that
cannot answer raise :class:`PodmanCommandError`. The containers are read in
:mod:`.containers`, health checks run in :mod:`.health`, podman-compose is probed and driven in
:mod:`.compose`. Callers import this package (``from orchestration import podman``) and call
``podman.inspect_services(...)``: a test that patches ``podman.inspect_services`` replaces it
for them.

Facts about podman 4.3 and podman-compose 1.6 this package relies on, checked on a real host:

* podman-compose labels each container ``io.podman.compose.project`` and
  ``io.podman.compose.service`` (and the ``com.docker.compose.*`` twins).
* A CDI device requested with ``--device nvidia.com/gpu=1`` does not appear in
  ``HostConfig.Devices`` (that stays ``[]``); the request is visible only in
  ``Config.CreateCommand``, the podman command line that created the container.
* ``Config.Env`` is the environment of the container's process after CDI edits were applied
  (``STANDIN_GPU=1`` from a CDI spec shows there), whereas ``podman exec CONTAINER env`` does
  not show CDI-added variables: ``/proc/1/environ`` inside the container does.
* An unresolvable CDI device (``nvidia.com/gpu=7``) leaves the container created but never
  started (``State.Status == "created"``) and podman-compose exits 125, printing
  ``unresolvable CDI devices nvidia.com/gpu=7``; it still goes on with the other services.
* There is no systemd here to run health-check timers: ``podman healthcheck run`` runs a check
  on demand (exit 0 healthy, 1 unhealthy, 125 no check or not running).
"""

from orchestration.podman.commands import (
    DRAIN_TIMEOUT_S,
    OUTPUT_HEAD_CHARS,
    OUTPUT_TAIL_CHARS,
    QUERY_TIMEOUT_S,
    CommandResult,
    PodmanCommandError,
    first_error_line,
    run_command,
)
from orchestration.podman.compose import (
    INSTALL_COMPOSE_HINT,
    INSTALL_PODMAN_HINT,
    MIN_PODMAN_COMPOSE,
    PROBE_TIMEOUT_S,
    SOCKET_PODMAN_HINT,
    ComposeTool,
    ComposeUnavailable,
    compose_run_copy,
    compose_stop,
    compose_up,
    missing_images,
    podman_hint,
    probe_compose,
)
from orchestration.podman.containers import (
    HANDOVER_LABEL,
    PROJECT_LABEL,
    SERVICE_LABEL,
    ContainerState,
    compose_container_names,
    inspect_container,
    inspect_services,
    inspect_services_named,
    project_container_ids,
    read_containers,
)
from orchestration.podman.health import check_health_once, run_healthcheck, wait_healthy

__all__ = [
    "DRAIN_TIMEOUT_S",
    "HANDOVER_LABEL",
    "INSTALL_COMPOSE_HINT",
    "INSTALL_PODMAN_HINT",
    "MIN_PODMAN_COMPOSE",
    "OUTPUT_HEAD_CHARS",
    "OUTPUT_TAIL_CHARS",
    "PROBE_TIMEOUT_S",
    "PROJECT_LABEL",
    "QUERY_TIMEOUT_S",
    "SERVICE_LABEL",
    "SOCKET_PODMAN_HINT",
    "CommandResult",
    "ComposeTool",
    "ComposeUnavailable",
    "ContainerState",
    "PodmanCommandError",
    "check_health_once",
    "compose_container_names",
    "compose_run_copy",
    "compose_stop",
    "compose_up",
    "first_error_line",
    "inspect_container",
    "inspect_services",
    "inspect_services_named",
    "missing_images",
    "podman_hint",
    "probe_compose",
    "project_container_ids",
    "read_containers",
    "run_command",
    "run_healthcheck",
    "wait_healthy",
]
