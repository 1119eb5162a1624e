"""How the pages answer the lower layers' refusals, in one place.

Every refusal carries its HTTP status and its sentence (``common.errors.Refusal``); a refused
field carries the service whose row it belongs to (``FieldError``), so nothing is parsed back
out of a message here.
"""

from __future__ import annotations

from common.errors import FieldsRefusal, Refusal


def refusal(exc: Refusal) -> tuple[str, int]:
    """The sentence and the HTTP status for a refused save or apply. Refused fields that
    belong to a row were shown beside it when the form was checked: the rest are said here."""
    if isinstance(exc, FieldsRefusal):
        return " ".join(row_errors(exc, {})) or str(exc), exc.status_code
    return exc.user_message, exc.status_code


def row_errors(exc: FieldsRefusal, errors: dict[str, list[str]]) -> list[str]:
    """Add each refused field to its service's row in ``errors``; return the messages that
    belong to no row (the request's own fields, such as its strategy)."""
    general = []
    for field in exc.fields:
        if field.service:
            errors.setdefault(field.service, []).append(field.message)
        else:
            general.append(field.message)
    return general
