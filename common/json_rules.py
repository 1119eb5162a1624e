"""Rules every strict JSON reader here shares: the API's parser (``gpuconfig.parsers``), the
backup import (``gpuconfig.backup``) and the simulated GPUs file
(``devices.detection.simulated``).

* A repeated key in one object is an error, not "last one wins": with "last one wins" a
  hand-edited file or a careless client silently means another value than the one a person
  reads (``no_duplicate_keys``, an ``object_pairs_hook``).
* NaN and Infinity are not JSON numbers, although Python's ``json`` reads them
  (``no_constants``, a ``parse_constant`` hook).
* A message names a value's type in one vocabulary (``json_type_name``), never by quoting the
  value (it may be huge, or not printable).

Each reader turns ``DuplicateKeyError`` and ``NonStandardConstantError`` into its own error
with its own sentence.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DuplicateKeyError",
    "NonStandardConstantError",
    "json_type_name",
    "no_constants",
    "no_duplicate_keys",
]


class DuplicateKeyError(ValueError):
    """One JSON object names ``key`` twice."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class NonStandardConstantError(ValueError):
    """``NaN``, ``Infinity`` or ``-Infinity``, which Python reads and JSON does not have."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json`` object hook: the object as a dict, or ``DuplicateKeyError`` for a repeated key."""
    # Called once per object: dict() in C, and the Python loop only when a key repeats.
    if not pairs:  # a body of 20,000 "{}" costs a third less
        return {}
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise DuplicateKeyError(key)
        seen.add(key)
    raise AssertionError("unreachable: dict() dropped a key only when one repeats")


def no_constants(name: str) -> Any:
    """``json`` constant hook: refuse NaN and Infinity."""
    raise NonStandardConstantError(name)


def json_type_name(value: Any) -> str:
    """The JSON type of a parsed value, as a message names it: "not a string", "got a list"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
