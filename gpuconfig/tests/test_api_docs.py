"""The schema and Swagger UI (issue 12): behind the login, and Swagger UI without inline
script (the Content-Security-Policy allows none)."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_the_schema_needs_a_login(anon_api, member_user):
    assert anon_api.get("/api/schema").status_code == 403
    token = Token.objects.create(user=member_user)
    with_token = APIClient(headers={"Authorization": f"Token {token.key}"})
    response = with_token.get("/api/schema")
    assert response.status_code == 200
    assert b"/api/system/gpu-config" in response.content


def test_swagger_ui_sends_anonymous_browsers_to_the_login_page():
    client = Client()
    for method in ("get", "options", "head"):
        response = getattr(client, method)("/api/docs")
        assert response.status_code == 302, method
        assert response["Location"].startswith("/accounts/login/?next=/api/docs")


def test_swagger_ui_works_for_a_user_with_no_inline_script(member_user):
    client = Client()
    client.force_login(member_user)

    page = client.get("/api/docs")
    script = client.get("/api/docs?script=")
    options = client.options("/api/docs")

    assert page.status_code == 200
    html = page.content.decode()
    assert '<script src="/api/docs?script="></script>' in html
    assert not re.search(r"<script>\s*\S", html), "no inline script"
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert options.status_code == 200
    assert options["Allow"] == "GET, HEAD, OPTIONS"
