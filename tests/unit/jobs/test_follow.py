"""Following a job without a thread, what open follows cost a client, and a bounded close."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from imageforge.domain import LOCAL_CALLER, Caller, JobEvent, JobStatus
from imageforge.errors import Cancelled, Interrupted, QueueShareExceeded
from imageforge.jobs.embedded import EmbeddedJobQueue
from imageforge.jobs.queue import JobContext, QueueLimits
from imageforge.jobs.store import JobStore
from tests.unit.jobs.test_queue import WAIT, Clock, Steps

pytestmark = pytest.mark.anyio

FOLLOWERS = 100


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def steps() -> Steps:
    return Steps()


def _queue(path: Path, steps: Steps, limits: QueueLimits | None = None) -> EmbeddedJobQueue:
    queue = EmbeddedJobQueue(JobStore(path), limits or QueueLimits(), clock=Clock())
    queue.register("steps", steps)
    queue.register("until_stopped", _until_stopped)
    queue.start()
    return queue


def _until_stopped(payload: dict[str, Any], context: JobContext) -> dict[str, Any]:
    """A job of many short steps that runs until it is told to stop."""
    step = 0
    while not context.should_stop():
        step += 1
        context.progress(step, 0)
        threading.Event().wait(0.01)  # one short step of work
    raise Cancelled("stopped")


@pytest.fixture
def queue(tmp_path: Path, steps: Steps) -> Iterator[EmbeddedJobQueue]:
    queue = _queue(tmp_path / "jobs.sqlite", steps)
    yield queue
    steps.gate.release(100)
    queue.close()


@pytest.fixture
def shared(tmp_path: Path, steps: Steps) -> Iterator[EmbeddedJobQueue]:
    """A queue where each client may hold two places."""
    queue = _queue(tmp_path / "jobs.sqlite", steps, QueueLimits(client_share=2))
    yield queue
    steps.gate.release(100)
    queue.close()


async def _all_events(queue: EmbeddedJobQueue, job_id: str, caller: Caller = LOCAL_CALLER) -> list[JobEvent]:
    return [event async for event in queue.follow(job_id, caller=caller)]


async def test_many_followers_see_every_step_to_the_end_without_a_thread_each(
    queue: EmbeddedJobQueue, steps: Steps
) -> None:
    job = queue.submit("steps", {"name": "a", "steps": 2})
    threads_before = threading.active_count()
    followers = [asyncio.ensure_future(_all_events(queue, job.id)) for _ in range(FOLLOWERS)]
    await asyncio.sleep(0)  # let each follower start

    threads_while_following = threading.active_count()
    steps.gate.release(2)
    seen = await asyncio.wait_for(asyncio.gather(*followers), WAIT)

    assert threads_while_following <= threads_before
    for events in seen:
        assert [event.data.get("status") for event in events if event.type == "state"][-1] == "succeeded"
        assert [event.data["step"] for event in events if event.type == "progress"] == [1, 2]


async def test_a_follow_starts_at_the_current_state_of_a_running_job(queue: EmbeddedJobQueue, steps: Steps) -> None:
    job = queue.submit("steps", {"name": "a", "steps": 2})
    events = queue.follow(job.id)
    first = await anext(events)
    assert first.type == "state"
    steps.gate.release(1)
    after_step = [event async for event in _until_step(events, 1)]
    current = await anext(queue.follow(job.id))

    assert current.type == "state"
    assert (current.data["status"], current.data["step"]) == ("running", 1)
    assert current.index == after_step[-1].index, "the current state stands for every event so far"
    await events.aclose()


async def _until_step(events: AsyncIterator[JobEvent], step: int) -> AsyncIterator[JobEvent]:
    async for event in events:
        yield event
        if event.type == "progress" and event.data["step"] == step:
            return


async def test_follows_beyond_the_first_on_a_clients_job_count_against_its_share(shared: EmbeddedJobQueue) -> None:
    queue = shared
    job = queue.submit("steps", {"name": "alice's"}, caller=Caller("alice"))
    first = queue.follow(job.id, caller=Caller("alice"))
    second = queue.follow(job.id, caller=Caller("alice"))
    await anext(first)  # her own job: following it costs nothing more
    await anext(second)  # a second wait on it takes her second place

    with pytest.raises(QueueShareExceeded):
        await anext(queue.follow(job.id, caller=Caller("alice")))
    with pytest.raises(QueueShareExceeded):
        queue.submit("steps", {"name": "one more"}, caller=Caller("alice"))
    bobs = queue.follow(job.id, caller=Caller("bob"))
    assert (await anext(bobs)).job_id == job.id, "another client's share is its own"

    await second.aclose()
    third = queue.follow(job.id, caller=Caller("alice"))
    assert (await anext(third)).job_id == job.id, "a closed follow frees its place at once"
    assert queue.held_by("alice") == 2
    for events in (first, third, bobs):
        await events.aclose()
    assert queue.held_by("alice") == 1, "her job still waits to run"


async def test_a_cancelled_wait_frees_its_place_at_once(shared: EmbeddedJobQueue) -> None:
    queue = shared
    job = queue.submit("steps", {"name": "alice's"}, caller=Caller("alice"))
    waits = [asyncio.ensure_future(_all_events(queue, job.id, Caller("alice"))) for _ in range(2)]
    await asyncio.sleep(0)
    assert queue.held_by("alice") == 2

    for wait in waits:
        wait.cancel()
    await asyncio.gather(*waits, return_exceptions=True)

    assert queue.held_by("alice") == 1


async def test_a_follow_ends_interrupted_when_the_queue_closes_first(tmp_path: Path, steps: Steps) -> None:
    queue = _queue(tmp_path / "jobs.sqlite", steps)
    running = queue.submit("steps", {"name": "running"})
    queued = queue.submit("steps", {"name": "queued"})
    events = queue.follow(queued.id)
    assert (await anext(events)).data["status"] == "queued"
    # The worker has taken the first job (on a busy machine it may not have yet when the test gets here).
    assert await asyncio.to_thread(queue.events, running.id, 0, WAIT), "the first job is running"

    closing = asyncio.ensure_future(asyncio.to_thread(queue.close, 0.1))
    with pytest.raises(Interrupted):
        await _next_but_queue(events)
    await closing
    steps.gate.release(10)
    assert queue.get(running.id).status is JobStatus.FAILED


def test_close_interrupts_the_running_job_and_keeps_queued_ones_for_the_next_start(
    tmp_path: Path, steps: Steps
) -> None:
    path = tmp_path / "jobs.sqlite"
    queue = _queue(path, steps)
    running = queue.submit("until_stopped", {})
    queued = queue.submit("steps", {"name": "queued", "gated": False})
    assert queue.events(running.id, after=0, timeout=WAIT), "the first job is running"

    queue.close(timeout_s=WAIT)

    again = _queue(path, steps)
    try:
        interrupted = again.get(running.id)
        assert interrupted.status is JobStatus.FAILED
        assert interrupted.error is not None
        assert interrupted.error["code"] == "interrupted"
        assert again.wait(queued.id, WAIT).status is JobStatus.SUCCEEDED
    finally:
        again.close()


def test_close_does_not_wait_past_its_timeout_for_a_step_that_does_not_end(tmp_path: Path, steps: Steps) -> None:
    path = tmp_path / "jobs.sqlite"
    queue = _queue(path, steps)
    running = queue.submit("steps", {"name": "held at its first step"})
    assert steps.started.wait(WAIT)

    queue.close(timeout_s=0.1)
    stopped = queue.get(running.id)
    steps.gate.release()  # the abandoned step ends later: the job stays interrupted

    assert stopped.status is JobStatus.FAILED
    assert stopped.error is not None
    assert stopped.error["code"] == "interrupted"
    stored = JobStore(path).get(running.id)
    assert stored is not None
    assert stored.status is JobStatus.FAILED


async def _next_but_queue(events: AsyncGenerator[JobEvent, None]) -> JobEvent:
    """The next event that is not a `queue` one: the worker may take the job ahead after the follow began."""
    while (event := await asyncio.wait_for(anext(events), WAIT)).type == "queue":
        pass
    return event


async def _drain(events: AsyncIterator[JobEvent]) -> None:
    async for _ in events:
        pass


async def test_ending_follows_ends_an_open_follow_interrupted_and_leaves_its_job_running(
    queue: EmbeddedJobQueue, steps: Steps
) -> None:
    running = queue.submit("steps", {"name": "running"})
    events = queue.follow(running.id)
    assert (await anext(events)).data["status"] in ("queued", "running")

    queue.end_follows()

    with pytest.raises(Interrupted):
        await asyncio.wait_for(_drain(events), WAIT)
    assert not queue.get(running.id).status.is_terminal
    assert queue.held_by(LOCAL_CALLER.name) == 1
