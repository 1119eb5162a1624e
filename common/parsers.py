"""Strict input for the API: a JSON parser and serializer fields that refuse instead of guess.

DRF's defaults are lenient in ways that matter here: the JSON parser recurses without a bound
(a 20 KB body nested 10,000 deep is a RecursionError, a 500), keeps the last of two equal keys,
and lets lone surrogates through to error messages that the renderer then cannot encode (a
500 again); its fields turn ``true`` into 1, ``"1"`` and ``1.0`` into a GPU index and
``"yes"`` into True. docs/api.md promises "wrong types" are a 400: these classes keep it.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import IO, Any

from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from common.json_rules import (
    DuplicateKeyError,
    NonStandardConstantError,
    json_type_name,
    no_constants,
    no_duplicate_keys,
)

# A configuration body is three levels deep ({"assignments": [{...}]}); 32 leaves room for
# any honest client and keeps every later walk of the data (serializers, renderers) shallow.
MAX_JSON_DEPTH = 32
# A JSON string (with its escapes), so that brackets inside strings are not counted. Every
# pass over a body must be linear: the quantifiers are possessive (no backtracking), and a
# string without its closing quote runs to the end of the text (an odd backslash included)
# instead of failing. A failed match would make the engine retry from the next quote inside
# it, which made ``"`` followed by ``\"`` repeated quadratic (32 KB took seconds).
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]++")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# A \\u escape of a surrogate (or an escaped backslash before "ud8..": a harmless false hit).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# ASCII digits only: str.isdigit() also accepts "²" and "٣", which int() then refuses.
_VERSION_NUMBER = re.compile(r"[0-9]{1,10}")
# ConfigVersion.number is a PositiveIntegerField: PostgreSQL's integer.
MAX_VERSION = 2**31 - 1


class StrictJSONParser(JSONParser):
    """JSON only, parsed strictly: a bounded depth, no duplicate keys, no NaN or Infinity,
    valid UTF-8 and no lone surrogates. Every refusal is a 400 with a sentence that never
    quotes the offending text (it may not be printable, or even encodable)."""

    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Any = None
    ) -> Any:
        raw = stream.read() if stream is not None else b""
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError as exc:
            raise ParseError(
                f"JSON parse error: the body is not UTF-8 (byte {exc.start})."
            ) from None
        depth = json_depth(text)
        if depth > MAX_JSON_DEPTH:
            raise ParseError(
                f"JSON parse error: nested {depth} levels deep; at most {MAX_JSON_DEPTH} allowed."
            )
        try:
            data = json.loads(
                text, object_pairs_hook=no_duplicate_keys, parse_constant=no_constants
            )
        except DuplicateKeyError as exc:
            shown = exc.key if _encodable(exc.key) and len(exc.key) <= 64 else "(unprintable)"
            raise ParseError(
                f"JSON parse error: the key {shown!r} appears twice in one object."
            ) from None
        except NonStandardConstantError as exc:
            raise ParseError(f"JSON parse error: {exc.name} is not a JSON number.") from None
        except ValueError as exc:
            # json's own messages give a position, never the text: safe to pass on.
            raise ParseError(f"JSON parse error: {exc}") from None
        # Lone surrogates come only from \\uD800-\\uDFFF escapes (strict UTF-8 decoding refused
        # encoded ones above): one linear search spares the walk over every honest body.
        where = _unencodable_string(data) if _SURROGATE_ESCAPE.search(text) else None
        if where is not None:
            raise ParseError(
                f"JSON parse error: a string {where} contains a lone surrogate "
                "(a \\ud800-\\udfff escape without its pair); it is not text."
            )
        return data


def json_depth(text: str) -> int:
    """How deeply the arrays and objects in ``text`` nest (strings ignored), without parsing."""
    brackets = _NOT_BRACKETS.sub("", _JSON_STRING.sub("", text))
    # The running depth after each bracket, in C (map and accumulate), not a Python loop per
    # bracket: a body of 250,000 brackets costs what json.loads of it would.
    return max(0, max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0))


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unencodable_string(data: Any) -> str | None:
    """Where the first string (key or value) that is not valid Unicode is, or None.

    The path is built only for the string found: building it for every value would copy a
    long parent key once per item below it (quadratic in the body's size)."""
    found = _first_unencodable(data, ())
    if found is None:
        return None
    path, as_key = found
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{_excerpt(part)}" for part in path)
    where = where.removeprefix(".")
    if as_key:
        return f"used as a key in {where or 'the top-level object'}"
    return f"at {where or 'the top level'}"


def _excerpt(key: str) -> str:
    """A key as messages show it: never more than 64 characters of what the client sent."""
    return key if len(key) <= 64 else key[:61] + "..."


def _first_unencodable(
    data: Any, path: tuple[str | int, ...]
) -> tuple[tuple[str | int, ...], bool] | None:
    """The path to the first unencodable string and whether it is a key, or None."""
    if isinstance(data, str):
        return None if _encodable(data) else (path, False)
    if not isinstance(data, dict | list):
        return None
    # Strings and scalars are checked in the loop, not by a call each: a body of 100,000
    # small values stays a fraction of what json.loads spent building them.
    items: Any = data.items() if isinstance(data, dict) else enumerate(data)
    is_object = isinstance(data, dict)
    for key, value in items:
        if is_object and not _encodable(key):
            return (path, True)
        if isinstance(value, str):
            if not _encodable(value):
                return ((*path, key), False)
        elif isinstance(value, dict | list):
            found = _first_unencodable(value, (*path, key))
            if found:
                return found
    return None


def version_number(raw: str) -> int | None:
    """A version number from a query string or form: ASCII digits within range, else None."""
    if not _VERSION_NUMBER.fullmatch(raw):
        return None
    number = int(raw)
    return number if number <= MAX_VERSION else None


# --- serializer fields that refuse what the JSON types do not say --------------------------


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: not a bool, a string ("1") or a float (1.0)."""

    default_error_messages = {"type": "Must be a whole number (a JSON integer, not {kind})."}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("type", kind=json_type_name(data))
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    """A JSON number: not a bool or a string."""

    default_error_messages = {"type": "Must be a number (not {kind})."}

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("type", kind=json_type_name(data))
        try:
            return float(data)
        except OverflowError:  # an integer too large for a float; DRF would answer 500
            self.fail("max_value", max_value=self.max_value)
            raise  # unreachable: fail() raises


class StrictBooleanField(serializers.BooleanField):
    """``true`` or ``false``: not "yes", 1 or "true"."""

    default_error_messages = {"type": "Must be true or false (not {kind})."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("type", kind=json_type_name(data))
        return data


class StrictCharField(serializers.CharField):
    """A JSON string: not a number that DRF would turn into one."""

    default_error_messages = {"type": "Must be a string (not {kind})."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("type", kind=json_type_name(data))
        return super().to_internal_value(data)
