"""The worker side of the distributed queue: run one delivered job with a context that publishes to its stream,
keep its heartbeat alive, and drop a delivery that must not run (Celery may deliver a task twice)."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from redis.client import Pipeline

from imageforge import tracing
from imageforge.domain import Job, JobStatus
from imageforge.errors import Cancelled, ImageforgeError
from imageforge.jobs.distributed.records import Record, Records
from imageforge.jobs.queue import JobFunction, ended
from imageforge.logs import job_context
from imageforge.metrics import Metrics

log = logging.getLogger(__name__)

#: A running job's heartbeat lives this long (seconds) unless renewed; its worker renews it three times as often.
HEARTBEAT_TTL_S = 5.0
#: The line a worker writes to stderr once it consumes: supervisors and tests wait on it.
READY_LINE = "imageforge worker ready"
#: How often a worker tries to record a job's end while Redis does not answer (about a second apart).
FINISH_TRIES = 5


@contextlib.contextmanager
def _redis_blip(what: str, job_id: str) -> Iterator[None]:
    """Let a job go on through a Redis that does not answer for a moment: its `what` (a step's report, a cancel
    check) is skipped, and the next one tries again."""
    try:
        yield
    except redis.RedisError as exc:
        log.warning("job %s: %s skipped, Redis did not answer: %s", job_id, what, exc)


def error(code: str, message: str, hint: str = "") -> dict[str, str]:
    """A job's error record."""
    return {"code": code, "message": message, "hint": hint}


def failure(exc: Exception) -> dict[str, str]:
    """The error of a job that `exc` ended: its own code, or `internal_error` for a bug."""
    if isinstance(exc, ImageforgeError):
        return error(exc.code, exc.message, exc.hint)
    return error("internal_error", f"{type(exc).__name__}: {exc}", "The worker keeps running.")


def state_data(job: Job) -> dict[str, Any]:
    """A `state` event's data."""
    return {"status": job.status.value, "step": job.step, "total": job.total, "error": job.error}


def end(records: Records, pipe: Pipeline, record: Record, *, result_ttl_s: float, now: float) -> None:
    """Queue the writes that record `record.job`, already given its terminal status, as ended."""
    job = record.job
    job.finished_at = now
    job.expires_at = now + result_ttl_s
    records.write(pipe, job, attempt=record.attempt, route=record.route)
    if job.status is JobStatus.SUCCEEDED and "run_ms" in job.timings:
        records.note_run(pipe, record.route, job.timings["run_ms"] / 1000)
    records.publish(job.id, {"type": "state", "data": state_data(job)}, client=pipe, ttl_s=result_ttl_s + 60)


