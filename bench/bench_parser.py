"""Benchmark the API's strict JSON parser on the worst bodies we could construct.

Run: .venv/bin/python -m bench.bench_parser

Each hostile body is parsed by ``StrictJSONParser`` (the depth check, ``json.loads`` with its
hooks, the walk for lone surrogates) and timed as a ratio to a plain ``json.loads`` of an
honest body of the same size (a configuration's assignments, repeated), side by side in one
run, best of several rounds each. Every pass over a body must be linear: a pass that is not
shows as a ratio that grows with the size (about 4x per 4x size for a quadratic one), so each
body is measured at two sizes. common/tests/test_parsers_linear.py asserts on the same
figures.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import time
from collections.abc import Callable
from typing import Any

SIZES = (64 * 1024, 256 * 1024)
ROUNDS = 5


def honest_body(size: int) -> bytes:
    """A real configuration's shape, repeated to ``size`` bytes: the baseline."""
    item = '{"service": "ai-llm-00", "gpu_index": 0, "pinned": false},'
    count = max(1, (size - 40) // len(item))
    body = '{"strategy": "manual", "assignments": [' + item * count
    return (body[:-1] + "]}").encode()


def hostile_bodies(size: int) -> dict[str, bytes]:
    """The worst inputs for each pass we know of, each about ``size`` bytes."""
    half, third = size // 2, size // 3
    return {
        # The body: a string that never closes, full of escaped quotes.
        "unterminated string of escaped quotes": ('"' + '\\"' * half).encode(),
        "the same, ending in a lone backslash": ('"' + '\\"' * (half - 1) + "\\").encode(),
        "quotes only": b'"' * size,
        "escaped quotes inside an array, unterminated": ('["' + '\\"' * half).encode(),
        "unclosed arrays (deep nesting)": b"[" * size,
        "closed deep nesting": b"[" * half + b"]" * half,
        "brackets inside one string": b'["' + b"[" * (size - 4) + b'"]',
        "one long string": b'"' + b"a" * (size - 2) + b'"',
        "one long string of \\u escapes": b'"' + b"\\u00e9" * (size // 6) + b'"',
        "many small numbers": b"[" + b"1," * half + b"1]",
        "many empty objects": b"[" + b"{}," * third + b"{}]",
        "many empty strings": b"[" + b'"",' * third + b'""]',
        "long key above a long list": (
            b'{"' + b"k" * half + b'": [' + b"1," * (size // 4 - 4) + b"1]}"
        ),
        "many keys in one object": (
            b"{" + b",".join(b'"k%d":1' % i for i in range(size // 10)) + b"}"
        ),
        "lone surrogate after a long list": b"[" + b"1," * half + b'"\\ud800"]',
        "one number of 250,000 digits": b"[" + b"9" * (size - 2) + b"]",
        "whitespace": b" " * size,
    }


def best_seconds(action: Callable[[], object], rounds: int = ROUNDS) -> float:
    """The fastest of ``rounds`` runs: the machine's noise only ever adds time."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        with contextlib.suppress(Exception):  # refusals are the expected outcome here
            action()
        best = min(best, time.perf_counter() - start)
    return best


def _parse(parser: Any, body: bytes) -> object:
    return parser.parse(io.BytesIO(body))


def parse_ratios(size: int, rounds: int = ROUNDS) -> dict[str, float]:
    """Each hostile body's parse time over ``json.loads`` of an honest body of that size."""
    from common.parsers import StrictJSONParser

    parser = StrictJSONParser()
    honest = honest_body(size)
    ratios = {}
    for name, body in hostile_bodies(size).items():
        # Alternate the two so both see the same machine load.
        baseline = best_seconds(lambda: json.loads(honest), rounds)
        parsed = best_seconds(functools.partial(_parse, parser, body), rounds)
        ratios[name] = parsed / baseline
    return ratios


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    by_size = {size: parse_ratios(size) for size in SIZES}
    small, large = SIZES
    print(
        f"StrictJSONParser.parse / json.loads of an honest body of the same size (best of {ROUNDS})"
    )
    print(f"{'body':48} {small // 1024:>6} KB {large // 1024:>6} KB  growth")
    for name in by_size[small]:
        a, b = by_size[small][name], by_size[large][name]
        print(f"{name:48} {a:8.2f}x {b:8.2f}x  {b / a:5.2f}")
    worst = max((ratio, name, size) for size, r in by_size.items() for name, ratio in r.items())
    print(f"worst: {worst[0]:.2f}x ({worst[1]}, {worst[2] // 1024} KB)")


if __name__ == "__main__":
    main()
