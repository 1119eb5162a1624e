"""The compose file is the registry: labels in, services out, clear errors for bad labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devices.services import gpu_inventory_rescan
from gpuconfig.registry import RegistryError, load_registry, parse_registry

ROOT = Path(__file__).resolve().parents[2]
F = Path("/srv/compose.yml")


def _compose(labels: str, name: str = "svc") -> str:
    return f"services:\n  {name}:\n    image: x\n    labels:\n{labels}"


def test_the_projects_compose_file_declares_the_designs_five_services():
    registry = load_registry(ROOT / "docker-compose.prod.yml")
    table = {
        s.name: (s.model, s.vram_estimate_mb, s.role, s.budget_env, s.vram_min_mb)
        for s in registry.services
    }
    assert table == {
        "ai-llm": ("Nemotron-3-Nano-30B (Q4_K_M)", 21700, "llm", None, None),
        "ai-yolo26": ("YOLO26", 650, "critical", None, None),
        "ai-florence": ("Florence-2-Large", 1500, "standard", None, None),
        "ai-clip": ("CLIP ViT-L", 1200, "standard", None, None),
        "ai-enrichment": ("Model Zoo (9 models)", 6800, "standard", "VRAM_BUDGET_GB", 2000),
    }


def test_services_without_gpuconfig_labels_are_not_managed():
    text = (
        "services:\n"
        "  db:\n    image: postgres\n    labels: {team: data}\n"
        "  ai-x:\n    image: x\n    labels: {gpuconfig.vram_estimate_mb: '900'}\n"
    )
    registry = parse_registry(F, text)
    assert registry.names() == ["ai-x"]
    assert registry.get("ai-x").model == "ai-x", "the model name defaults to the service name"


def test_list_form_labels_are_read():
    text = _compose("      - gpuconfig.vram_estimate_mb=1200\n      - gpuconfig.role=critical\n")
    (service,) = parse_registry(F, text).services
    assert (service.vram_estimate_mb, service.role) == (1200, "critical")


def test_a_budget_taking_service_may_declare_its_minimum():
    text = _compose(
        "      gpuconfig.vram_estimate_mb: '6800'\n      gpuconfig.budget_env: VRAM_BUDGET_GB\n"
        "      gpuconfig.vram_min_mb: ' 2000 '\n"
    )
    (service,) = parse_registry(F, text).services
    assert (service.vram_estimate_mb, service.vram_min_mb) == (6800, 2000)


def test_forty_services_just_work():
    body = "".join(
        f"  svc-{i}:\n    image: x\n    labels: {{gpuconfig.vram_estimate_mb: '{100 + i}'}}\n"
        for i in range(40)
    )
    registry = parse_registry(F, "services:\n" + body)
    assert len(registry.services) == 40
    assert registry.get("svc-39").vram_estimate_mb == 139


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("      gpuconfig.role: llm\n", "label gpuconfig.vram_estimate_mb: missing"),
        ("      gpuconfig.vram_estimate_mb: lots\n", "'lots' is not a whole number of MiB"),
        ("      gpuconfig.vram_estimate_mb: '-5'\n", "-5 is out of range"),
        ("      gpuconfig.vram_estimate_mb: '9999999999'\n", "out of range"),
        (
            "      gpuconfig.vram_estimate_mb: '10'\n      gpuconfig.role: boss\n",
            "label gpuconfig.role: 'boss' is not one of llm, critical, standard",
        ),
        (
            "      gpuconfig.vram_estimate_mb: '10'\n      gpuconfig.budget_env: 'VRAM BUDGET'\n",
            "label gpuconfig.budget_env: 'VRAM BUDGET' is not a valid environment variable",
        ),
        (
            "      gpuconfig.vram_estimate_mb: '3000'\n      gpuconfig.vram_min_mb: '1000'\n",
            "label gpuconfig.vram_min_mb: only a service that takes a budget "
            "(gpuconfig.budget_env) can have a minimum",
        ),
        (
            "      gpuconfig.vram_estimate_mb: '3000'\n      gpuconfig.budget_env: B\n"
            "      gpuconfig.vram_min_mb: some\n",
            "label gpuconfig.vram_min_mb: 'some' is not a whole number of MiB",
        ),
        (
            "      gpuconfig.vram_estimate_mb: '3000'\n      gpuconfig.budget_env: B\n"
            "      gpuconfig.vram_min_mb: '0'\n",
            "label gpuconfig.vram_min_mb: 0 is out of range (1 MiB to the estimate, 3000 MiB)",
        ),
        (
            "      gpuconfig.vram_estimate_mb: '3000'\n      gpuconfig.budget_env: B\n"
            "      gpuconfig.vram_min_mb: '3001'\n",
            "label gpuconfig.vram_min_mb: 3001 is out of range (1 MiB to the estimate, 3000 MiB)",
        ),
        (
            "      gpuconfig.vram_estimte_mb: '10'\n",
            "label gpuconfig.vram_estimte_mb: unknown label",
        ),
    ],
)
def test_bad_labels_name_the_file_service_and_label(labels, message):
    with pytest.raises(RegistryError) as excinfo:
        parse_registry(F, _compose(labels, name="ai-bad"))
    text = str(excinfo.value)
    assert str(F) in text
    assert "service 'ai-bad'" in text
    assert message in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("services: [a, b", "not valid YAML"),
        ("version: '3'\n", "expected a compose file with a 'services' mapping"),
        ("services:\n  a: 5\n", "service 'a': expected a mapping"),
        ("services:\n  a:\n    labels: 7\n", "'labels' must be a mapping"),
    ],
)
def test_unusable_compose_files_are_refused_clearly(text, message):
    with pytest.raises(RegistryError, match=message):
        parse_registry(F, text)


def test_a_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.yml"
    with pytest.raises(RegistryError, match=f"{missing}: cannot read the compose file"):
        load_registry(missing)


def test_the_registry_is_reread_when_the_file_changes(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text(_compose("      gpuconfig.vram_estimate_mb: '100'\n"))
    assert load_registry(path).services[0].vram_estimate_mb == 100
    path.write_text(_compose("      gpuconfig.vram_estimate_mb: '2500'\n"))
    assert load_registry(path).services[0].vram_estimate_mb == 2500


# --- hostile and careless compose files (issue 12) ---------------------------------------------

BASE = """services:
  ai-llm:
    image: localhost/llm:latest
    labels:
      gpuconfig.vram_estimate_mb: "1000"