class JobRunner:
    """Runs the jobs Celery delivers to this worker, one at a time, counting their waits and ends in `metrics`."""

    def __init__(
        self,
        records: Records,
        functions: dict[str, JobFunction],
        *,
        worker: str,
        result_ttl_s: float,
        job_timeout_s: float | None,
        clock: Callable[[], float] = time.time,
        heartbeat_ttl_s: float = HEARTBEAT_TTL_S,
        metrics: Metrics | None = None,
    ) -> None:
        self._records = records
        self._metrics = metrics or Metrics()
        self._functions = functions
        self.worker = worker
        self._result_ttl_s = result_ttl_s
        self._job_timeout_s = job_timeout_s
        self._clock = clock
        self._heartbeat_ttl_s = heartbeat_ttl_s
        #: the id of the job running now, for the worker's heartbeat
        self.current: str | None = None

    def run(self, job_id: str, attempt: int) -> None:
        """Run attempt `attempt` of the job, unless it ended, was cancelled, or another attempt owns it."""
        record = self._claim(job_id, attempt)
        if record is None:
            log.info("dropped a delivery of job %s attempt %d: not this attempt's to run", job_id, attempt)
            return
        self.current = job_id
        with job_context(job_id, record.job.client), tracing.run(job_id, record.job.kind, record.job.created_at):
            log.info(
                "job started: %s, attempt %d, after %.0f ms in the queue",
                record.job.kind,
                attempt,
                record.job.timings.get("queue_ms", 0.0),
            )
            with _redis_blip("queue places", job_id):
                self._records.publish_places()
            job = record.job
            if job.started_at is not None:
                self._metrics.queue_wait.observe(max(0.0, job.started_at - job.created_at))
            run = _Run(self, record)
            beating = threading.Thread(target=run.beat, name=f"imageforge-heartbeat-{job_id}", daemon=True)
            beating.start()
            try:
                self._execute(run)
            finally:
                run.done.set()
                beating.join()
                self.current = None
            if record.job.status.is_terminal:
                log.info("job %s", ended(record.job))
            else:
                log.info("job left to another attempt: this one was superseded")

    def _claim(self, job_id: str, attempt: int) -> Record | None:
        claimed: list[Record] = []

        def decide(record: Record) -> Callable[[Pipeline], None] | None:
            claimed.clear()
            # Another attempt's delivery, a job already ended, or one running with a live heartbeat: never twice.
            if record.attempt != attempt or record.job.status is not JobStatus.QUEUED:
                return None
            job = record.job
            job.status = JobStatus.RUNNING
            job.started_at = self._clock()
            job.step, job.total = 0, 0
            job.timings["queue_ms"] = round((job.started_at - job.created_at) * 1000, 1)
            claimed.append(record)

            def write(pipe: Pipeline) -> None:
                self._records.write(pipe, job, attempt=attempt, route=record.route)
                pipe.set(self._records.key("hb", job_id), self.worker, px=int(self._heartbeat_ttl_s * 1000))
                pipe.delete(self._records.key("stage", job_id))
                self._records.publish(job_id, {"type": "state", "data": state_data(job)}, client=pipe)

            return write

        self._records.change(job_id, decide)
        return claimed[0] if claimed else None

    def _execute(self, run: _Run) -> None:
        job = run.record.job
        started = time.perf_counter()
        try:
            result = self._functions[job.kind](job.payload, run)
        except Cancelled:
            # Stopped at a step: cancelled, past its deadline, or given to another attempt (which `finish` skips).
            if self._records.cancel_requested(job.id):
                run.finish(JobStatus.CANCELLED, error=error("cancelled", "The job was cancelled."))
            else:
                run.finish(JobStatus.FAILED, error=self._timeout_error())
            return
        except Exception as exc:
            if not isinstance(exc, ImageforgeError):
                log.exception("job %s (%s) failed", job.id, job.kind)
            run.finish(JobStatus.FAILED, error=failure(exc))
            return
        job.timings["run_ms"] = round((time.perf_counter() - started) * 1000, 1)
        run.finish(JobStatus.SUCCEEDED, result=result)

    def _timeout_error(self) -> dict[str, str]:
        return error(
            "timeout",
            f"The job ran past its {self._job_timeout_s:g} s deadline (IMAGEFORGE_JOB_TIMEOUT_S).",
            "Ask for fewer steps or a smaller size, or raise IMAGEFORGE_JOB_TIMEOUT_S.",
        )


def interrupted_error() -> dict[str, str]:
    """The error of a job whose worker stopped or died while it ran."""
    return error("interrupted", "The worker stopped while this job was running.", "Submit it again.")


