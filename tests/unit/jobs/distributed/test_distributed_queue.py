"""The distributed queue against a real Redis and a real Celery worker: the embedded queue's semantics."""

from __future__ import annotations

import asyncio
import logging
import threading
from threading import Event

import pytest

from imageforge.domain import Caller, JobEvent, JobStatus
from imageforge.jobs.distributed.queue import DistributedJobQueue
from imageforge.jobs.distributed.records import Records
from imageforge.jobs.queue import QueueLimits
from tests.redis_server import RedisServer
from tests.unit.jobs.distributed.conftest import (
    WAIT_S,
    Gate,
    Turnstile,
    gated,
    held,
    make_queue,
    running_worker,
    until,
)

pytestmark = pytest.mark.slow


def _follow_in_thread(queue: DistributedJobQueue, job_id: str) -> tuple[threading.Thread, list[JobEvent], Event]:
    """Follow the job from another thread's event loop; the event is set once the first event came."""
    events: list[JobEvent] = []
    first = Event()

    async def collect() -> None:
        async for event in queue.follow(job_id):
            events.append(event)
            first.set()

    thread = threading.Thread(target=lambda: asyncio.run(asyncio.wait_for(collect(), WAIT_S)))
    thread.start()
    return thread, events, first


def test_a_job_submitted_on_an_api_node_runs_on_a_worker_and_its_result_is_readable(
    redis_server: RedisServer,
) -> None:
    api = make_queue(redis_server.url)
    worker_side = make_queue(redis_server.url)
    with running_worker(worker_side):
        job = api.submit("echo", {"model": "m", "text": "hello"})
        done = api.wait(job.id, timeout=WAIT_S)

    assert done.status is JobStatus.SUCCEEDED
    assert done.result == {"echo": "hello"}
    assert api.get(job.id).step == 3


def test_a_follower_on_another_node_sees_each_step_and_the_end_in_order(redis_server: RedisServer) -> None:
    api = make_queue(redis_server.url)
    job = api.submit("echo", {"model": "m", "steps": 4})
    follower, events, first = _follow_in_thread(make_queue(redis_server.url), job.id)
    assert first.wait(WAIT_S)
    with running_worker(make_queue(redis_server.url)):
        follower.join(WAIT_S)

    assert [event.type for event in events] == ["state", "state", "stage", *["progress"] * 4, "state"]
    assert [event.data["step"] for event in events if event.type == "progress"] == [1, 2, 3, 4]
    assert [event.data["status"] for event in events if event.type == "state"] == ["queued", "running", "succeeded"]
    assert [event.index for event in events] == list(range(len(events)))


def test_cancelling_a_queued_job_ends_it_before_any_worker_runs_it(redis_server: RedisServer) -> None:
    api = make_queue(redis_server.url)
    job = api.submit("echo", {"model": "nobody-serves-this"})

    cancelled = api.cancel(job.id)

    assert cancelled.status is JobStatus.CANCELLED
    assert api.get(job.id).error == {"code": "cancelled", "message": "The job was cancelled.", "hint": ""}


def test_cancelling_a_running_job_stops_it_at_its_next_step(redis_server: RedisServer) -> None:
    gate = Gate()
    api = make_queue(redis_server.url)
    worker_side = make_queue(redis_server.url)
    worker_side.register("gated", gated(gate))
    api.register("gated", gated(gate))
    with running_worker(worker_side):
        job = api.submit("gated", {"model": "m"})
        assert gate.reached.wait(WAIT_S)
        assert api.cancel(job.id).status is JobStatus.RUNNING
        gate.opened.set()
        done = api.wait(job.id, timeout=WAIT_S)

    assert done.status is JobStatus.CANCELLED


def test_the_same_idempotency_key_answers_the_same_job(redis_server: RedisServer) -> None:
    api = make_queue(redis_server.url)
    other_node = make_queue(redis_server.url)

    first = api.submit("echo", {"model": "idle"}, idempotency_key="k1")
    again = other_node.submit("echo", {"model": "idle"}, idempotency_key="k1")

    assert again.id == first.id


def test_a_client_past_its_share_is_refused_while_others_get_in(redis_server: RedisServer) -> None:
    from imageforge.errors import QueueShareExceeded

    api = make_queue(redis_server.url, QueueLimits(client_share=1))
    alice, bob = Caller("alice"), Caller("bob")
    api.submit("echo", {"model": "idle", "n": 1}, caller=alice)

    with pytest.raises(QueueShareExceeded):
        make_queue(redis_server.url, QueueLimits(client_share=1)).submit("echo", {"model": "idle"}, caller=alice)
    assert api.submit("echo", {"model": "idle", "n": 2}, caller=bob).status is JobStatus.QUEUED


