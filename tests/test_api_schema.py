"""The API against its own OpenAPI schema (issue 12): schemathesis generates requests from
/api/schema, valid and invalid, for a staff user and for a viewer, and checks every answer.

No answer may be a 5xx; each status, content type and body must be one the schema documents;
and the stored configuration is still a valid one afterwards (rows, newest version and
config/gpu-assignments.yml agree). Examples per operation are bounded so this stays well
under a minute; the counts are printed (run with -s to see them).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from ruamel.yaml import YAML
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from devices.services import gpu_inventory_rescan
from gpuconfig.domain import Configuration
from gpuconfig.models import ConfigVersion, GpuConfiguration
from orchestration import services as orchestration_services

pytestmark = pytest.mark.django_db(transaction=False)

EXAMPLES_PER_OPERATION = 12  # per generation mode and user: about 500 requests in all
# Not schemathesis' not_a_server_error: apply and rollback document a 503 for "podman cannot
# be used" (true here), and that is an answer, not a crash. Every other 5xx fails (_fuzz).
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

# Operations whose answers the schema cannot describe (none today): they get the same
# generated requests and must never answer 5xx, and the run prints their names.
CHECKED_FOR_SERVER_ERRORS_ONLY: set[str] = set()


@pytest.fixture(autouse=True)
def _setup(db: Any, settings: Any) -> Iterator[None]:
    gpu_inventory_rescan()
    orchestration_services.forget_probe()
    settings.GPUCONFIG_API_RATE_USER = ""  # this test is the burst throttling exists for
    # No podman here: apply and rollback answer 503 with the reason, fast.
    settings.GPUCONFIG_COMPOSE_COMMAND = ["/nonexistent/podman-compose"]
    yield
    # _in_this_transaction disconnected these; Django's test client expects them connected.
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _in_this_transaction(environ: dict[str, Any], start_response: Any) -> Any:
    """The WSGI application, kept from closing this thread's connection (in the test's
    transaction) at the start and end of each request, as Django's own test client does."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    return application(environ, start_response)


def _schema(client: APIClient) -> Any:
    raw = json.loads(client.get("/api/schema", {"format": "json"}).content)
    loaded = schemathesis.openapi.from_dict(raw)
    loaded.app = _in_this_transaction  # requests go through Django in this process
    return loaded


def _token_headers(user: User) -> dict[str, str]:
    return {"Authorization": f"Token {Token.objects.create(user=user).key}"}


def _assert_stored_configuration_is_consistent() -> None:
    latest = ConfigVersion.objects.order_by("-number").first()
    path = Path(django_settings.GPUCONFIG_OUTPUT_DIR) / "gpu-assignments.yml"
    if latest is None:
        assert not GpuConfiguration.objects.exists()
        return
    configuration = Configuration.from_json(latest.assignments)
    rows = {row.service_name: row for row in GpuConfiguration.objects.all()}
    for entry in configuration.assignments:
        row = rows[entry.service]
        assert (row.resolved_gpu_index, row.enabled) == (entry.gpu_index, entry.enabled)
    document = YAML(typ="safe").load(path.read_text())
    assert document["version"] == latest.number
    assert document["strategy"] == latest.strategy


@pytest.mark.parametrize("role", ["staff", "viewer"])
def test_no_generated_request_gets_a_server_error_or_an_undocumented_answer(
    role: str, staff_user: User, member_user: User, capsys: Any
) -> None:
    user = staff_user if role == "staff" else member_user
    headers = _token_headers(user)
    client = APIClient(headers=headers)
    schema = _schema(client)
    statuses: Counter[int] = Counter()
    failures: list[str] = []

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, headers, statuses, failures)

    _assert_stored_configuration_is_consistent()
    with capsys.disabled():
        server_errors = sum(n for status, n in statuses.items() if status >= 500 and status != 503)
        print(
            f"\nschemathesis as {role}: {sum(statuses.values())} requests, "
            f"{server_errors} server errors (5xx other than podman's 503), "
            f"statuses {dict(sorted(statuses.items()))}"
            + (
                f"; checked for 5xx only: {', '.join(sorted(CHECKED_FOR_SERVER_ERRORS_ONLY))}"
                if CHECKED_FOR_SERVER_ERRORS_ONLY
                else ""
            )
        )
        for failure in failures:  # in full: pytest would cut the assertion's message
            print(f"\n--- {failure}")
    assert not failures, f"{len(failures)} failures (printed above)"


def _fuzz(
    operation: Any,
    mode: GenerationMode,
    headers: dict[str, str],
    statuses: Counter[int],
    failures: list[str],
) -> None:
    """Send EXAMPLES_PER_OPERATION generated requests to one operation; record what fails."""
    conformance = operation.path not in CHECKED_FOR_SERVER_ERRORS_ONLY

    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests on every run: CI cannot be lucky or unlucky
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call(headers=headers)
        statuses[response.status_code] += 1
        if response.status_code >= 500 and response.status_code != 503:
            failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")
        if not conformance:
            return
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (Exception, BaseExceptionGroup) as exc:  # kept, and reported together
            found = getattr(exc, "exceptions", [exc])
            details = "; ".join(
                f"{getattr(e, 'title', type(e).__name__)}: {getattr(e, 'message', str(e))[:600]}"
                for e in found
            )
            failures.append(
                f"{mode.value} {case.method} {case.formatted_path} {case.query or ''} "
                f"body={str(case.body)[:200]!r} -> {response.status_code} "
                f"{response.text[:200]!r}: {details}"
            )

    try:
        run()
    except Unsatisfiable:
        # An operation without parameters or body has nothing to make invalid.
        assert mode == GenerationMode.NEGATIVE, f"no valid request for {operation.label}"
