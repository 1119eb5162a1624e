"""The service registry: which compose services GPU Config manages, read from their labels.

The base compose file is the one source of truth; nothing about a service is hard-coded here.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from common.documents import MAX_DOCUMENT_VALUES, DocumentBoundsError, document_size, quoted
from common.errors import Refusal
from gpuconfig.domain import ACCELERATORS, DEFAULT_ACCELERATOR, Accelerator, Role, Service

LABEL_PREFIX = "gpuconfig."
LABEL_MODEL = "gpuconfig.model"
LABEL_VRAM = "gpuconfig.vram_estimate_mb"
LABEL_ROLE = "gpuconfig.role"
LABEL_BUDGET_ENV = "gpuconfig.budget_env"
LABEL_VRAM_MIN = "gpuconfig.vram_min_mb"
LABEL_RESTART_COST = "gpuconfig.restart_cost"
# What the service runs on: cuda (NVIDIA GPUs, the default), rocm (AMD GPUs) or any.
LABEL_ACCELERATOR = "gpuconfig.accelerator"
KNOWN_LABELS = {
    LABEL_ACCELERATOR,
    LABEL_MODEL,
    LABEL_VRAM,
    LABEL_ROLE,
    LABEL_BUDGET_ENV,
    LABEL_VRAM_MIN,
    LABEL_RESTART_COST,
}
# A restart that takes longer than a day is a typo (seconds).
MAX_RESTART_COST_S = 86_400.0
ROLES: tuple[Role, ...] = ("llm", "critical", "standard")
# The largest GPUs sold today hold under 200 GB; anything above 2 TB is a typo.
MAX_VRAM_ESTIMATE_MB = 2_000_000
# Used with fullmatch: "$" would also match before a final newline ("ai-llm\n").
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_SERVICE_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}")
MAX_MESSAGE_CHARS = 2000
# A compose file that failed to parse is not parsed again for this long, unless it changes:
# every GET of the configuration would otherwise pay for the failure again.
FAILED_PARSE_CACHE_SECONDS = 5.0


class RegistryError(Refusal, ValueError):
    """The compose file cannot be used (503); the message names the file, service and label."""

    status_code = 503

    @property
    def user_message(self) -> str:
        return f"The compose file cannot be used: {self}"

    def __init__(self, message: str) -> None:
        # Bounded whatever went into it (a YAML error quoting a huge line, a long value).
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 1] + "…"
        super().__init__(message)


@dataclass(frozen=True)
class Registry:
    compose_file: Path
    services: tuple[Service, ...]
    compose: dict[str, Any]  # the parsed base file, for checks that need more than labels

    def names(self) -> list[str]:
        return [s.name for s in self.services]

    def get(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)


def parse_registry(compose_file: Path, text: str) -> Registry:
    """Parse compose YAML text into the registry of GPU-managed services (pure)."""
    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as exc:
        raise RegistryError(f"{compose_file}: not valid YAML: {exc}") from None
    except RecursionError:
        raise RegistryError(f"{compose_file}: nested too deeply to be a compose file") from None
    _check_size(compose_file, data)
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise RegistryError(f"{compose_file}: expected a compose file with a 'services' mapping")
    services: list[Service] = []
    for name, definition in data["services"].items():
        labels = _labels(compose_file, str(name), definition)
        if not any(key.startswith(LABEL_PREFIX) for key in labels):
            continue  # not GPU-managed: GPU Config leaves it alone
        services.append(_service(compose_file, str(name), labels))
    return Registry(compose_file=compose_file, services=tuple(services), compose=data)


def _check_size(compose_file: Path, data: Any) -> None:
    """Refuse a document whose values, with every alias expanded, are too many or too deep."""
    try:
        size = document_size(data)
    except DocumentBoundsError as exc:
        raise RegistryError(f"{compose_file}: {exc}; not a compose file") from None
    if size.values > MAX_DOCUMENT_VALUES:
        raise RegistryError(
            f"{compose_file}: more than {MAX_DOCUMENT_VALUES:,} values once its YAML aliases "
            "are expanded; a compose file is far smaller (are aliases nested inside aliases?)"
        )


def _labels(compose_file: Path, name: str, definition: Any) -> dict[str, str]:
    where = f"{compose_file}: service {quoted(name)}"
    if not isinstance(definition, dict):
        raise RegistryError(f"{where}: expected a mapping")
    raw = definition.get("labels") or {}
    if isinstance(raw, list):  # compose also allows ["key=value", ...]
        labels: dict[str, str] = {}
        for item in raw:
            key, sep, value = str(item).partition("=")
            if not sep:
                raise RegistryError(f"{where}: label {quoted(item)} is not key=value")
            labels[key.strip()] = value.strip()
        return labels
    if isinstance(raw, dict):
        return {str(k): "" if v is None else str(v) for k, v in raw.items()}
    raise RegistryError(f"{where}: 'labels' must be a mapping or a list of key=value")


def managed_labels(registry: Registry) -> dict[str, dict[str, str]]:
    """Each managed service of a parsed compose file with its gpuconfig.* labels (what a host's
    agent reports, and `service_from_labels` reads back)."""
    definitions = {str(name): value for name, value in registry.compose["services"].items()}
    return {
        service.name: {
            key: value
            for key, value in _labels(
                registry.compose_file, service.name, definitions[service.name]
            ).items()
            if key.startswith(LABEL_PREFIX)
        }
        for service in registry.services
    }


def service_from_labels(where: Path, name: str, labels: dict[str, str]) -> Service:
    """A managed service from its name and gpuconfig.* labels (a compose file's, or a host
    agent's report); `where` names the source in errors."""
    return _service(where, name, labels)


def _service(compose_file: Path, name: str, labels: dict[str, str]) -> Service:
    def fail(label: str, problem: str) -> RegistryError:
        return RegistryError(
            f"{compose_file}: service {quoted(name)}, label {quoted(label)[1:-1]}: {problem}"
        )

    if not _SERVICE_NAME.fullmatch(name):
        raise RegistryError(
            f"{compose_file}: service {quoted(name)}: names of managed services must be "
            "1-64 letters, digits, '.', '_' or '-'"
        )
    unknown = sorted(k for k in labels if k.startswith(LABEL_PREFIX) and k not in KNOWN_LABELS)
    if unknown:
        raise fail(unknown[0], f"unknown label (known: {', '.join(sorted(KNOWN_LABELS))})")
    vram = _vram_estimate(labels, fail)
    role = labels.get(LABEL_ROLE, "standard").strip() or "standard"
    if role not in ROLES:
        raise fail(LABEL_ROLE, f"{quoted(role)} is not one of {', '.join(ROLES)}")
    accelerator = _accelerator(labels, fail)
    model = labels.get(LABEL_MODEL, "").strip() or name
    if len(model) > 128:
        raise fail(LABEL_MODEL, "longer than 128 characters")
    budget_env = labels.get(LABEL_BUDGET_ENV, "").strip() or None
    if budget_env is not None and not _ENV_NAME.fullmatch(budget_env):
        raise fail(
            LABEL_BUDGET_ENV, f"{quoted(budget_env)} is not a valid environment variable name"
        )
    vram_min = _vram_min(labels, fail, budget_env=budget_env, vram=vram)
    restart_cost = _restart_cost(labels.get(LABEL_RESTART_COST), fail)
    return Service(
        name=name,
        model=model,
        vram_estimate_mb=vram,
        role=role,
        budget_env=budget_env,
        vram_min_mb=vram_min,
        restart_cost_s=restart_cost,
        accelerator=accelerator,
    )


def _vram_estimate(labels: dict[str, str], fail: Callable[[str, str], RegistryError]) -> int:
    """The required VRAM estimate label, in MB."""
    if LABEL_VRAM not in labels:
        raise fail(LABEL_VRAM, "missing: every GPU-managed service needs a VRAM estimate in MiB")
    raw_vram = labels[LABEL_VRAM].strip()
    try:
        vram = int(raw_vram)
    except ValueError:
        raise fail(LABEL_VRAM, f"{quoted(raw_vram)} is not a whole number of MiB") from None
    if not 1 <= vram <= MAX_VRAM_ESTIMATE_MB:
        raise fail(LABEL_VRAM, f"{vram} is out of range (1 to {MAX_VRAM_ESTIMATE_MB} MB)")
    return vram


def _vram_min(
    labels: dict[str, str],
    fail: Callable[[str, str], RegistryError],
    *,
    budget_env: str | None,
    vram: int,
) -> int | None:
    """The optional minimum VRAM label, in MB: only for a service that takes a budget, and
    never above its estimate."""
    if LABEL_VRAM_MIN not in labels:
        return None
    raw_min = labels[LABEL_VRAM_MIN].strip()
    if budget_env is None:
        raise fail(
            LABEL_VRAM_MIN,
            f"only a service that takes a budget ({LABEL_BUDGET_ENV}) can have a minimum",
        )
    try:
        vram_min = int(raw_min)
    except ValueError:
        raise fail(LABEL_VRAM_MIN, f"{quoted(raw_min)} is not a whole number of MiB") from None
    if not 1 <= vram_min <= vram:
        raise fail(
            LABEL_VRAM_MIN,
            f"{vram_min} is out of range (1 MiB to the estimate, {vram} MiB)",
        )
    return vram_min


def _accelerator(labels: dict[str, str], fail: Callable[[str, str], RegistryError]) -> Accelerator:
    """The ``gpuconfig.accelerator`` label; without it, CUDA (what every file meant so far)."""
    raw = labels.get(LABEL_ACCELERATOR, "").strip().lower() or DEFAULT_ACCELERATOR
    for accelerator in ACCELERATORS:
        if raw == accelerator:
            return accelerator
    raise fail(
        LABEL_ACCELERATOR,
        f"{quoted(labels[LABEL_ACCELERATOR].strip())} is not one of {', '.join(ACCELERATORS)} "
        "(cuda: NVIDIA GPUs, rocm: AMD GPUs, any: either)",
    )


def _restart_cost(raw: str | None, fail: Callable[[str, str], RegistryError]) -> float | None:
    """The gpuconfig.restart_cost label: seconds a restart takes the service out of service."""
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        raise fail(LABEL_RESTART_COST, f"{quoted(raw)} is not a number of seconds") from None
    # float() reads "nan" and "inf": neither is a time a restart takes (nan fails both sides).
    if not 0 <= seconds <= MAX_RESTART_COST_S:
        raise fail(
            LABEL_RESTART_COST, f"{raw} is out of range (0 to {MAX_RESTART_COST_S:g} seconds)"
        )
    return seconds


_cache_lock = threading.Lock()
_cache: dict[Path, tuple[tuple[int, int], Registry]] = {}
# Failed parses: (stamp, when, error), kept FAILED_PARSE_CACHE_SECONDS.
_failures: dict[Path, tuple[tuple[int, int], float, RegistryError]] = {}


def load_registry(compose_file: Path) -> Registry:
    """The registry for ``compose_file``, re-read only when the file changes."""
    try:
        stat = compose_file.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        with _cache_lock:
            cached = _cache.get(compose_file)
            failed = _failures.get(compose_file)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        if (
            failed is not None
            and failed[0] == stamp
            and time.monotonic() - failed[1] < FAILED_PARSE_CACHE_SECONDS
        ):
            raise RegistryError(str(failed[2]))
        text = compose_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(
            f"{compose_file}: cannot read the compose file: {exc.strerror}"
        ) from None
    except UnicodeDecodeError:
        raise RegistryError(f"{compose_file}: not UTF-8 text") from None
    try:
        registry = parse_registry(compose_file, text)
    except RegistryError as exc:
        with _cache_lock:
            _failures[compose_file] = (stamp, time.monotonic(), exc)
        raise
    with _cache_lock:
        _cache[compose_file] = (stamp, registry)
        _failures.pop(compose_file, None)
    return registry
