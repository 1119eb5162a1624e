"""Every pass of the strict JSON parser over a body is linear (issue 17, item 1).

The depth check once ran a backtracking regex over the raw body: ``"`` followed by ``\\"``
repeated, with no closing quote, was quadratic (32 KB took seconds, two 250 KB bodies from a
read-only user stalled both gunicorn workers). The worst bodies we could construct
(bench/bench_parser.py) are timed as a ratio to a plain ``json.loads`` of an honest body of
the same size, side by side in one run, at two sizes: a quadratic pass shows as a ratio that
grows about 4x when the size does.
"""

from __future__ import annotations

import io
import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from rest_framework.exceptions import ParseError

from bench.bench_parser import best_seconds, honest_body, hostile_bodies, parse_ratios
from common.parsers import StrictJSONParser, json_depth
from devices.services import gpu_inventory_rescan

SMALL, LARGE = 16 * 1024, 64 * 1024
# The worst seen here was 36x (20,000 empty objects at 64 KB: one duplicate-key hook call
# each), on a 2-core VM under other test runs; a quadratic pass is in the thousands.
MAX_RATIO = 50.0
MAX_GROWTH = 2.5  # a quadratic pass grows about 4x per 4x size; a linear one about 1x
PREVIEW = "/api/system/gpu-config/preview"


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging when a pass is not linear (re checks for signals)."""

    def _expired(*_: object) -> None:
        raise TimeoutError(f"still parsing after {seconds} s: a pass is not linear")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _too_slow(small: dict[str, float], large: dict[str, float]) -> dict[str, tuple[float, float]]:
    return {
        name: (small[name], large[name])
        for name in small
        if max(small[name], large[name]) > MAX_RATIO
        # Bodies far cheaper than json.loads may wobble in ratio without costing anything.
        or (large[name] > 3 and large[name] > MAX_GROWTH * small[name])
    }


def test_the_worst_bodies_parse_in_time_linear_in_their_size():
    with _deadline(120):
        small, large = parse_ratios(SMALL), parse_ratios(LARGE)
        suspects = _too_slow(small, large)
        if suspects:  # measure those again: a busy machine slows one round, not two
            small, large = parse_ratios(SMALL), parse_ratios(LARGE)
            suspects = _too_slow(small, large)

    worst = max(max(small.values()), max(large.values()))
    print(f"worst parse ratio to json.loads: {worst:.1f}x")
    assert suspects == {}, f"(ratio at {SMALL // 1024} KB, at {LARGE // 1024} KB): {suspects}"


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ('[1,{"a":"b]"},[[]]]', 3),
        ('[[["x\\"]"]]]', 3),  # an escaped quote does not end the string
        ('["\\\\"]', 1),  # an escaped backslash does not escape the closing quote
        ('{"a":"[[[["}', 1),
        ('"' + '\\"' * 1000, 0),  # never closed: the rest is string
        ('[["never closed \\', 2),  # ends in a lone backslash
        ("[" * 40, 40),
        ("", 0),
    ],
)
def test_depth_counts_brackets_outside_strings_only(text, depth):
    assert json_depth(text) == depth


def test_a_lone_surrogate_deep_under_a_long_key_is_found_and_the_message_stays_short():
    body = '{"' + "k" * 100_000 + '": [1, 2, ["\\ud800"]]}'

    with pytest.raises(ParseError) as caught:
        StrictJSONParser().parse(io.BytesIO(body.encode()))

    message = str(caught.value.detail)
    assert message.startswith("JSON parse error: a string at kkk")
    assert "...[2][0] contains a lone surrogate" in message
    assert len(message) < 200


def test_the_issues_hostile_body_is_a_quick_400_through_the_api(member_api):
    """250 KB of ``"\\"\\"\\"...`` from a read-only user: a 400 in about the time a full parse of an
    honest 250 KB body takes, not a worker held for minutes."""
    gpu_inventory_rescan()
    hostile = ('"' + '\\"' * 125_000).encode()
    # Baseline: an honest body of the same size that json.loads reads to the end and refuses.
    honest = honest_body(len(hostile)) + b"!"

    def post(body: bytes) -> object:
        return member_api.post(PREVIEW, data=body, content_type="application/json")

    with _deadline(60):
        response = post(hostile)
        baseline = best_seconds(lambda: post(honest), 3)
        hostile_seconds = best_seconds(lambda: post(hostile), 3)

    assert response.status_code == 400
    assert response.json()["error"] == (
        "JSON parse error: Unterminated string starting at: line 1 column 1 (char 0)"
    )
    assert hostile_seconds < 10 * baseline, (hostile_seconds, baseline)


def test_the_benchmark_bodies_are_the_sizes_they_claim():
    # The ratios compare equal sizes only if the bodies really are that size.
    for name, body in hostile_bodies(LARGE).items():
        assert 0.9 * LARGE <= len(body) <= 1.1 * LARGE, name
    assert abs(len(honest_body(LARGE)) - LARGE) < 100
    assert json.loads(honest_body(LARGE))["strategy"] == "manual"
