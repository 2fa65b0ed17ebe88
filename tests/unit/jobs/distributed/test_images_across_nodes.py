"""Image jobs through the HTTP API of an API node (no model, no job run there) and a worker node sharing one Redis
and one data folder, on the `tiny` model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from imageforge.bootstrap import build_queue, build_service
from imageforge.config import Settings
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.engine.protocol import ImageBackend
from imageforge.jobs.distributed.queue import DistributedJobQueue
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from tests.gated import GatedBackend
from tests.loopback import LOCAL_URL
from tests.redis_server import RedisServer
from tests.unit.jobs.distributed.conftest import WAIT_S, running_worker

pytestmark = pytest.mark.slow

SMALL = {"width": 64, "height": 64, "steps": 2}


@contextmanager
def api_node(settings: Settings) -> Iterator[tuple[TestClient, ImageService]]:
    service = build_service(settings)
    app = create_app(service, max_body_bytes=int(settings.max_body_mb * 1024 * 1024))
    with TestClient(app, base_url=LOCAL_URL) as client:
        yield client, service


@contextmanager
def worker_node(settings: Settings, backend: ImageBackend | None = None) -> Iterator[ImageService]:
    queue = build_queue(settings)
    assert isinstance(queue, DistributedJobQueue)
    service = build_service(settings, queue=queue, backend=backend)
    service.start()
    try:
        with running_worker(queue, ["tiny"]):
            yield service
    finally:
        service.close()


@pytest.fixture
def distributed(settings: Settings, redis_server: RedisServer) -> Settings:
    return settings.model_copy(update={"queue_url": redis_server.url})


def test_an_image_job_queued_on_an_api_node_is_made_by_a_worker_and_served_by_the_api_node(
    distributed: Settings,
) -> None:
    with api_node(distributed) as (client, api), worker_node(distributed):
        accepted = client.post("/jobs", json={"prompt": "a red fox", **SMALL})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        api.wait_job(job_id, timeout=WAIT_S)
        job = client.get(f"/jobs/{job_id}").json()
        image = client.get(job["links"]["image"])

    assert job["status"] == "succeeded", job
    assert api.resident_models() == [], "the API node loads no model"
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"


def test_health_on_an_api_node_says_the_queue_is_on_redis_and_names_the_workers(distributed: Settings) -> None:
    with api_node(distributed) as (client, _), worker_node(distributed):
        health = client.get("/health").json()

    assert health["queue"]["kind"] == "redis"
    assert health["queue"]["reachable"] is True
    assert [worker["models"] for worker in health["queue"]["workers"]] == [["tiny"]]


def test_with_redis_down_a_submit_answers_503_queue_unavailable_without_hanging(
    distributed: Settings, redis_server: RedisServer
) -> None:
    with api_node(distributed) as (client, _):
        redis_server.stop()
        started = time.monotonic()
        refused = client.post("/jobs", json={"prompt": "nowhere to go", **SMALL})
        waited = time.monotonic() - started

    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "queue_unavailable"
    assert refused.json()["error"]["hint"]
    assert waited < WAIT_S


def test_an_idempotency_key_answers_the_same_job_on_another_api_node(distributed: Settings) -> None:
    body = {"prompt": "once only", **SMALL}
    headers = {"Idempotency-Key": "order-7"}
    with api_node(distributed) as (first, _), api_node(distributed) as (second, _):
        one = first.post("/jobs", json=body, headers=headers)
        other = second.post("/jobs", json=body, headers=headers)

    assert one.status_code == other.status_code == 202
    assert other.json()["job_id"] == one.json()["job_id"]


def test_a_full_queue_answers_429_queue_full_with_retry_after(distributed: Settings) -> None:
    limited = distributed.model_copy(update={"max_queue": 1})
    with api_node(limited) as (client, _):
        assert client.post("/jobs", json={"prompt": "first", **SMALL}).status_code == 202
        refused = client.post("/jobs", json={"prompt": "second", **SMALL})

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "queue_full"
    assert refused.headers["Retry-After"]


def test_a_running_job_cancelled_on_one_api_node_stops_on_its_worker_and_another_node_sees_it(
    distributed: Settings,
) -> None:
    backend = GatedBackend(DiffusersBackend(device="cpu", models_path=distributed.models_path))
    with (
        api_node(distributed) as (first, api),
        api_node(distributed) as (second, _),
        worker_node(distributed, backend),
    ):
        job_id = first.post("/jobs", json={"prompt": "stop me", **SMALL}).json()["job_id"]
        backend.wait_for_step()
        cancelling = second.delete(f"/jobs/{job_id}")
        backend.release(SMALL["steps"])
        api.wait_job(job_id, timeout=WAIT_S)
        seen = first.get(f"/jobs/{job_id}").json()

    assert cancelling.status_code == 202
    assert seen["status"] == "cancelled"
    assert seen["error"]["code"] == "cancelled"


def test_an_api_node_streams_the_steps_a_worker_makes_as_server_sent_events(distributed: Settings) -> None:
    backend = GatedBackend(DiffusersBackend(device="cpu", models_path=distributed.models_path))
    with api_node(distributed) as (client, _), worker_node(distributed, backend):
        job_id = client.post("/jobs", json={"prompt": "watch me", **SMALL}).json()["job_id"]
        backend.wait_for_step()
        with client.stream("GET", f"/jobs/{job_id}/events") as stream:
            backend.release(SMALL["steps"])
            lines = [line for line in stream.iter_lines() if line.startswith(("event: ", "data: "))]

    kinds = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    last = json.loads(lines[-1].removeprefix("data: "))
    assert kinds == ["state", "progress", "state"]
    assert last["status"] == "succeeded"


def test_with_redis_down_reading_a_job_answers_503_queue_unavailable(
    distributed: Settings, redis_server: RedisServer
) -> None:
    with api_node(distributed) as (client, _):
        job_id = client.post("/jobs", json={"prompt": "kept in redis", **SMALL}).json()["job_id"]
        redis_server.stop()
        answers = [client.get(f"/jobs/{job_id}"), client.get("/jobs"), client.delete(f"/jobs/{job_id}")]

    assert [answer.status_code for answer in answers] == [503, 503, 503]
    assert {answer.json()["error"]["code"] for answer in answers} == {"queue_unavailable"}


def test_health_on_an_api_node_says_degraded_with_queue_unavailable_while_redis_is_down(
    distributed: Settings, redis_server: RedisServer
) -> None:
    with api_node(distributed) as (client, _):
        redis_server.stop()
        down = client.get("/health").json()
        redis_server.start()
        back = client.get("/health").json()

    assert down["status"] == "degraded"
    assert down["reason"]["code"] == "queue_unavailable"
    assert down["queue"]["reachable"] is False
    assert back["status"] == "ok"
