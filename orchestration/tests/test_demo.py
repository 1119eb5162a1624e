"""Demo mode's teardown goes through the podman layer (argument lists, timeouts)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from orchestration import demo


def test_demo_down_removes_every_container_of_the_demo_project_and_its_pod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    listed = [
        {"Id": "aaa111", "Labels": {"io.podman.compose.project": demo.DEMO_PROJECT}},
        {"Id": "bbb222", "Labels": {"io.podman.compose.project": demo.DEMO_PROJECT}},
    ]
    fake = bin_dir / "podman"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {log}\n'
        f"if [ \"$1\" = ps ]; then echo '{json.dumps(listed)}'; fi\n",
        encoding="utf-8",
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(demo, "CDI_SPEC_PATH", tmp_path / "gpuconfig-demo.yaml")
    demo.CDI_SPEC_PATH.write_text("cdiVersion: 0.5.0\n")

    demo.demo_down(data_dir=tmp_path)

    calls = log.read_text().splitlines()
    assert calls[0].startswith(
        f"ps -a --filter label=io.podman.compose.project={demo.DEMO_PROJECT}"
    )
    # Both containers, leftovers included, not only one per service.
    assert calls[1] == "rm -f -t 0 aaa111 bbb222"
    assert calls[2] == f"pod rm -f --ignore pod_{demo.DEMO_PROJECT}"
    assert not demo.CDI_SPEC_PATH.exists()
