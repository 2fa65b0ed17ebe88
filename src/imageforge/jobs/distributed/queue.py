"""DistributedJobQueue: the `JobQueue` of API nodes and workers that share one Redis.

An API node accepts jobs into our records (records.py) and hands each to Celery for the queue of its model
(dispatch.py); a worker (worker.py, `consume`) runs them. Any node relays any job's events from its stream, and
one node at a time, under a short Redis lock, sweeps: a running job whose heartbeat expired runs again once (the
record's attempt goes up, so a late redelivery of the old attempt is dropped) or ends `interrupted`; expired
results are removed.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any, ParamSpec, TypeVar

import redis
import redis.asyncio
from celery import Celery
from celery.signals import setup_logging, worker_ready
from redis.client import Pipeline

from imageforge.domain import LOCAL_CALLER, Caller, Job, JobEvent, JobStatus
from imageforge.errors import (
    IdempotencyConflict,
    Interrupted,
    JobFinished,
    JobNotReady,
    StorageUnavailable,
)
from imageforge.jobs.admission import Admission
from imageforge.jobs.distributed import dispatch
from imageforge.jobs.distributed.records import (
    CONNECT_TIMEOUT_S,
    SOCKET_TIMEOUT_S,
    Record,
    Records,
    job_from_json,
    parse_events,
    unavailable,
)
from imageforge.jobs.distributed.worker import (
    HEARTBEAT_TTL_S,
    READY_LINE,
    JobRunner,
    end,
    error,
    interrupted_error,
    state_data,
)
from imageforge.jobs.queue import (
    DEFAULT_LIMITS,
    EventListener,
    ExpireHook,
    JobFunction,
    QueueLimits,
    drop_files,
    is_expired,
    readable,
    request_hash,
    unknown_job,
)
from imageforge.metrics import Metrics

log = logging.getLogger(__name__)

#: How often (seconds) a node looks for running jobs whose heartbeat expired.
HEARTBEAT_SWEEP_S = 2.0
#: A job whose worker died runs again at most this many times, then ends `interrupted`.
MAX_RERUNS = 1
#: How long (seconds) a follower waits on its stream before it checks whether the server is stopping.
FOLLOW_BLOCK_S = 1.0


P = ParamSpec("P")
R = TypeVar("R")
_SWEEPER = "imageforge-distributed-sweeper"


def route_by_model(kind: str, payload: dict[str, Any]) -> str:
    """Jobs go to the Celery queue of their model (`payload["model"]`), or of their kind when they name none."""
    return str(payload.get("model") or kind)


def _redis_answers(method: Callable[P, R]) -> Callable[P, R]:
    """`method`, with a Redis that does not answer reported as `QueueUnavailable` (503), not as a bug."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except redis.RedisError as exc:
            raise unavailable(exc) from None

    return call


