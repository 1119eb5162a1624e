"""Run one command from an argument list and keep what it said.

Every subprocess GPU Config starts goes through here: an explicit cwd, environment and
timeout, its own session (so a timeout kills everything it started), and the head and the tail
of its output. A failing command is returned as a :class:`CommandResult`; a podman query that
cannot answer raises :class:`PodmanCommandError`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUTPUT_HEAD_CHARS = 2000
OUTPUT_TAIL_CHARS = 4000
QUERY_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 10.0

# Lines that report a failure, most telling first: podman's "Error: ..." (the cause, e.g.
# "image not known"), Python's exceptions (the line after a traceback), then Go's log lines
# at level error, which podman also prints for noise such as missing systemd health timers.
_ERROR_LINES = (
    re.compile(r"^\s*(?:Error\b|ERRO\b)"),
    re.compile(r"^\s*\S*(?:Error|Exception):"),
    re.compile(r"level=(?:error|fatal)"),
)


@dataclass(frozen=True)
class CommandResult:
    """One finished (or killed) command: what ran, how it ended, and the tail of its output."""

    argv: tuple[str, ...]
    returncode: int
    output: str
    duration_s: float
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


class PodmanCommandError(RuntimeError):
    """A podman query failed, so the state of the containers is unknown."""

    def __init__(self, message: str, result: CommandResult) -> None:
        super().__init__(f"{message}: {result.output.strip() or f'exit {result.returncode}'}")
        self.result = result


def run_command(
    argv: Sequence[str],
    *,
    timeout_s: float,
    cwd: Path = Path("/"),
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    """Run one command from an argument list with an explicit cwd, environment and timeout.

    Never raises for a failing command (or a missing executable: exit 127); the caller reads
    ``result.ok``. For the other podman work GPU Config does (building demo images, removing
    demo containers), so that every subprocess goes through this package.
    """
    return _run(argv, cwd=cwd, env=_environment(env), timeout_s=timeout_s)


def first_error_line(text: str) -> str | None:
    """The first line of a command's output that looks like an error, or None."""
    lines = text.splitlines()
    for pattern in _ERROR_LINES:
        for line in lines:
            if pattern.search(line):
                return line.strip()[:500]
    return None


def _environment(env: Mapping[str, str] | None) -> dict[str, str]:
    # None means "this process's environment", made explicit so every command gets a copy.
    return dict(os.environ if env is None else env)


def _trim(text: str) -> str:
    """The head and the tail of a long output: the first error is often at the top (podman
    names the failing device or image there), the final status at the bottom."""
    if len(text) <= OUTPUT_HEAD_CHARS + OUTPUT_TAIL_CHARS:
        return text
    cut = len(text) - OUTPUT_HEAD_CHARS - OUTPUT_TAIL_CHARS
    return (
        text[:OUTPUT_HEAD_CHARS] + f"\n[... {cut} characters cut ...]\n" + text[-OUTPUT_TAIL_CHARS:]
    )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


@dataclass(frozen=True)
class _Completed:
    result: CommandResult
    stdout: str  # untrimmed, for JSON; empty when stderr was merged into result.output


def _execute(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout_s: float,
    separate_stdout: bool = False,
) -> _Completed:
    started = time.monotonic()
    try:
        # A session of its own, so that a timeout kills podman-compose and the podman
        # processes it started, not just the Python wrapper.
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if separate_stdout else subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as exc:
        # Missing executable or cwd: report it like a failed command, with the shell's 127.
        result = CommandResult(
            tuple(argv),
            127,
            f"cannot run {argv[0]}: {exc.strerror or exc}",
            time.monotonic() - started,
            False,
        )
        return _Completed(result, "")

    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):  # it may have ended meanwhile
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            stdout, stderr = proc.communicate(timeout=DRAIN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # A process that left the group (conmon daemonizes) still holds the pipe open:
            # stop reading rather than hang the caller.
            stdout, stderr = "", ""
            proc.wait()
    duration = time.monotonic() - started
    stdout = stdout or ""
    output = stdout + (stderr or "") if separate_stdout else stdout
    if timed_out:
        output += f"\n[killed after {timeout_s:g} s]"
    result = CommandResult(tuple(argv), proc.returncode, _trim(output), duration, timed_out)
    return _Completed(result, stdout if separate_stdout else "")


def _run(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout_s: float
) -> CommandResult:
    return _execute(argv, cwd=cwd, env=env, timeout_s=timeout_s).result


def _query(argv: Sequence[str], *, env: Mapping[str, str]) -> _Completed:
    """A podman query: stdout kept apart for JSON. Queries do not depend on the working
    directory; "/" keeps them from holding one."""
    return _execute(argv, cwd=Path("/"), env=env, timeout_s=QUERY_TIMEOUT_S, separate_stdout=True)


def _query_json(
    argv: Sequence[str], *, env: Mapping[str, str], what: str, allow_partial: bool = False
) -> list[dict[str, Any]]:
    done = _query(argv, env=env)
    if done.result.ok or (allow_partial and not done.result.timed_out and done.stdout.strip()):
        try:
            data = json.loads(done.stdout or "[]")
        except json.JSONDecodeError:
            data = None
        if isinstance(data, list):
            return [item for item in data if isinstance(item, dict)]
    raise PodmanCommandError(what, done.result)
