"""A job's event stream on a real server: keep-alives while the job is silent, and every event to the end."""

from __future__ import annotations

import json

import httpx
import pytest

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.transports.http.app import create_app
from imageforge.transports.http.routes import jobs
from tests.gated import WAIT_S, GatedBackend
from tests.loopback import serving_app

KEEPALIVE = ": keep-alive"


def test_a_silent_job_gets_keep_alives_and_its_stream_still_carries_every_event_to_the_end(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "KEEPALIVE_S", 0.05)
    backend = GatedBackend(DiffusersBackend(device="cpu", models_path=settings.models_path))
    with serving_app(create_app(build_service(settings, backend=backend))) as url:
        try:
            job = httpx.post(f"{url}/jobs", json={"prompt": "a heron", "steps": 2, "width": 64, "height": 64}).json()
            backend.wait_for_step()
            lines = []
            with httpx.stream("GET", job["links"]["events"], timeout=WAIT_S) as response:
                for line in response.iter_lines():
                    lines.append(line)
                    if line == KEEPALIVE and KEEPALIVE not in lines[:-1]:
                        backend.release(1000)  # the job held at step 1 long enough for a keep-alive
        finally:
            backend.release(1000)

    assert KEEPALIVE in lines
    kinds = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    data = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert kinds == ["state", "progress", "state"]
    assert (data[0]["status"], data[0]["step"]) == ("running", 1), "the first event is the state so far"
    assert data[1]["step"] == 2
    assert data[2]["status"] == "succeeded"


def test_a_waiting_jobs_stream_says_how_many_jobs_start_before_it(settings: Settings) -> None:
    backend = GatedBackend(DiffusersBackend(device="cpu", models_path=settings.models_path))
    small = {"steps": 1, "width": 64, "height": 64}
    with serving_app(create_app(build_service(settings, backend=backend))) as url:
        try:
            httpx.post(f"{url}/jobs", json={"prompt": "first", **small})
            backend.wait_for_step()
            httpx.post(f"{url}/jobs", json={"prompt": "second", **small})
            third = httpx.post(f"{url}/jobs", json={"prompt": "third", **small}).json()
            lines = []
            with httpx.stream("GET", third["links"]["events"], timeout=WAIT_S) as response:
                for line in response.iter_lines():
                    lines.append(line)
                    if line.startswith("data: ") and len(lines) == 3:
                        backend.release(1)  # the first ends, the second starts
                    if line.startswith("event: queue"):
                        backend.release(1000)
        finally:
            backend.release(1000)

    kinds = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    data = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert kinds[:3] == ["state", "queue", "state"]
    assert (data[0]["status"], data[0]["ahead"]) == ("queued", 2), "the first (running) and the second"
    assert data[1] == {"job_id": third["job_id"], "position": 1, "ahead": 1}, "the second is running"
    assert data[2]["status"] == "running"
