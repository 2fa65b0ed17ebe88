"""Job webhooks over HTTP on the real tiny model, to a real receiver on loopback: deliveries verified the way a
receiver verifies them (the Standard Webhooks library), retried after a failure and recorded on the job, refused
for places the operator did not allow, never redirected, and kept across a restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from imageforge.bootstrap import build_service, build_webhooks, webhook_secret
from imageforge.client import Client
from imageforge.config import Settings
from imageforge.domain import GenerationParams, Job, JobStatus, JobWebhook, Task
from imageforge.errors import ImageforgeError
from imageforge.jobs.embedded import EmbeddedJobQueue
from imageforge.jobs.store import JobStore
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from tests.events import wait_for_end
from tests.loopback import LOCAL_URL, serving_app
from tests.webhook_receiver import REDIRECT_PATH, Receiver, receiving

SETTLE_S = 60.0
JOB = {"prompt": "a fox", "steps": 2, "width": 64, "height": 64}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as receiver:
        yield receiver


def allowing(settings: Settings, receiver: Receiver, *, retry_s: list[float]) -> Settings:
    """`settings` with the receiver's loopback address and port allowed, and the given retry schedule."""
    return settings.model_copy(update={"webhook_allow": [f"127.0.0.1:{receiver.port}"], "webhook_retry_s": retry_s})


@pytest.fixture
def served(settings: Settings, receiver: Receiver) -> Iterator[tuple[TestClient, ImageService]]:
    """A client on a service that allows the receiver, retrying a failed delivery at once, once."""
    service = build_service(allowing(settings, receiver, retry_s=[0.0]))
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        yield client, service


def finished(client: TestClient, service: ImageService, body: dict[str, Any]) -> dict[str, Any]:
    """Submit `body`, follow the job to its end and its deliveries until none is due; the job as GET shows it."""
    job = client.post("/jobs", json=body)
    assert job.status_code == 202, job.json()
    wait_for_end(client, job.json())
    assert service.settle_webhooks(SETTLE_S)
    shown: dict[str, Any] = client.get(f"/jobs/{job.json()['job_id']}").json()
    return shown


def test_a_finished_job_posts_its_completion_signed_so_that_a_receiver_verifies_it(
    served: tuple[TestClient, ImageService], receiver: Receiver, settings: Settings
) -> None:
    client, service = served

    job = finished(client, service, {**JOB, "webhook": receiver.url})

    (delivery,) = receiver.wait_for(1)
    verified = Webhook(webhook_secret(settings)).verify(delivery.body, delivery.headers)
    assert verified["type"] == "job.completed"
    assert verified["data"]["job_id"] == job["job_id"]
    assert verified["data"]["status"] == "succeeded"
    assert verified["data"]["result"]["seed"] == job["result"]["seed"]
    assert delivery.headers["webhook-id"].startswith("msg_")
    assert job["webhook"]["url"] == receiver.url
    assert job["webhook"]["events"] == ["completed"]
    (recorded,) = job["webhook"]["deliveries"]
    assert recorded["id"] == delivery.headers["webhook-id"]
    assert (recorded["status"], recorded["attempts"], recorded["last_status_code"]) == ("delivered", 1, 200)


def test_a_forged_or_altered_delivery_fails_verification(
    served: tuple[TestClient, ImageService], receiver: Receiver, settings: Settings
) -> None:
    client, service = served
    finished(client, service, {**JOB, "webhook": receiver.url})
    (delivery,) = receiver.wait_for(1)

    altered = delivery.body.replace(b"succeeded", b"failed\x20\x20\x20")
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(webhook_secret(settings)).verify(altered, delivery.headers)
    other_secret = "whsec_" + "A" * 43 + "="
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(other_secret).verify(delivery.body, delivery.headers)


def test_a_job_that_asks_for_every_event_posts_them_in_order(
    served: tuple[TestClient, ImageService], receiver: Receiver
) -> None:
    client, service = served

    job = finished(
        client, service, {**JOB, "webhook": receiver.url, "webhook_events": ["started", "progress", "completed"]}
    )

    bodies = [json.loads(delivery.body) for delivery in receiver.wait_for(4)]
    assert [body["type"] for body in bodies] == ["job.started", "job.progress", "job.progress", "job.completed"]
    assert [body["data"]["step"] for body in bodies[1:3]] == [1, 2]
    assert len({delivery["id"] for delivery in job["webhook"]["deliveries"]}) == 4
    assert job["webhook"]["events"] == ["started", "progress", "completed"]


