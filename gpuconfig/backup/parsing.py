"""Reading a backup: strict and complete, every problem with its field path (pure)."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from common.documents import (
    MAX_DOCUMENT_VALUES,
    DocumentBoundsError,
    document_size,
    excerpt,
    quoted,
)
from common.json_rules import DuplicateKeyError, json_type_name, no_duplicate_keys
from gpuconfig.backup.document import (
    ASSIGNMENT_KEYS,
    FORMAT,
    GPU_KEYS,
    MAX_BUDGET_GB,
    MAX_BYTES,
    MAX_GPU_INDEX,
    SCHEMA_VERSION,
    TOP_LEVEL_KEYS,
    VERSION_KEYS,
    Backup,
    BackupAssignment,
    BackupError,
    BackupGpu,
    BackupVersion,
)
from gpuconfig.domain import StrategyName
from gpuconfig.system_settings import SettingError, validate_setting


def load_document(data: bytes | str) -> Any:
    """Bytes or text to plain data: JSON when it looks like JSON, YAML otherwise.

    What was loaded is checked before anything looks at it: its size with YAML aliases
    expanded, its depth, and that its text can be written out again (see ``_check_loaded``).
    """
    if isinstance(data, bytes):
        if len(data) > MAX_BYTES:
            raise BackupError([("", f"the file is {len(data)} bytes; the limit is {MAX_BYTES}")])
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BackupError(
                [("", f"not UTF-8 text (byte {exc.start}); is this a GPU Config backup?")]
            ) from None
    else:
        text = data
    if not text.strip():
        raise BackupError([("", "the file is empty")])
    doc = _load_json(text) if text.lstrip().startswith("{") else _load_yaml(text)
    _check_loaded(doc)
    return doc


_TOO_DEEP = "nested too deeply to be a GPU Config backup"


def _too_many_digits(exc: ValueError) -> str | None:
    # Python refuses to read integers of more than sys.get_int_max_str_digits() digits.
    if "integer string conversion" not in str(exc):
        return None
    return f"a number has more than {sys.get_int_max_str_digits():,} digits"


def _load_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise BackupError(
            [("", f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")]
        ) from None
    except DuplicateKeyError as exc:
        raise BackupError([("", f"not valid JSON: key {quoted(exc.key)} appears twice")]) from None
    except RecursionError:
        raise BackupError([("", f"not valid JSON: {_TOO_DEEP}")]) from None
    except ValueError as exc:
        problem = _too_many_digits(exc) or excerpt(str(exc))
        raise BackupError([("", f"not valid JSON: {problem}")]) from None


def _load_yaml(text: str) -> Any:
    try:
        # The safe loader builds plain data only, and refuses repeated keys.
        return YAML(typ="safe", pure=True).load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = excerpt(str(exc.problem))
        raise BackupError([("", f"not valid YAML: {problem}{where}")]) from None
    except YAMLError as exc:
        raise BackupError([("", f"not valid YAML: {excerpt(str(exc))}")]) from None
    except RecursionError:
        raise BackupError([("", f"not valid YAML: {_TOO_DEEP}")]) from None
    except TypeError:
        # ``? [[a]]``: a list inside a list used as a key cannot be a Python dict key.
        raise BackupError([("", "not valid YAML: a list or mapping is used as a key")]) from None
    except ValueError as exc:
        problem = _too_many_digits(exc) or excerpt(str(exc))
        raise BackupError([("", f"not valid YAML: {problem}")]) from None


# No field of a backup holds a number past this; a YAML hex literal can build one with more
# digits than Python will print (and every message that quoted it would fail).
MAX_WHOLE_NUMBER = 2**63


def _check_loaded(doc: Any) -> None:
    """Refuse what no backup is before validating it: a YAML alias bomb, nesting past
    MAX_DOCUMENT_DEPTH, text that cannot be encoded (a lone surrogate), a huge number."""
    try:
        size = document_size(doc)
    except DocumentBoundsError as exc:
        raise BackupError([("", f"{exc}; this is not a GPU Config backup")]) from None
    # What the file writes out is bounded by MAX_BYTES already (a long history is well over
    # 100,000 values); what aliases add is not, and gets the compose reader's bound.
    if size.values - size.written > MAX_DOCUMENT_VALUES or (
        size.text - size.written_text > MAX_BYTES
    ):
        raise BackupError(
            [
                (
                    "",
                    f"its YAML aliases expand to more than {MAX_DOCUMENT_VALUES:,} values or "
                    f"{MAX_BYTES:,} characters (are aliases nested inside aliases?); "
                    "this is not a GPU Config backup",
                )
            ]
        )
    problem = _unusable_value(doc, "")
    if problem:
        raise BackupError([problem])


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unusable_value(value: Any, path: str) -> tuple[str, str] | None:
    """The first text that is not valid Unicode or number too large, as (path, message).

    Bounded by ``_check_loaded``'s size check: the walk visits at most the values written plus
    those the aliases add.
    """
    if isinstance(value, str):
        if not _encodable(value):
            return path, "text that is not valid Unicode (a lone surrogate such as \\ud800)"
        return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_WHOLE_NUMBER:
        return path, "a number too large for any field (over 2**63)"
    if isinstance(value, dict):
        for key, item in value.items():
            # A key that is not valid Unicode is named escaped, as repr() writes it.
            name = excerpt(key) if isinstance(key, str) and _encodable(key) else quoted(key)
            where = f"{path}.{name}" if path else name
            found = _unusable_value(key, f"{where} (the key)") or _unusable_value(item, where)
            if found:
                return found
        return None
    if isinstance(value, list | tuple | set | frozenset):
        for i, item in enumerate(value):
            found = _unusable_value(item, f"{path}[{i}]")
            if found:
                return found
    return None


def parse_backup(data: bytes | str) -> Backup:
    """A validated ``Backup``, or ``BackupError`` listing every problem with its field path."""
    return backup_from_document(load_document(data))


def backup_from_document(doc: Any) -> Backup:
    """Validate plain data (already loaded) as a backup document."""
    if not isinstance(doc, dict):
        got = json_type_name(doc)
        raise BackupError(
            [("", f"expected a mapping with format: {FORMAT}, got {got}; not a backup")]
        )
    # Identity first: a compose file or a newer backup would otherwise drown in field errors.
    fmt = doc.get("format")
    if fmt != FORMAT:
        got = "no format field" if "format" not in doc else f"{quoted(fmt)}"
        raise BackupError(
            [("format", f"expected {FORMAT!r}, got {got}: this is not a GPU Config backup")]
        )
    schema: Any = doc.get("schema_version")
    if not _is_int(schema) or schema < 1:
        raise BackupError(
            [("schema_version", f"must be a whole number >= 1, got {quoted(schema)}")]
        )
    if schema > SCHEMA_VERSION:
        raise BackupError(
            [
                (
                    "schema_version",
                    f"{schema} is newer than this GPU Config reads ({SCHEMA_VERSION}); "
                    "upgrade GPU Config before importing this file",
                )
            ]
        )
    errors: list[tuple[str, str]] = []
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            errors.append(
                (excerpt(str(key)), f"unknown field; expected one of: {', '.join(TOP_LEVEL_KEYS)}")
            )
    for key in ("generated_at", "gpus", "strategy", "assignments", "system_settings"):
        if key not in doc:
            errors.append((key, "missing"))

    generated_at = doc.get("generated_at", "")
    if "generated_at" in doc and not isinstance(generated_at, str):
        errors.append(("generated_at", f"must be text, got {json_type_name(generated_at)}"))
    configuration_version = doc.get("configuration_version")
    if configuration_version is not None and (
        not _is_int(configuration_version) or configuration_version < 0
    ):
        errors.append(
            (
                "configuration_version",
                f"must be a whole number or null, got {quoted(configuration_version)}",
            )
        )

    gpus = _gpus(doc.get("gpus", []), errors)
    strategy = _strategy(doc.get("strategy"), "strategy", errors) if "strategy" in doc else None
    # Indexes the file lists, even on a GPU entry with another problem: that problem is
    # reported once, not again for every assignment that points at the GPU.
    known = {g.index for g in gpus} | {
        item["index"]
        for item in doc.get("gpus", [])
        if isinstance(doc.get("gpus"), list)
        and isinstance(item, dict)
        and _is_int(item.get("index"))
    }
    assignments = _assignments(doc.get("assignments", []), known, errors)
    system_settings = _settings(doc.get("system_settings", {}), errors)
    versions = _versions(doc["versions"], errors) if "versions" in doc else None
    if errors or strategy is None:
        raise BackupError(errors or [("strategy", "missing")])
    return Backup(
        schema_version=schema,
        generated_at=str(generated_at),
        configuration_version=configuration_version,
        gpus=gpus,
        strategy=strategy,
        assignments=assignments,
        system_settings=system_settings,
        versions=versions,
    )


def _is_int(value: Any) -> bool:
    # bool is an int in Python, but `true` is never an index or a count.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _unknown_keys(
    item: Mapping[str, Any], allowed: Sequence[str], where: str, errors: list[tuple[str, str]]
) -> None:
    for key in item:
        if key not in allowed:
            errors.append(
                (
                    f"{where}.{excerpt(str(key))}",
                    f"unknown field; expected one of: {', '.join(allowed)}",
                )
            )


def _strategy(value: Any, where: str, errors: list[tuple[str, str]]) -> StrategyName | None:
    try:
        return StrategyName(value)
    except ValueError:
        names = ", ".join(s.value for s in StrategyName)
        errors.append((where, f"unknown strategy {quoted(value)}; one of: {names}"))
        return None


def _gpus(raw: Any, errors: list[tuple[str, str]]) -> tuple[BackupGpu, ...]:
    if not isinstance(raw, list):
        errors.append(("gpus", f"must be a list, got {json_type_name(raw)}"))
        return ()
    out: list[BackupGpu] = []
    seen_index: dict[int, int] = {}
    seen_uuid: dict[str, int] = {}
    for i, item in enumerate(raw):
        where = f"gpus[{i}]"
        if not isinstance(item, dict):
            errors.append((where, f"must be a mapping, got {json_type_name(item)}"))
            continue
        _unknown_keys(item, GPU_KEYS, where, errors)
        before = len(errors)
        index: Any = item.get("index")
        if not _is_int(index) or not 0 <= index <= MAX_GPU_INDEX:
            errors.append(
                (f"{where}.index", f"must be a whole number 0-{MAX_GPU_INDEX}, got {quoted(index)}")
            )
        elif index in seen_index:
            errors.append((f"{where}.index", f"GPU {index} is already gpus[{seen_index[index]}]"))
        uuid = item.get("uuid", "")
        if not isinstance(uuid, str):
            errors.append((f"{where}.uuid", f"must be text, got {json_type_name(uuid)}"))
        elif uuid and uuid in seen_uuid:
            errors.append((f"{where}.uuid", f"{excerpt(uuid)} is already gpus[{seen_uuid[uuid]}]"))
        name = item.get("name", "")
        if not isinstance(name, str):
            errors.append((f"{where}.name", f"must be text, got {json_type_name(name)}"))
        vram = item.get("vram_total_mb")
        if vram is not None and (not _is_int(vram) or vram <= 0):
            errors.append(
                (f"{where}.vram_total_mb", f"must be a positive number of MiB, got {quoted(vram)}")
            )
        if len(errors) > before:
            continue
        seen_index[index] = i
        if uuid:
            seen_uuid[uuid] = i
        out.append(BackupGpu(index=index, uuid=uuid, name=name, vram_total_mb=vram))
    return tuple(out)


def _gpu_ref(value: Any, where: str, known: set[int], errors: list[tuple[str, str]]) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        errors.append(
            (where, f"must be a GPU index (a whole number >= 0) or null, got {quoted(value)}")
        )
        return None
    if value not in known:
        listed = ", ".join(str(i) for i in sorted(known)) or "none"
        errors.append((where, f"GPU {value} is not among the file's gpus (indexes: {listed})"))
        return None
    return int(value)


def _assignments(
    raw: Any, known_gpus: set[int], errors: list[tuple[str, str]]
) -> tuple[BackupAssignment, ...]:
    if not isinstance(raw, list):
        errors.append(("assignments", f"must be a list, got {json_type_name(raw)}"))
        return ()
    out: list[BackupAssignment] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        where = f"assignments[{i}]"
        if not isinstance(item, dict):
            errors.append((where, f"must be a mapping, got {json_type_name(item)}"))
            continue
        _unknown_keys(item, ASSIGNMENT_KEYS, where, errors)
        before = len(errors)
        service = item.get("service")
        if not isinstance(service, str) or not service:
            errors.append((f"{where}.service", f"must be a service name, got {quoted(service)}"))
        elif service in seen:
            errors.append(
                (f"{where}.service", f"{excerpt(service)} is already assignments[{seen[service]}]")
            )
        pin = _gpu_ref(item.get("gpu_index"), f"{where}.gpu_index", known_gpus, errors)
        resolved = _gpu_ref(
            item.get("resolved_gpu_index"), f"{where}.resolved_gpu_index", known_gpus, errors
        )
        override = item.get("vram_budget_override")
        if override is not None and (
            not _is_number(override) or not 0.1 <= override <= MAX_BUDGET_GB
        ):
            errors.append(
                (
                    f"{where}.vram_budget_override",
                    f"must be a number of GiB from 0.1 to {MAX_BUDGET_GB:g}, or null; "
                    f"got {quoted(override)}",
                )
            )
        budget = item.get("vram_budget")
        if budget is not None and (not _is_number(budget) or budget < 0):
            errors.append(
                (
                    f"{where}.vram_budget",
                    f"must be a number of GiB >= 0, or null; got {quoted(budget)}",
                )
            )
        enabled = item.get("enabled", True)
        if not isinstance(enabled, bool):
            errors.append((f"{where}.enabled", f"must be true or false, got {quoted(enabled)}"))
        if len(errors) > before:
            continue
        assert isinstance(service, str)
        seen[service] = i
        out.append(
            BackupAssignment(
                service=service,
                gpu_index=pin,
                resolved_gpu_index=resolved,
                vram_budget_override=float(override) if override is not None else None,
                vram_budget=float(budget) if budget is not None else None,
                enabled=enabled,
            )
        )
    return tuple(out)


def _settings(raw: Any, errors: list[tuple[str, str]]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        errors.append(("system_settings", f"must be a mapping, got {json_type_name(raw)}"))
        return {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            # The System tab's own rules (gpuconfig.system_settings): one place decides.
            out[str(key)] = validate_setting(str(key), value)
        except SettingError as exc:
            errors.append((f"system_settings.{excerpt(str(key))}", str(exc)))
    return out


def _versions(raw: Any, errors: list[tuple[str, str]]) -> tuple[BackupVersion, ...]:
    if not isinstance(raw, list):
        errors.append(("versions", f"must be a list, got {json_type_name(raw)}"))
        return ()
    out: list[BackupVersion] = []
    for i, item in enumerate(raw):
        where = f"versions[{i}]"
        if not isinstance(item, dict):
            errors.append((where, f"must be a mapping, got {json_type_name(item)}"))
            continue
        _unknown_keys(item, VERSION_KEYS, where, errors)
        before = len(errors)
        number: Any = item.get("number")
        if not _is_int(number) or number < 1:
            errors.append((f"{where}.number", f"must be a whole number >= 1, got {quoted(number)}"))
        strategy = _strategy(item.get("strategy"), f"{where}.strategy", errors)
        for key in ("created_at",):
            if not isinstance(item.get(key), str):
                errors.append(
                    (f"{where}.{key}", f"must be text, got {json_type_name(item.get(key))}")
                )
        for key in ("created_by", "applied_at"):
            if item.get(key) is not None and not isinstance(item.get(key), str):
                errors.append(
                    (f"{where}.{key}", f"must be text or null, got {json_type_name(item[key])}")
                )
        if not isinstance(item.get("assignments"), dict):
            errors.append(
                (
                    f"{where}.assignments",
                    f"must be a mapping, got {json_type_name(item.get('assignments'))}",
                )
            )
        if not isinstance(item.get("warnings", []), list):
            errors.append(
                (f"{where}.warnings", f"must be a list, got {json_type_name(item['warnings'])}")
            )
        if len(errors) > before or strategy is None:
            continue
        out.append(
            BackupVersion(
                number=number,
                created_at=item["created_at"],
                created_by=item.get("created_by"),
                strategy=strategy.value,
                applied_at=item.get("applied_at"),
                assignments=item["assignments"],
                warnings=item.get("warnings", []),
            )
        )
    return tuple(out)
