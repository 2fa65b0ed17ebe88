"""A real Redis and a real Celery worker (solo pool, in a thread) for the distributed queue's tests."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker

from imageforge.errors import Cancelled
from imageforge.jobs.distributed import dispatch
from imageforge.jobs.distributed.queue import DistributedJobQueue
from imageforge.jobs.distributed.worker import JobRunner
from imageforge.jobs.queue import DEFAULT_LIMITS, JobContext, QueueLimits
from tests.redis_server import RedisServer, running_redis

WAIT_S = 60.0


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


class Gate:
    """Holds a job function at a step until the test opens it; says when a job reached it."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.opened = threading.Event()

    def hold(self) -> None:
        self.reached.set()
        assert self.opened.wait(WAIT_S), "the test never opened the gate"


class Turnstile:
    """Holds each run of a job function until the test lets that run through."""

    def __init__(self) -> None:
        self._arrivals: queue.Queue[threading.Event] = queue.Queue()

    def hold(self) -> None:
        passage = threading.Event()
        self._arrivals.put(passage)
        assert passage.wait(WAIT_S), "the test never let this run through"

    def arrival(self) -> threading.Event:
        """The next run that reached the turnstile (waiting for it); set it to let that run through."""
        return self._arrivals.get(timeout=WAIT_S)


def held(turnstile: Turnstile) -> Callable[[dict[str, Any], JobContext], dict[str, Any]]:
    """A job function that reports a step, waits at the turnstile, then stops at the next step if asked to."""

    def run(payload: dict[str, Any], context: JobContext) -> dict[str, Any]:
        context.progress(1, 2)
        turnstile.hold()
        if context.should_stop():
            raise Cancelled("stopped")
        context.progress(2, 2)
        return {"echo": payload.get("text", "")}

    return run


def until(condition: Callable[[], bool], what: str) -> None:
    """Wait until `condition` holds (checked every 50 ms), failing with `what` after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        threading.Event().wait(0.05)


def echo(payload: dict[str, Any], context: JobContext) -> dict[str, Any]:
    """A job function of a few steps that answers its payload."""
    steps = int(payload.get("steps", 3))
    context.stage("loading", {"model": payload.get("model", "m")})
    for step in range(1, steps + 1):
        context.progress(step, steps)
    return {"echo": payload.get("text", "")}


def gated(gate: Gate) -> Callable[[dict[str, Any], JobContext], dict[str, Any]]:
    """A job function that reports one step, waits at the gate, then stops at the next step if asked to."""

    def run(payload: dict[str, Any], context: JobContext) -> dict[str, Any]:
        context.progress(1, 2)
        gate.hold()
        if context.should_stop():
            raise Cancelled("stopped")
        context.progress(2, 2)
        return {"echo": payload.get("text", "")}

    return run


_made: list[DistributedJobQueue] = []


@pytest.fixture(autouse=True)
def _queues_closed() -> Iterator[None]:
    """Every queue a test made is closed after it, with its connections."""
    yield
    while _made:
        _made.pop().close()


def make_queue(url: str, limits: QueueLimits = DEFAULT_LIMITS, **options: Any) -> DistributedJobQueue:
    """A queue on the Redis at `url` with the `echo` job function, closed after the test."""
    queue = DistributedJobQueue(url, limits, **options)
    queue.register("echo", echo)
    _made.append(queue)
    return queue


@contextmanager
def running_worker(queue: DistributedJobQueue, routes: list[str] = ["m"]) -> Iterator[JobRunner]:  # noqa: B006
    """A real Celery worker of `queue` (solo pool, in a thread) consuming the queues of `routes`."""
    runner = queue.serve_as_worker(routes, device="cpu", name="test-worker")
    try:
        with start_worker(
            queue.app,
            pool="solo",
            perform_ping_check=False,
            queues=[dispatch.queue_name(route) for route in routes],
            shutdown_timeout=WAIT_S,
            loglevel="WARNING",
        ):
            yield runner
    finally:
        queue.close()
