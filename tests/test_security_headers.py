"""Headers on every answer (issue 12): pages carry a Content-Security-Policy that their own
scripts satisfy; API answers are never stored by a cache. Across the apps: the policy is the
settings' (SECURE_CSP), no-store is config/api_urls.py's, the pages are pages'."""

from __future__ import annotations

import re

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_pages_carry_a_content_security_policy_that_their_scripts_satisfy(staff_user):
    client = Client()
    client.force_login(staff_user)

    response = client.get("/settings/system/")

    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy.partition("script-src")[2].partition(";")[0]
    assert "object-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    # Every script is a file from this origin, or inline with this response's nonce.
    nonce = re.search(r"'nonce-([^']+)'", policy)
    scripts = re.findall(r"<script[^>]*>", response.content.decode())
    assert scripts
    for tag in scripts:
        assert 'src="/' in tag or (nonce and f'nonce="{nonce[1]}"' in tag), tag


def test_api_answers_are_never_stored_by_a_cache(member_api, anon_api):
    for client, url in (
        (member_api, "/api/system/gpu-config"),
        (member_api, "/api/system/gpus"),
        (anon_api, "/api/system/gpu-config"),
        (member_api, "/api/schema"),
    ):
        response = client.get(url)
        assert "no-store" in response["Cache-Control"], url
        assert "Content-Security-Policy" in response
