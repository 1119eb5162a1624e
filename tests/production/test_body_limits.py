"""Under gunicorn, as an attacker sends them (issue 17, items 1 and 3): a huge multipart body
to the login page and a chunked one are refused before they are read, nothing lands in the
temporary folder, and the worker is free at once.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.production.support import Browser, needs_postgresql, production_env, running_gunicorn

pytestmark = [needs_postgresql, pytest.mark.django_db(transaction=True)]

BOUNDARY = "gpuconfig-test-boundary"


@dataclass
class Web:
    browser: Browser
    tmpdir: Path


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, django_db_setup: None) -> Iterator[Web]:
    tmpdir = tmp_path_factory.mktemp("gunicorn-tmp")
    env = production_env(
        tmp_path_factory.mktemp("data"),
        GPUCONFIG_HTTPS="0",
        GPUCONFIG_STATIC_MANIFEST="0",  # no collectstatic: the pages need no hashed names here
        TMPDIR=str(tmpdir),
    )
    with running_gunicorn(env, tmp_path_factory.mktemp("logs")) as browser:
        yield Web(browser, tmpdir)


def _send(web: Web, head: bytes, body_parts: list[bytes]) -> bytes:
    """Send the head and as much of the body as the server takes, then read its answer."""
    with socket.create_connection((web.browser.host, web.browser.port), timeout=15) as sock:
        sock.sendall(head)
        for part in body_parts:
            try:
                sock.sendall(part)
            except OSError:  # the server answered and closed without reading the rest
                break
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def _head(web: Web, extra: str) -> bytes:
    web.browser.cookies.clear()
    web.browser.get("/accounts/login/")
    token = web.browser.cookies["csrftoken"]
    return (
        "POST /accounts/login/ HTTP/1.1\r\n"
        f"Host: {web.browser.host}:{web.browser.port}\r\n"
        f"Cookie: csrftoken={token}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        "Connection: close\r\n"
        f"{extra}\r\n"
    ).encode()


def test_a_300_mb_multipart_body_to_the_login_page_is_refused_unread(web: Web) -> None:
    head = _head(web, f"Content-Length: {300 * 1024 * 1024}\r\n")
    part = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.bin"\r\n\r\n'
    ).encode() + b"x" * (64 * 1024)

    # Only the first 64 KB is ever sent: an answer means nothing waited for the rest.
    answer = _send(web, head, [part])

    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert (
        b"The request body is 314,572,800 bytes; the limit is 262,144 bytes. "
        b"Nothing was read or changed."
    ) in answer
    assert list(web.tmpdir.iterdir()) == []
    assert web.browser.get("/health").status == 200


def test_a_chunked_body_is_cut_off_at_the_limit(web: Web) -> None:
    head = _head(web, "Transfer-Encoding: chunked\r\n")
    chunk = b"%x\r\n" % (64 * 1024) + b"x" * (64 * 1024) + b"\r\n"

    # 320 KB sent, never terminated: the app stops reading past 256 KiB and answers.
    answer = _send(web, head, [chunk] * 5)

    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"The request body is over that; the limit is 262,144 bytes." in answer
    assert list(web.tmpdir.iterdir()) == []
    assert web.browser.get("/health").status == 200
