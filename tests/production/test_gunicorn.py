"""The production image's web process for real: collectstatic, then gunicorn with DEBUG off.

One gunicorn per module serves the documented production environment (plain HTTP, as the
default stack); the HTTPS behaviour gets its own gunicorn at the end.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from tests.production.support import (
    ROOT,
    Browser,
    manage,
    needs_postgresql,
    production_env,
    running_gunicorn,
)

pytestmark = [needs_postgresql, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Static files collected as the image collects them: hashed names, compressed copies."""
    root = tmp_path_factory.mktemp("staticfiles")
    env = production_env(tmp_path_factory.mktemp("data"))
    # As in the image's build step: no database, no production mode, only collectstatic.
    env.pop("GPUCONFIG_PRODUCTION")
    env.update(GPUCONFIG_STATIC_MANIFEST="1", GPUCONFIG_STATIC_ROOT=str(root))
    result = manage("collectstatic", "--noinput", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (root / "staticfiles.json").is_file()
    return root


@pytest.fixture(scope="module")
def web(
    static_root: Path, tmp_path_factory: pytest.TempPathFactory, django_db_setup: None
) -> Iterator[Browser]:
    env = production_env(tmp_path_factory.mktemp("data"), GPUCONFIG_STATIC_ROOT=str(static_root))
    assert env.get("DJANGO_DEBUG", "0") == "0"
    with running_gunicorn(env, tmp_path_factory.mktemp("logs")) as browser:
        yield browser


def _static_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/static/[^"]+)"', html)


def test_login_page_links_hashed_static_files_that_answer_200(web: Browser) -> None:
    page = web.get("/accounts/login/")
    assert page.status == 200
    urls = _static_urls(page.text)
    css = [u for u in urls if re.fullmatch(r"/static/css/app\.[0-9a-f]{12}\.css", u)]
    js = [u for u in urls if re.fullmatch(r"/static/js/app\.[0-9a-f]{12}\.js", u)]
    htmx = [
        u
        for u in urls
        if re.fullmatch(r"/static/django_htmx/htmx[-0-9]*\.min\.[0-9a-f]{12}\.js", u)
    ]
    assert css and js and htmx, urls

    stylesheet = web.get(css[0])
    assert stylesheet.status == 200
    assert stylesheet.headers["Content-Type"].startswith("text/css")
    # Hashed names never change content, so browsers may keep them for good.
    assert "immutable" in stylesheet.headers["Cache-Control"]
    assert stylesheet.body == (ROOT / "static" / "css" / "app.css").read_bytes()
    for script in (js[0], htmx[0]):
        response = web.get(script)
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/javascript")


def test_static_files_are_sent_gzip_compressed_to_clients_that_accept_it(web: Browser) -> None:
    css = next(u for u in _static_urls(web.get("/accounts/login/").text) if "/css/app." in u)

    compressed = web.get(css, Accept_Encoding="gzip")

    assert compressed.status == 200
    assert compressed.headers["Content-Encoding"] == "gzip"
    assert compressed.headers["Content-Type"].startswith("text/css")
    assert gzip.decompress(compressed.body) == (ROOT / "static" / "css" / "app.css").read_bytes()
    assert web.get(css).headers.get("Content-Encoding") is None


def test_unhashed_name_is_still_served_for_old_links(web: Browser) -> None:
    assert web.get("/static/css/app.css").status == 200
    assert web.get("/static/css/no-such-file.css").status == 404


def test_admin_login_page_and_its_stylesheets_answer_200(web: Browser) -> None:
    page = web.get("/admin/login/")
    assert page.status == 200
    stylesheets = [u for u in _static_urls(page.text) if u.startswith("/static/admin/css/")]
    assert any(re.search(r"/base\.[0-9a-f]{12}\.css$", u) for u in stylesheets), stylesheets
    for url in stylesheets:
        response = web.get(url)
        assert response.status == 200, url
        assert response.headers["Content-Type"].startswith("text/css")


def test_swagger_ui_loads_only_assets_the_app_serves(web: Browser) -> None:
    User.objects.create_user("operator", password="operator-pass-1", is_staff=True)
    assert web.log_in("operator", "operator-pass-1").status == 302

    page = web.get("/api/docs")

    assert page.status == 200
    # Nothing from a CDN or any other host: the page must work on a machine without internet.
    assert not re.search(r"(?:src|href)=\"(?:https?:)?//", page.text), page.text
    assert "cdn.jsdelivr.net" not in page.text
    assert "validator.swagger.io" not in page.text
    assets = _static_urls(page.text)
    assert any("swagger-ui-bundle" in u for u in assets), assets
    assert any("swagger-ui-standalone-preset" in u for u in assets), assets
    assert any("swagger-ui" in u and u.endswith(".css") for u in assets), assets
    for url in assets:
        response = web.get(url)
        assert response.status == 200, url
    schema = web.get("/api/schema", Accept="application/json")
    assert schema.status == 200
    assert b'"openapi"' in schema.body


@pytest.fixture
def https_web(
    static_root: Path, tmp_path_factory: pytest.TempPathFactory, django_db_setup: None
) -> Iterator[Browser]:
    env = production_env(
        tmp_path_factory.mktemp("data"),
        GPUCONFIG_STATIC_ROOT=str(static_root),
        GPUCONFIG_HTTPS="1",
        DJANGO_SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto",
    )
    with running_gunicorn(env, tmp_path_factory.mktemp("logs")) as browser:
        yield browser


def test_with_https_plain_http_is_redirected_and_cookies_are_secure(https_web: Browser) -> None:
    redirected = https_web.get("/accounts/login/")
    assert redirected.status == 301
    assert redirected.headers["Location"] == f"https://127.0.0.1:{https_web.port}/accounts/login/"
    # The container health check stays on plain HTTP inside the stack's network.
    assert https_web.get("/health").status == 200

    page = https_web.get("/accounts/login/", X_Forwarded_Proto="https")

    assert page.status == 200
    hsts = page.headers["Strict-Transport-Security"]
    assert hsts == "max-age=31536000; includeSubDomains; preload"
    csrf_cookie = next(c for c in page.headers.get_all("Set-Cookie") or [] if "csrftoken" in c)
    assert "Secure" in csrf_cookie
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