def test_a_receiver_that_hangs_holds_up_no_job(served: tuple[TestClient, ImageService], receiver: Receiver) -> None:
    client, _ = served
    receiver.gate.clear()
    hooked = client.post("/jobs", json={**JOB, "webhook": receiver.url}).json()
    assert wait_for_end(client, hooked) == "succeeded"
    receiver.wait_for(1)  # its delivery is being posted, and held

    other = client.post("/jobs", json={**JOB, "seed": 1}).json()

    assert wait_for_end(client, other) == "succeeded"
    (delivery,) = client.get(f"/jobs/{hooked['job_id']}").json()["webhook"]["deliveries"]
    assert (delivery["status"], delivery["attempts"]) == ("pending", 0)
    receiver.gate.set()


def test_a_receiver_that_answers_500_gets_the_delivery_again_with_the_same_id_and_the_attempts_are_recorded(
    served: tuple[TestClient, ImageService], receiver: Receiver, settings: Settings
) -> None:
    client, service = served
    receiver.statuses[:] = [500]

    job = finished(client, service, {**JOB, "webhook": receiver.url})

    first, second = receiver.wait_for(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    Webhook(webhook_secret(settings)).verify(second.body, second.headers)
    (recorded,) = job["webhook"]["deliveries"]
    assert (recorded["status"], recorded["attempts"], recorded["last_status_code"]) == ("delivered", 2, 200)


def test_a_delivery_that_fails_every_attempt_is_given_up_with_the_last_answer(
    served: tuple[TestClient, ImageService], receiver: Receiver
) -> None:
    client, service = served
    receiver.statuses[:] = [503, 500]

    job = finished(client, service, {**JOB, "webhook": receiver.url})

    assert len(receiver.wait_for(2)) == 2
    (recorded,) = job["webhook"]["deliveries"]
    assert (recorded["status"], recorded["attempts"], recorded["last_status_code"]) == ("given_up", 2, 500)
    assert recorded["next_attempt_at"] is None


def test_a_redirect_is_not_followed(settings: Settings, receiver: Receiver) -> None:
    receiver.statuses[:] = [302]
    service = build_service(allowing(settings, receiver, retry_s=[]))
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        job = finished(client, service, {**JOB, "webhook": receiver.url})

    assert [delivery.path for delivery in receiver.received] == ["/hook"]
    assert REDIRECT_PATH not in [delivery.path for delivery in receiver.received]
    (recorded,) = job["webhook"]["deliveries"]
    assert (recorded["status"], recorded["last_status_code"]) == ("given_up", 302)
    assert "redirect" in recorded["last_error"]


def test_a_webhook_is_refused_at_submit_while_the_allow_list_is_empty(client: TestClient, receiver: Receiver) -> None:
    answer = client.post("/jobs", json={**JOB, "webhook": receiver.url})

    assert answer.status_code == 403
    error = answer.json()["error"]
    assert error["code"] == "webhook_not_allowed"
    assert "IMAGEFORGE_WEBHOOK_ALLOW" in error["hint"]
    assert client.get("/jobs").json()["jobs"] == []


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.net:{port}/hook",  # a host the list does not name
        "http://127.0.0.1:1/hook",  # the allowed address on another port
        "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
        "ftp://127.0.0.1:{port}/hook",
        "http://user:secret@127.0.0.1:{port}/hook",
    ],
)
def test_a_webhook_outside_the_allow_list_is_refused_at_submit(
    served: tuple[TestClient, ImageService], receiver: Receiver, url: str
) -> None:
    client, _ = served

    answer = client.post("/jobs", json={**JOB, "webhook": url.format(port=receiver.port)})

    assert answer.status_code == 403, answer.json()
    assert answer.json()["error"]["code"] == "webhook_not_allowed"
    assert receiver.received == []


