"""Settings > GPU Configuration's Hosts section (issue 20), through Django's test client:
every host with its state; staff add a host (the join token and the agent's command shown
once), give a joining host a new token, revoke one; viewers see the table and no buttons,
and their posts are refused; a remote host's GPU is named with its host in the form."""

from __future__ import annotations

import html as html_module
import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from devices.hosts import ReportedGpu, host_add, host_join, host_report_record
from devices.models import Host, HostStatus
from devices.services import gpu_inventory_rescan
from orchestration import selectors as orchestration_selectors
from orchestration import services as orchestration_services

pytestmark = pytest.mark.django_db

URL = "/settings/gpu/"
ADD_URL = "/settings/gpu/hosts/"
HX = {"HX-Request": "true"}
SERVICES = ("ai-llm", "ai-yolo26", "ai-florence", "ai-clip", "ai-enrichment")
NO_CONTAINERS = {
    "available": False,
    "unavailable_reason": "not read in this test",
    "containers": {},
    "drifted": [],
    "summary": "",
}


@pytest.fixture(autouse=True)
def _inventory(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gpu_inventory_rescan()
    # The container status reads podman; these tests check the page, not podman.
    monkeypatch.setattr(orchestration_selectors, "container_health", lambda: NO_CONTAINERS)
    orchestration_services.forget_probe()


def _text(html: str) -> str:
    return html_module.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip())


def _section(response: Any) -> str:
    html = response.content.decode()
    found = re.search(r'<section id="hosts".*?</section>', html, re.S)
    assert found, "no Hosts section"
    return found.group(0)


def _row(section: str, name: str) -> str:
    found = re.search(rf'<tr id="host-row-{name}".*?</tr>', section, re.S)
    assert found, f"no row for host {name}"
    return _text(found.group(0))


def _joined_box(name: str = "gpu-box-2") -> Host:
    """A host whose agent joined and reported one NVIDIA L4 as its GPU 1."""
    host, token = host_add(name)
    host, _credential = host_join(token, agent_version="0.9.1")
    gpu = ReportedGpu(
        index=1,
        uuid="GPU-l4-remote",
        name="NVIDIA L4",
        vram_total_mb=23034,
        vram_used_mb=300,
        vendor="nvidia",
    )
    host_report_record(host, [gpu], {}, agent_version="0.9.1")
    return Host.objects.get(pk=host.pk)


def test_the_section_lists_the_local_host_and_an_added_one_with_their_states(staff: Client):
    host_add("gpu-box-2")
    _joined_box("gpu-box-3")

    section = _section(staff.get(URL))

    local = _row(section, "local")
    assert "Online" in local and "none needed" in local and "runs here" in local
    assert "GPU 0: NVIDIA RTX A5500" in local and "GPU 1: NVIDIA RTX A400" in local
    joining = _row(section, "gpu-box-2")
    assert "Joining" in joining and "never" in joining and "host.gpu-box-2" in joining
    joined = _row(section, "gpu-box-3")
    assert "Online" in joined and "0.9.1" in joined
    assert "gpu-box-3 / GPU 1: NVIDIA L4 (index 201)" in joined
    assert re.search(r'data-host="gpu-box-3".*?<time datetime="[^"]+" title="\d{4}-', section, re.S)


def test_a_silent_agent_reads_offline_since_it_was_last_heard(staff: Client):
    host = _joined_box()
    heard = timezone.now() - timedelta(minutes=10)
    Host.objects.filter(pk=host.pk).update(last_heartbeat_at=heard)

    row = _row(_section(staff.get(URL)), "gpu-box-2")

    assert f"Offline since {timezone.localtime(heard):%Y-%m-%d %H:%M}" in row
    assert "10 minutes ago" in row


