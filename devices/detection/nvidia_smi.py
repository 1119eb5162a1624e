"""The nvidia-smi source: ``nvidia-smi --query-gpu`` run as a subprocess (no shell).

The chain's fallback for hosts where the Python process cannot load ``libnvidia-ml.so.1``
(e.g. the app runs in a container without the driver libraries mounted, but the binary is
reachable). Older drivers' missing fields, placeholders such as ``[N/A]`` and a lost GPU
are told apart: the first two become ``None``, the last fails the scan.
"""

from __future__ import annotations

import csv
import logging
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Final

from devices.detection.nvidia_smi_health import read_nvidia_smi_health
from devices.detection.types import (
    COMPUTE_CAPABILITY_RE,
    Detection,
    DetectionError,
    DetectionSource,
    GpuProcess,
    GpuReading,
    SourceUnavailable,
)

logger = logging.getLogger(__name__)


class NvidiaSmiUnavailable(SourceUnavailable):
    """``nvidia-smi`` cannot be used on this host (not on PATH, or no driver behind it)."""

    source_name = "nvidia-smi"


def detect_nvidia_smi(*, with_processes: bool) -> Detection:
    """The chain's entry: the GPUs, and with ``with_processes`` the compute processes.

    A failed process query never fails the detection: ``processes`` stays None (not
    measured) and ``process_note`` says why.
    """
    gpus = read_nvidia_smi()
    # The health counters are a second query whose failure only leaves health unknown.
    health = read_nvidia_smi_health("nvidia-smi")
    gpus = tuple(replace(gpu, health=health.get(gpu.uuid)) for gpu in gpus)
    processes: tuple[GpuProcess, ...] | None = None
    process_note = ""
    if with_processes:
        try:
            processes = read_nvidia_smi_processes()
        except DetectionError as error:
            process_note = str(error)
    return Detection(
        DetectionSource.NVIDIA_SMI, gpus, processes=processes, process_note=process_note
    )


# Field order matters: it is the column order of the CSV output.
_SMI_REQUIRED_FIELDS: Final = ("index", "uuid", "name", "memory.total", "memory.used")
# Fields an older driver may reject ("compute_cap" arrived with the R510 drivers); each
# one can be dropped from the query and reported as None instead.
_SMI_OPTIONAL_FIELDS: Final = ("compute_cap", "utilization.gpu", "temperature.gpu", "power.draw")
SMI_QUERY_FIELDS: Final = _SMI_REQUIRED_FIELDS + _SMI_OPTIONAL_FIELDS

# nvidia-smi prints this (on stdout, exit status 2) for a field it does not know.
_SMI_INVALID_FIELD_RE: Final = re.compile(r'Field "([^"]+)" is not a valid field to query')
# nvidia-smi's documented exit codes for "there is no driver/library to talk to".
_SMI_UNAVAILABLE_EXIT_CODES: Final = {
    9: "nvidia-smi cannot communicate with the NVIDIA driver",
    12: "nvidia-smi cannot find the NVML library",
}
# Placeholders nvidia-smi prints instead of a value the GPU cannot provide. Any other
# "[...]" text ("[Insufficient Permissions]", "[Unknown Error]") in an optional field is
# treated the same way: the reading is missing, the rest of the row is fine.
_SMI_NOT_AVAILABLE: Final = {"N/A", "[N/A]", "[Not Supported]", "Not Supported", ""}
# Placeholders that mean the GPU itself is in trouble: the scan is not trustworthy.
_SMI_GPU_FAILURE: Final = {"[GPU is lost]", "[GPU requires reset]"}


def _smi_missing(value: str) -> bool:
    return value in _SMI_NOT_AVAILABLE or (value.startswith("[") and value.endswith("]"))


def _smi_command(executable: str, fields: Iterable[str]) -> list[str]:
    return [executable, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]


