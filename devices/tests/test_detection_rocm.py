"""Tests for devices.detection.rocm: AMD GPUs, replayed from what real machines printed.

No AMD GPU is at hand. ``fixtures/rocm`` holds real outputs copied from public repositories
(``fixtures/rocm/RECORDING.md`` names each source): ``rocm-smi --json`` runs as a real
executable on PATH printing a recording, KFD topology captures are copied under a temporary
sysfs root, and a stand-in ``amdsmi`` module answers the amd-smi recordings of 8 x MI300X.
"""

from __future__ import annotations

import csv
import json
import shutil
import stat
import sys
import textwrap
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import TYPE_CHECKING, Any

import pynvml
import pytest

from devices.detection import (
    DetectionError,
    DetectionSource,
    GpuVendor,
    detect,
    read_simulated,
    rocm,
)
from devices.tests.detection_support import A5500_UUID, install_smi

if TYPE_CHECKING:
    from devices.tests.conftest import FakeNvml

FIXTURES = Path(__file__).parent / "fixtures" / "rocm"
MIB = 1024**2


def install_rocm_smi(bin_dir: Path, recording: str | None, *, exit_code: int = 0) -> Path:
    """A real ``rocm-smi`` executable printing a recording; its arguments go to a log."""
    script = bin_dir / "rocm-smi"
    source = "" if recording is None else str(FIXTURES / recording)
    script.write_text(
        textwrap.dedent(
            f"""\
            #!{sys.executable}
            import json, sys
            with open({str(bin_dir / "rocm-smi-calls.jsonl")!r}, "a") as log:
                log.write(json.dumps(sys.argv[1:]) + "\\n")
            if {source!r}:
                sys.stdout.write(open({source!r}).read())
            else:
                sys.stdout.write("not json at all")
            sys.exit({exit_code})
            """
        )
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def install_kfd(root: Path, capture: str) -> None:
    """Copy a recorded KFD topology under the sysfs root the ROCm source reads."""
    shutil.copytree(FIXTURES / "kfd-topology" / capture, root / "class/kfd/kfd/topology")


@pytest.fixture
def no_nvidia(fake_nvml: FakeNvml, bin_dir: Path) -> None:
    """No NVIDIA here: NVML's library is missing and nvidia-smi is not on PATH."""
    fake_nvml.init_error = pynvml.NVMLError_LibraryNotFound()


# --- rocm-smi --json, every recorded machine and version ---------------------------------

# (recording, GPUs, GPU 0: uuid, name, total MiB, used MiB, PCI bus, temperature, power W).
# Hand-computed from the recordings: VRAM Total Memory (B) // 2**20.
ROCM_SMI_RECORDINGS = [
    (
        "rocm-smi-rx7800xt-gpustack.json",
        1,
        "GPU-5c88007d760374f3",
        "Navi 32 [Radeon RX 7700 XT / 7800 XT]",
        16368,  # GPUStack's own test expects 16368 MiB total, 11077 used
        11077,
        None,
        45,
        53.0,
    ),
    (
        "rocm-smi-telegraf-mi100_rocm571.json",
        6,
        "GPU-pci-0000-1e-00-0",  # Unique ID N/A and serial 0: named by its PCI address
        "Arcturus GL-XL [Instinct MI100]",
        32752,
        6,
        "0000:1e:00.0",
        31,
        39.0,
    ),
    (
        "rocm-smi-telegraf-mi100_rocm602.json",
        4,
        "GPU-79ccd55167a2124a",
        "Arcturus GL-XL [Instinct MI100]",
        32752,
        6,
        "0000:83:00.0",
        53,
        36.0,
    ),
    (
        "rocm-smi-telegraf-rx6700xt_rocm430.json",
        1,
        "GPU-pci-0000-07-00-0",
        "AMD GPU (SKU 67XA6S)",  # ROCm 4.3 printed the vendor id as the series
        12272,
        1547,
        "0000:07:00.0",
        45,
        6.0,
    ),
    (
        "rocm-smi-telegraf-rx6700xt_rocm571.json",
        1,
        "GPU-pci-0000-07-00-0",
        "Navi 22 [Radeon RX 6700/6700 XT / 6800M]",
        12272,
        1492,
        "0000:07:00.0",
        45,
        6.0,
    ),
    (
        "rocm-smi-telegraf-rx6700xt_rocm602.json",
        1,
        "GPU-pci-0000-07-00-0",
        "Navi 22 [Radeon RX 6700/6700 XT / 6800M]",
        12272,
        1499,
        "0000:07:00.0",
        45,
        None,  # "N/A (Secondary die)"
    ),
    (
        "rocm-smi-telegraf-rx6700xt_rocm612.json",
        1,
        "GPU-pci-0000-07-00-0",
        "Navi 22 [Radeon RX 6700/6700 XT / 6800M]",  # "Device Name", "Card Series" now
        12272,
        1499,
        "0000:07:00.0",
        45,
        6.0,
    ),
    (
        "rocm-smi-telegraf-vega-10-XT.json",
        1,
        "GPU-2150e7d042a1124",  # the recorded hex lacks its leading zero; kept as printed
        "AMD GPU (SKU D05101)",
        16368,
        16,
        "0000:04:00.0",
        39,
        15.0,
    ),
    (
        "rocm-smi-telegraf-vega-20-WKS-GL-XE.json",
        1,
        "GPU-2f048617326b1ea",
        "Radeon Instinct MI50 32GB",
        32752,
        10,
        "0000:63:00.0",
        36,
        26.0,
    ),
]


@pytest.mark.parametrize(
    ("recording", "count", "uuid", "name", "total", "used", "bus", "temperature", "power"),
    ROCM_SMI_RECORDINGS,
    ids=[row[0] for row in ROCM_SMI_RECORDINGS],
)
def test_every_recorded_rocm_smi_output_is_read(
    no_nvidia: None,
    bin_dir: Path,
    recording: str,
    count: int,
    uuid: str,
    name: str,
    total: int,
    used: int,
    bus: str | None,
    temperature: int,
    power: float | None,
) -> None:
    install_rocm_smi(bin_dir, recording)

    found = detect(with_processes=True)

    assert found.source is DetectionSource.ROCM_SMI
    assert len(found.gpus) == count
    gpu = found.gpus[0]
    assert (gpu.index, gpu.uuid, gpu.name) == (0, uuid, name)
    assert (gpu.vram_total_mb, gpu.vram_used_mb) == (total, used)
    assert (gpu.pci_bus, gpu.temperature_c, gpu.power_w) == (bus, temperature, power)
    assert gpu.vendor is GpuVendor.AMD
    assert gpu.container_device == "amd.com/gpu=0"
    assert [g.index for g in found.gpus] == list(range(count))
    assert len({g.uuid for g in found.gpus}) == count
    assert not any(g.integrated for g in found.gpus)


def test_rocm_smi_is_asked_for_json_with_pids_only_when_processes_are_wanted(
    no_nvidia: None, bin_dir: Path
) -> None:
    install_rocm_smi(bin_dir, "rocm-smi-telegraf-mi100_rocm602.json")

    detect(with_processes=False)
    detect(with_processes=True)

    calls = [
        json.loads(line) for line in (bin_dir / "rocm-smi-calls.jsonl").read_text().splitlines()
    ]
    assert calls[0] == [*rocm.ROCM_SMI_ARGUMENTS, "--json"]
    assert calls[1] == [*rocm.ROCM_SMI_ARGUMENTS, "--showpids", "--json"]


def test_rocm_smi_pids_of_several_gpus_are_not_measured_never_guessed(
    no_nvidia: None, bin_dir: Path
) -> None:
    # The 6 x MI100 recording lists one process ("PID104225": "mlir-cpu-runner, 0, 0, 0, 0")
    # without saying which GPU it is on.
    install_rocm_smi(bin_dir, "rocm-smi-telegraf-mi100_rocm571.json")

    found = detect(with_processes=True)

    assert found.processes is None
    assert "does not say which AMD GPU" in found.process_note


def test_rocm_smi_pids_on_a_one_gpu_host_are_that_gpus() -> None:
    # The recorded MI100 process line, on the recorded one-GPU RX 6700 XT document (the two
    # recordings are joined here: no one-GPU recording lists a process).
    document = json.loads((FIXTURES / "rocm-smi-telegraf-rx6700xt_rocm612.json").read_text())
    document["system"]["PID104225"] = "mlir-cpu-runner, 1, 2147483648, 0, 0"
    readings = rocm.parse_rocm_smi(document)

    processes, note = rocm.rocm_smi_processes(document, readings)

    assert note == ""
    assert processes is not None
    assert [(p.pid, p.gpu_uuid, p.used_mb) for p in processes] == [
        (104225, "GPU-pci-0000-07-00-0", 2048)
    ]


def test_rocm_smi_garbage_is_an_error_that_names_it(no_nvidia: None, bin_dir: Path) -> None:
    install_rocm_smi(bin_dir, None)

    with pytest.raises(DetectionError, match="rocm-smi printed something that is not JSON"):
        detect()


# --- the kernel's sysfs: KFD topology captures -------------------------------------------


def test_kfd_vega10_capture(no_nvidia: None, bin_dir: Path, no_amd_sysfs: Path) -> None:
    install_kfd(no_amd_sysfs, "vega10-k8s-device-plugin")

    found = detect(with_processes=True)

    assert found.source is DetectionSource.KFD_SYSFS
    (gpu,) = found.gpus
    # unique_id 14073402507705256556, location_id 6400 (bus 0x19), render minor 128.
    assert gpu.uuid == "GPU-c34ec50444dd0a6c"
    assert gpu.pci_bus == "0000:19:00.0"
    assert gpu.render_node == "/dev/dri/renderD128"
    assert gpu.vram_total_mb == 16368  # local_mem_size 17163091968 B
    assert gpu.vram_used_mb is None  # no DRM file: not measured, never KFD's partial count
    assert found.processes is None
    assert "per-process memory is not measured" in found.process_note


def test_kfd_mi308x_cpx_partitions_are_gpus_under_their_card(
    no_nvidia: None, bin_dir: Path, no_amd_sysfs: Path
) -> None:
    # The capture keeps GPU 0's four CPX partitions (nodes 2-5), one partition of GPU 1
    # (node 6) and one GPU of PCI domain 1 (node 18).
    install_kfd(no_amd_sysfs, "mi308x-cpx-k8s-device-plugin")

    gpus = detect().gpus

    assert [g.pci_bus for g in gpus] == [
        "0000:0a:00.0",
        "0000:0a:00.1",
        "0000:0a:00.2",
        "0000:0a:00.3",
        "0000:80:00.0",
        "0001:0b:00.0",
    ]
    assert [g.render_node for g in gpus] == [
        f"/dev/dri/renderD{minor}" for minor in (128, 129, 130, 131, 136, 160)
    ]
    assert [g.container_device for g in gpus] == [f"amd.com/gpu={i}" for i in range(6)]
    # The partitions share the card's unique id; each gets its own UUID.
    assert [g.uuid for g in gpus[:4]] == [f"GPU-84cafeae17e7696-{p}" for p in range(4)]
    assert gpus[0].name == "AMD GPU gfx942 (device 0x74a2), partition 1 of 4"
    assert gpus[0].vram_total_mb == 49152  # mem_banks/0 size_in_bytes 51539607552
    assert gpus[0].compute_capability == "gfx942"


def test_kfd_mi300x_cpx_capture(no_nvidia: None, bin_dir: Path, no_amd_sysfs: Path) -> None:
    install_kfd(no_amd_sysfs, "mi300x-cpx-k8s-device-plugin")

    gpus = detect().gpus

    # Nodes 2, 3, 9 are partitions .0, .1, .7 of the card at 05:00; node 10 the next card.
    assert [(g.pci_bus, g.render_node) for g in gpus] == [
        ("0000:05:00.0", "/dev/dri/renderD128"),
        ("0000:05:00.1", "/dev/dri/renderD129"),
        ("0000:05:00.7", "/dev/dri/renderD135"),
        ("0000:27:00.0", "/dev/dri/renderD136"),
    ]
    # local_mem_size is 0 on MI300-class and the capture has no memory banks: not measured.
    assert {g.vram_total_mb for g in gpus} == {None}


def test_kfd_order_is_not_the_index_order(
    no_nvidia: None, bin_dir: Path, no_amd_sysfs: Path
) -> None:
    # 8 x MI210: KFD nodes 2, 3, 4 sit on buses 0x63, 0x43, 0x03. amd-ctk (and rocm-smi)
    # number cards in PCI bus order, so node 4 is amd.com/gpu=0, with render node 130.
    install_kfd(no_amd_sysfs, "mi210-k8s-device-plugin")

    gpus = detect().gpus

    assert [(g.index, g.pci_bus, g.render_node) for g in gpus] == [
        (0, "0000:03:00.0", "/dev/dri/renderD130"),
        (1, "0000:43:00.0", "/dev/dri/renderD129"),
        (2, "0000:63:00.0", "/dev/dri/renderD128"),
    ]


def test_drm_memory_files_give_total_used_and_load(
    no_nvidia: None, bin_dir: Path, no_amd_sysfs: Path
) -> None:
    # Hand-written (no real capture of these files was found): the DRM files of the Vega
    # 10's PCI device, which the kernel's amdgpu driver provides in bytes and percent.
    install_kfd(no_amd_sysfs, "vega10-k8s-device-plugin")
    device = no_amd_sysfs / "bus/pci/devices/0000:19:00.0"
    device.mkdir(parents=True)
    (device / "mem_info_vram_total").write_text("17163091968\n")
    (device / "mem_info_vram_used").write_text(f"{3000 * MIB}\n")
    (device / "gpu_busy_percent").write_text("37\n")

    (gpu,) = detect().gpus

    assert (gpu.vram_total_mb, gpu.vram_used_mb, gpu.utilization_percent) == (16368, 3000, 37)
    assert gpu.vram_free_mb == 13368


def test_an_apu_carve_out_is_listed_and_marked_integrated(
    no_nvidia: None, bin_dir: Path, no_amd_sysfs: Path
) -> None:
    # The Vega 10 capture turned into an APU node (CPU cores and SIMDs on one node) whose
    # VRAM is a 512 MiB BIOS carve-out, as gpustack#4848 reports for Strix Halo.
    install_kfd(no_amd_sysfs, "vega10-k8s-device-plugin")
    properties = no_amd_sysfs / "class/kfd/kfd/topology/nodes/1/properties"
    text = properties.read_text()
    text = text.replace("cpu_cores_count 0", "cpu_cores_count 16")
    text = text.replace("local_mem_size 17163091968", f"local_mem_size {512 * MIB}")
    properties.write_text(text)

    (gpu,) = detect().gpus

    assert gpu.integrated
    assert gpu.vram_total_mb == 512


def test_render_nodes_come_from_sysfs_by_pci_address(
    no_nvidia: None, bin_dir: Path, no_amd_sysfs: Path, tmp_path: Path
) -> None:
    # gpustack-runtime's capture of 2 x RX 7800 XT: index 0 is 04:00.0 = card1 + renderD128,
    # index 1 is 07:00.0 = card0 + renderD129. The rocm-smi document is the recorded RX 7800
    # XT one, given both cards' PCI addresses (that recording lacks --showbus).
    expected = json.loads(
        (FIXTURES / "gpustack-runtime-detect_output_amd_rx7800xt.json").read_text()
    )
    card = json.loads((FIXTURES / "rocm-smi-rx7800xt-gpustack.json").read_text())["card0"]
    document: dict[str, Any] = {}
    for gpu in expected:
        bdf = gpu["appendix"]["bdf"]
        document[f"card{gpu['index']}"] = {
            **card,
            "PCI Bus": bdf.upper(),
            "Unique ID": "0x" + gpu["uuid"].removeprefix("GPU-"),
        }
        drm = no_amd_sysfs / "bus/pci/devices" / bdf / "drm"
        (drm / f"card{gpu['appendix']['card_id']}").mkdir(parents=True)
        (drm / f"renderD{gpu['appendix']['renderd_id']}").mkdir()
    recording = tmp_path / "two-rx7800xt.json"
    recording.write_text(json.dumps(document))
    install_rocm_smi(bin_dir, str(recording))

    gpus = detect().gpus

    assert [(g.uuid, g.pci_bus, g.render_node) for g in gpus] == [
        (gpu["uuid"], gpu["appendix"]["bdf"], f"/dev/dri/renderD{gpu['appendix']['renderd_id']}")
        for gpu in expected
    ]


# --- amdsmi: a stand-in module answering the MI300X recordings -----------------------------


def _mi300x_recording() -> list[dict[str, Any]]:
    """GPUs 0-2 of the 8 x MI300X blog: BDF (amd-smi list), VRAM (static --json), and the
    process (process --csv). The blog does not print asic serials: those are made up."""
    listed = (FIXTURES / "amd-smi-list-mi300x-rocm-blogs.txt").read_text()
    bdfs = [line.split("BDF:")[1].strip() for line in listed.splitlines() if "BDF:" in line]
    vram = json.loads(
        (FIXTURES / "amd-smi-static-json-vram-fragment-mi300x-rocm-blogs.txt")
        .read_text()
        .split("\n", 1)[1]
    )
    rows = list(
        csv.DictReader(
            (FIXTURES / "amd-smi-process-csv-mi300x-rocm-blogs.txt").read_text().splitlines()[1:]
        )
    )
    return [
        {
            "bdf": bdf,
            "serial": f"0x{0xA1B2C3D4E5F60000 + position:X}",
            "vram_total": vram["size"]["value"],
            "process": next(row for row in rows if int(row["gpu"]) == position),
        }
        for position, bdf in enumerate(bdfs)
    ]


def stand_in_amdsmi(gpus: list[dict[str, Any]]) -> ModuleType:
    """``amdsmi``'s functions at their boundary, answering as the 7.0.2 wheel's do."""
    module = ModuleType("amdsmi")
    handles = [SimpleNamespace(position=i) for i in range(len(gpus))]

    def gpu(handle: SimpleNamespace) -> dict[str, Any]:
        return gpus[handle.position]

    def unsupported(*_args: object) -> object:
        raise RuntimeError("AMDSMI_STATUS_NOT_SUPPORTED")

    module.__dict__.update(
        amdsmi_init=lambda *flags: None,
        amdsmi_shut_down=lambda: None,
        amdsmi_get_processor_handles=lambda: handles,
        amdsmi_get_gpu_device_bdf=lambda h: gpu(h)["bdf"],
        amdsmi_get_gpu_asic_info=lambda h: {
            "market_name": "AMD Instinct MI300X",
            "asic_serial": gpu(h)["serial"],
            "target_graphics_version": "gfx942",
        },
        amdsmi_get_gpu_vram_usage=lambda h: {"vram_total": gpu(h)["vram_total"], "vram_used": 0},
        amdsmi_get_gpu_activity=lambda h: {"gfx_activity": 0},
        amdsmi_get_power_info=lambda h: {"average_socket_power": 140},
        amdsmi_get_temp_metric=unsupported,
        AmdSmiTemperatureType=SimpleNamespace(EDGE=0),
        AmdSmiTemperatureMetric=SimpleNamespace(CURRENT=0),
        amdsmi_get_gpu_process_list=lambda h: [
            {
                "name": gpu(h)["process"]["name"],
                "pid": int(gpu(h)["process"]["pid"]),
                "memory_usage": {"vram_mem": int(gpu(h)["process"]["vram_mem"])},
            }
        ],
    )
    return module


def test_amdsmi_answers_first_with_processes_per_gpu(
    no_nvidia: None, bin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "amdsmi", stand_in_amdsmi(_mi300x_recording()))
    install_rocm_smi(bin_dir, "rocm-smi-telegraf-mi100_rocm602.json")

    found = detect(with_processes=True)

    assert found.source is DetectionSource.ROCM_AMDSMI
    assert [(g.index, g.pci_bus, g.vram_total_mb) for g in found.gpus] == [
        (0, "0000:05:00.0", 196592),
        (1, "0000:26:00.0", 196592),
        (2, "0000:46:00.0", 196592),
    ]
    assert found.gpus[0].uuid == "GPU-a1b2c3d4e5f60000"
    assert found.gpus[0].temperature_c is None  # not supported: None, never a made-up zero
    assert found.gpus[0].power_w == 140.0
    assert found.processes is not None
    # process --csv: vram_mem 7889485824, 7923122176, 7889575936 bytes.
    assert [(p.pid, p.gpu_uuid, p.used_mb) for p in found.processes] == [
        (207590, found.gpus[0].uuid, 7524),
        (207591, found.gpus[1].uuid, 7556),
        (207589, found.gpus[2].uuid, 7524),
    ]


def test_amdsmi_without_rocm_falls_back_silently(
    no_nvidia: None,
    bin_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # What the PyPI wheel does without libamd_smi.so (checked): print, then KeyError.
    package = tmp_path / "site"
    package.mkdir()
    (package / "amdsmi.py").write_text(
        'print("Unable to find libamd_smi.so")\nraise KeyError("libamd_smi.so")\n'
    )
    monkeypatch.syspath_prepend(str(package))
    monkeypatch.delitem(sys.modules, "amdsmi", raising=False)
    install_rocm_smi(bin_dir, "rocm-smi-rx7800xt-gpustack.json")

    found = detect()

    assert found.source is DetectionSource.ROCM_SMI
    assert capsys.readouterr().out == ""


# --- NVIDIA and AMD on one host --------------------------------------------------------


def test_nvidia_and_amd_gpus_are_listed_together(fake_nvml: FakeNvml, bin_dir: Path) -> None:
    fake_nvml.add_reference_box()
    install_rocm_smi(bin_dir, "rocm-smi-rx7800xt-gpustack.json")

    found = detect()

    assert [(g.index, g.vendor, g.container_device) for g in found.gpus] == [
        (0, GpuVendor.NVIDIA, "nvidia.com/gpu=0"),
        (1, GpuVendor.NVIDIA, "nvidia.com/gpu=1"),
        (2, GpuVendor.AMD, "amd.com/gpu=0"),
    ]
    assert found.gpus[2].as_api_dict()["device_index"] == 0
    assert found.message == "Read through nvml and rocm-smi."


def test_a_broken_amd_source_never_hides_the_nvidia_gpus(
    fake_nvml: FakeNvml, bin_dir: Path
) -> None:
    # GPUStack #3389: an AMD integrated GPU's error hid an RTX 3080.
    fake_nvml.add_reference_box()
    install_rocm_smi(bin_dir, None)

    found = detect()

    assert found.source is DetectionSource.NVML
    assert found.gpus[0].uuid == A5500_UUID
    assert len(found.gpus) == 2
    assert found.failed_vendors == (GpuVendor.AMD,)
    assert "rocm-smi printed something that is not JSON" in found.message


def test_a_broken_nvidia_source_keeps_the_last_good_inventory(
    fake_nvml: FakeNvml, bin_dir: Path
) -> None:
    # Every AMD index follows the NVIDIA GPUs: without them the AMD indexes are unknown, so
    # the scan fails and the caller keeps what it had (AMD GPUs included).
    fake_nvml.add_reference_box()[1].errors["nvmlDeviceGetUUID"] = pynvml.NVMLError_GpuIsLost()
    install_smi(bin_dir, "a5500-a400.csv")
    install_rocm_smi(bin_dir, "rocm-smi-rx7800xt-gpustack.json")

    with pytest.raises(DetectionError, match="GPU is lost"):
        detect()


def test_a_simulated_inventory_declares_its_vendor(tmp_path: Path) -> None:
    path = tmp_path / "mixed.json"
    path.write_text(
        json.dumps(
            {
                "gpus": [
                    {
                        "index": 0,
                        "name": "NVIDIA RTX A5500",
                        "vram_total_mb": 24564,
                        "vram_used_mb": 0,
                        "compute_capability": "8.6",
                    },
                    {
                        "index": 1,
                        "vendor": "amd",
                        "device_index": 0,
                        "name": "AMD Radeon RX 7800 XT",
                        "vram_total_mb": 16368,
                        "vram_used_mb": 0,
                        "compute_capability": "gfx1101",
                        "render_node": "/dev/dri/renderD128",
                    },
                ]
            }
        )
    )

    nvidia, amd = read_simulated(path)

    assert (nvidia.vendor, nvidia.container_device) == (GpuVendor.NVIDIA, "nvidia.com/gpu=0")
    assert (amd.vendor, amd.container_device) == (GpuVendor.AMD, "amd.com/gpu=0")
    assert amd.render_node == "/dev/dri/renderD128"


def test_a_simulated_vendor_must_be_known(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            {
                "gpus": [
                    {
                        "index": 0,
                        "vendor": "intel",
                        "name": "Arc",
                        "vram_total_mb": 8192,
                        "vram_used_mb": 0,
                        "compute_capability": None,
                    }
                ]
            }
        )
    )

    with pytest.raises(DetectionError, match=r'gpus\[0\]\.vendor: must be "nvidia" or "amd"'):
        read_simulated(path)