"""


def test_a_service_name_with_a_trailing_newline_is_refused():
    text = 'services:\n  "ai-llm\\n":\n    labels:\n      gpuconfig.vram_estimate_mb: "1000"\n'
    with pytest.raises(RegistryError, match="names of managed services must be"):
        parse_registry(Path("compose.yml"), text)


def _laughs(depth: int) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, depth + 1):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "x-laughs:\n" + "\n".join("  " + line for line in lines) + "\n" + BASE


def test_a_billion_laughs_compose_file_is_refused_quickly_with_a_short_message():
    text = _laughs(8)  # 9**9 = 387 million values once expanded, from ~600 bytes
    assert len(text) < 700

    with pytest.raises(RegistryError) as caught:
        parse_registry(Path("compose.yml"), text)

    message = str(caught.value)
    assert "more than 100,000 values once its YAML aliases are expanded" in message
    assert len(message) < 300


def test_a_few_honest_aliases_still_parse():
    text = "x-common: &common\n  restart: always\n" + BASE.replace(
        "    image:", "    <<: *common\n    image:"
    )
    assert parse_registry(Path("compose.yml"), text).names() == ["ai-llm"]


def test_a_huge_label_value_is_quoted_briefly_in_the_error():
    text = BASE + f'      gpuconfig.role: "{"x" * 50_000}"\n'
    with pytest.raises(RegistryError) as caught:
        parse_registry(Path("compose.yml"), text)
    assert len(str(caught.value)) < 300
    assert "is not one of llm, critical, standard" in str(caught.value)


def test_a_failed_parse_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    compose = tmp_path / "compose.yml"
    compose.write_text("services: [")
    calls = []
    real = parse_registry

    def counting(path: Path, text: str) -> Any:
        calls.append(path)
        return real(path, text)

    monkeypatch.setattr("gpuconfig.registry.parse_registry", counting)
    for _ in range(5):
        with pytest.raises(RegistryError, match="not valid YAML"):
            load_registry(compose)
    assert len(calls) == 1

    compose.write_text(BASE)
    assert load_registry(compose).names() == ["ai-llm"]
    assert len(calls) == 2


@pytest.mark.django_db
def test_the_api_answers_a_billion_laughs_compose_file_with_a_short_503(staff_api, settings):
    gpu_inventory_rescan()
    Path(settings.GPUCONFIG_COMPOSE_FILE).write_text(_laughs(8))

    response = staff_api.get("/api/system/gpu-config")

    assert response.status_code == 503
    assert len(response.content) < 1000
    assert "aliases are expanded" in response.json()["error"]
