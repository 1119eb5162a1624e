"""The compose file's absolute path is for staff only (issue 17, item 5)."""

from __future__ import annotations

import pytest
from django.conf import settings

pytestmark = pytest.mark.django_db

URL = "/api/system/gpus/suggested-estimates"


def test_a_read_only_user_sees_the_compose_files_name_not_its_path(member_api) -> None:
    response = member_api.get(URL)

    assert response.status_code == 200
    assert response.json()["compose_file"] == "docker-compose.prod.yml"
    assert str(settings.GPUCONFIG_COMPOSE_FILE.parent) not in response.content.decode()


def test_staff_see_the_compose_files_absolute_path_to_edit_it(staff_api) -> None:
    response = staff_api.get(URL)

    assert response.status_code == 200
    assert response.json()["compose_file"] == str(settings.GPUCONFIG_COMPOSE_FILE)
    assert response.json()["compose_file"].startswith("/")