def test_staff_add_a_host_and_see_its_token_and_command_once(staff: Client):
    response = staff.post(ADD_URL, {"name": "gpu-box-2"}, headers=HX)

    assert response.status_code == 200
    section = _section(response)
    command = re.search(r'<pre id="agent-command"[^>]*><code>(.*?)</code></pre>', section, re.S)
    assert command, "the agent's command is shown"
    token = re.search(r"GPUCONFIG_JOIN_TOKEN=(gcj_\S+)", command.group(1))
    assert token, "the command holds the join token"
    assert "GPUCONFIG_URL=http://testserver/" in command.group(1)
    assert "GPUCONFIG_HOST_NAME=gpu-box-2" in command.group(1)
    assert "will not be shown again" in _text(section)
    assert "Joining" in _row(section, "gpu-box-2")
    # The token works (it is the one stored), and is never shown by a later page.
    later = staff.get(URL).content.decode()
    assert token.group(1) not in later and 'id="agent-command"' not in later
    host, _ = host_join(token.group(1), agent_version="1.0")
    assert host.name == "gpu-box-2"


def test_a_bad_or_taken_name_is_refused_beside_the_field_and_nothing_is_created(staff: Client):
    bad = staff.post(ADD_URL, {"name": "GPU Box!"}, headers=HX)
    assert bad.status_code == 400
    form = re.search(r'<form [^>]*id="host-add".*?</form>', bad.content.decode(), re.S)
    assert form
    assert 'value="GPU Box!"' in form.group(0) and 'aria-invalid="true"' in form.group(0)
    assert "A host name is 1-63 lowercase letters" in _text(form.group(0))
    assert 'id="agent-command"' not in bad.content.decode()
    assert list(Host.objects.values_list("name", flat=True)) == ["local"]

    host_add("gpu-box-2")
    taken = staff.post(ADD_URL, {"name": "gpu-box-2"}, headers=HX)
    assert taken.status_code == 400
    assert "A host named 'gpu-box-2' already exists." in _text(_section(taken))
    assert Host.objects.count() == 2


def test_without_javascript_adding_a_host_answers_the_page_with_the_command(staff: Client):
    response = staff.post(ADD_URL, {"name": "gpu-box-2"})

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="gpu-form"' in html and 'id="agent-command"' in html


def test_a_joining_host_gets_a_new_token_and_the_old_one_stops_working(staff: Client):
    _host, old = host_add("gpu-box-2")

    response = staff.post(f"{ADD_URL}gpu-box-2/join-token/", headers=HX)

    assert response.status_code == 200
    section = _section(response)
    new = re.search(r"GPUCONFIG_JOIN_TOKEN=(gcj_\S+)", section)
    assert new and new.group(1) != old
    assert "the previous one no longer works" in _text(section)
    host, _ = host_join(new.group(1), agent_version="1.0")
    assert host.status == HostStatus.ONLINE


def test_staff_revoke_a_host_and_the_section_says_so(staff: Client):
    _joined_box()
    before = _section(staff.get(URL))
    assert re.search(r'hx-confirm="Revoke host gpu-box-2\?', before)
    # A host that has joined needs no join token; the local host cannot be revoked.
    assert "New join token" not in _row(before, "gpu-box-2")
    assert "Revoke" not in _row(before, "local")

    response = staff.post(f"{ADD_URL}gpu-box-2/revoke/", headers=HX)

    assert response.status_code == 200
    row = _row(_section(response), "gpu-box-2")
    assert "Revoked since" in row and "Revoke" not in row.replace("Revoked", "")
    assert "Host gpu-box-2 is revoked" in _text(_section(response))
    assert Host.objects.get(name="gpu-box-2").status == HostStatus.REVOKED


def test_refusals_are_readable_and_change_nothing(staff: Client):
    _joined_box()
    host_add("gpu-box-3")
    staff.post(f"{ADD_URL}gpu-box-3/revoke/", headers=HX)

    joined = staff.post(f"{ADD_URL}gpu-box-2/join-token/", headers=HX)
    assert joined.status_code == 400
    assert "Host gpu-box-2 has already joined" in _text(_section(joined))
    revoked = staff.post(f"{ADD_URL}gpu-box-3/join-token/", headers=HX)
    assert revoked.status_code == 400
    assert "Host gpu-box-3 is revoked" in _text(_section(revoked))
    assert not Host.objects.get(name="gpu-box-3").join_token_hash
    local = staff.post(f"{ADD_URL}local/revoke/", headers=HX)
    assert local.status_code == 400
    assert "The local host has no agent credential to revoke." in _text(_section(local))
    unknown = staff.post(f"{ADD_URL}nowhere/revoke/", headers=HX)
    assert unknown.status_code == 404
    assert "There is no host 'nowhere'." in _text(_section(unknown))


