"""Model lifecycle through HTTP: explicit load and unload, LRU eviction, idle unloading, out-of-memory recovery.

Everything is observed the way an operator would: through /health, /models and the job API.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.domain import Progress
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.transports.http.app import create_app
from tests.gated import GatedBackend, StepHookBackend
from tests.loopback import LOCAL_URL

SMALL = {"width": 64, "height": 64, "steps": 2}
WAIT_S = 30.0


def _health(client: TestClient) -> dict[str, Any]:
    health: dict[str, Any] = client.get("/health").json()
    return health


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` (an HTTP read) until it holds; what a client does to watch for a change."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _copies_of_tiny(settings: Settings, client: TestClient, memory_gb: float) -> None:
    """Two more catalog entries on the built tiny weights, each declared `memory_gb` in the models file."""
    client.post("/models/tiny/load").raise_for_status()  # builds the tiny folder on first use
    folder = settings.models_path / "tiny"
    entries = [
        f'[models.{key}]\nsource = "{folder}"\nsteps = 2\nguidance = 0.0\nsize = 64\nmemory_gb = {memory_gb}\n'
        for key in ("tiny-a", "tiny-b")
    ]
    (settings.root_dir / "models.toml").write_text("\n".join(entries))


def test_load_and_unload_change_what_health_reports_as_resident(client: TestClient) -> None:
    assert _health(client)["resident_models"] == []

    loaded = client.post("/models/tiny/load")
    again = client.post("/models/tiny/load")

    assert loaded.status_code == 200
    assert loaded.json()["resident"] is True
    assert loaded.json()["resident_models"] == ["tiny"]
    assert again.json()["changed"] is False
    health = _health(client)
    assert health["resident_models"] == ["tiny"]
    assert health["model_memory"]["resident"][0]["key"] == "tiny"

    unloaded = client.post("/models/tiny/unload")
    assert unloaded.json() == {
        "ok": True,
        "key": "tiny",
        "resident": False,
        "changed": True,
        "load_s": None,
        "resident_models": [],
    }
    assert _health(client)["resident_models"] == []
    assert client.post("/models/tiny/unload").json()["changed"] is False


def test_load_of_unknown_or_guarded_model_is_refused_with_its_code(client: TestClient) -> None:
    unknown = client.post("/models/nope/load")
    guarded = client.post("/models/flux-q4/load")

    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "model_not_found")
    assert (guarded.status_code, guarded.json()["error"]["code"]) == (403, "model_guarded")


def test_a_model_running_a_job_cannot_be_unloaded_until_the_job_ends(settings: Settings) -> None:
    backend = GatedBackend(DiffusersBackend(device="cpu", models_path=settings.models_path))
    with TestClient(create_app(build_service(settings, backend=backend)), base_url=LOCAL_URL) as client:
        try:
            job = client.post("/jobs", json={"prompt": "p", **SMALL}).json()
            backend.wait_for_step()

            busy = client.post("/models/tiny/unload")
            assert (busy.status_code, busy.json()["error"]["code"]) == (409, "model_busy")
            assert _health(client)["model_memory"]["resident"][0]["in_use"] is True
        finally:
            backend.release(100)
        _wait_for(lambda: client.get(job["links"]["self"]).json()["status"] == "succeeded", "the job")

        assert client.post("/models/tiny/unload").json()["changed"] is True


def test_over_the_memory_budget_the_least_recently_used_model_is_unloaded(settings: Settings) -> None:
    service = build_service(settings.model_copy(update={"memory_budget": 1.5}))
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        _copies_of_tiny(settings, client, memory_gb=1.0)
    service = build_service(settings.model_copy(update={"memory_budget": 1.5}))  # reads the models file
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        client.post("/generate", json={"prompt": "p", "model": "tiny-a", **SMALL}).raise_for_status()
        assert _health(client)["resident_models"] == ["tiny-a"]

        client.post("/generate", json={"prompt": "p", "model": "tiny-b", **SMALL}).raise_for_status()

        health = _health(client)
        assert health["resident_models"] == ["tiny-b"]
        assert health["model_memory"]["memory_budget_gb"] == 1.5
        models = {model["key"]: model for model in client.get("/models").json()["models"]}
        assert (models["tiny-a"]["resident"], models["tiny-b"]["resident"]) == (False, True)


def test_models_within_the_budget_stay_resident_together(settings: Settings) -> None:
    service = build_service(settings.model_copy(update={"memory_budget": 5}))
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        _copies_of_tiny(settings, client, memory_gb=1.0)
    service = build_service(settings.model_copy(update={"memory_budget": 5}))
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        for key in ("tiny-a", "tiny-b", "tiny-a"):
            client.post("/generate", json={"prompt": "p", "model": key, **SMALL}).raise_for_status()

        assert _health(client)["resident_models"] == ["tiny-b", "tiny-a"]


def test_an_idle_model_is_unloaded_after_the_idle_time(settings: Settings) -> None:
    service = build_service(settings.model_copy(update={"idle_unload_s": 0.2}))
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        client.post("/generate", json={"prompt": "p", **SMALL}).raise_for_status()
        assert _health(client)["model_memory"]["idle_unload_s"] == 0.2

        _wait_for(lambda: _health(client)["resident_models"] == [], "the idle unload")

        # And the next request simply loads it again.
        assert client.post("/generate", json={"prompt": "p", **SMALL}).status_code == 200


@pytest.fixture
def out_of_memory_once(settings: Settings) -> Iterator[TestClient]:
    """The real backend, whose first generation allocates more memory than any machine has inside its first
    step, so that the real allocator fails where a too-large image would make it fail."""
    steps = 0

    def exhaust(progress: Progress) -> None:
        nonlocal steps
        steps += 1
        if steps == 1:
            torch.empty(2**50, dtype=torch.uint8)  # 1 PiB: the CPU allocator refuses

    backend = StepHookBackend(DiffusersBackend(device="cpu", models_path=settings.models_path), exhaust)
    no_retry = settings.model_copy(update={"oom_fallback": []})  # tests/transports/http/test_memory_fallback.py
    with TestClient(create_app(build_service(no_retry, backend=backend)), base_url=LOCAL_URL) as client:
        yield client


def test_out_of_memory_without_a_fallback_fails_the_job_with_a_hint_and_the_next_job_runs(
    out_of_memory_once: TestClient,
) -> None:
    client = out_of_memory_once

    failed = client.post("/generate", json={"prompt": "p", "seed": 1, **SMALL})
    job = client.get("/jobs?status=failed").json()["jobs"][0]
    succeeded = client.post("/generate", json={"prompt": "p", "seed": 1, "return_mode": "path", **SMALL})

    assert failed.status_code == 503
    error = failed.json()["error"]
    assert error["code"] == "out_of_memory"
    assert "ran out of memory" in error["message"]
    assert "smaller size" in error["hint"]
    assert job["error"]["code"] == "out_of_memory"
    assert succeeded.status_code == 200
    assert Path(succeeded.json()["output_path"]).is_file()
    assert _health(client)["resident_models"] == ["tiny"]