class _Run:
    """One running attempt: the `JobContext` its function gets, and its heartbeat."""

    def __init__(self, runner: JobRunner, record: Record) -> None:
        self._runner = runner
        self._records = runner._records
        self.record = record
        self.job_id = record.job.id
        self.done = threading.Event()
        #: set once the sweeper gave this job to another attempt: this one stops and records nothing
        self.superseded = threading.Event()
        timeout = runner._job_timeout_s
        self._deadline = None if timeout is None else runner._clock() + timeout

    # -- heartbeat ----------------------------------------------------------------------------------

    def beat(self) -> None:
        ttl = self._runner._heartbeat_ttl_s
        while not self.done.wait(ttl / 3):
            try:
                current = self._records.load(self.job_id)
                if current is None or current.attempt != self.record.attempt or current.job.status.is_terminal:
                    self.superseded.set()
                    return
                self._records.beat(self.job_id, self._runner.worker, ttl)
            except Exception as exc:  # Redis away for a moment: the next beat tries again
                log.warning("job %s heartbeat failed: %s", self.job_id, exc)

    # -- JobContext ---------------------------------------------------------------------------------

    def progress(self, step: int, total: int) -> None:
        job = self.record.job
        job.step, job.total = step, total
        with _redis_blip("progress", self.job_id):
            self._save({"type": "progress", "data": {"step": step, "total": total}}, clear_stage=True)

    def wants_preview(self) -> bool:
        with _redis_blip("preview check", self.job_id):
            return bool(self._records.redis.exists(self._records.key("previews", self.job_id)))
        return False

    def preview(self, data: dict[str, Any]) -> None:
        with _redis_blip("preview", self.job_id):
            self._records.publish(self.job_id, {"type": "preview", "data": data})

    def stage(self, stage: str, details: dict[str, Any]) -> None:
        data = {"stage": stage, **details}
        with _redis_blip("stage", self.job_id):
            self._records.redis.set(self._records.key("stage", self.job_id), json.dumps(data), ex=3600)
            self._records.publish(self.job_id, {"type": "stage", "data": data})

    def timing(self, name: str, ms: float) -> None:
        self.record.job.timings[name] = round(ms, 1)

    def should_stop(self) -> bool:
        if self.superseded.is_set():
            return True
        if self._deadline is not None and self._runner._clock() > self._deadline:
            return True
        with _redis_blip("cancel check", self.job_id):
            return self._records.cancel_requested(self.job_id)
        return False

    # -- recording ----------------------------------------------------------------------------------

    def _save(self, event: dict[str, Any], *, clear_stage: bool = False) -> None:
        """Write the job as it is now with `event`, if this attempt still owns it."""
        mine = self.record

        def decide(record: Record) -> Callable[[Pipeline], None] | None:
            if record.attempt != mine.attempt or record.job.status is not JobStatus.RUNNING:
                self.superseded.set()
                return None

            def write(pipe: Pipeline) -> None:
                self._records.write(pipe, mine.job, attempt=mine.attempt, route=mine.route)
                if clear_stage:
                    pipe.delete(self._records.key("stage", self.job_id))
                self._records.publish(self.job_id, event, client=pipe)

            return write

        self._records.change(self.job_id, decide)

    def finish(
        self, status: JobStatus, *, result: dict[str, Any] | None = None, error: dict[str, str] | None = None
    ) -> None:
        """Record the end of this attempt, unless the job was given to another attempt meanwhile."""
        mine = self.record

        def decide(record: Record) -> Callable[[Pipeline], None] | None:
            if record.attempt != mine.attempt or record.job.status is not JobStatus.RUNNING:
                return None
            mine.job.status, mine.job.result, mine.job.error = status, result, error
            runner = self._runner
            return lambda pipe: end(self._records, pipe, mine, result_ttl_s=runner._result_ttl_s, now=runner._clock())

        for attempt in range(FINISH_TRIES):
            try:
                self._records.change(self.job_id, decide)
                if mine.job.status is status:
                    self._runner._metrics.job_finished(
                        mine.job.kind, status.value, None if error is None else error["code"]
                    )
                return
            except redis.RedisError as exc:
                log.warning("job %s: recording its end failed (%s), try %d", self.job_id, exc, attempt + 1)
                self.done.wait(1.0)
        # The heartbeat lapses with this run, and the sweeper gives the job to another attempt.
        log.error("job %s ended but its end could not be recorded", self.job_id)
