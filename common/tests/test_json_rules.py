"""The JSON rules the API, the backup import and the simulated GPUs file share."""

from __future__ import annotations

import json
from typing import Any

import pytest

from common.json_rules import (
    DuplicateKeyError,
    NonStandardConstantError,
    json_type_name,
    no_constants,
    no_duplicate_keys,
)


def _strict(text: str) -> Any:
    return json.loads(text, object_pairs_hook=no_duplicate_keys, parse_constant=no_constants)


def test_objects_read_as_written_and_a_repeated_key_names_itself() -> None:
    assert _strict('{"a": {}, "b": [{"c": 1}]}') == {"a": {}, "b": [{"c": 1}]}
    with pytest.raises(DuplicateKeyError) as refused:
        _strict('{"a": 1, "b": {"gpu": 0, "gpu": 1}}')
    assert refused.value.key == "gpu"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json_numbers(constant: str) -> None:
    with pytest.raises(NonStandardConstantError) as refused:
        _strict(f'{{"vram": {constant}}}')
    assert refused.value.name == constant


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("null", "null"),
        ("true", "a boolean"),
        ("7", "a number"),
        ("7.5", "a decimal number"),
        ('"7"', "a string"),
        ("[7]", "a list"),
        ('{"a": 7}', "an object"),
    ],
)
def test_every_json_type_has_one_name(text: str, name: str) -> None:
    assert json_type_name(_strict(text)) == name
