"""EmbeddedJobQueue with plain job functions: order, events, cancel, limits, idempotency, restart, expiry."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from imageforge.domain import Caller, Job, JobStatus
from imageforge.errors import (
    Cancelled,
    DataFolderInUse,
    IdempotencyConflict,
    InvalidRequest,
    JobExpired,
    JobFinished,
    JobNotFound,
    JobNotReady,
    QueueFull,
    QueueShareExceeded,
    RateLimited,
)
from imageforge.jobs.embedded import EmbeddedJobQueue
from imageforge.jobs.queue import JobContext, QueueLimits
from imageforge.jobs.store import JobStore

WAIT = 10.0
#: Two clients told apart by their API keys, and an admin key.
ALICE = Caller("alice", isolated=True)
BOB = Caller("bob", isolated=True)
ADMIN = Caller("root", isolated=True, admin=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Steps:
    """A job function that runs `payload["steps"]` steps, each released by the test through `gate`."""

    def __init__(self) -> None:
        self.gate = threading.Semaphore(0)
        self.started = threading.Event()
        self.steps_run: dict[str, int] = {}
        self.order: list[str] = []

    def __call__(self, payload: dict[str, Any], context: JobContext) -> dict[str, Any]:
        self.order.append(payload["name"])
        self.started.set()
        total = int(payload.get("steps", 1))
        for step in range(1, total + 1):
            if payload.get("gated", True):
                assert self.gate.acquire(timeout=WAIT), "the test never released the step"
            if context.should_stop():
                raise Cancelled("stopped")
            self.steps_run[context.job_id] = step
            context.progress(step, total)
            if context.wants_preview():
                context.preview({"step": step})
        if payload.get("fail"):
            raise InvalidRequest("bad payload", hint="fix it")
        if payload.get("crash"):
            raise RuntimeError("boom")
        return {"name": payload["name"], "steps": total}


@pytest.fixture
def steps() -> Steps:
    return Steps()


def _queue(path: Path, steps: Steps, limits: QueueLimits | None = None, clock: Clock | None = None) -> EmbeddedJobQueue:
    queue = EmbeddedJobQueue(JobStore(path), limits or QueueLimits(), clock=clock or Clock())
    queue.register("steps", steps)
    queue.start()
    return queue


@pytest.fixture
def queue(tmp_path: Path, steps: Steps) -> Iterator[EmbeddedJobQueue]:
    queue = _queue(tmp_path / "jobs.sqlite", steps)
    yield queue
    for _ in range(100):
        steps.gate.release()
    queue.close()


def test_submitted_job_runs_and_succeeds_with_its_result(queue: EmbeddedJobQueue, steps: Steps) -> None:
    job = queue.submit("steps", {"name": "a", "steps": 2, "gated": False})

    assert job.status is JobStatus.QUEUED
    done = queue.wait(job.id, WAIT)
    assert done.status is JobStatus.SUCCEEDED
    assert done.result == {"name": "a", "steps": 2}
    assert (done.step, done.total) == (2, 2)
    assert done.started_at is not None
    assert done.finished_at is not None
    assert done.expires_at is not None
    assert set(done.timings) >= {"queue_ms", "run_ms"}
    assert queue.get(job.id).result == done.result, "a result can be read more than once"


def test_events_come_in_order_state_progress_terminal(queue: EmbeddedJobQueue) -> None:
    job = queue.submit("steps", {"name": "a", "steps": 3, "gated": False})
    queue.wait(job.id, WAIT)

    events = queue.events(job.id, after=-1, timeout=0)
    described = [(e.type, e.data.get("status") or e.data.get("step")) for e in events]
    assert described == [
        ("state", "queued"),
        ("state", "running"),
        ("progress", 1),
        ("progress", 2),
        ("progress", 3),
        ("state", "succeeded"),
    ]
    assert [e.index for e in events] == list(range(6))
    assert events[-1].is_terminal
    assert queue.events(job.id, after=events[-1].index, timeout=0) == []


def test_previews_are_made_only_once_asked_for_and_sent_only_to_who_asked(
    queue: EmbeddedJobQueue, steps: Steps
) -> None:
    watched = queue.submit("steps", {"name": "watched", "steps": 2})
    queue.events(watched.id, previews=True, timeout=0)  # a viewer with previews subscribes before it runs
    unwatched = queue.submit("steps", {"name": "unwatched", "steps": 2})
    steps.gate.release(4)
    queue.wait(unwatched.id, timeout=WAIT)

    with_previews = [event.type for event in queue.events(watched.id, previews=True, timeout=0)]
    without = [event.type for event in queue.events(watched.id, timeout=0)]
    unwatched_events = [event.type for event in queue.events(unwatched.id, previews=True, timeout=0)]

    assert with_previews == ["state", "state", "progress", "preview", "progress", "preview", "state"]
    assert without == ["state", "state", "progress", "progress", "state"]
    assert "preview" not in unwatched_events


def test_jobs_run_one_at_a_time_in_order_with_queue_positions(queue: EmbeddedJobQueue, steps: Steps) -> None:
    first = queue.submit("steps", {"name": "first"})
    assert steps.started.wait(WAIT)
    second = queue.submit("steps", {"name": "second"})
    third = queue.submit("steps", {"name": "third"})

    assert [queue.position(j.id) for j in (first, second, third)] == [0, 1, 2]
    assert queue.get(second.id).status is JobStatus.QUEUED
    steps.gate.release(3)
    for job in (first, second, third):
        assert queue.wait(job.id, WAIT).status is JobStatus.SUCCEEDED
    assert steps.order == ["first", "second", "third"]
    assert queue.position(third.id) is None


def test_cancel_queued_job_ends_it_at_once_and_it_never_runs(queue: EmbeddedJobQueue, steps: Steps) -> None:
    running = queue.submit("steps", {"name": "running"})
    assert steps.started.wait(WAIT)
    waiting = queue.submit("steps", {"name": "waiting"})
    after = queue.submit("steps", {"name": "after"})

    cancelled = queue.cancel(waiting.id)

    assert cancelled.status is JobStatus.CANCELLED
    assert queue.position(after.id) == 1
    steps.gate.release(2)
    assert queue.wait(running.id, WAIT).status is JobStatus.SUCCEEDED
    assert queue.wait(after.id, WAIT).status is JobStatus.SUCCEEDED
    assert steps.order == ["running", "after"]


def test_cancel_running_job_stops_it_at_the_next_step(queue: EmbeddedJobQueue, steps: Steps) -> None:
    job = queue.submit("steps", {"name": "long", "steps": 50})
    other = queue.submit("steps", {"name": "other", "steps": 1, "gated": False})
    steps.gate.release(2)
    events = queue.events(job.id, after=2, timeout=WAIT)  # the first progress event
    assert events[0].type == "progress"

    queue.cancel(job.id)
    steps.gate.release()
    ended = queue.wait(job.id, WAIT)

    assert ended.status is JobStatus.CANCELLED
    assert ended.error is not None
    assert ended.error["code"] == "cancelled"
    assert steps.steps_run[job.id] < 50, "the job stopped computing"
    assert queue.wait(other.id, WAIT).status is JobStatus.SUCCEEDED, "cancelling one job leaves the next alone"


def test_cancel_finished_or_unknown_job_is_refused(queue: EmbeddedJobQueue) -> None:
    job = queue.submit("steps", {"name": "a", "gated": False})
    queue.wait(job.id, WAIT)

    with pytest.raises(JobFinished):
        queue.cancel(job.id)
    with pytest.raises(JobNotFound):
        queue.cancel("nope")


def test_full_queue_refuses_with_retry_after(tmp_path: Path, steps: Steps) -> None:
    queue = _queue(tmp_path / "jobs.sqlite", steps, QueueLimits(max_queued=2))
    try:
        queue.submit("steps", {"name": "running"})
        assert steps.started.wait(WAIT)
        queue.submit("steps", {"name": "w1"})
        queue.submit("steps", {"name": "w2"})
        with pytest.raises(QueueFull) as refused:
            queue.submit("steps", {"name": "w3"})
        assert refused.value.retry_after_s >= 1
    finally:
        steps.gate.release(10)
        queue.close()


def test_a_client_at_its_share_is_refused_until_one_of_its_jobs_ends(tmp_path: Path, steps: Steps) -> None:
    queue = _queue(tmp_path / "jobs.sqlite", steps, QueueLimits(client_share=2))
    try:
        running = queue.submit("steps", {"name": "running"}, caller=ALICE)
        assert steps.started.wait(WAIT)
        waiting = queue.submit("steps", {"name": "waiting"}, caller=ALICE, idempotency_key="w")
        with pytest.raises(QueueShareExceeded) as refused:
            queue.submit("steps", {"name": "third"}, caller=ALICE)
        other = queue.submit("steps", {"name": "bob's"}, caller=BOB)
        repeat = queue.submit("steps", {"name": "waiting"}, caller=ALICE, idempotency_key="w")

        steps.gate.release()
        queue.wait(running.id, WAIT)
        after = queue.submit("steps", {"name": "after"}, caller=ALICE)
    finally:
        steps.gate.release(10)
        queue.close()
    assert refused.value.retry_after_s >= 1
    assert (other.client, after.client) == ("bob", "alice")
    assert repeat.id == waiting.id, "a repeated request costs nothing"


def test_a_client_over_its_rate_is_refused_until_the_minute_has_passed(tmp_path: Path, steps: Steps) -> None:
    clock = Clock()
    queue = _queue(tmp_path / "jobs.sqlite", steps, QueueLimits(client_jobs_per_minute=2), clock)
    try:
        for name in ("a", "b"):
            queue.submit("steps", {"name": name, "gated": False}, caller=ALICE)
        clock.now += 20
        with pytest.raises(RateLimited) as refused:
            queue.submit("steps", {"name": "c", "gated": False}, caller=ALICE)
        queue.submit("steps", {"name": "bob's", "gated": False}, caller=BOB)
        clock.now += 40
        accepted = queue.submit("steps", {"name": "c", "gated": False}, caller=ALICE)
    finally:
        queue.close()
    assert refused.value.retry_after_s == 40
    assert accepted.client == "alice"


def test_the_client_of_a_job_survives_a_restart(tmp_path: Path, steps: Steps) -> None:
    queue = _queue(tmp_path / "jobs.sqlite", steps)
    job = queue.submit("steps", {"name": "a", "gated": False}, caller=ALICE)
    queue.wait(job.id, WAIT)
    queue.close()

    again = _queue(tmp_path / "jobs.sqlite", steps)
    try:
        assert again.get(job.id).client == "alice"
    finally:
        again.close()


def test_job_past_its_deadline_fails_with_timeout(tmp_path: Path, steps: Steps) -> None:
    clock = Clock()
    queue = _queue(tmp_path / "jobs.sqlite", steps, QueueLimits(job_timeout_s=30), clock)
    try:
        job = queue.submit("steps", {"name": "slow", "steps": 2})
        assert steps.started.wait(WAIT)
        clock.now += 31
        steps.gate.release(2)
        ended = queue.wait(job.id, WAIT)
        assert ended.status is JobStatus.FAILED
        assert ended.error is not None
        assert ended.error["code"] == "timeout"
    finally:
        queue.close()


def test_failing_jobs_carry_their_code_and_the_next_job_runs(queue: EmbeddedJobQueue) -> None:
    bad = queue.submit("steps", {"name": "bad", "gated": False, "fail": True})
    crash = queue.submit("steps", {"name": "crash", "gated": False, "crash": True})
    good = queue.submit("steps", {"name": "good", "gated": False})

    bad_end, crash_end = queue.wait(bad.id, WAIT), queue.wait(crash.id, WAIT)
    assert bad_end.error == {"code": "invalid_request", "message": "bad payload", "hint": "fix it"}
    assert crash_end.error is not None
    assert crash_end.error["code"] == "internal_error"
    assert "boom" in crash_end.error["message"]
    assert queue.wait(good.id, WAIT).status is JobStatus.SUCCEEDED


def test_repeated_idempotency_key_returns_the_same_job_or_conflicts(queue: EmbeddedJobQueue) -> None:
    first = queue.submit("steps", {"name": "a", "gated": False}, idempotency_key="k1")
    again = queue.submit("steps", {"name": "a", "gated": False}, idempotency_key="k1")

    assert again.id == first.id
    with pytest.raises(IdempotencyConflict):
        queue.submit("steps", {"name": "b", "gated": False}, idempotency_key="k1")
    queue.wait(first.id, WAIT)
    assert queue.submit("steps", {"name": "a", "gated": False}, idempotency_key="k1").id == first.id


def test_an_idempotency_key_whose_job_expired_starts_a_new_job(tmp_path: Path, steps: Steps) -> None:
    clock = Clock()
    queue = _queue(tmp_path / "jobs.sqlite", steps, QueueLimits(result_ttl_s=60), clock)
    try:
        first = queue.submit("steps", {"name": "a", "gated": False}, idempotency_key="k1")
        queue.wait(first.id, WAIT)
        clock.now += 61
        expired_unswept = queue.submit("steps", {"name": "b", "gated": False}, idempotency_key="k1")
        queue.wait(expired_unswept.id, WAIT)
        clock.now += 61
        assert queue.sweep() == [first.id, expired_unswept.id]
        after_sweep = queue.submit("steps", {"name": "a", "gated": False}, idempotency_key="k1")
        again = queue.submit("steps", {"name": "a", "gated": False}, idempotency_key="k1")
        done = queue.wait(after_sweep.id, WAIT)
    finally:
        queue.close()
    assert len({first.id, expired_unswept.id, after_sweep.id}) == 3
    assert again.id == after_sweep.id, "the key names the new job from then on"
    assert done.status is JobStatus.SUCCEEDED


def test_a_client_sees_and_cancels_only_its_own_jobs(queue: EmbeddedJobQueue) -> None:
    alices = queue.submit("steps", {"name": "alice's"}, caller=ALICE)
    bobs = queue.submit("steps", {"name": "bob's"}, caller=BOB)

    for reach in (
        lambda: queue.get(alices.id, caller=BOB),
        lambda: queue.cancel(alices.id, caller=BOB),
        lambda: queue.events(alices.id, timeout=0, caller=BOB),
    ):
        with pytest.raises(JobNotFound):
            reach()
    assert [job.id for job in queue.recent(caller=ALICE)] == [alices.id]
    assert [job.id for job in queue.recent(caller=BOB)] == [bobs.id]
    assert queue.get(alices.id, caller=ALICE).status in (JobStatus.QUEUED, JobStatus.RUNNING)
    assert queue.get(alices.id).client == "alice", "without a caller (the local user) every job is seen"


def test_an_admin_sees_and_cancels_every_clients_jobs(queue: EmbeddedJobQueue, steps: Steps) -> None:
    running = queue.submit("steps", {"name": "alice's"}, caller=ALICE)
    waiting = queue.submit("steps", {"name": "bob's"}, caller=BOB)

    assert {job.id for job in queue.recent(caller=ADMIN)} == {running.id, waiting.id}
    assert queue.cancel(waiting.id, caller=ADMIN).status is JobStatus.CANCELLED
    queue.cancel(running.id, caller=ADMIN)
    steps.gate.release()
    assert queue.wait(running.id, WAIT).status is JobStatus.CANCELLED


def test_the_same_idempotency_key_from_two_clients_makes_two_jobs(queue: EmbeddedJobQueue) -> None:
    alices = queue.submit("steps", {"name": "a", "gated": False}, caller=ALICE, idempotency_key="k1")
    bobs = queue.submit("steps", {"name": "a", "gated": False}, caller=BOB, idempotency_key="k1")
    bobs_other = queue.submit("steps", {"name": "b", "gated": False}, caller=BOB, idempotency_key="k2")
    alices_other = queue.submit("steps", {"name": "c", "gated": False}, caller=ALICE, idempotency_key="k2")

    assert bobs.id != alices.id
    assert (bobs.client, alices_other.client) == ("bob", "alice")
    assert alices_other.id != bobs_other.id, "no conflict with another client's body either"
    assert queue.submit("steps", {"name": "a", "gated": False}, caller=ALICE, idempotency_key="k1").id == alices.id


def test_duplicates_in_flight_of_two_clients_stay_two_jobs(queue: EmbeddedJobQueue) -> None:
    alices = queue.submit("steps", {"name": "dup"}, dedupe_key="same", caller=ALICE)
    bobs = queue.submit("steps", {"name": "dup"}, dedupe_key="same", caller=BOB)

    assert bobs.id != alices.id
    assert queue.get(bobs.id, caller=BOB).client == "bob"


def test_duplicates_in_flight_run_once(queue: EmbeddedJobQueue, steps: Steps) -> None:
    first = queue.submit("steps", {"name": "dup"}, dedupe_key="same")
    duplicate = queue.submit("steps", {"name": "dup"}, dedupe_key="same")

    assert duplicate.id == first.id
    steps.gate.release()
    queue.wait(first.id, WAIT)
    later = queue.submit("steps", {"name": "dup", "gated": False}, dedupe_key="same")
    assert later.id != first.id, "once finished, the same request runs again (the cache answers it)"
    queue.wait(later.id, WAIT)
    assert steps.order == ["dup", "dup"]


def test_recent_lists_newest_first_and_filters_by_status(queue: EmbeddedJobQueue) -> None:
    done = queue.submit("steps", {"name": "a", "gated": False})
    queue.wait(done.id, WAIT)
    running = queue.submit("steps", {"name": "b"})

    assert [job.id for job in queue.recent()] == [running.id, done.id]
    assert [job.id for job in queue.recent([JobStatus.SUCCEEDED])] == [done.id]


def test_restart_fails_the_interrupted_job_and_runs_the_queued_ones(tmp_path: Path, steps: Steps) -> None:
    path = tmp_path / "jobs.sqlite"
    store = JobStore(path)
    store.save(Job(id="was-running", kind="steps", payload={"name": "r"}, status=JobStatus.RUNNING, created_at=1))
    store.save(Job(id="q1", kind="steps", payload={"name": "q1", "gated": False}, created_at=2))
    store.save(Job(id="q2", kind="steps", payload={"name": "q2", "gated": False}, created_at=3))
    store.close()

    queue = _queue(path, steps)
    try:
        interrupted = queue.get("was-running")
        assert interrupted.status is JobStatus.FAILED
        assert interrupted.error is not None
        assert interrupted.error["code"] == "interrupted"
        assert queue.wait("q2", WAIT).status is JobStatus.SUCCEEDED
        assert steps.order == ["q1", "q2"]
        assert [e.data["status"] for e in queue.events("was-running", timeout=0)] == ["failed"]
    finally:
        queue.close()


def test_expired_results_answer_expired_and_the_hook_cleans_up(tmp_path: Path, steps: Steps) -> None:
    clock = Clock()
    expired: list[str] = []
    queue = EmbeddedJobQueue(JobStore(tmp_path / "jobs.sqlite"), QueueLimits(result_ttl_s=60), clock=clock)
    queue.register("steps", steps, on_expire=lambda job: expired.append(job.id))
    queue.start()
    try:
        job = queue.submit("steps", {"name": "a", "gated": False})
        assert queue.wait(job.id, WAIT).expires_at == clock.now + 60

        clock.now += 59
        assert queue.sweep() == []
        assert queue.get(job.id).result == {"name": "a", "steps": 1}
        clock.now += 2
        assert queue.sweep() == [job.id]
        assert expired == [job.id]
        assert queue.sweep() == [], "a swept job is swept once"
        with pytest.raises(JobExpired):
            queue.get(job.id)
        assert queue.recent() == []
        with pytest.raises(JobNotFound):
            queue.get("never-existed")
    finally:
        queue.close()


def test_starting_twice_keeps_one_worker(queue: EmbeddedJobQueue) -> None:
    def workers() -> int:
        return sum(thread.name == "imageforge-worker" for thread in threading.enumerate())

    before = workers()
    queue.start()

    assert workers() == before


def test_a_second_queue_on_the_same_database_is_refused_until_the_first_closes(tmp_path: Path, steps: Steps) -> None:
    first = _queue(tmp_path / "jobs.sqlite", steps)
    running = first.submit("steps", {"name": "running", "steps": 1})
    steps.started.wait(WAIT)

    second = EmbeddedJobQueue(JobStore(tmp_path / "jobs.sqlite"), clock=Clock())
    second.register("steps", steps)
    with pytest.raises(DataFolderInUse) as refused:
        second.start()
    assert str(os.getpid()) in refused.value.message
    assert first.get(running.id).status is JobStatus.RUNNING, "the refused queue recovered nothing"

    steps.gate.release()
    first.wait(running.id, timeout=WAIT)
    first.close()
    second.start()
    second.close()


def test_a_waiting_job_hears_how_many_start_before_it_each_time_the_queue_moves(
    queue: EmbeddedJobQueue, steps: Steps
) -> None:
    running = queue.submit("steps", {"name": "running"})
    assert steps.started.wait(WAIT)
    second = queue.submit("steps", {"name": "second"})
    third = queue.submit("steps", {"name": "third"})

    queue.cancel(second.id)
    steps.gate.release(3)
    queue.wait(third.id, WAIT)

    seen = [(event.type, event.data) for event in queue.events(third.id, after=-1, timeout=0)][:3]
    assert seen[0][1]["ahead"] == 2, "the running job and the second"
    assert seen[1] == ("queue", {"position": 1, "ahead": 1}), "the second was cancelled"
    assert (seen[2][0], seen[2][1]["status"]) == ("state", "running"), "the running one ended: its turn"
    assert "ahead" not in queue.events(running.id, after=-1, timeout=0)[-1].data


def test_eta_is_unknown_until_a_step_and_a_job_were_timed_and_none_once_ended(
    queue: EmbeddedJobQueue, steps: Steps
) -> None:
    first = queue.submit("steps", {"name": "first", "steps": 3})
    assert steps.started.wait(WAIT)
    waiting = queue.submit("steps", {"name": "waiting", "steps": 3})
    unknown = (queue.eta(first.id), queue.eta(waiting.id))

    steps.gate.release(2)
    _wait_until(queue, first.id, lambda job: job.step == 2)
    timed_step = (queue.eta(first.id), queue.eta(waiting.id))
    steps.gate.release(4)
    queue.wait(waiting.id, WAIT)

    assert unknown == (None, None), "nothing has been timed yet"
    running_eta, queued_eta = timed_step
    assert running_eta is not None
    assert running_eta >= 0, "one step left at the time the second step took"
    assert queued_eta is None, "no job has finished yet to time a whole run"
    assert queue.eta(first.id) is None, "ended"


def _wait_until(queue: EmbeddedJobQueue, job_id: str, reached: Callable[[Job], bool]) -> None:
    """Follow the job's events until `reached` holds for the job."""
    after = -1
    while not reached(queue.get(job_id)):
        events = queue.events(job_id, after=after, timeout=WAIT)
        assert events, "the job did not move"
        after = events[-1].index