def _trimmed(output: str, limit: int = 500) -> str:
    """Collapse a tool's output to one readable line for an error message."""
    text = " ".join(output.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_nvidia_smi(
    executable: str = "nvidia-smi", timeout_s: float = 10
) -> tuple[GpuReading, ...]:
    """Read every GPU by running ``nvidia-smi --query-gpu=...`` (no shell).

    Fields an older driver rejects (``compute_cap`` before R510) are dropped from the
    query one at a time and reported as ``None``.

    Raises :class:`NvidiaSmiUnavailable` when the executable is not found or reports that
    no driver is loaded, and :class:`DetectionError` for a timeout, any other non-zero
    exit, or output that cannot be parsed (quoting the offending line).
    """
    resolved = shutil.which(executable)
    if resolved is None:
        raise NvidiaSmiUnavailable(f"{executable} not on PATH")

    fields = list(SMI_QUERY_FIELDS)
    # Bounded: each retry removes one optional field, so this cannot loop forever.
    for _attempt in range(len(_SMI_OPTIONAL_FIELDS) + 1):
        command = _smi_command(resolved, fields)
        completed = _run_nvidia_smi(
            command,
            timeout_s,
            f"nvidia-smi did not answer within {timeout_s:g} s; the driver may be hung.",
        )

        if completed.returncode == 0:
            return _parse_smi_output(completed.stdout, fields)

        # nvidia-smi writes most of its errors to stdout, so look at both streams.
        output = f"{completed.stderr}\n{completed.stdout}"
        rejected = _rejected_optional_field(output, fields)
        if rejected is not None:
            logger.info(
                "nvidia-smi rejects the %r field (old driver); retrying without it", rejected
            )
            fields.remove(rejected)
            continue
        if "No devices were found" in output:
            # The driver answered and there are no GPUs: an inventory, not a failure.
            return ()
        if completed.returncode in _SMI_UNAVAILABLE_EXIT_CODES:
            raise NvidiaSmiUnavailable(
                _SMI_UNAVAILABLE_EXIT_CODES[completed.returncode], _trimmed(output)
            )
        raise DetectionError(
            f"nvidia-smi failed with exit status {completed.returncode}: "
            f"{_trimmed(completed.stderr) or _trimmed(completed.stdout) or 'no output'}"
        )

    # Only reachable if nvidia-smi keeps rejecting fields we no longer send.
    raise DetectionError("nvidia-smi kept rejecting the GPU query fields.")


def _rejected_optional_field(output: str, fields: list[str]) -> str | None:
    """Return the optional field nvidia-smi's error ``output`` complains about, if any."""
    match = _SMI_INVALID_FIELD_RE.search(output)
    if match is not None:
        field = match.group(1)
        return field if field in fields and field in _SMI_OPTIONAL_FIELDS else None
    # Unknown wording (other driver versions): accept any mention of an optional field
    # that we still send, as long as the output does not look like a generic failure.
    if "field" in output.lower():
        for field in fields:
            if field in _SMI_OPTIONAL_FIELDS and re.search(rf"\b{re.escape(field)}\b", output):
                return field
    return None


def _parse_smi_output(stdout: str, fields: list[str]) -> tuple[GpuReading, ...]:
    """Parse ``--format=csv,noheader,nounits`` output for the queried ``fields``."""
    readings: list[GpuReading] = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        # One reader per line so a stray quote cannot swallow the following lines.
        # nvidia-smi separates values with ", "; skipinitialspace drops the blank.
        row = next(csv.reader([line], skipinitialspace=True), [])
        readings.append(_parse_smi_row(line, [value.strip() for value in row], fields))

    indexes = [reading.index for reading in readings]
    if len(set(indexes)) != len(indexes):
        raise DetectionError(f"nvidia-smi reported the same GPU index twice: {_trimmed(stdout)!r}.")
    return tuple(readings)


def _parse_smi_row(line: str, values: list[str], fields: list[str]) -> GpuReading:
    """Turn one CSV row into a :class:`GpuReading`, rejecting anything unexpected."""
    if len(values) != len(fields):
        raise _unexpected(line, f"expected {len(fields)} values, got {len(values)}")
    row = _SmiRow(line, dict(zip(fields, values, strict=True)))

    for value in values:
        if value in _SMI_GPU_FAILURE:
            raise DetectionError(
                f"nvidia-smi reports GPU {row.by_field['index']} as {value.strip('[]')}: {line!r}"
            )

    # In this order, so a line with several problems always names the same one.
    index = row.number("index", int)
    vram_total_mb = row.number("memory.total", int)
    name = row.name()
    uuid = row.uuid()
    compute_capability = row.compute_capability()
    return GpuReading(
        index=index,
        uuid=uuid,
        name=name,
        vram_total_mb=vram_total_mb,
        vram_used_mb=row.optional_number("memory.used", int),
        compute_capability=compute_capability,
        utilization_percent=row.optional_number("utilization.gpu", int),
        temperature_c=row.optional_number("temperature.gpu", int),
        power_w=row.optional_number("power.draw", float),
    )


def _unexpected(line: str, problem: str) -> DetectionError:
    return DetectionError(f"nvidia-smi printed an unexpected line ({problem}): {line!r}")


@dataclass(frozen=True)
class _SmiRow:
    """One CSV row by field name (a field the driver rejected is absent), for its checks."""

    line: str
    by_field: dict[str, str]

    def number[N: (int, float)](self, field: str, convert: Callable[[str], N]) -> N:
        value = self.by_field[field]
        try:
            result = convert(value)
        except ValueError:
            raise _unexpected(self.line, f"{field} is {value!r}, not a number") from None
        if result < 0:
            raise _unexpected(self.line, f"{field} is negative")
        return result

    def optional_number[N: (int, float)](self, field: str, convert: Callable[[str], N]) -> N | None:
        value = self.by_field.get(field)
        # None: not queried because the driver rejected the field.
        if value is None or _smi_missing(value):
            return None
        return self.number(field, convert)

    def name(self) -> str:
        name = self.by_field["name"]
        if _smi_missing(name):
            raise _unexpected(self.line, "the GPU name is missing")
        return name

    def uuid(self) -> str:
        uuid = self.by_field["uuid"]
        if not uuid.startswith(("GPU-", "MIG-")):
            raise _unexpected(self.line, f"uuid is {uuid!r}")
        return uuid

    def compute_capability(self) -> str | None:
        capability = self.by_field.get("compute_cap")
        if capability is None or _smi_missing(capability):
            return None
        if not COMPUTE_CAPABILITY_RE.fullmatch(capability):
            raise _unexpected(self.line, f"compute_cap is {capability!r}")
        return capability


SMI_PROCESS_FIELDS: Final = ("pid", "gpu_uuid", "used_memory")


def read_nvidia_smi_processes(
    executable: str = "nvidia-smi", timeout_s: float = 10
) -> tuple[GpuProcess, ...]:
    """The compute processes of every GPU, from ``nvidia-smi --query-compute-apps``.

    The fallback for hosts where NVML cannot be loaded. nvidia-smi lists compute processes
    only (graphics ones are not queryable this way). Memory is MiB; ``[N/A]`` becomes None.
    Raises :class:`NvidiaSmiUnavailable` or :class:`DetectionError` like
    :func:`read_nvidia_smi`.
    """
    resolved = shutil.which(executable)
    if resolved is None:
        raise NvidiaSmiUnavailable(f"{executable} not on PATH")
    command = [
        resolved,
        f"--query-compute-apps={','.join(SMI_PROCESS_FIELDS)}",
        "--format=csv,noheader,nounits",
    ]
    completed = _run_nvidia_smi(
        command, timeout_s, f"nvidia-smi did not list the GPU processes within {timeout_s:g} s."
    )
    if completed.returncode != 0:
        output = f"{completed.stderr}\n{completed.stdout}"
        raise DetectionError(
            f"nvidia-smi could not list the GPU processes (exit status {completed.returncode}): "
            f"{_trimmed(output) or 'no output'}"
        )
    processes: list[GpuProcess] = []
    for line in completed.stdout.splitlines():
        if not line.strip() or "No running processes found" in line:
            continue
        values = [v.strip() for v in next(csv.reader([line], skipinitialspace=True), [])]
        if len(values) != len(SMI_PROCESS_FIELDS):
            raise DetectionError(f"nvidia-smi printed an unexpected process line: {line!r}")
        pid_text, uuid, used_text = values
        try:
            pid = int(pid_text)
            used = None if _smi_missing(used_text) else int(used_text)
        except ValueError:
            raise DetectionError(
                f"nvidia-smi printed an unexpected process line: {line!r}"
            ) from None
        processes.append(GpuProcess(pid, uuid, used, "compute"))
    return tuple(processes)


def _run_nvidia_smi(
    command: list[str], timeout_s: float, too_slow: str
) -> subprocess.CompletedProcess[str]:
    """Run nvidia-smi from an argument list; a timeout or a failed start is a DetectionError."""
    try:
        return subprocess.run(
            command,
            capture_output=True,
            # Never let a stray non-UTF-8 byte turn into a UnicodeDecodeError.
            encoding="utf-8",
            errors="replace",
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DetectionError(too_slow) from None
    except OSError as error:
        raise DetectionError(
            f"nvidia-smi ({command[0]}) could not be started: {error.strerror or error}."
        ) from None