class DistributedJobQueue:
    """Jobs in Redis, run by Celery workers; the same semantics as `EmbeddedJobQueue` across machines.

    Its `metrics` count what happens in this process: on an API node the submissions and refusals, on a worker
    (`runner`) the jobs it ran, their waits and ends; both read the shared queue's depth from Redis.
    """

    #: jobs run on the workers (`imageforge worker`), never in the process that submits them
    runs_in_process = False

    def __init__(
        self,
        url: str,
        limits: QueueLimits = DEFAULT_LIMITS,
        *,
        clock: Callable[[], float] = time.time,
        prefix: str = "imageforge:",
        route: Callable[[str, dict[str, Any]], str] = route_by_model,
        heartbeat_sweep_s: float = HEARTBEAT_SWEEP_S,
        heartbeat_ttl_s: float = HEARTBEAT_TTL_S,
        metrics: Metrics | None = None,
    ) -> None:
        self.url = url
        self._metrics = metrics or Metrics()
        self._records = Records(url, prefix=prefix)
        self._limits = limits
        self._clock = clock
        self._route = route
        self._heartbeat_sweep_s = heartbeat_sweep_s
        self._heartbeat_ttl_s = heartbeat_ttl_s
        self.app: Celery = dispatch.make_app(url, job_timeout_s=limits.job_timeout_s)
        self._functions: dict[str, JobFunction] = {}
        self._expire_hooks: dict[str, ExpireHook] = {}
        self._lock = threading.Lock()
        #: open follows on this node, by client, of jobs that are not the client's own
        self._follows: Counter[str] = Counter()
        self._stopping = threading.Event()
        self._follows_ended = False
        self._threads: list[threading.Thread] = []
        self._admission = Admission(
            max_queued=limits.max_queued,
            client_share=limits.client_share,
            jobs_per_minute=limits.client_jobs_per_minute,
            held_by=self.held_by,
            retry_after_s=lambda: 5,
            clock=clock,
            rate_log=self._records,
            metrics=self._metrics,
        )
        self._metrics.watch_queue(self._records.waiting, self._records.running_count)

    @property
    def records(self) -> Records:
        """The shared records (tests and /health read them)."""
        return self._records

    # -- setup --------------------------------------------------------------------------------------

    def register(self, kind: str, run: JobFunction, *, on_expire: ExpireHook | None = None) -> None:
        self._functions[kind] = run
        if on_expire is not None:
            self._expire_hooks[kind] = on_expire

    def listen(self, listener: EventListener) -> bool:
        """No: a job's events happen on the worker that runs it, so this node cannot tell them all (webhooks are
        refused on this queue)."""
        return False

    def start(self) -> None:
        """Start the sweeper: this node takes its turn at re-dispatching jobs of dead workers and at expiry."""
        if any(thread.name == _SWEEPER for thread in self._threads):
            return
        thread = threading.Thread(target=self._sweeper, name=_SWEEPER, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop sweeping and following, and let go of the connections to Redis; jobs go on on the workers."""
        self._stopping.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        self._records.close()
        self.app.close()

    def end_follows(self) -> None:
        """End every open follow with `Interrupted` within about a second; the jobs go on."""
        self._follows_ended = True

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
        """Accept a job into the shared records and hand it to Celery, or return the job already accepted for
        the same idempotency key or in-flight duplicate; `QueueUnavailable` when Redis does not answer."""
        if kind not in self._functions:
            raise ValueError(f"no job function registered for {kind!r}")
        digest = request_hash(kind, payload)
        idempotency_key = None if idempotency_key is None else caller.scoped(idempotency_key)
        dedupe_key = None if dedupe_key is None else caller.scoped(dedupe_key)
        route = self._route(kind, payload)
        try:
            with self._lock:
                earlier = self._earlier(idempotency_key, dedupe_key, digest)
                if earlier is not None:
                    return earlier
                job = Job(
                    id=secrets.token_hex(8),
                    kind=kind,
                    payload=payload,
                    created_at=self._clock(),
                    idempotency_key=idempotency_key,
                    request_hash=digest,
                    dedupe_key=dedupe_key,
                    client=caller.name,
                )
                ahead = self._records.waiting() + self._records.running_count()
                event = {"type": "state", "data": {**state_data(job), "ahead": ahead}}

                def check(pipe: Pipeline) -> Job | None:
                    earlier = self._earlier(idempotency_key, dedupe_key, digest, client=pipe)
                    if earlier is None:
                        self._admission.check_job(caller.name, waiting=self._records.waiting())
                    return earlier

                accepted = self._records.create(job, route, event, check)
                if accepted is not job:
                    return accepted
                self._admission.accepted(caller.name, job.created_at)
        except redis.RedisError as exc:
            raise unavailable(exc) from None
        try:
            dispatch.send(self.app, job.id, 1, route)
        except Exception as exc:
            # Nothing will run it: take it back, so that it neither waits forever nor holds the client's share.
            try:
                self._records.delete(job)
                self._records.redis.srem(self._records.key("active", job.client), job.id)
            except redis.RedisError:
                log.warning("job %s was accepted but not dispatched, and could not be taken back", job.id)
            raise unavailable(exc) from None
        self._metrics.jobs_submitted.labels(kind).inc()
        return job

    def _earlier(
        self, idempotency_key: str | None, dedupe_key: str | None, digest: str, *, client: Any = None
    ) -> Job | None:
        """The job an idempotency key or an in-flight duplicate already names, or None."""
        reader = client or self._records.redis
        if idempotency_key is not None:
            raw = reader.get(self._records.key("idem", idempotency_key))
            earlier = None if raw is None else self._load(reader, _text(raw))
            if earlier is not None and is_expired(earlier, self._clock()):
                earlier = None  # its result is gone: a retry that late is a new request
            if earlier is not None:
                if earlier.request_hash != digest:
                    raise IdempotencyConflict(
                        "This Idempotency-Key was used before with a different request body.",
                        hint="Use a new key for a new request, or resend exactly the same body.",
                    )
                return earlier
        if dedupe_key is not None:
            raw = reader.get(self._records.key("dedupe", dedupe_key))
            earlier = None if raw is None else self._load(reader, _text(raw))
            if earlier is not None and not earlier.status.is_terminal:
                return earlier
        return None

    def _load(self, reader: Any, job_id: str) -> Job | None:
        text = reader.hget(self._records.key("job", job_id), "job")
        return None if text is None else job_from_json(text)

    @_redis_answers
    def get(self, job_id: str, *, caller: Caller = LOCAL_CALLER) -> Job:
        """The job as it is now; `JobNotFound` when unknown (or not the caller's), `JobExpired` once its result has
        expired."""
        return readable(self._find(job_id, caller), self._clock())

    @_redis_answers
    def _find(self, job_id: str, caller: Caller) -> Job:
        record = self._records.load(job_id)
        if record is None or not caller.sees(record.job):
            raise unknown_job(job_id)
        return record.job

    @_redis_answers
    def recent(
        self, statuses: Iterable[JobStatus] = (), *, limit: int = 100, caller: Caller = LOCAL_CALLER
    ) -> list[Job]:
        """The newest jobs the caller may see and whose result has not expired, optionally only those in
        `statuses`."""
        wanted = set(statuses)
        now = self._clock()
        jobs: list[Job] = []
        start, page = 0, max(limit, 100)
        while len(jobs) < limit:
            ids = self._records.newest(start, page)
            if not ids:
                break
            start += page
            for job in self._records.load_many(ids):
                if not (is_expired(job, now) or (wanted and job.status not in wanted) or not caller.sees(job)):
                    jobs.append(job)
        return jobs[:limit]

    @_redis_answers
    def position(self, job_id: str) -> int | None:
        """1 for the next job to start, 2 after it…; 0 while running; None once finished."""
        record = self._records.load(job_id)
        if record is None or record.job.status.is_terminal:
            return None
        if record.job.status is JobStatus.RUNNING:
            return 0
        ahead = self._records.ahead_of(job_id)
        return None if ahead is None else ahead + 1

    @_redis_answers
    def eta(self, job_id: str) -> float | None:
        """About how many seconds until the job ends; None once it has ended, and while there is nothing to go by.

        A running job: its steps left at the pace of its steps so far. A waiting one: a recent run time of its
        model for each round its model's live workers need to reach it and run it. Rougher than one process's
        estimate: every waiting job counts as ahead, whatever its model.
        """
        record = self._records.load(job_id)
        if record is None or record.job.status.is_terminal:
            return None
        job = record.job
        if job.status is JobStatus.RUNNING:
            if not job.step or not job.total or job.started_at is None:
                return None
            per_step = (self._clock() - job.started_at) / job.step
            return round(max(0.0, (job.total - job.step) * per_step), 1)
        runs = self._records.recent_runs(record.route)
        ahead = self._records.ahead_of(job_id)
        if not runs or ahead is None:
            return None
        workers = sum(record.route in seen.get("models", ()) for seen in self._records.workers())
        rounds = ahead // max(1, workers) + 1
        return round(rounds * sum(runs) / len(runs), 1)

    @_redis_answers
    def cancel(self, job_id: str, *, caller: Caller = LOCAL_CALLER) -> Job:
        """Cancel a queued job at once, a running one at its next step (its worker reads the flag); a finished
        job is `JobFinished`."""
        self._find(job_id, caller)
        cancelled: list[bool] = []

        def decide(record: Record) -> Callable[[Pipeline], None] | None:
            cancelled.clear()
            job = record.job
            if job.status is not JobStatus.QUEUED:
                return None
            job.status, job.error = JobStatus.CANCELLED, error("cancelled", "The job was cancelled.")
            cancelled.append(True)
            return lambda pipe: end(
                self._records, pipe, record, result_ttl_s=self._limits.result_ttl_s, now=self._clock()
            )

        record = self._records.change(job_id, decide)
        if record is None:
            raise unknown_job(job_id)
        if cancelled:
            self._records.publish_places()
            return record.job
        if record.job.status is JobStatus.RUNNING:
            self._records.request_cancel(job_id, ttl_s=self._limits.result_ttl_s)
            return record.job
        raise JobFinished(
            f"Job '{job_id}' already ended ({record.job.status.value}); there is nothing to cancel.",
            hint="Only queued and running jobs can be cancelled.",
        )

    @_redis_answers
    def forget(self, job_id: str, *, caller: Caller = LOCAL_CALLER) -> None:
        """Delete an ended job: its record, then through its kind's expire hook its files."""
        job = self._find(job_id, caller)
        if not job.status.is_terminal:
            raise JobNotReady(
                f"Job '{job_id}' is {job.status.value}; only a job that has ended can be deleted.",
                hint="Cancel it first, then delete it once it has ended.",
            )
        self._records.delete(job)
        drop_files(self._expire_hooks, job)

    @_redis_answers
    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job ends (or `timeout` passes) and return it as it is then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        after = -1
        while True:
            record = self._records.load(job_id)
            if record is None or record.job.status.is_terminal:
                break
            remaining = 5.0 if deadline is None else min(5.0, deadline - time.monotonic())
            if remaining <= 0:
                break
            events = self._records.events_after(job_id, after, block_s=remaining)
            if events:
                after = events[-1].index
        return self.get(job_id)

    @_redis_answers
    def events(
        self,
        job_id: str,
        after: int = -1,
        timeout: float = 15.0,
        *,
        previews: bool = False,
        caller: Caller = LOCAL_CALLER,
    ) -> list[JobEvent]:
        """The job's events with an index above `after`, waiting up to `timeout` for one to come."""
        job = self._find(job_id, caller)
        if previews:
            self._want_previews(job_id)
        if is_expired(job, self._clock()):
            return [_state_event(job, 0)] if after < 0 else []
        events = self._records.events_after(job_id, after, block_s=timeout)
        return [event for event in events if previews or event.type != "preview"]

    def _want_previews(self, job_id: str) -> None:
        self._records.redis.set(self._records.key("previews", job_id), "1", ex=3600)

    async def follow(
        self, job_id: str, after: int = -1, *, previews: bool = False, caller: Caller = LOCAL_CALLER
    ) -> AsyncGenerator[JobEvent, None]:
        """The job's events, from its stream, until its terminal one; the follower holds no thread meanwhile.

        With `after` below 0 the first event is the job's current state, indexed as its latest event. An open
        follow of a job not the caller's own counts against its share of the queue. Ends with `Interrupted` when
        this node stops first.
        """
        job = self.get(job_id, caller=caller)  # JobNotFound, JobExpired
        client = caller.name
        counted = not job.status.is_terminal and job.client != client
        if counted:
            with self._lock:
                self._admission.check_share(client)
                self._follows[client] += 1
        if previews:
            self._want_previews(job_id)
        reader = redis.asyncio.Redis.from_url(
            self.url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=SOCKET_TIMEOUT_S + FOLLOW_BLOCK_S
        )
        try:
            if after < 0:
                current = self._current_event(job_id)
                after = current.index
                yield current
                if current.is_terminal:
                    return
            stream = self._records.key("events", job_id)
            while True:
                if self._follows_ended or self._stopping.is_set():
                    raise Interrupted(
                        f"The server is stopping; job '{job_id}' goes on.",
                        hint="Ask for it by its id on any server of this queue.",
                    )
                try:
                    reply = await reader.xread({stream: f"0-{after + 1}"}, block=int(FOLLOW_BLOCK_S * 1000))
                except redis.RedisError as exc:
                    raise unavailable(exc) from None
                for event in parse_events(job_id, reply):
                    after = event.index
                    if event.type == "preview" and not previews:
                        continue
                    yield event
                    if event.is_terminal:
                        return
        finally:
            await reader.aclose()
            if counted:
                with self._lock:
                    self._follows[client] -= 1

    def _current_event(self, job_id: str) -> JobEvent:
        record = self._records.load(job_id)
        if record is None:
            raise unknown_job(job_id)
        job = record.job
        extra: dict[str, Any] = {}
        if job.status is JobStatus.QUEUED:
            ahead = self._records.ahead_of(job_id)
            extra["ahead"] = (ahead or 0) + self._records.running_count()
        elif job.status is JobStatus.RUNNING:
            stage = self._records.redis.get(self._records.key("stage", job_id))
            if stage is not None:
                extra["stage"] = json.loads(stage)
        index = max(0, self._records.last_index(job_id))
        return JobEvent(type="state", job_id=job_id, data={**state_data(job), **extra}, index=index)

    def held_by(self, client: str) -> int:
        """What `client` holds of the queue: its jobs not ended, and its follows on this node of others' jobs."""
        return self._records.active_of(client) + self._follows[client]

    # -- sweeping -----------------------------------------------------------------------------------

    def _sweeper(self) -> None:
        next_expiry = time.monotonic() + self._limits.sweep_interval_s
        while not self._stopping.wait(self._heartbeat_sweep_s):
            try:
                self.recover_stale()
                if time.monotonic() >= next_expiry:
                    next_expiry = time.monotonic() + self._limits.sweep_interval_s
                    self.sweep()
            except Exception as exc:  # Redis away: the next round tries again
                log.warning("sweeping the distributed queue failed: %s", exc)

    def recover_stale(self) -> list[str]:
        """Run again (once) each running job whose heartbeat expired, or end it `interrupted` once its re-run
        budget is spent; returns the ids re-dispatched. One node at a time does this, under a short lock."""
        token = self._records.try_lock("heartbeats", ttl_s=30.0)
        if token is None:
            return []
        redispatched = []
        try:
            for job_id in self._records.running_ids():
                if self._records.heartbeat_alive(job_id):
                    continue
                record = self._recover(job_id)
                if record is not None:
                    log.warning("job %s lost its worker; running it again (attempt %d)", job_id, record.attempt)
                    dispatch.send(self.app, job_id, record.attempt, record.route)
                    redispatched.append(job_id)
        finally:
            self._records.unlock("heartbeats", token)
        return redispatched

    def _recover(self, job_id: str) -> Record | None:
        """Give a running job without a heartbeat to a new attempt (returned), or end it `interrupted`."""
        rerun: list[Record] = []

        def decide(record: Record) -> Callable[[Pipeline], None] | None:
            rerun.clear()
            if record.job.status is not JobStatus.RUNNING or self._records.heartbeat_alive(record.job.id):
                return None
            job = record.job
            if record.attempt > MAX_RERUNS:
                job.status, job.error = JobStatus.FAILED, interrupted_error()
                return lambda pipe: end(
                    self._records, pipe, record, result_ttl_s=self._limits.result_ttl_s, now=self._clock()
                )
            job.status, job.started_at, job.step, job.total = JobStatus.QUEUED, None, 0, 0
            record.attempt += 1
            rerun.append(record)

            def write(pipe: Pipeline) -> None:
                self._records.write(pipe, job, attempt=record.attempt, route=record.route)
                event = {"type": "state", "data": {**state_data(job), "ahead": 0, "attempt": record.attempt}}
                self._records.publish(job.id, event, client=pipe)

            return write

        self._records.change(job_id, decide)
        return rerun[0] if rerun else None

    def sweep(self, now: float | None = None) -> list[str]:
        """Drop expired results: call each kind's expire hook and keep the record as a tombstone without payload
        or result, so that the job answers `expired` rather than unknown."""
        now = self._clock() if now is None else now
        swept = []
        for job_id in self._records.expired_ids(now):
            record = self._records.load(job_id)
            self._records.redis.zrem(self._records.key("ended"), job_id)
            if record is None:
                continue
            drop_files(self._expire_hooks, record.job)
            record.job.result, record.job.payload = None, {}
            pipe = self._records.redis.pipeline()
            self._records.write(pipe, record.job, attempt=record.attempt, route=record.route)
            pipe.zrem(self._records.key("ended"), job_id)
            pipe.execute()
            swept.append(job_id)
        return swept

    def results_with(self, key: str, value: str) -> list[Job]:
        """Jobs whose result is still readable and has `value` under `key`, at any depth."""
        now = self._clock()
        jobs = self._records.load_many(self._records.live_ids(now))
        return [job for job in jobs if not is_expired(job, now) and _holds(job.result, key, value)]

    def payloads_with(self, key: str, value: str) -> list[Job]:
        """Jobs not expired whose payload has `value` under `key`, at any depth."""
        now = self._clock()
        jobs = self._records.load_many(self._records.live_ids(now))
        return [job for job in jobs if not is_expired(job, now) and _holds(job.payload, key, value)]

    def storage_fault(self) -> StorageUnavailable | None:
        """`QueueUnavailable` while Redis, which holds the jobs, does not answer: /health says `degraded` and
        submissions are refused at once."""
        try:
            self._records.redis.ping()
        except redis.RedisError as exc:
            return unavailable(exc)
        return None

    def describe(self) -> dict[str, Any]:
        """The distributed queue: whether Redis answers, how many jobs wait and run, and the workers seen (their
        models and device), from their heartbeats."""
        try:
            return {
                "kind": "redis",
                "reachable": True,
                "waiting": self._records.waiting(),
                "running": self._records.running_count(),
                "workers": sorted(self._records.workers(), key=lambda worker: str(worker.get("name"))),
            }
        except redis.RedisError:
            return {"kind": "redis", "reachable": False, "waiting": None, "running": None, "workers": []}

    def why_not_running(self) -> str | None:
        """While Redis does not answer, why: this node can neither take nor follow jobs."""
        fault = self.storage_fault()
        return None if fault is None else fault.message

    # -- the worker side ----------------------------------------------------------------------------

    def consume(self, routes: list[str], *, device: str, name: str | None = None) -> None:
        """Run this process as a worker of `routes` (model keys) until it is told to stop: one job at a time, each
        in this thread (Celery's solo pool); writes `READY_LINE` to stderr once it consumes."""
        worker = self.make_worker(routes, device=device, name=name)
        worker.start()

    def make_worker(self, routes: list[str], *, device: str, name: str | None = None) -> Any:
        """A Celery worker (solo pool: one job at a time, in its thread) of the queues of `routes`."""
        name = self.serve_as_worker(routes, device=device, name=name).worker
        worker_ready.connect(_announce_ready, weak=False, dispatch_uid="imageforge-worker-ready")
        # The process's logging is its own (`imageforge worker` sets it up, in IMAGEFORGE_LOG_FORMAT): with a
        # receiver here Celery leaves it as it is instead of replacing the root logger's handlers with its own.
        setup_logging.connect(_keep_logging, weak=False, dispatch_uid="imageforge-keep-logging")
        return self.app.Worker(
            hostname=f"{name}@{socket.gethostname()}",
            queues=[dispatch.queue_name(route) for route in routes],
            pool_cls="solo",
            concurrency=1,
            without_mingle=True,
            without_gossip=True,
            without_heartbeat=True,
            loglevel="WARNING",
        )

    def serve_as_worker(self, routes: list[str], *, device: str, name: str | None = None) -> JobRunner:
        """Bind this queue's task to a new `JobRunner` and publish this worker's heartbeat (its models and
        device) until the queue closes; a Celery worker on this queue's `app` then runs the jobs."""
        name = name or f"imageforge-worker-{secrets.token_hex(3)}"
        runner = self.runner(name)
        dispatch.bind_task(self.app, runner.run)
        beat = threading.Thread(
            target=self._worker_beat, args=(runner, routes, device), name="imageforge-worker-beat", daemon=True
        )
        beat.start()
        self._threads.append(beat)
        return runner

    def runner(self, name: str) -> JobRunner:
        """The `JobRunner` that runs this queue's registered job functions as worker `name`."""
        return JobRunner(
            self._records,
            self._functions,
            worker=name,
            result_ttl_s=self._limits.result_ttl_s,
            job_timeout_s=self._limits.job_timeout_s,
            clock=self._clock,
            heartbeat_ttl_s=self._heartbeat_ttl_s,
            metrics=self._metrics,
        )

    def _worker_beat(self, runner: JobRunner, routes: list[str], device: str) -> None:
        info = {
            "name": runner.worker,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "models": routes,
            "device": device,
        }
        while not self._stopping.is_set():
            try:
                self._records.worker_beat(runner.worker, {**info, "job": runner.current}, ttl_s=10.0)
            except redis.RedisError as exc:
                log.warning("worker heartbeat failed: %s", exc)
            self._stopping.wait(3.0)


def _keep_logging(**_: Any) -> None:
    pass


def _announce_ready(**_: Any) -> None:
    print(READY_LINE, file=sys.stderr, flush=True)


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _state_event(job: Job, index: int) -> JobEvent:
    return JobEvent(type="state", job_id=job.id, data=state_data(job), index=index)


def _holds(data: Any, key: str, value: str) -> bool:
    if isinstance(data, dict):
        return any((name == key and item == value) or _holds(item, key, value) for name, item in data.items())
    if isinstance(data, list):
        return any(_holds(item, key, value) for item in data)
    return False