def test_a_viewer_sees_the_hosts_without_buttons_and_cannot_add_or_revoke(member: Client):
    _joined_box()
    host_add("gpu-box-3")

    section = _section(member.get(URL))
    assert "Joining" in _row(section, "gpu-box-3")
    assert 'id="host-add"' not in section
    assert "Revoke" not in _text(section) and "New join token" not in _text(section)

    added = member.post(ADD_URL, {"name": "gpu-box-4"}, headers=HX)
    revoked = member.post(f"{ADD_URL}gpu-box-2/revoke/", headers=HX)
    token = member.post(f"{ADD_URL}gpu-box-3/join-token/")
    assert (added.status_code, revoked.status_code, token.status_code) == (403, 403, 403)
    assert "Only staff users" in added.content.decode()
    assert not Host.objects.filter(name="gpu-box-4").exists()
    assert Host.objects.get(name="gpu-box-2").status == HostStatus.ONLINE
    assert "GPUCONFIG_JOIN_TOKEN" not in token.content.decode()


def test_one_host_shows_no_host_column_and_todays_gpu_labels(staff: Client):
    html = staff.get(URL).content.decode()
    table = re.search(r'<table class="assignments">.*?</table>', html, re.S)
    assert table
    assert '<th scope="col">Host</th>' not in table.group(0)
    assert re.search(r"<option [^>]*>GPU 1 · RTX A400", table.group(0))


def test_a_remote_gpu_is_named_with_its_host_in_the_select_and_the_host_column(staff: Client):
    _joined_box()
    data = {"strategy": "manual", "table_strategy": "manual", "version": "0"}
    data.update({f"gpu-{name}": "0" for name in SERVICES})
    data["gpu-ai-clip"] = "101"
    data["budget-ai-enrichment"] = data["budget_auto-ai-enrichment"] = ""

    html = staff.post(URL, data, headers=HX).content.decode()

    select = re.search(r'<select id="gpu-ai-clip".*?</select>', html, re.S)
    assert select
    chosen = re.search(r"<option [^>]*selected[^>]*>([^<]*)</option>", select.group(0))
    assert chosen and chosen.group(1).startswith("gpu-box-2 / GPU 1 · L4")
    # Local GPUs keep their labels; the Host column names each service's host.
    assert re.search(r"<option [^>]*>GPU 0 · RTX A5500", select.group(0))
    assert '<th scope="col">Host</th>' in html
    clip = re.search(r'<td data-label="Host" class="host" id="host-ai-clip">([^<]*)</td>', html)
    llm = re.search(r'<td data-label="Host" class="host" id="host-ai-llm">([^<]*)</td>', html)
    assert clip and llm and (clip.group(1), llm.group(1)) == ("gpu-box-2", "local")


def test_a_row_offers_the_gpus_of_the_hosts_that_define_its_service(staff: Client):
    host = _joined_box()
    gpu = ReportedGpu(
        index=1, uuid="GPU-l4-remote", name="NVIDIA L4", vram_total_mb=23034,
        vram_used_mb=300, vendor="nvidia",
    )  # fmt: skip
    host_report_record(
        host, [gpu], {"ai-clip": {"gpuconfig.vram_estimate_mb": "1200"}}, agent_version="0.9.1"
    )
    html = staff.get(URL).content.decode()

    def offered(service: str) -> list[str]:
        select = re.search(rf'<select id="gpu-{service}".*?</select>', html, re.S)
        assert select, service
        return re.findall(r'<option value="(\d+)"', select.group(0))

    # ai-clip is defined here and on gpu-box-2: both hosts' GPUs; ai-llm only here: not 101.
    assert offered("ai-clip") == ["0", "1", "101"]
    assert offered("ai-llm") == ["0", "1"]
