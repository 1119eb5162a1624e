"""The lockfiles pin what pyproject.toml asks for, so the image and bin/run install the same.

A dependency added to pyproject.toml without running bin/lock fails here, before the image
build (which installs from requirements.lock with --require-hashes) fails in production.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _pins(lockfile: str) -> dict[str, str]:
    text = (ROOT / lockfile).read_text(encoding="utf-8")
    return {
        canonicalize_name(name): version
        for name, version in re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", text, re.M)
    }


@pytest.mark.parametrize(
    ("lockfile", "requirements"),
    [
        ("requirements.lock", PYPROJECT["dependencies"]),
        (
            "requirements-dev.lock",
            PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["dev"],
        ),
    ],
)
def test_every_dependency_is_pinned_within_its_range(
    lockfile: str, requirements: list[str]
) -> None:
    pins = _pins(lockfile)
    problems = []
    for line in requirements:
        requirement = Requirement(line)
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None:
            problems.append(f"{requirement.name} is not in {lockfile}")
        elif not requirement.specifier.contains(pinned, prereleases=True):
            problems.append(f"{requirement.name}=={pinned} is outside {requirement.specifier}")
    assert not problems, "; ".join(problems) + " (run bin/lock)"


def test_the_image_installs_from_the_lockfile_with_hashes() -> None:
    containerfile = (ROOT / "Containerfile").read_text(encoding="utf-8")
    assert "--require-hashes -r /app/requirements.lock" in containerfile
    assert "--hash=sha256:" in (ROOT / "requirements.lock").read_text(encoding="utf-8")