def test_loopback_is_refused_when_only_a_host_name_is_allowed(settings: Settings, receiver: Receiver) -> None:
    service = build_service(settings.model_copy(update={"webhook_allow": [f"localhost:{receiver.port}", "*"]}))
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        for url in (receiver.url, f"http://localhost:{receiver.port}/hook", f"http://[::1]:{receiver.port}/hook"):
            answer = client.post("/jobs", json={**JOB, "webhook": url})
            assert answer.status_code == 403, (url, answer.json())
            assert answer.json()["error"]["code"] == "webhook_not_allowed"


def test_a_pending_delivery_is_posted_after_a_restart(settings: Settings, receiver: Receiver) -> None:
    receiver.statuses[:] = [500]
    # The retry is an hour away: only the restart brings it sooner.
    hooked = allowing(settings, receiver, retry_s=[3600.0])
    request = GenerationParams(task=Task.TEXT2IMG, prompt="a fox", steps=2, width=64, height=64, webhook=receiver.url)
    first = build_service(hooked)
    first.start()
    try:
        job = first.submit(request)
        first.wait_job(job.id, timeout=SETTLE_S)
        assert first.settle_webhooks(SETTLE_S)
        (pending,) = webhook_of(first, job.id).deliveries
        assert (pending.status, pending.attempts, pending.last_status_code) == ("pending", 1, 500)
    finally:
        first.close()

    second = build_service(hooked)
    second.start()
    try:
        assert second.settle_webhooks(SETTLE_S)
        failed, retried = receiver.wait_for(2)
        (delivered,) = webhook_of(second, job.id).deliveries
    finally:
        second.close()
    assert retried.headers["webhook-id"] == failed.headers["webhook-id"] == delivered.id
    Webhook(webhook_secret(settings)).verify(retried.body, retried.headers)
    assert (delivered.status, delivered.attempts, delivered.last_status_code) == ("delivered", 2, 200)


def test_a_job_that_was_running_when_the_server_died_posts_its_end_at_the_next_start(
    settings: Settings, receiver: Receiver
) -> None:
    store = JobStore(settings.jobs_path)
    webhook = {"url": receiver.url, "events": ["completed"]}
    store.save(Job(id="was-running", kind="image", payload={"webhook": webhook}, status=JobStatus.RUNNING))
    store.close()

    service = build_service(allowing(settings, receiver, retry_s=[]))
    service.start()
    try:
        assert service.settle_webhooks(SETTLE_S)
    finally:
        service.close()

    (delivery,) = receiver.wait_for(1)
    ended = Webhook(webhook_secret(settings)).verify(delivery.body, delivery.headers)
    assert (ended["type"], ended["data"]["status"]) == ("job.completed", "failed")
    assert ended["data"]["error"]["code"] == "interrupted"


def test_the_python_client_gives_a_job_a_webhook_and_reads_its_deliveries(
    settings: Settings, receiver: Receiver
) -> None:
    service = build_service(allowing(settings, receiver, retry_s=[]))
    with serving_app(create_app(service)) as url, Client(url) as client:
        job = client.submit("a fox", steps=2, width=64, height=64, webhook=receiver.url, webhook_events=["started"])
        client.wait(job.job_id)
        assert service.settle_webhooks(SETTLE_S)
        shown = client.job(job.job_id)
        with pytest.raises(ImageforgeError) as refused:
            client.submit("a fox", webhook="http://169.254.169.254/latest/")

    assert shown.webhook is not None
    assert shown.webhook["events"] == ["started"]
    assert [delivery["status"] for delivery in shown.webhook["deliveries"]] == ["delivered"]
    assert refused.value.code == "webhook_not_allowed"


def test_a_webhook_is_refused_on_the_distributed_queue(settings: Settings) -> None:
    assert build_webhooks(settings.model_copy(update={"queue_url": "redis://127.0.0.1:6379/0"})) is None
    queue = EmbeddedJobQueue(JobStore(settings.jobs_path))  # a queue of its own: no webhook sender wired to it
    service = build_service(settings.model_copy(update={"webhook_allow": ["*"]}), queue=queue)
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        answer = client.post("/jobs", json={**JOB, "webhook": "https://hooks.example.net/x"})

    assert answer.status_code == 501
    assert answer.json()["error"]["code"] == "webhooks_unavailable"


def webhook_of(service: ImageService, job_id: str) -> JobWebhook:
    webhook = service.job_webhook(service.get_job(job_id))
    assert webhook is not None
    return webhook
