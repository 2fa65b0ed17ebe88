"""Expiry seen through HTTP: a swept job answers 410, its served image is gone, and the cache still answers.

The jobs' clock is the test's, so results expire when the test moves it, and the sweep runs when the test
asks for it rather than at the sweeper's next round.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from tests.events import wait_for_end
from tests.helpers import png_base64
from tests.loopback import LOCAL_URL

TTL_S = 60.0
SEEDED = {"prompt": "a lighthouse at dusk", "seed": 7, "steps": 2, "width": 64, "height": 64}


class Clock:
    """A wall clock that only moves when the test moves it."""

    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def expiring(settings: Settings, clock: Clock) -> Iterator[tuple[TestClient, ImageService]]:
    """A client on a service whose results live `TTL_S` seconds of `clock`."""
    service = build_service(settings.model_copy(update={"result_ttl_s": TTL_S}), clock=clock)
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        yield client, service


def finished(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    """Submit a job, follow it to its end, and return it as GET /jobs/{id} then answers."""
    job = client.post("/jobs", json=body).json()
    assert wait_for_end(client, job) == "succeeded"
    done: dict[str, Any] = client.get(job["links"]["self"]).json()
    return done


def test_swept_job_answers_410_and_its_image_leaves_the_output_folder(
    expiring: tuple[TestClient, ImageService], clock: Clock, settings: Settings
) -> None:
    client, service = expiring
    job = finished(client, {"prompt": "a fox", "steps": 1, "width": 64, "height": 64})
    output = Path(job["result"]["output_path"])
    assert output.parent == settings.output_path
    assert client.get(job["links"]["image"]).status_code == 200

    clock.advance(TTL_S + 1)
    service.sweep_expired()

    response = client.get(job["links"]["self"])
    assert response.status_code == 410
    assert response.json()["error"]["code"] == "expired"
    assert client.get(job["links"]["image"]).status_code == 404
    assert not output.exists()
    assert not output.with_suffix(".json").exists(), "the sidecar goes with its image"
    assert job["job_id"] not in [listed["job_id"] for listed in client.get("/jobs").json()["jobs"]]


def test_sweeping_keeps_an_image_that_a_readable_cache_hit_shares(
    expiring: tuple[TestClient, ImageService], clock: Clock
) -> None:
    client, service = expiring
    first = finished(client, SEEDED)
    clock.advance(TTL_S / 2)
    hit = finished(client, SEEDED)
    assert hit["result"]["cached"] is True
    assert hit["result"]["output_path"] == first["result"]["output_path"], "a cache hit shares the stored image"
    shared = Path(first["result"]["output_path"])
    png = shared.read_bytes()

    clock.advance(TTL_S / 2 + 1)  # past the first job's expiry, not the hit's
    service.sweep_expired()

    assert client.get(first["links"]["self"]).status_code == 410
    assert client.get(hit["links"]["self"]).json()["status"] == "succeeded"
    image = client.get(hit["links"]["image"])
    assert image.status_code == 200, "the hit is still readable, so is its image"
    assert image.content == png

    clock.advance(TTL_S)
    service.sweep_expired()

    assert client.get(hit["links"]["self"]).json()["error"]["code"] == "expired"
    assert client.get(hit["links"]["image"]).status_code == 404
    assert not shared.exists(), "the last job holding the image took it with it"


def test_an_expired_jobs_input_image_leaves_the_input_store_once_no_other_job_names_it(
    expiring: tuple[TestClient, ImageService], clock: Clock, settings: Settings
) -> None:
    client, service = expiring
    edit = {"task": "img2img", "init_image": png_base64((64, 64), (10, 200, 30)), "steps": 2, "width": 64, "height": 64}
    inputs = settings.data_path / "inputs"
    first = finished(client, {**edit, "prompt": "a lighthouse"})
    clock.advance(TTL_S - 1)
    second = finished(client, {**edit, "prompt": "the same lighthouse at night"})
    assert len(list(inputs.rglob("*.png"))) == 1, "an equal image is stored once for both jobs"

    clock.advance(2)  # past the first job's expiry, not the second's
    assert service.sweep_expired() == [first["job_id"]]
    assert len(list(inputs.rglob("*.png"))) == 1, "kept while the second job names it"

    clock.advance(TTL_S)
    assert service.sweep_expired() == [second["job_id"]]
    assert list(inputs.rglob("*.png")) == [], "the last job naming the image took it with it"


def test_a_job_expiring_while_an_equal_image_is_submitted_leaves_that_image_for_the_new_job(
    expiring: tuple[TestClient, ImageService], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, service = expiring
    edit = {"task": "img2img", "init_image": png_base64((64, 64), (90, 20, 160)), "steps": 2, "width": 64, "height": 64}
    first = finished(client, {**edit, "prompt": "a lighthouse"})
    queue_submit = service._queue.submit

    def sweep_first_then_queue(*args: Any, **kwargs: Any) -> Any:
        """The sweep runs after the new job's image was stored and before the job names it."""
        clock.advance(TTL_S + 1)
        assert service.sweep_expired() == [first["job_id"]]
        return queue_submit(*args, **kwargs)

    monkeypatch.setattr(service._queue, "submit", sweep_first_then_queue)
    second = finished(client, {**edit, "prompt": "the same lighthouse at night"})

    assert second["result"]["task"] == "img2img"


def test_cache_answers_a_seeded_request_after_its_jobs_expired(
    expiring: tuple[TestClient, ImageService], clock: Clock
) -> None:
    client, service = expiring
    first = finished(client, SEEDED)
    png = Path(first["result"]["output_path"]).read_bytes()
    clock.advance(TTL_S + 1)
    service.sweep_expired()
    assert client.get(first["links"]["image"]).status_code == 404

    again = client.post("/generate", json={**SEEDED, "return_mode": "both"})

    assert again.status_code == 200, again.json()
    body = again.json()
    assert body["cached"] is True
    assert base64.b64decode(body["image_base64"]) == png
    output = Path(body["output_path"])
    assert output.read_bytes() == png, "the cache wrote the image back to the output folder"
    assert client.get(f"/images/{output.name}").content == png


def test_an_idempotency_key_whose_job_expired_and_was_swept_starts_a_new_job(
    expiring: tuple[TestClient, ImageService], clock: Clock
) -> None:
    client, service = expiring
    key = {"Idempotency-Key": "nightly-lighthouse"}
    first = client.post("/jobs", json=SEEDED, headers=key).json()
    assert wait_for_end(client, first) == "succeeded"
    clock.advance(TTL_S + 1)
    assert service.sweep_expired() == [first["job_id"]]

    again = client.post("/jobs", json=SEEDED, headers=key)
    repeated = client.post("/jobs", json=SEEDED, headers=key)

    assert again.status_code == 202
    assert again.json()["job_id"] != first["job_id"]
    assert wait_for_end(client, again.json()) == "succeeded"
    assert repeated.json()["job_id"] == again.json()["job_id"], "the key names the new job from then on"
    assert client.get(first["links"]["self"]).json()["error"]["code"] == "expired"