def test_forgetting_an_ended_job_runs_its_expire_hook_and_makes_it_unknown(tmp_path: Path, steps: Steps) -> None:
    expired: list[str] = []
    queue = EmbeddedJobQueue(JobStore(tmp_path / "jobs.sqlite"), QueueLimits(), clock=Clock())
    queue.register("steps", steps, on_expire=lambda job: expired.append(job.id))
    queue.start()
    try:
        kept = queue.submit("steps", {"name": "kept", "gated": False})
        job = queue.submit("steps", {"name": "gone", "gated": False})
        queue.wait(kept.id, WAIT)
        queue.wait(job.id, WAIT)

        queue.forget(job.id)

        assert expired == [job.id]
        with pytest.raises(JobNotFound):
            queue.get(job.id)
        with pytest.raises(JobNotFound):
            queue.forget(job.id)
        assert [listed.id for listed in queue.recent()] == [kept.id]
        assert queue.sweep() == [], "a forgotten job has nothing left to sweep"
    finally:
        queue.close()
    assert JobStore(tmp_path / "jobs.sqlite").get(job.id) is None, "the record is gone from the store"


def test_forgetting_a_queued_or_running_job_is_refused_and_it_goes_on(queue: EmbeddedJobQueue, steps: Steps) -> None:
    running = queue.submit("steps", {"name": "running"})
    assert steps.started.wait(WAIT)
    waiting = queue.submit("steps", {"name": "waiting", "gated": False})

    for job in (running, waiting):
        with pytest.raises(JobNotReady) as refused:
            queue.forget(job.id)
        assert "Cancel it first" in refused.value.hint

    steps.gate.release()
    assert queue.wait(running.id, WAIT).status is JobStatus.SUCCEEDED
    assert queue.wait(waiting.id, WAIT).status is JobStatus.SUCCEEDED


def test_a_client_cannot_forget_another_clients_job(queue: EmbeddedJobQueue) -> None:
    job = queue.submit("steps", {"name": "a", "gated": False}, caller=ALICE)
    queue.wait(job.id, WAIT)

    with pytest.raises(JobNotFound):
        queue.forget(job.id, caller=BOB)

    assert queue.get(job.id, caller=ALICE).status is JobStatus.SUCCEEDED
    queue.forget(job.id, caller=ADMIN)
    with pytest.raises(JobNotFound):
        queue.get(job.id, caller=ALICE)
