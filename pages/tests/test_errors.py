"""Refusals carry their HTTP status and sentence (common.errors): the API's exception handler
and the pages map them the same way, and refused fields name the row they belong to."""

from __future__ import annotations

import pytest

from common.api_errors import exception_handler
from common.errors import FieldError
from gpuconfig.registry import RegistryError
from gpuconfig.services import ConfigConflict, ConfigFileError, ConfigInputError
from orchestration.services import ApplyRefused
from pages.errors import refusal, row_errors


@pytest.mark.parametrize(
    ("error", "status", "sentence"),
    [
        (ConfigConflict("Someone saved."), 409, "Someone saved."),
        (ConfigFileError("Could not write x."), 500, "Could not write x."),
        (RegistryError("no such file"), 503, "The compose file cannot be used: no such file"),
        (ApplyRefused("Another apply is running.", 409), 409, "Another apply is running."),
    ],
)
def test_each_refusal_carries_its_status_and_sentence_to_the_api_and_the_page(
    error, status, sentence
):
    response = exception_handler(error, {})
    assert response is not None
    assert (response.status_code, response.data["error"]) == (status, sentence)
    assert refusal(error) == (sentence, status)


def test_refused_fields_carry_their_path_and_the_row_they_belong_to():
    error = ConfigInputError(
        [
            FieldError("gpu_index", "GPU 9 has never been detected", 2, "ai-clip"),
            FieldError("strategy", "Choose a strategy"),
        ]
    )
    response = exception_handler(error, {})
    assert response is not None and response.status_code == 400
    assert response.data["errors"] == {
        "assignments[2].gpu_index": "GPU 9 has never been detected",
        "strategy": "Choose a strategy",
    }
    rows: dict[str, list[str]] = {}
    assert row_errors(error, rows) == ["Choose a strategy"]
    assert rows == {"ai-clip": ["GPU 9 has never been detected"]}
