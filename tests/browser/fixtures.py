"""Playwright (Python) driving Debian's Chromium against the app on pytest-django's live_server.

A plugin of the root conftest (``pytest_plugins``), not a conftest of its own: browser tests
live beside the pages they test (tests/browser/, devices/tests/), and two copies of the
session's browser fixture in one run would start Playwright twice, which it refuses.

One browser for the whole session; each test gets a fresh context (cookies, viewport). The
root conftest's autouse fixture points the app at the simulated reference GPUs, which the
live server thread sees because it runs in this process.

Screenshots go to a temporary folder, or to ``GPUCONFIG_SCREENSHOT_DIR`` when set: the
pictures in docs/images are made with ``GPUCONFIG_SCREENSHOT_DIR=docs/images``.
Never run ``playwright install``: the tests use /usr/bin/chromium (apt-get install chromium).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: apt-get install -y chromium (never `playwright install`)"
        print(f"\nbrowser tests skipped: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread; the tests' own ORM
    # calls (creating users, reading rows) are still plain synchronous code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            yield launched
            launched.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def new_page(browser: Any, live_server: Any) -> Iterator[Callable[..., Any]]:
    """Open a page in a fresh context: ``new_page(user=None, javascript=True, viewport=LAPTOP)``.

    With a user, the context carries a session cookie for them (logged in without the form).
    """
    contexts: list[Any] = []

    def open_page(
        *, user: User | None = None, javascript: bool = True, viewport: dict[str, int] = LAPTOP
    ) -> Any:
        context = browser.new_context(
            base_url=live_server.url, viewport=viewport, java_script_enabled=javascript
        )
        context.set_default_timeout(15_000)
        contexts.append(context)
        if user is not None:
            client = Client()
            client.force_login(user)
            context.add_cookies(
                [
                    {
                        "name": "sessionid",
                        "value": client.cookies["sessionid"].value,
                        "url": live_server.url,
                    }
                ]
            )
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.js_errors = errors  # checked by tests: the page's own script must not fail
        return page

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def screenshot(tmp_path: Path) -> Callable[[Any, str], Path]:
    """Save a full-page PNG of ``page`` as ``<name>.png``."""
    folder = Path(os.environ.get("GPUCONFIG_SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True, animations="disabled")
        assert path.stat().st_size > 1000
        return path

    return take
