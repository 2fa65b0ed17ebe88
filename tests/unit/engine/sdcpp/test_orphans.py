"""A child left behind by an imageforge that was killed (SIGKILL gives it no chance to stop its children) is
stopped by the next imageforge on the same data folder, before it starts its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from fastapi.testclient import TestClient

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.transports.http.app import create_app
from tests.events import wait_for_end
from tests.loopback import LOCAL_URL
from tests.unit.engine.sdcpp.test_sdcpp_models import _sdcpp_entry


def test_a_child_whose_imageforge_is_gone_is_stopped_when_the_next_one_loads_an_sdcpp_model(
    settings: Settings, tmp_path: Path
) -> None:
    # A long-running stand-in for the orphan: `sleep` under the configured sd-server's name.
    server = tmp_path / "engine" / "sd-server"
    server.parent.mkdir()
    sleep = shutil.which("sleep")
    assert sleep is not None
    shutil.copy(sleep, server)
    orphan = subprocess.Popen([str(server), "300"])
    dead_parent = subprocess.Popen(["true"])  # once it has ended, its pid is an imageforge that is gone
    dead_parent.wait()
    records = settings.data_path / "sdcpp-children"
    records.mkdir()
    (records / f"{orphan.pid}.json").write_text(json.dumps({"parent": dead_parent.pid, "binary": str(server)}))
    # Someone else's process recorded as a child of a live imageforge (this test) is left alone.
    bystander = subprocess.Popen([str(server), "300"])
    (records / f"{bystander.pid}.json").write_text(json.dumps({"parent": os.getpid(), "binary": "x"}))

    try:
        configured = settings.model_copy(update={"models_file": _sdcpp_entry(tmp_path), "sdcpp_server": server})
        with TestClient(create_app(build_service(configured)), base_url=LOCAL_URL) as client:
            job = client.post("/jobs", json={"model": "local-flux", "prompt": "p", "width": 64, "height": 64}).json()
            wait_for_end(client, job)

        assert orphan.wait(timeout=30) == -9
        assert not (records / f"{orphan.pid}.json").exists()
        assert bystander.poll() is None
    finally:
        for process in (orphan, bystander):
            process.kill()
            process.wait()