def test_a_full_queue_refuses_a_new_job_with_queue_full(redis_server: RedisServer) -> None:
    from imageforge.errors import QueueFull

    api = make_queue(redis_server.url, QueueLimits(max_queued=2))
    for n in range(2):
        api.submit("echo", {"model": "idle", "n": n})

    with pytest.raises(QueueFull) as refused:
        api.submit("echo", {"model": "idle", "n": 3})
    assert refused.value.code == "queue_full"


def _dead_heartbeats(worker_side: DistributedJobQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's job heartbeats stop renewing, as when its process was killed: each lapses after its TTL."""
    monkeypatch.setattr(worker_side.records, "beat", lambda *_args, **_kwargs: None)


def test_a_job_whose_worker_stopped_beating_runs_again_once_and_succeeds(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    turnstile = Turnstile()
    api = make_queue(redis_server.url)
    worker_side = make_queue(redis_server.url, heartbeat_ttl_s=1.0)
    for queue in (api, worker_side):
        queue.register("held", held(turnstile))
    _dead_heartbeats(worker_side, monkeypatch)
    with running_worker(worker_side):
        job = api.submit("held", {"model": "m"})
        first_run = turnstile.arrival()
        until(lambda: not api.records.heartbeat_alive(job.id), "the first run's heartbeat lapsed")

        assert api.recover_stale() == [job.id]
        assert api.get(job.id).status is JobStatus.QUEUED
        first_run.set()  # the first run finds the job given to another attempt, and records nothing
        turnstile.arrival().set()
        done = api.wait(job.id, timeout=WAIT_S)

    assert done.status is JobStatus.SUCCEEDED
    record = api.records.load(job.id)
    assert record is not None
    assert record.attempt == 2


def test_a_job_whose_worker_died_twice_ends_interrupted(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    turnstile = Turnstile()
    api = make_queue(redis_server.url)
    worker_side = make_queue(redis_server.url, heartbeat_ttl_s=1.0)
    for queue in (api, worker_side):
        queue.register("held", held(turnstile))
    _dead_heartbeats(worker_side, monkeypatch)
    with running_worker(worker_side):
        job = api.submit("held", {"model": "m"})
        first_run = turnstile.arrival()
        until(lambda: not api.records.heartbeat_alive(job.id), "the first run's heartbeat lapsed")
        assert api.recover_stale() == [job.id]
        first_run.set()
        second_run = turnstile.arrival()
        until(lambda: api.get(job.id).status is JobStatus.RUNNING, "the second run started")
        until(lambda: not api.records.heartbeat_alive(job.id), "the second run's heartbeat lapsed")

        assert api.recover_stale() == []
        done = api.get(job.id)
        second_run.set()

    assert done.status is JobStatus.FAILED
    assert done.error is not None
    assert done.error["code"] == "interrupted"


def test_a_late_delivery_of_an_old_attempt_is_dropped(redis_server: RedisServer) -> None:
    api = make_queue(redis_server.url)
    worker_side = make_queue(redis_server.url)
    with running_worker(worker_side):
        job = api.submit("echo", {"model": "m", "text": "once"})
        done = api.wait(job.id, timeout=WAIT_S)

    worker_side.runner("late").run(job.id, 1)  # Celery may deliver a task twice

    again = api.get(job.id)
    assert again.status is JobStatus.SUCCEEDED
    assert again.finished_at == done.finished_at
    assert again.result == {"echo": "once"}


def test_jobs_queued_before_a_redis_restart_run_after_it_and_the_api_node_takes_new_ones(
    redis_server: RedisServer,
) -> None:
    api = make_queue(redis_server.url)
    before = api.submit("echo", {"model": "m", "text": "before"})

    redis_server.restart()
    after = api.submit("echo", {"model": "m", "text": "after"})
    with running_worker(make_queue(redis_server.url)):
        done = [api.wait(job.id, timeout=WAIT_S) for job in (before, after)]

    assert [job.status for job in done] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]
    assert [job.result for job in done] == [{"echo": "before"}, {"echo": "after"}]


def test_a_started_api_node_reruns_the_job_of_a_dead_worker_by_itself(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    turnstile = Turnstile()
    api = make_queue(redis_server.url, heartbeat_sweep_s=0.2)
    worker_side = make_queue(redis_server.url, heartbeat_ttl_s=1.0)
    for queue in (api, worker_side):
        queue.register("held", held(turnstile))
    _dead_heartbeats(worker_side, monkeypatch)
    api.start()
    try:
        with running_worker(worker_side):
            job = api.submit("held", {"model": "m"})
            first_run = turnstile.arrival()
            until(lambda: getattr(api.records.load(job.id), "attempt", 0) == 2, "the sweeper gave the job a rerun")
            first_run.set()
            turnstile.arrival().set()
            done = api.wait(job.id, timeout=WAIT_S)
    finally:
        api.close()

    assert done.status is JobStatus.SUCCEEDED


def test_in_flight_duplicates_run_once(redis_server: RedisServer) -> None:
    api = make_queue(redis_server.url)

    first = api.submit("echo", {"model": "idle", "seed": 1}, dedupe_key="same-pixels")
    second = make_queue(redis_server.url).submit("echo", {"model": "idle", "seed": 1}, dedupe_key="same-pixels")

    assert second.id == first.id


def test_an_idempotency_key_reused_with_another_body_is_a_conflict(redis_server: RedisServer) -> None:
    from imageforge.errors import IdempotencyConflict

    api = make_queue(redis_server.url)
    api.submit("echo", {"model": "idle", "text": "a"}, idempotency_key="k")

    with pytest.raises(IdempotencyConflict):
        api.submit("echo", {"model": "idle", "text": "b"}, idempotency_key="k")


def test_a_result_is_readable_until_it_expires_then_answers_expired(redis_server: RedisServer) -> None:
    from imageforge.errors import JobExpired

    now = [1_000_000.0]
    limits = QueueLimits(result_ttl_s=60.0)
    api = make_queue(redis_server.url, limits, clock=lambda: now[0])
    with running_worker(make_queue(redis_server.url, limits, clock=lambda: now[0])):
        job = api.submit("echo", {"model": "m", "text": "short-lived"})
        assert api.wait(job.id, timeout=WAIT_S).result == {"echo": "short-lived"}

    now[0] += 61.0
    assert api.sweep() == [job.id]
    with pytest.raises(JobExpired):
        api.get(job.id)


def test_the_per_client_rate_counts_the_jobs_a_client_sent_to_every_api_node(redis_server: RedisServer) -> None:
    from imageforge.errors import RateLimited

    limits = QueueLimits(client_jobs_per_minute=2)
    first, second = make_queue(redis_server.url, limits), make_queue(redis_server.url, limits)
    alice = Caller("alice")
    first.submit("echo", {"model": "idle", "n": 1}, caller=alice)
    second.submit("echo", {"model": "idle", "n": 2}, caller=alice)

    with pytest.raises(RateLimited) as refused:
        first.submit("echo", {"model": "idle", "n": 3}, caller=alice)
    assert refused.value.retry_after_s >= 1
    assert second.submit("echo", {"model": "idle", "n": 4}, caller=Caller("bob")).status is JobStatus.QUEUED


def test_a_running_job_finishes_through_a_redis_restart(redis_server: RedisServer) -> None:
    turnstile = Turnstile()
    api = make_queue(redis_server.url)
    worker_side = make_queue(redis_server.url)
    for queue in (api, worker_side):
        queue.register("held", held(turnstile))
    with running_worker(worker_side):
        job = api.submit("held", {"model": "m", "text": "survived"})
        run = turnstile.arrival()
        redis_server.restart()
        run.set()
        done = api.wait(job.id, timeout=WAIT_S)

    assert done.status is JobStatus.SUCCEEDED
    assert done.result == {"echo": "survived"}


class _LogSeen(logging.Handler):
    """Sets `seen` once a record whose message holds `text` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


def test_a_job_that_ends_while_redis_is_down_is_recorded_once_redis_is_back(redis_server: RedisServer) -> None:
    turnstile = Turnstile()
    api = make_queue(redis_server.url)
    worker_side = make_queue(redis_server.url)
    for queue in (api, worker_side):
        queue.register("held", held(turnstile))
    retrying = _LogSeen("recording its end failed")
    logging.getLogger("imageforge.jobs.distributed.worker").addHandler(retrying)
    try:
        with running_worker(worker_side):
            job = api.submit("held", {"model": "m", "text": "kept"})
            run = turnstile.arrival()
            redis_server.stop()
            run.set()
            assert retrying.seen.wait(WAIT_S), "the worker never tried to record the end"
            redis_server.start()
            done = api.wait(job.id, timeout=WAIT_S)
    finally:
        logging.getLogger("imageforge.jobs.distributed.worker").removeHandler(retrying)

    assert done.status is JobStatus.SUCCEEDED
    assert done.result == {"echo": "kept"}


def test_recent_jobs_come_newest_first_and_an_isolated_caller_sees_only_its_own(redis_server: RedisServer) -> None:
    api = make_queue(redis_server.url)
    alice, bob = Caller("alice", isolated=True), Caller("bob", isolated=True)
    ids = [api.submit("echo", {"model": "idle", "n": n}, caller=alice if n % 2 else bob).id for n in range(5)]
    api.cancel(ids[4])

    assert [job.id for job in api.recent(caller=alice)] == [ids[3], ids[1]]
    assert [job.id for job in api.recent(limit=2)] == [ids[4], ids[3]]
    assert [job.id for job in api.recent([JobStatus.CANCELLED])] == [ids[4]]


def test_a_waiting_job_hears_its_new_place_when_the_job_ahead_of_it_leaves(redis_server: RedisServer) -> None:
    api = make_queue(redis_server.url)
    first = api.submit("echo", {"model": "idle", "n": 1})
    second = api.submit("echo", {"model": "idle", "n": 2})
    before = api.records.last_index(second.id)

    api.cancel(first.id)

    moved = api.events(second.id, after=before, timeout=WAIT_S)
    assert [(event.type, event.data) for event in moved] == [("queue", {"position": 1, "ahead": 0})]
    assert api.position(second.id) == 1


def test_a_finished_jobs_run_time_is_kept_for_its_model(redis_server: RedisServer) -> None:
    api = make_queue(redis_server.url)
    with running_worker(make_queue(redis_server.url)):
        job = api.wait(api.submit("echo", {"model": "m"}).id, timeout=WAIT_S)

    records = Records(redis_server.url)
    assert records.recent_runs("m") == [round(job.timings["run_ms"] / 1000, 3)]


def test_a_waiting_jobs_eta_counts_the_rounds_its_models_workers_need_to_reach_it(redis_server: RedisServer) -> None:
    api = make_queue(redis_server.url)
    records = Records(redis_server.url)
    first, second, third = (api.submit("echo", {"model": "m", "n": n}) for n in range(3))
    assert api.eta(first.id) is None, "no run time to go by yet"

    pipe = records.redis.pipeline()
    for run_s in (5.0, 7.0):
        records.note_run(pipe, "m", run_s)
    pipe.execute()
    alone = [api.eta(job.id) for job in (first, second, third)]
    for name in ("gpu-1", "gpu-2"):
        records.worker_beat(name, {"name": name, "models": ["m"]}, ttl_s=60.0)
    records.worker_beat("other", {"name": "other", "models": ["another-model"]}, ttl_s=60.0)
    with_two_workers = [api.eta(job.id) for job in (first, second, third)]

    assert alone == [6.0, 12.0, 18.0]
    assert with_two_workers == [6.0, 6.0, 12.0]


def test_a_running_jobs_eta_is_its_steps_left_at_the_pace_of_its_steps_so_far(redis_server: RedisServer) -> None:
    now = [1_000_000.0]
    gate = Gate()
    api = make_queue(redis_server.url, clock=lambda: now[0])
    worker_side = make_queue(redis_server.url, clock=lambda: now[0])
    for queue in (api, worker_side):
        queue.register("gated", gated(gate))
    with running_worker(worker_side):
        job = api.submit("gated", {"model": "m"})
        try:
            assert gate.reached.wait(WAIT_S)
            until(lambda: api.get(job.id).step == 1, "the job reported its first step")
            now[0] += 4.0
            eta = api.eta(job.id)
        finally:
            gate.opened.set()
        done = api.wait(job.id, timeout=WAIT_S)

    assert eta == 4.0
    assert api.eta(done.id) is None


def test_two_api_nodes_taking_the_last_place_at_once_accept_one_job(redis_server: RedisServer) -> None:
    from imageforge.errors import QueueFull

    limits = QueueLimits(max_queued=1)
    first, second = make_queue(redis_server.url, limits), make_queue(redis_server.url, limits)
    counted = first._records.waiting
    taken: list[str] = []

    def waiting_while_the_other_node_takes_the_place() -> int:
        # The first node counts the waiting jobs; the second accepts a job before the first one stores its own.
        seen = counted()
        if not taken:
            taken.append(second.submit("echo", {"model": "idle", "n": 2}).id)
        return seen

    first._records.waiting = waiting_while_the_other_node_takes_the_place  # type: ignore[method-assign]

    with pytest.raises(QueueFull):
        first.submit("echo", {"model": "idle", "n": 1})
    assert [job.id for job in second.recent(limit=10)] == taken
