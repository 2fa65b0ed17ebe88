"""EmbeddedJobQueue: one worker thread in this process running jobs FIFO, records in a SQLite `JobStore`, events
kept in memory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from imageforge import tracing
from imageforge.domain import LOCAL_CALLER, Caller, Job, JobEvent, JobStatus
from imageforge.errors import (
    Cancelled,
    IdempotencyConflict,
    ImageforgeError,
    Interrupted,
    JobFinished,
    JobNotReady,
    StorageUnavailable,
)
from imageforge.jobs.admission import Admission
from imageforge.jobs.owner import Owner, OwnerLock
from imageforge.jobs.queue import (
    DEFAULT_LIMITS,
    EventListener,
    ExpireHook,
    JobFunction,
    QueueLimits,
    drop_files,
    ended,
    is_expired,
    readable,
    request_hash,
    unknown_job,
)
from imageforge.jobs.store import JobStore
from imageforge.logs import job_context
from imageforge.metrics import Metrics

log = logging.getLogger(__name__)


class _Waker:
    """Wakes one coroutine that follows a job, on its own event loop, from whichever thread publishes an event.

    Followers wait on an `asyncio.Event` instead of the queue's condition: a follower holds no thread, however
    long its job takes.
    """

    def __init__(self, client: str) -> None:
        #: who follows: its open follows count against its share of the queue
        self.client = client
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is left to wake
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self) -> None:
        """Return once woken since the last wait (at once if that happened already)."""
        await self._event.wait()
        self._event.clear()


@dataclass
class _Live:
    """The in-memory side of a job the worker may still touch: its event log, stop flags and followers."""

    job: Job
    events: list[JobEvent] = field(default_factory=list)
    cancel_requested: bool = False
    deadline: float | None = None
    previews_wanted: bool = False
    followers: list[_Waker] = field(default_factory=list)
    #: when the job reported its last step (monotonic seconds), to time the next one
    last_step_at: float | None = None
    #: what the job reported doing (`stage` event data) until its next step: a late follower's first event says it
    stage: dict[str, Any] | None = None

    def follows_by(self, client: str) -> int:
        return sum(1 for follower in self.followers if follower.client == client)


class EmbeddedJobQueue:
    """One worker thread running jobs FIFO, records in a `JobStore`, events kept in memory."""

    #: jobs run in this process, on its worker thread
    runs_in_process = True

    def __init__(
        self,
        store: JobStore,
        limits: QueueLimits = DEFAULT_LIMITS,
        *,
        clock: Callable[[], float] = time.time,
        owner: Owner | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        #: where submissions, waits, ends and refusals are counted
        self._metrics = metrics or Metrics()
        #: `owner` is how this process describes itself to the ones its lock turns away
        self._owner = OwnerLock.of_database(store.path, owner)
        #: wall-clock seconds for timestamps and expiry (tests pass their own)
        self._clock = clock
        self._limits = limits
        self._functions: dict[str, JobFunction] = {}
        self._expire_hooks: dict[str, ExpireHook] = {}
        self._listeners: list[EventListener] = []
        self._pending: deque[str] = deque()
        self._live: dict[str, _Live] = {}
        self._inflight_by_dedupe: dict[str, str] = {}
        self._changed = threading.Condition()
        self._closing = False
        #: set when the server begins to stop: open follows end, so that none holds the shutdown up
        self._follows_ended = False
        self._threads: list[threading.Thread] = []
        self._recent_run_s: deque[float] = deque(maxlen=8)
        #: how long recent steps took, from one step's report to the next, for `eta`
        self._recent_step_s: deque[float] = deque(maxlen=32)
        #: the job the worker runs now
        self._running: _Live | None = None
        self._admission = Admission(
            max_queued=limits.max_queued,
            client_share=limits.client_share,
            jobs_per_minute=limits.client_jobs_per_minute,
            held_by=self.held_by,
            retry_after_s=self._retry_after_s,
            clock=clock,
            metrics=self._metrics,
        )
        self._metrics.watch_queue(lambda: len(self._pending), lambda: int(self._running is not None))
        #: the store's last write failure, until a write succeeds again
        self._fault: StorageUnavailable | None = None
        #: records the store could not take, kept in memory (and readable) until it can
        self._unsaved: dict[str, Job] = {}

    # -- setup --------------------------------------------------------------------------------------

    def register(self, kind: str, run: JobFunction, *, on_expire: ExpireHook | None = None) -> None:
        self._functions[kind] = run
        if on_expire is not None:
            self._expire_hooks[kind] = on_expire

    def listen(self, listener: EventListener) -> bool:
        """Tell `listener` of every event from now on, from the thread that publishes it, with the lock held."""
        self._listeners.append(listener)
        return True

    def start(self) -> None:
        """Recover from the last run, then start the worker and the sweeper.

        A job that was running when the process stopped ends `failed` with code `interrupted`: it may be what
        brought the process down, so it is not run again. Queued jobs run in the order they were accepted.
        """
        if self._threads:
            return  # already started
        self._owner.acquire()
        for job in self._store.in_status(JobStatus.RUNNING):
            self._finish(_Live(job), JobStatus.FAILED, error=_interrupted_error())
        with self._changed:
            for ahead, job in enumerate(self._store.in_status(JobStatus.QUEUED)):
                self._live[job.id] = _Live(job, events=[_state_event(job, 0, ahead=ahead)])
                self._pending.append(job.id)
                if job.dedupe_key:
                    self._inflight_by_dedupe[job.dedupe_key] = job.id
        for target, name in ((self._work, "imageforge-worker"), (self._sweep, "imageforge-sweeper")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop within about `timeout_s`: the running job stops at its next step and ends `failed` with code
        `interrupted`; queued jobs stay queued in the store for the next start; followers stop following.

        A step that outlasts `timeout_s` (a model still loading) is left to the process's exit, its job recorded
        as interrupted now.
        """
        with self._changed:
            self._closing = True
            for live in self._live.values():
                for follower in live.followers:
                    follower.wake()
            self._changed.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._changed:
            for live in list(self._live.values()):
                if live.job.status is JobStatus.RUNNING:
                    self._finish(live, JobStatus.FAILED, error=_interrupted_error())
        self._threads.clear()
        self._owner.release()

    def end_follows(self) -> None:
        """End every open follow now with `Interrupted`, and each later one after its first event; jobs go on.

        A server calls this as it begins to stop: it waits for open requests, and an event stream stays open as
        long as its job runs, so a follower would hold the shutdown (and the job) up until its timeout.
        """
        with self._changed:
            self._follows_ended = True
            for live in self._live.values():
                for follower in live.followers:
                    follower.wake()

    # -- submit and observe -------------------------------------------------------------------------

    def submit(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        dedupe_key: str | None = None,
        caller: Caller = LOCAL_CALLER,
    ) -> Job:
        """Accept a job, or return the job already accepted for the same idempotency key or in-flight duplicate.

        Both keys are the caller's own (`Caller.scoped`): another client's job is never handed back. A key whose
        job has expired starts a new job. A new job counts against the caller's share of the queue and its rate
        limit; a repeat costs nothing. A store that cannot take the job refuses it (`StorageFull`,
        `StorageUnavailable`): nothing is queued that a restart would lose.
        """
        if kind not in self._functions:
            raise ValueError(f"no job function registered for {kind!r}")
        digest = request_hash(kind, payload)
        client = caller.name
        if idempotency_key is not None:
            idempotency_key = caller.scoped(idempotency_key)
        if dedupe_key is not None:
            dedupe_key = caller.scoped(dedupe_key)
        with self._changed:
            if idempotency_key is not None:
                earlier = self._store.by_idempotency_key(idempotency_key)
                if earlier is not None and is_expired(earlier, self._clock()):
                    # The job and its result are gone; a client retrying that late means a new request.
                    self._store.release_idempotency_key(earlier.id)
                    earlier = None
                if earlier is not None:
                    if earlier.request_hash != digest:
                        raise IdempotencyConflict(
                            "This Idempotency-Key was used before with a different request body.",
                            hint="Use a new key for a new request, or resend exactly the same body.",
                        )
                    return self._current(earlier.id)
            if dedupe_key is not None and dedupe_key in self._inflight_by_dedupe:
                return self._current(self._inflight_by_dedupe[dedupe_key])
            self._admission.check_job(client, waiting=len(self._pending))
            job = Job(
                id=secrets.token_hex(8),
                kind=kind,
                payload=payload,
                created_at=self._clock(),
                idempotency_key=idempotency_key,
                request_hash=digest,
                dedupe_key=dedupe_key,
                client=client,
            )
            self._save(job)
            self._metrics.jobs_submitted.labels(kind).inc()
            self._admission.accepted(client, job.created_at)
            ahead = len(self._pending) + int(self._running is not None)
            self._live[job.id] = _Live(job, events=[_state_event(job, 0, ahead=ahead)])
            self._pending.append(job.id)
            if dedupe_key is not None:
                self._inflight_by_dedupe[dedupe_key] = job.id
            self._changed.notify_all()
            return _copy(job)

    def get(self, job_id: str, *, caller: Caller = LOCAL_CALLER) -> Job:
        """The job as it is now; `JobNotFound` when unknown (or not the caller's), `JobExpired` once its result has
        expired."""
        return readable(self._find(job_id, caller), self._clock())

    def recent(
        self, statuses: Iterable[JobStatus] = (), *, limit: int = 100, caller: Caller = LOCAL_CALLER
    ) -> list[Job]:
        """The newest jobs the caller may see, optionally only those in `statuses`."""
        client = None if caller.sees_all else caller.name
        return self._store.recent(statuses, now=self._clock(), limit=limit, client=client)

    def position(self, job_id: str) -> int | None:
        """1 for the next job to run, 2 after it…; 0 while running; None once finished."""
        with self._changed:
            live = self._live.get(job_id)
            if live is None or live.job.status.is_terminal:
                return None
            if live.job.status is JobStatus.RUNNING:
                return 0
            return self._pending.index(job_id) + 1

    def eta(self, job_id: str) -> float | None:
        """About how many seconds until the job ends, from recent step and run times; None once it has ended, and
        while there is nothing to go by (no job has run yet, or the running one has not reported a step).

        A running job: its steps left at the recent time per step. A queued one: what is left of the running job,
        then a recent job's run time for each job ahead of it and for itself.
        """
        with self._changed:
            live = self._live.get(job_id)
            if live is None or live.job.status.is_terminal:
                return None
            step_s = _mean(self._recent_step_s)
            running = self._running
            left = None
            if running is not None and running.job.total and step_s is not None:
                left = (running.job.total - running.job.step) * step_s
            if live.job.status is JobStatus.RUNNING:
                return None if left is None else round(left, 1)
            run_s = _mean(self._recent_run_s)
            if run_s is None:
                return None
            if running is not None and left is None:
                left = run_s
            return round((left or 0.0) + (self._pending.index(job_id) + 1) * run_s, 1)

    def cancel(self, job_id: str, *, caller: Caller = LOCAL_CALLER) -> Job:
        """Cancel a queued job at once, a running one at its next step; a finished job is `JobFinished`."""
        with self._changed:
            self._find(job_id, caller)
            live = self._live.get(job_id)
            if live is not None and live.job.status is JobStatus.QUEUED:
                self._pending.remove(job_id)
                self._finish(live, JobStatus.CANCELLED, error=_cancelled_error())
                self._publish_places()
                return _copy(live.job)
            if live is not None and live.job.status is JobStatus.RUNNING:
                live.cancel_requested = True
                return _copy(live.job)
        job = self.get(job_id)
        raise JobFinished(
            f"Job '{job_id}' already ended ({job.status.value}); there is nothing to cancel.",
            hint="Only queued and running jobs can be cancelled.",
        )

    def forget(self, job_id: str, *, caller: Caller = LOCAL_CALLER) -> None:
        """Delete an ended job, expired or not: its record goes, then its kind's expire hook removes its files
        (those no other job shares), and the job is unknown from then on. A queued or running job is
        `JobNotReady`: it must end first."""
        with self._changed:
            job = self._find(job_id, caller)
            if not job.status.is_terminal:
                raise JobNotReady(
                    f"Job '{job_id}' is {job.status.value}; only a job that has ended can be deleted.",
                    hint="Cancel it first, then delete it once it has ended.",
                )
            # The record first: a store that refuses the delete leaves the job whole, files and all.
            self._store.delete([job_id])
            self._unsaved.pop(job_id, None)
            self._live.pop(job_id, None)
        drop_files(self._expire_hooks, job)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job ends (or `timeout` passes) and return it as it is then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                live = self._live.get(job_id)
                if live is None or live.job.status.is_terminal:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._changed.wait(remaining)
        return self.get(job_id)

    def events(
        self,
        job_id: str,
        after: int = -1,
        timeout: float = 15.0,
        *,
        previews: bool = False,
        caller: Caller = LOCAL_CALLER,
    ) -> list[JobEvent]:
        """The job's events with an index above `after`, waiting up to `timeout` for one to come.

        `previews` asks the running job to publish previews and includes them; without it they are left out.
        A job that is no longer in memory (finished before a restart) yields one event: its current state.
        """
        if not caller.sees_all:
            self._find(job_id, caller)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                live = self._live.get(job_id)
                if live is None:
                    break
                live.previews_wanted |= previews
                fresh = [
                    event for event in live.events if event.index > after and (previews or event.type != "preview")
                ]
                remaining = deadline - time.monotonic()
                if fresh or remaining <= 0 or self._closing:
                    return fresh
                self._changed.wait(remaining)
        job = self.get(job_id)
        return [_state_event(job, 0)] if after < 0 else []

    async def follow(
        self, job_id: str, after: int = -1, *, previews: bool = False, caller: Caller = LOCAL_CALLER
    ) -> AsyncGenerator[JobEvent, None]:
        """The job's events, as they come, until its terminal one; the follower holds no thread meanwhile.

        With `after` below 0 the first event is the job's current state, indexed as its latest event; otherwise
        the events with an index above `after` come first. `previews` asks the running job for previews and
        includes them. A job the caller may not see is `JobNotFound`. An open follow counts against the caller's
        share of the queue (`held_by`): `QueueShareExceeded` before the first event when it has no room. The
        follow ends with `Interrupted` when the queue closes first; breaking off (a cancelled task, a closed
        generator) frees it at once.
        """
        if not caller.sees_all:
            self._find(job_id, caller)
        client = caller.name
        waker = _Waker(client)
        with self._changed:
            live = self._live.get(job_id)
            if live is not None:
                # A client's own job costs it one place whether it follows it or not; every further follow costs.
                if not live.job.status.is_terminal and live.follows_by(client) >= int(live.job.client == client):
                    self._admission.check_share(client)
                live.followers.append(waker)
                live.previews_wanted |= previews
                current = _state_event(live.job, len(live.events) - 1, ahead=self._ahead(job_id), stage=live.stage)
        if live is None:
            job = self.get(job_id, caller=caller)  # JobNotFound, JobExpired
            if after < 0:
                yield _state_event(job, 0)
            return
        try:
            if after < 0:
                after = current.index
                yield current
                if current.is_terminal:
                    return
            while True:
                with self._changed:
                    fresh = [
                        event for event in live.events if event.index > after and (previews or event.type != "preview")
                    ]
                    closing = self._closing or self._follows_ended
                for event in fresh:
                    after = event.index
                    yield event
                    if event.is_terminal:
                        return
                if not fresh:
                    if closing:
                        raise Interrupted(
                            f"The server is stopping; job '{job_id}' is {live.job.status.value}.",
                            hint="A queued job runs once the server is back: ask for it by its id then.",
                        )
                    await waker.wait()
        finally:
            with self._changed:
                live.followers.remove(waker)

    # -- the worker ---------------------------------------------------------------------------------

    def _work(self) -> None:
        """Run jobs until closed. Nothing a job or the store raises ends this loop: the job ends `failed`."""
        while True:
            with self._changed:
                while not self._pending and not self._closing:
                    self._changed.wait()
                if self._closing:
                    return
                live = self._live[self._pending.popleft()]
                job = live.job
                job.status = JobStatus.RUNNING
                job.started_at = self._clock()
                job.timings["queue_ms"] = round((job.started_at - job.created_at) * 1000, 1)
                self._metrics.queue_wait.observe(max(0.0, job.started_at - job.created_at))
                if self._limits.job_timeout_s:
                    live.deadline = self._clock() + self._limits.job_timeout_s
                try:
                    self._save(job)
                except Exception as exc:
                    # Not run: a result the store could not record would be lost at the next restart.
                    self._finish(live, JobStatus.FAILED, error=_failure(exc))
                    continue
                self._running = live
                self._publish(live, "state", _state_data(job))
                self._publish_places()
            self._run(live)

    def _run(self, live: _Live) -> None:
        job = live.job
        with job_context(job.id, job.client), tracing.run(job.id, job.kind, job.created_at):
            log.info("job started: %s, after %.0f ms in the queue", job.kind, job.timings.get("queue_ms", 0.0))
            self._execute(live)

    def _execute(self, live: _Live) -> None:
        job = live.job
        context = _Context(self, live)
        started = time.perf_counter()
        try:
            result = self._functions[job.kind](job.payload, context)
        except Cancelled:
            with self._changed:
                if live.cancel_requested:
                    self._finish(live, JobStatus.CANCELLED, error=_cancelled_error())
                elif self._closing:
                    self._finish(live, JobStatus.FAILED, error=_interrupted_error())
                else:
                    self._finish(live, JobStatus.FAILED, error=self._timeout_error())
            return
        except Exception as exc:
            if not isinstance(exc, ImageforgeError):
                log.exception("job %s (%s) failed", job.id, job.kind)
            with self._changed:
                self._finish(live, JobStatus.FAILED, error=_failure(exc))
            return
        run_s = time.perf_counter() - started
        self._recent_run_s.append(run_s)
        with self._changed:
            job.timings["run_ms"] = round(run_s * 1000, 1)
            self._finish(live, JobStatus.SUCCEEDED, result=result)

    def _finish(
        self,
        live: _Live,
        status: JobStatus,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, str] | None = None,
    ) -> None:
        """Record the end of a job (caller holds the lock, except at start-up) and wake everyone waiting.

        Never raises, so that the worker goes on. A record the store cannot take stays in memory, readable, and is
        saved with the next write that works; a result it cannot take is dropped (its files too) and the job
        fails with the store's error, since a restart would lose it.
        """
        job = live.job
        if job.status.is_terminal:
            return  # `close` recorded it as interrupted while its last step outlasted the shutdown
        job.status = status
        job.result = result
        job.error = error
        job.finished_at = self._clock()
        job.expires_at = job.finished_at + self._limits.result_ttl_s
        with job_context(job.id, job.client):
            log.info("job %s", ended(job))
        try:
            self._save(job)
        except Exception as exc:
            log.error("job %s ended %s but its record was not saved: %s", job.id, status.value, exc)
            if status is JobStatus.SUCCEEDED:
                drop_files(self._expire_hooks, job)
                job.status, job.result, job.error = JobStatus.FAILED, None, _failure(exc)
            if isinstance(exc, StorageUnavailable):
                self._unsaved[job.id] = job
        self._metrics.job_finished(job.kind, job.status.value, None if job.error is None else job.error["code"])
        if job.dedupe_key and self._inflight_by_dedupe.get(job.dedupe_key) == job.id:
            del self._inflight_by_dedupe[job.dedupe_key]
        if self._running is live:
            self._running = None
        if job.id in self._live:
            self._publish(live, "state", _state_data(job))
        else:  # a job recovered as interrupted at start: nobody follows it, but listeners hear how it ended
            self._tell(job, JobEvent(type="state", job_id=job.id, data=_state_data(job)))

    def _save(self, job: Job) -> None:
        """Save the records kept in memory since a failed write, then `job` (caller holds the lock, except at
        start-up); `StorageUnavailable` when the store refuses, remembered until a write works again."""
        try:
            # The older records first: a new job whose submission fails must not be left in the store.
            for pending in list(self._unsaved.values()):
                if pending is not job:
                    self._store.save(pending)
                    del self._unsaved[pending.id]
            self._store.save(job)
            self._unsaved.pop(job.id, None)
        except StorageUnavailable as exc:
            self._fault = exc
            raise
        self._fault = None

    def storage_fault(self) -> StorageUnavailable | None:
        """Why the store cannot take writes, or None. After a failed write, each call retries: the records kept in
        memory, or a probe row, and the fault clears once the store takes them."""
        with self._changed:
            if self._fault is None:
                return None
            try:
                if self._unsaved:
                    self._save(next(iter(self._unsaved.values())))
                else:
                    self._store.probe(self._clock())
                    self._fault = None
            except StorageUnavailable as exc:
                self._fault = exc
            return self._fault

    def describe(self) -> dict[str, Any]:
        """The embedded queue: jobs run in this process."""
        return {"kind": "embedded"}

    def why_not_running(self) -> str | None:
        """Why jobs do not run now (not started, stopping, the worker thread gone), or None while they do."""
        if not self._threads:
            return "The job queue has not started."
        if self._closing:
            return "The job queue is stopping."
        if not all(thread.is_alive() for thread in self._threads):
            return "The job queue's worker thread has stopped."
        return None

    def _publish(self, live: _Live, kind: str, data: dict[str, Any]) -> None:
        event = JobEvent(type=kind, job_id=live.job.id, data=data, index=len(live.events))
        live.events.append(event)
        # Listeners first: whoever sees the event next may look for what they did with it (a stored delivery).
        self._tell(live.job, event)
        self._changed.notify_all()
        for follower in live.followers:
            follower.wake()

    def _tell(self, job: Job, event: JobEvent) -> None:
        for listener in self._listeners:
            try:
                listener(job, event)
            except Exception:  # a listener's bug must not end the worker
                log.exception("a listener failed on an event of job %s", job.id)

    def _ahead(self, job_id: str) -> int | None:
        """How many jobs start before the queued job `job_id`: those before it in the queue, and the running one;
        None for a job not waiting (caller holds the lock)."""
        if job_id not in self._pending:
            return None
        return self._pending.index(job_id) + int(self._running is not None)

    def _publish_places(self) -> None:
        """Tell each waiting job where it is now, as a `queue` event (caller holds the lock): the queue moved."""
        running = int(self._running is not None)
        for position, job_id in enumerate(self._pending, start=1):
            self._publish(self._live[job_id], "queue", {"position": position, "ahead": position - 1 + running})

    def _timeout_error(self) -> dict[str, str]:
        return _error(
            "timeout",
            f"The job ran past its {self._limits.job_timeout_s:g} s deadline (IMAGEFORGE_JOB_TIMEOUT_S).",
            "Ask for fewer steps or a smaller size, or raise IMAGEFORGE_JOB_TIMEOUT_S.",
        )

    def held_by(self, client: str) -> int:
        """What `client` holds of the queue: for each job not ended, its open follows (sync waits, event streams)
        of it, or one for a job of its own that it does not follow."""
        with self._changed:
            return sum(
                max(live.follows_by(client), int(live.job.client == client))
                for live in self._live.values()
                if not live.job.status.is_terminal
            )

    def _retry_after_s(self) -> int:
        typical = sum(self._recent_run_s) / len(self._recent_run_s) if self._recent_run_s else 5.0
        return max(1, round(typical * max(1, len(self._pending) // 2)))

    def _find(self, job_id: str, caller: Caller) -> Job:
        """The job, expired or not; `JobNotFound` when unknown or, for an isolated caller, someone else's."""
        with self._changed:
            live = self._live.get(job_id)
            job = _copy(live.job) if live is not None else None
        if job is None:
            job = self._store.get(job_id)
        if job is None or not caller.sees(job):
            raise unknown_job(job_id)
        return job

    def _current(self, job_id: str) -> Job:
        live = self._live.get(job_id)
        return _copy(live.job) if live is not None else self.get(job_id)

    # -- expiry -------------------------------------------------------------------------------------

    def _sweep(self) -> None:
        while True:
            # The condition is notified on every event; only closing cuts the interval short.
            deadline = time.monotonic() + self._limits.sweep_interval_s
            with self._changed:
                while not self._closing and (remaining := deadline - time.monotonic()) > 0:
                    self._changed.wait(remaining)
                if self._closing:
                    return
            try:
                self.sweep()
            except Exception:  # a full disk, for one: the next round tries again
                log.exception("sweeping expired results failed")

    def sweep(self, now: float | None = None) -> list[str]:
        """Drop expired results: call each kind's expire hook, forget the events, and keep the record as a
        tombstone without payload or result, so that the job answers `expired` rather than unknown."""
        now = self._clock() if now is None else now
        swept = []
        for job in self._store.expired(now):
            drop_files(self._expire_hooks, job)
            job.result = None
            job.payload = {}
            self._store.save(job)
            with self._changed:
                self._live.pop(job.id, None)
            swept.append(job.id)
        return swept

    def results_with(self, key: str, value: str) -> list[Job]:
        """Jobs whose result is still readable and has `value` under `key`, at any depth: an expire hook asks
        before it removes something that several results share."""
        return self._store.results_with(key, value, self._clock())

    def payloads_with(self, key: str, value: str) -> list[Job]:
        """Jobs not expired (waiting, running, or with a readable result) whose payload has `value` under `key`:
        an expire hook asks before it removes an input that several jobs share. Takes no lock but the store's."""
        return self._store.payloads_with(key, value, self._clock())


class _Context:
    def __init__(self, queue: EmbeddedJobQueue, live: _Live) -> None:
        self._queue = queue
        self._live = live
        self.job_id = live.job.id

    def progress(self, step: int, total: int) -> None:
        now = time.monotonic()
        with self._queue._changed:
            live = self._live
            if live.last_step_at is not None and step > live.job.step:
                self._queue._recent_step_s.append((now - live.last_step_at) / (step - live.job.step))
            live.last_step_at, live.stage = now, None
            live.job.step, live.job.total = step, total
            self._queue._publish(live, "progress", {"step": step, "total": total})

    def stage(self, stage: str, details: dict[str, Any]) -> None:
        with self._queue._changed:
            self._live.stage = {"stage": stage, **details}
            self._queue._publish(self._live, "stage", self._live.stage)

    def wants_preview(self) -> bool:
        return self._live.previews_wanted

    def preview(self, data: dict[str, Any]) -> None:
        with self._queue._changed:
            self._queue._publish(self._live, "preview", data)

    def timing(self, name: str, ms: float) -> None:
        with self._queue._changed:
            self._live.job.timings[name] = round(ms, 1)

    def should_stop(self) -> bool:
        live = self._live
        stopping = live.cancel_requested or self._queue._closing
        return stopping or (live.deadline is not None and self._queue._clock() > live.deadline)


def _copy(job: Job) -> Job:
    return Job(**{**job.__dict__, "timings": dict(job.timings)})


def _error(code: str, message: str, hint: str = "") -> dict[str, str]:
    return {"code": code, "message": message, "hint": hint}


def _failure(exc: Exception) -> dict[str, str]:
    """The error of a job that `exc` ended: its own code, or `internal_error` for a bug."""
    if isinstance(exc, ImageforgeError):
        return _error(exc.code, exc.message, exc.hint)
    return _error("internal_error", f"{type(exc).__name__}: {exc}", "The server keeps running.")


def _cancelled_error() -> dict[str, str]:
    return _error("cancelled", "The job was cancelled.")


def _interrupted_error() -> dict[str, str]:
    return _error("interrupted", "The server stopped while this job was running.", "Submit it again.")


def _state_data(job: Job) -> dict[str, Any]:
    return {"status": job.status.value, "step": job.step, "total": job.total, "error": job.error}


def _state_event(job: Job, index: int, *, ahead: int | None = None, stage: dict[str, Any] | None = None) -> JobEvent:
    """The job's state as an event; a waiting job's says how many jobs start before it (`ahead`), a running job's
    what it reported doing before its next step (`stage`)."""
    extra = {name: value for name, value in (("ahead", ahead), ("stage", stage)) if value is not None}
    return JobEvent(type="state", job_id=job.id, data={**_state_data(job), **extra}, index=index)


def _mean(values: deque[float]) -> float | None:
    return sum(values) / len(values) if values else None
