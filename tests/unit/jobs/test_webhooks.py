"""The webhook dispatcher against a real receiver on loopback, with a resolver the test controls: it posts to the
address it checked, and checks again before each attempt (a host that resolves elsewhere later is not posted to)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageforge.config import Address
from imageforge.domain import DeliveryStatus, Job, JobEvent, JobStatus
from imageforge.jobs.webhook_targets import WebhookTargets
from imageforge.jobs.webhooks import DeliveryStore, WebhookDispatcher, secret_from_file
from tests.webhook_receiver import Receiver, receiving

PUBLIC = "93.184.216.34"
SETTLE_S = 30.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as receiver:
        yield receiver


def dispatcher_for(tmp_path: Path, entries: list[str], dns: dict[str, list[str]]) -> WebhookDispatcher:
    """A dispatcher whose host names resolve through `dns`, which the test may change later."""

    def resolver(host: str, port: int) -> list[Address]:
        return [ipaddress.ip_address(address) for address in dns.get(host, [host])]

    return WebhookDispatcher(
        DeliveryStore(tmp_path / "webhooks.sqlite"),
        WebhookTargets(entries, resolver=resolver),
        secret_from_file(tmp_path / "webhook.secret"),
        retry_s=[0.0],
    )


def completed(dispatcher: WebhookDispatcher, url: str) -> Job:
    """Tell `dispatcher` that a job with a webhook at `url` succeeded; the job."""
    job = Job(id="job1", kind="image", payload={"webhook": {"url": url, "events": ["completed"]}})
    job.status = JobStatus.SUCCEEDED
    dispatcher.on_event(job, JobEvent(type="state", job_id=job.id, data={"status": job.status.value}))
    return job


def test_a_host_that_resolves_to_loopback_at_delivery_is_not_posted_to(tmp_path: Path, receiver: Receiver) -> None:
    dns = {"hooks.example.net": [PUBLIC]}
    dispatcher = dispatcher_for(tmp_path, ["hooks.example.net"], dns)
    url = f"http://hooks.example.net:{receiver.port}/hook"
    dispatcher.check(url)  # as at submit: a public address

    dns["hooks.example.net"] = ["127.0.0.1"]  # rebound before the delivery
    job = completed(dispatcher, url)
    dispatcher.start()
    try:
        assert dispatcher.settle(SETTLE_S)
        webhook = dispatcher.webhook(job)
    finally:
        dispatcher.close()

    assert receiver.received == []
    assert webhook is not None
    (delivery,) = webhook.deliveries
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (DeliveryStatus.GIVEN_UP, 1, None)
    assert "127.0.0.1" in str(delivery.last_error)


def test_a_delivery_connects_to_the_checked_address_and_names_the_host(tmp_path: Path, receiver: Receiver) -> None:
    dispatcher = dispatcher_for(tmp_path, [f"127.0.0.1:{receiver.port}"], {"hooks.example.net": ["127.0.0.1"]})
    job = completed(dispatcher, f"http://hooks.example.net:{receiver.port}/hook")
    dispatcher.start()
    try:
        assert dispatcher.settle(SETTLE_S)
        webhook = dispatcher.webhook(job)
    finally:
        dispatcher.close()

    (received,) = receiver.wait_for(1)
    assert received.headers["host"] == f"hooks.example.net:{receiver.port}"
    assert webhook is not None
    assert webhook.deliveries[0].status is DeliveryStatus.DELIVERED


def test_the_secret_made_on_first_use_is_kept_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "data" / "webhook.secret"

    made = secret_from_file(path)

    assert made.startswith("whsec_")
    assert secret_from_file(path) == made
    assert path.stat().st_mode & 0o777 == 0o600
