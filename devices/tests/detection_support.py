"""What the detection tests share: the reference box as each source reports it, and a
scripted ``nvidia-smi``.

The fake nvidia-smi is a real executable put on ``PATH`` (see the ``bin_dir`` fixture in
conftest.py); it prints a file from ``fixtures/nvidia-smi`` (hand-written, see
``fixtures/README.md``) and records its arguments, so the subprocess call, the CSV parsing and
the retries run for real.
"""

from __future__ import annotations

import ctypes
import json
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from devices.detection.nvidia_smi import SMI_QUERY_FIELDS
from devices.detection.types import GpuReading

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"
REFERENCE_FILE = Path(__file__).parents[1] / "simulated" / "reference-gpus.json"

A5500_UUID = "GPU-5f3c1b2e-8a4d-4c6e-9b1f-2d7a0e4c8b13"
A400_UUID = "GPU-a91e6d04-37c2-4f85-b0d9-6e2f1c8a5d47"

REFERENCE_BOX = (
    GpuReading(
        index=0,
        uuid=A5500_UUID,
        name="NVIDIA RTX A5500",
        vram_total_mb=24564,
        vram_used_mb=19304,
        compute_capability="8.6",
        utilization_percent=47,
        temperature_c=61,
        power_w=142.71,
    ),
    GpuReading(
        index=1,
        uuid=A400_UUID,
        name="NVIDIA RTX A400",
        vram_total_mb=4094,
        vram_used_mb=329,
        compute_capability="8.6",
        utilization_percent=2,
        temperature_c=38,
        power_w=8.93,
    ),
)


def real_nvml_library_loads() -> bool:
    """Whether this machine has a real NVML (the tests that need its absence skip)."""
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


# Runs under the test's own interpreter (absolute shebang) because PATH holds only the
# fake's directory. Behaviour comes from a JSON file next to it.
_FAKE_SMI = """#!{python}
import json, sys, time
from pathlib import Path

here = Path(__file__).parent
config = json.loads((here / "config.json").read_text())
with open(here / "calls.jsonl", "a") as calls:
    calls.write(json.dumps(sys.argv[1:]) + "\\n")
query = next((a for a in sys.argv[1:] if a.startswith("--query-gpu=")), "")
fields = query.split("=", 1)[1].split(",") if query else []
for rejected in config["reject_fields"]:
    if rejected in fields:
        sys.stdout.write(Path(config["reject_output"]).read_text())
        sys.exit(2)
time.sleep(config["sleep_s"])
if config["stdout_file"]:
    sys.stdout.write(Path(config["stdout_file"]).read_text())
if config["stderr_file"]:
    sys.stderr.write(Path(config["stderr_file"]).read_text())
sys.exit(config["exit_code"])
"""


@dataclass
class FakeSmi:
    """Handle on the installed fake: its path and the argument lists it was run with."""

    path: Path

    @property
    def calls(self) -> list[list[str]]:
        log = self.path.parent / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]


def install_smi(
    bin_dir: Path,
    stdout: str | None = None,
    *,
    stderr: str | None = None,
    exit_code: int = 0,
    reject_fields: tuple[str, ...] = (),
    reject_output: str = "old-driver-rejects-compute-cap.txt",
    sleep_s: float = 0,
) -> FakeSmi:
    """Put an executable ``nvidia-smi`` in ``bin_dir`` printing the named fixture files."""
    config = {
        "stdout_file": str(FIXTURES / stdout) if stdout else None,
        "stderr_file": str(FIXTURES / stderr) if stderr else None,
        "exit_code": exit_code,
        "reject_fields": list(reject_fields),
        "reject_output": str(FIXTURES / reject_output),
        "sleep_s": sleep_s,
    }
    (bin_dir / "config.json").write_text(json.dumps(config))
    script = bin_dir / "nvidia-smi"
    script.write_text(_FAKE_SMI.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return FakeSmi(script)


def smi_arguments(fields: tuple[str, ...] = SMI_QUERY_FIELDS) -> list[str]:
    """The arguments (after the program name) nvidia-smi should be run with."""
    return [f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]
