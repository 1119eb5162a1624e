"""Bounds for documents read from outside (YAML or JSON): size with aliases expanded, depth,
and how much of a value an error message may quote.

The compose reader (``gpuconfig.registry``) and the backup import (``gpuconfig.backup``) both
parse what someone else wrote; both check what they loaded here, once, before looking at it.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Any

# YAML aliases let a 500-byte file describe billions of values ("billion laughs"). A compose
# file of 40 services is a few thousand values; past this many, expanded, it is refused.
MAX_DOCUMENT_VALUES = 100_000
MAX_DOCUMENT_DEPTH = 64
# Messages end up in API answers and on the page: a value quoted in one is cut to this.
MAX_QUOTED_CHARS = 80

# repr() of a value with aliases expanded can be gigabytes (a list of a thousand aliases of a
# long string); reprlib stops early at every level, so quoting costs what the excerpt costs.
_EXCERPT = reprlib.Repr(
    maxlevel=3,
    maxstring=MAX_QUOTED_CHARS,
    maxother=MAX_QUOTED_CHARS,
    maxlong=MAX_QUOTED_CHARS,
    maxlist=6,
    maxtuple=6,
    maxdict=4,
    maxset=4,
    maxfrozenset=4,
)


class DocumentBoundsError(ValueError):
    """The document is too large once expanded, too deep, or refers to itself."""


@dataclass(frozen=True)
class DocumentSize:
    values: int  # every value, with each YAML alias expanded where it is used
    written: int  # the values as written: an aliased container counts once
    text: int  # characters of text (keys and values), aliases expanded
    written_text: int  # characters of text as written: an aliased text counts once


def quoted(value: Any) -> str:
    """``repr(value)`` as an excerpt of at most MAX_QUOTED_CHARS: a message quotes, it does not
    copy."""
    try:
        text = _EXCERPT.repr(value)
    except ValueError:
        # An integer past Python's digit limit (a YAML hex literal can build one) has no repr.
        return f"a number of {value.bit_length()} bits" if isinstance(value, int) else "a value"
    return excerpt(text)


def excerpt(text: str) -> str:
    """``text`` cut to MAX_QUOTED_CHARS (a name, a path) for a message."""
    return text if len(text) <= MAX_QUOTED_CHARS else text[: MAX_QUOTED_CHARS - 1] + "…"


def document_size(data: Any, *, max_depth: int = MAX_DOCUMENT_DEPTH) -> DocumentSize:
    """How many values ``data`` (as a YAML or JSON loader returns it) holds, without expanding.

    Aliases share one Python object, so each distinct container is sized once and its size
    reused wherever an alias points at it: the count of a billion laughs costs what its
    600 bytes cost. Raises ``DocumentBoundsError`` past ``max_depth`` or on a self-reference.
    """
    sizes: dict[int, tuple[int, int]] = {}
    open_ids: set[int] = set()
    strings: set[int] = set()
    written = written_text = 0

    def size(value: Any, depth: int) -> tuple[int, int]:
        """(values, characters of text) under ``value``, aliases expanded."""
        nonlocal written, written_text
        if not isinstance(value, dict | list):
            return 1, len(value) if isinstance(value, str) else 0
        key = id(value)
        if key in sizes:
            return sizes[key]
        if key in open_ids:
            raise DocumentBoundsError("a YAML alias refers to itself")
        if depth > max_depth:
            raise DocumentBoundsError(f"nested deeper than {max_depth} levels")
        open_ids.add(key)
        children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        values, text = 1, 0
        written += 1
        for child in children:
            child_values, child_text = size(child, depth + 1)
            values += child_values
            text += child_text
            if not isinstance(child, dict | list):
                written += 1
                if isinstance(child, str) and id(child) not in strings:
                    # A text aliased (or a JSON key the parser reuses) is written once.
                    strings.add(id(child))
                    written_text += child_text
        open_ids.discard(key)
        sizes[key] = (values, text)
        return values, text

    values, text = size(data, 0)
    if not isinstance(data, dict | list):
        written, written_text = 1, text
    return DocumentSize(values=values, written=written, text=text, written_text=written_text)
