"""A save that races a backup import (issue 17), on real PostgreSQL connections from threads.

The import used to end its write turn (the save service's) before its own transaction
committed: a save waiting for the turn then ran into the import's still-locked newest version
row and, once the import committed, lost on the version number: a 409 for a save that named
no version and had nothing to conflict with.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection, connections
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from ruamel.yaml import YAML

from devices.services import gpu_inventory_rescan
from gpuconfig.domain import StrategyName
from gpuconfig.models import ConfigVersion
from gpuconfig.services import ASSIGNMENTS_FILE, gpu_config_save

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = "/api/system/gpu-config"
EXPORT = "/api/system/gpu-config/export"
IMPORT = "/api/system/gpu-config/import"
# How long the import lingers between its save and its commit: long enough that a save
# waiting for the turn would reach the locked row first, every run.
LINGER_SECONDS = 0.5


@pytest.fixture(autouse=True)
def _setup(db: Any, settings: Any) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite takes one writer at a time by itself")
    settings.GPUCONFIG_API_RATE_USER = ""
    gpu_inventory_rescan()


def test_a_save_waiting_behind_an_import_is_saved_after_it_not_refused(
    staff_user: Any, monkeypatch: pytest.MonkeyPatch
):
    gpu_config_save(user=None, strategy=StrategyName.VRAM_BASED)
    token = Token.objects.create(user=staff_user).key

    def client() -> APIClient:
        return APIClient(headers={"Authorization": f"Token {token}"})

    doc = json.loads(client().get(EXPORT, {"format": "json"}).content)
    doc["strategy"] = "balanced"  # a change: an unchanged import saves no version
    body = json.dumps(doc)
    import_saved = threading.Event()
    real_save = gpu_config_save  # the one the import calls (gpuconfig.services)

    def save_then_linger(**kwargs: Any) -> Any:
        # The real save; then the import's transaction stays open a moment longer, as a slow
        # commit would keep it. Only the timing is stretched; nothing is faked.
        result = real_save(**kwargs)
        import_saved.set()
        time.sleep(LINGER_SECONDS)
        return result

    monkeypatch.setattr("gpuconfig.backup_services.gpu_config_save", save_then_linger)
    answers: dict[str, Any] = {}

    def run_import() -> None:
        try:
            answers["import"] = client().post(IMPORT, body, content_type="application/json")
        finally:
            import_saved.set()
            connections.close_all()  # this thread's connection

    def run_save() -> None:
        try:
            assert import_saved.wait(timeout=60)
            answers["save"] = client().put(
                CONFIG,
                data=json.dumps({"strategy": "isolation_first"}),
                content_type="application/json",
            )
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run_import), threading.Thread(target=run_save)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert answers["import"].status_code == 200, answers["import"].json()
    assert answers["import"].json()["version"] == 2
    assert answers["save"].status_code == 200, answers["save"].json()
    assert answers["save"].json()["version"] == 3
    assert list(ConfigVersion.objects.order_by("number").values_list("number", "strategy")) == [
        (1, "vram_based"),
        (2, "balanced"),
        (3, "isolation_first"),
    ]
    # The rows and the generated file agree on who saved last.
    document = YAML(typ="safe").load(
        (Path(django_settings.GPUCONFIG_OUTPUT_DIR) / ASSIGNMENTS_FILE).read_text()
    )
    assert (document["version"], document["strategy"]) == (3, "isolation_first")
