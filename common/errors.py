"""Refusals the API and the pages answer alike.

A layer that refuses a request raises a ``Refusal``: it carries the HTTP status and the
sentence for the user, so that the API (``common.api_errors.exception_handler``) and the
pages (``pages.errors``) map every refusal in one place each, and no caller words it again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class Refusal(Exception):
    """A request refused for a reason the user can act on; nothing was written."""

    status_code = 500

    @property
    def user_message(self) -> str:
        return str(self)


@dataclass(frozen=True)
class FieldError:
    """One refused field of a request: ``assignments[index].field``, or ``field`` itself when
    ``index`` is None; ``service`` names the assignment's service (the page's row)."""

    field: str
    message: str
    index: int | None = None
    service: str = ""

    @property
    def path(self) -> str:
        return self.field if self.index is None else f"assignments[{self.index}].{self.field}"


class FieldsRefusal(Refusal, ValueError):
    """A request with fields that cannot be accepted (400), each with its path."""

    status_code = 400

    def __init__(self, fields: Sequence[FieldError] | Mapping[str, Any]):
        if isinstance(fields, Mapping):
            fields = [FieldError(str(key), str(message)) for key, message in fields.items()]
        self.fields = tuple(fields)
        super().__init__("; ".join(f"{f.path}: {f.message}" for f in self.fields))

    @property
    def errors(self) -> dict[str, str]:
        """The API's shape: field path -> message."""
        return {f.path: f.message for f in self.fields}
