"""What a VRAM budget field accepts (issue 17, "Numbers people type"): a plain decimal with a
point; anything else is refused with a sentence that says how to write it."""

from __future__ import annotations

import pytest
from django import forms

from pages.forms import budget_gb


@pytest.mark.parametrize(
    ("typed", "gb"),
    [("3.5", 3.5), (" 3.5 ", 3.5), ("4", 4.0), ("0.1", 0.1), (".5", 0.5), ("2000", 2000.0)],
)
def test_a_plain_decimal_with_a_point_is_taken(typed: str, gb: float) -> None:
    assert budget_gb(typed) == gb


def test_an_empty_field_means_automatic() -> None:
    assert budget_gb("  ") is None


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("3,5", "Use a decimal point: 3.5."),
        (",5", "Use a decimal point: 0.5."),
        ("1e3", "Type a plain number of GiB with a decimal point, such as 3.5 (not '1e3')."),
        ("3.5GB", "such as 3.5 (not '3.5GB')"),
        ("1,000.5", "such as 3.5"),
        ("-1", "such as 3.5"),
        ("inf", "such as 3.5"),
        ("nan", "such as 3.5"),
        ("\u0663.\u0665", "such as 3.5"),  # Arabic-Indic digits: float() would take them
        ("0", "Must be between 0.1 and 2000 GiB, got 0."),
        ("2000.5", "Must be between 0.1 and 2000 GiB, got 2000.5."),
    ],
)
def test_anything_else_is_refused_with_how_to_write_it(typed: str, message: str) -> None:
    with pytest.raises(forms.ValidationError) as refused:
        budget_gb(typed)
    assert message in refused.value.messages[0]
