"""How the pages word the lower layers' refusals, in one place."""

from __future__ import annotations

from collections.abc import Sequence

from gpuconfig.registry import RegistryError
from gpuconfig.services import AssignmentChange, ConfigConflict, ConfigFileError, ConfigInputError

# What a save can refuse with; each becomes a notice beside the buttons (refusal below).
SAVE_ERRORS = (ConfigConflict, ConfigInputError, ConfigFileError, RegistryError)


def compose_file_unusable(exc: RegistryError) -> str:
    return f"The compose file cannot be used: {exc}"


def refusal(exc: Exception, changes: Sequence[AssignmentChange] = ()) -> tuple[str, int]:
    """The sentence and the HTTP status for a refused save (what belongs to a row of
    ``changes`` was shown beside it when the form was checked)."""
    if isinstance(exc, ConfigConflict):
        return str(exc), 409
    if isinstance(exc, ConfigInputError):
        return " ".join(field_errors(exc, changes, {})) or str(exc), 400
    if isinstance(exc, RegistryError):
        return compose_file_unusable(exc), 503
    return str(exc), 500  # ConfigFileError: the file could not be written


def field_errors(
    exc: ConfigInputError, changes: Sequence[AssignmentChange], errors: dict[str, list[str]]
) -> list[str]:
    """Put the service layer's "assignments[3].gpu_index" errors beside service 3's row;
    return the ones that belong to no row."""
    general = []
    for key, message in exc.errors.items():
        text = "; ".join(message) if isinstance(message, list) else str(message)
        index = key.removeprefix("assignments[").partition("]")[0]
        if key.startswith("assignments[") and index.isdigit() and int(index) < len(changes):
            errors.setdefault(changes[int(index)].service, []).append(text)
        else:
            general.append(text)
    return general
