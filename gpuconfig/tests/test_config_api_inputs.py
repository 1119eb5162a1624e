"""Hostile and careless input to the configuration API (issue 12): each is a clear 4xx that
changes nothing.

Each test sends what a client could really send and checks the answer a user sees, the
database and config/gpu-assignments.yml. The same input on the Settings page:
pages/tests/test_settings_page_inputs.py; in the compose file: test_registry.py; in the
admin: test_admin.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from devices.services import gpu_inventory_rescan
from gpuconfig.models import ConfigVersion, GpuConfiguration

pytestmark = pytest.mark.django_db

URL = "/api/system/gpu-config"
PREVIEW = "/api/system/gpu-config/preview"
VERSIONS = "/api/system/gpu-config/versions"
GOOD = {"strategy": "vram_based", "assignments": [{"service": "ai-llm", "gpu_index": 0}]}


@pytest.fixture(autouse=True)
def _inventory(db: Any) -> None:
    gpu_inventory_rescan()


def _assignments_file() -> Path:
    return Path(django_settings.GPUCONFIG_OUTPUT_DIR) / "gpu-assignments.yml"


def _nothing_saved() -> bool:
    return (
        not ConfigVersion.objects.exists()
        and not GpuConfiguration.objects.exists()
        and not _assignments_file().exists()
    )


def _raw(client: APIClient, method: str, url: str, body: str | bytes, **extra: Any) -> Any:
    return getattr(client, method)(
        url, data=body, content_type=extra.pop("content_type", "application/json"), **extra
    )


# --- the JSON parser ------------------------------------------------------------------------


def test_json_nested_ten_thousand_deep_is_a_400_not_a_recursion_error(member_api):
    body = "[" * 10_000 + "]" * 10_000  # 20 KB, under the size limit

    response = _raw(member_api, "post", PREVIEW, body)

    assert response.status_code == 400
    assert response.json()["error"] == (
        "JSON parse error: nested 10000 levels deep; at most 32 allowed."
    )


def test_brackets_inside_strings_do_not_count_as_depth(staff_api):
    body = (
        json.dumps({**GOOD, "strategy": "manual"})[:-1]
        + ', "x": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}'
    )
    response = _raw(staff_api, "put", URL, body)
    # Refused for the unknown field, not for depth: the parser saw through the string.
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "x": ["Unknown field; expected one of: strategy, assignments, version, from_scratch."]
    }


@pytest.mark.parametrize(
    "body",
    [
        '{"strategy": "\\udfff"}',
        '{"\\udfff": 1, "strategy": "manual"}',
        '{"strategy": "manual", "assignments": [{"service": "ai-\\ud800llm"}]}',
    ],
)
def test_a_lone_surrogate_is_a_400_whose_message_does_not_echo_it(staff_api, body):
    response = _raw(staff_api, "put", URL, body)

    assert response.status_code == 400
    message = response.json()["error"]
    assert "lone surrogate" in message
    assert "\\udfff" not in message.replace("\\udfff escape", "")
    message.encode("utf-8")  # the answer is text
    assert _nothing_saved()


def test_duplicate_keys_are_refused_not_resolved_last_wins(staff_api):
    response = _raw(staff_api, "put", URL, '{"strategy": "bogus", "strategy": "manual"}')

    assert response.status_code == 400
    assert response.json()["error"] == (
        "JSON parse error: the key 'strategy' appears twice in one object."
    )
    assert _nothing_saved()


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json_numbers(staff_api, constant):
    body = (
        '{"strategy": "manual", "assignments": [{"service": "ai-enrichment", '
        f'"vram_budget_override": {constant}}}]}}'
    )
    response = _raw(staff_api, "put", URL, body)
    assert response.status_code == 400
    assert response.json()["error"] == f"JSON parse error: {constant} is not a JSON number."


def test_a_body_that_is_not_utf8_is_a_400(staff_api):
    response = _raw(staff_api, "put", URL, b'{"strategy": "man\xffual"}')
    assert response.status_code == 400
    assert response.json()["error"] == "JSON parse error: the body is not UTF-8 (byte 17)."


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=BoUnDaRy"],
)
@pytest.mark.parametrize(("method", "url"), [("put", URL), ("post", PREVIEW)])
def test_form_encoded_and_multipart_bodies_are_415(staff_api, content_type, method, url):
    if content_type.startswith("multipart"):
        body = (
            '--BoUnDaRy\r\nContent-Disposition: form-data; name="strategy"\r\n\r\nmanual\r\n'
            "--BoUnDaRy--\r\n"
        )
    else:
        body = "strategy=manual&assignments=ai-llm"

    response = _raw(staff_api, method, url, body, content_type=content_type)

    assert response.status_code == 415
    assert response.json()["error"].startswith(f'Unsupported media type "{content_type}"')
    assert _nothing_saved()


# --- strict types -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("assignment", "field", "message"),
    [
        (
            {"service": "ai-enrichment", "vram_budget_override": True},
            "vram_budget_override",
            "Must be a number (not a boolean).",
        ),
        (
            {"service": "ai-enrichment", "vram_budget_override": "3.5"},
            "vram_budget_override",
            "Must be a number (not a string).",
        ),
        (
            {"service": "ai-llm", "gpu_index": "1"},
            "gpu_index",
            "Must be a whole number (a JSON integer, not a string).",
        ),
        (
            {"service": "ai-llm", "gpu_index": 1.0},
            "gpu_index",
            "Must be a whole number (a JSON integer, not a decimal number).",
        ),
        (
            {"service": "ai-llm", "gpu_index": True},
            "gpu_index",
            "Must be a whole number (a JSON integer, not a boolean).",
        ),
        (
            {"service": "ai-llm", "enabled": "yes"},
            "enabled",
            "Must be true or false (not a string).",
        ),
        ({"service": "ai-llm", "enabled": 1}, "enabled", "Must be true or false (not a number)."),
        ({"service": 5}, "service", "Must be a string (not a number)."),
        ({"service": ""}, "service", "This field may not be blank."),
    ],
)
def test_wrong_json_types_are_refused_not_coerced(staff_api, assignment, field, message):
    body = {"strategy": "manual", "assignments": [assignment]}

    response = _raw(staff_api, "put", URL, json.dumps(body))

    assert response.status_code == 400, response.json()
    assert response.json()["errors"] == {"assignments": {"0": {field: [message]}}}
    assert _nothing_saved()


def test_a_budget_too_large_for_a_float_is_a_400(staff_api):
    body = (
        '{"strategy": "manual", "assignments": '
        '[{"service": "ai-enrichment", "vram_budget_override": 1' + "0" * 400 + "}]}"
    )
    response = _raw(staff_api, "put", URL, body)
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "assignments": {
            "0": {"vram_budget_override": ["Ensure this value is less than or equal to 2000.0."]}
        }
    }


@pytest.mark.parametrize("version", [1, 5, 2**31 - 1])
def test_a_version_nobody_saved_is_a_400_not_a_conflict(staff_api, version):
    response = _raw(staff_api, "put", URL, json.dumps({**GOOD, "version": version}))

    assert response.status_code == 400
    assert response.json()["errors"] == {
        "version": [
            f"There is no version {version}; the newest is 0. Send the version you read from GET."
        ]
    }
    assert _nothing_saved()


@pytest.mark.parametrize("version", [2**63, 2**31, -1, "3", 3.0])
def test_a_version_out_of_range_or_of_the_wrong_type_is_a_400(staff_api, version):
    response = _raw(staff_api, "put", URL, json.dumps({**GOOD, "version": version}))
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["version"]
    assert _nothing_saved()


def test_the_version_just_read_still_saves(staff_api):
    assert _raw(staff_api, "put", URL, json.dumps(GOOD)).status_code == 200
    changed = {**GOOD, "strategy": "balanced", "version": 1}
    response = _raw(staff_api, "put", URL, json.dumps(changed))
    assert response.status_code == 200
    assert response.json()["version"] == 2


# --- digits that str.isdigit() accepts and int() refuses -------------------------------------


@pytest.mark.parametrize(
    "query", ["from=²&to=1", "from=1&to=²", "from=\u0661&to=1", "from=&to=1", "to=²"]
)
def test_versions_refuse_anything_but_ascii_digits(member_api, query):
    response = member_api.get(f"{VERSIONS}?{query}")
    assert response.status_code == 400
    assert "A version number (digits 0-9) is required." in json.dumps(response.json())


def test_a_lone_to_compares_with_the_version_before_and_a_lone_from_with_the_newest(staff_api):
    for strategy in ("vram_based", "isolation_first", "balanced"):
        assert _raw(staff_api, "put", URL, json.dumps({"strategy": strategy})).status_code == 200

    def changed(query: str) -> set[str]:
        response = staff_api.get(f"{VERSIONS}?{query}")
        assert response.status_code == 200, response.json()
        return {c["service"] for c in response.json()["changes"]}

    assert changed("to=2") == changed("from=1&to=2")
    assert changed("from=2") == changed("from=2&to=3")
    assert changed("from=1") == changed("from=1&to=3")
    first = staff_api.get(f"{VERSIONS}?to=1")
    assert first.status_code == 400
    assert first.json()["errors"] == {"to": ["No version before 1."]}
