"""Jobs across real processes: `imageforge serve --queue` API nodes and `imageforge worker`s on one Redis and one
shared folder, driven through HTTP with the official Python client, as a team's clients would."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageforge.client import Client, GenerationOptions, JobEvent, QueueFull
from tests.contract.conftest import IMAGEFORGE
from tests.distributed.cluster import Cluster, Process
from tests.distributed.conftest import WORKER_OPTIONS

pytestmark = pytest.mark.slow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Long enough on the `tiny` model (seconds on a CPU) that a test acts on it while it runs.
LONG_STEPS = 100
LONG: GenerationOptions = {"width": 512, "height": 512, "steps": LONG_STEPS}


def api_nodes(cluster: Cluster) -> tuple[Process, Process]:
    first, second = (process for process in cluster.processes if process.name.startswith("api-"))
    return first, second


@pytest.fixture
def clients(two_by_two: Cluster) -> Iterator[tuple[Client, Client]]:
    """A client on each API node."""
    first, second = api_nodes(two_by_two)
    with Client(first.url, timeout=120) as on_a, Client(second.url, timeout=120) as on_b:
        yield on_a, on_b


def first_step(client: Client, job_id: str) -> JobEvent:
    """Follow the job until its first finished step (its worker runs it); the stream closes as the loop is left."""
    for event in client.events(job_id):
        assert not event.is_terminal, f"the job ended before any step: {event}"
        if event.type == "progress":
            return event
    raise AssertionError("the stream ended before any step")


def test_a_job_submitted_on_one_api_node_runs_on_a_worker_and_its_image_is_read_on_another(
    two_by_two: Cluster, clients: tuple[Client, Client]
) -> None:
    on_a, on_b = clients

    job = on_a.submit("a lighthouse at dusk", width=64, height=64, steps=2)
    result = on_b.wait(job.job_id)

    ended = on_b.job(job.job_id)
    assert ended.status == "succeeded"
    assert ended.image_url is not None
    assert on_b.image(ended.image_url) == result.png
    assert result.png.startswith(PNG_SIGNATURE)
    assert Path(result.output_path).parent == (two_by_two.shared / "outputs").resolve()
    assert on_a.job(job.job_id).status == "succeeded"


def test_the_steps_of_a_job_submitted_on_one_api_node_are_followed_on_another(clients: tuple[Client, Client]) -> None:
    on_a, on_b = clients

    job = on_a.submit("a lighthouse at dusk", width=256, height=256, steps=30)
    events = list(on_b.events(job.job_id))

    steps = [event.data["step"] for event in events if event.type == "progress"]
    assert steps, "no progress event reached the other API node"
    assert steps == sorted(set(steps))
    assert steps[-1] == 30
    assert events[-1].type == "state"
    assert events[-1].data["status"] == "succeeded"


def test_a_running_job_submitted_on_one_api_node_is_cancelled_from_another(clients: tuple[Client, Client]) -> None:
    on_a, on_b = clients
    job = on_a.submit("a lighthouse at dusk", **LONG)
    first_step(on_b, job.job_id)

    on_b.cancel(job.job_id)
    last = list(on_a.events(job.job_id))[-1]

    assert last.data["status"] == "cancelled"
    ended = on_a.job(job.job_id)
    assert ended.status == "cancelled"
    assert ended.error is not None
    assert ended.error["code"] == "cancelled"
    assert ended.progress.step < LONG_STEPS


def test_a_queued_job_submitted_on_one_api_node_is_cancelled_at_once_from_another(
    clients: tuple[Client, Client],
) -> None:
    on_a, on_b = clients
    # One long job per worker, so that the next one waits in the queue.
    running = [on_a.submit("a lighthouse at dusk", **LONG) for _ in range(2)]
    for job in running:
        first_step(on_b, job.job_id)
    waiting = on_a.submit("a lighthouse at dusk", width=64, height=64, steps=2)

    cancelled = on_b.cancel(waiting.job_id)

    assert cancelled.status == "cancelled"
    assert on_a.job(waiting.job_id).status == "cancelled"
    for job in running:
        on_b.cancel(job.job_id)
        assert list(on_a.events(job.job_id))[-1].data["status"] == "cancelled"


def test_an_idempotency_key_sent_to_two_api_nodes_names_one_job(clients: tuple[Client, Client]) -> None:
    on_a, on_b = clients

    first = on_a.submit("a lighthouse at dusk", width=64, height=64, steps=2, idempotency_key="order-19")
    again = on_b.submit("a lighthouse at dusk", width=64, height=64, steps=2, idempotency_key="order-19")

    assert again.job_id == first.job_id
    assert on_b.wait(first.job_id).png.startswith(PNG_SIGNATURE)


def test_a_queue_filled_through_one_api_node_refuses_the_next_job_on_another(cluster: Cluster) -> None:
    # No worker: the first job stays waiting, and the queue holds one.
    limits = {"IMAGEFORGE_MAX_QUEUE": "1"}
    first, second = cluster.api(env=limits), cluster.api(env=limits)
    with Client(first.url, timeout=60) as on_a, Client(second.url, timeout=60) as on_b:
        waiting = on_a.submit("a lighthouse at dusk", width=64, height=64, steps=2)

        with pytest.raises(QueueFull) as refused:
            on_b.submit("a lighthouse at dusk", width=64, height=64, steps=2)

        assert on_b.job(waiting.job_id).status == "queued"
    assert refused.value.code == "queue_full"


def test_a_clients_share_counts_its_jobs_on_every_api_node_while_another_client_gets_in(cluster: Cluster) -> None:
    alice, bob = (add_key(cluster, name) for name in ("alice", "bob"))
    # No worker: every accepted job stays waiting.
    limits = {"IMAGEFORGE_QUEUE_SHARE": "1"}
    first, second = cluster.api(env=limits), cluster.api(env=limits)
    with (
        Client(first.url, api_key=alice, timeout=60) as alice_on_a,
        Client(second.url, api_key=alice, timeout=60) as alice_on_b,
        Client(second.url, api_key=bob, timeout=60) as bob_on_b,
    ):
        waiting = alice_on_a.submit("a lighthouse at dusk", width=64, height=64, steps=2)

        with pytest.raises(QueueFull) as refused:
            alice_on_b.submit("a harbour at noon", width=64, height=64, steps=2)
        bobs = bob_on_b.submit("a harbour at noon", width=64, height=64, steps=2)

        assert alice_on_b.job(waiting.job_id).status == "queued"
    assert refused.value.code == "queue_share_exceeded"
    assert bobs.status == "queued"


def test_the_same_seeded_request_sent_to_two_api_nodes_while_it_waits_is_one_job(cluster: Cluster) -> None:
    first, second = cluster.api(), cluster.api()
    request: GenerationOptions = {"width": 64, "height": 64, "steps": 2, "seed": 19}
    with Client(first.url, timeout=60) as on_a, Client(second.url, timeout=60) as on_b:
        waiting = on_a.submit("a lighthouse at dusk", **request)
        same = on_b.submit("a lighthouse at dusk", **request)
        other_seed = on_b.submit("a lighthouse at dusk", **(request | {"seed": 20}))

        cluster.worker(*WORKER_OPTIONS)
        result = on_b.wait(same.job_id)
        assert on_a.wait(other_seed.job_id).png != result.png

    assert same.job_id == waiting.job_id
    assert other_seed.job_id != waiting.job_id
    assert result.png.startswith(PNG_SIGNATURE)


def add_key(cluster: Cluster, name: str) -> str:
    """A new API key named `name` in the cluster's shared data folder, as `imageforge keys add` prints it."""
    added = subprocess.run(
        [str(IMAGEFORGE), "keys", "add", name],
        env=cluster.environment(),
        cwd=cluster.root,
        capture_output=True,
        text=True,
        check=True,
    )
    return added.stdout.strip()
