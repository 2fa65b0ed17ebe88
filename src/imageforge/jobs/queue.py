"""The job queue's interface: what the service registers and calls, whichever queue runs the jobs.

The queue runs job functions that the service registers by kind and knows nothing else about them: a payload goes
in, a result comes out, both plain JSON-serialisable data. A job's events say what happens to it: `state` (a
status change; a waiting job's says how many jobs start before it, `ahead`, and the first event a follower gets
of a running job says what it is doing before its next step, `stage`), `queue` (a waiting job's new place
when the queue moves), `stage` (what the job function reports doing before its steps, such as loading its model),
`progress` (one step) and `preview`. `EmbeddedJobQueue` (jobs/embedded.py) runs them in this
process over a SQLite store; a distributed queue (API nodes enqueue, GPU workers consume) implements the same
`JobQueue` protocol.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from imageforge.domain import LOCAL_CALLER, Caller, Job, JobEvent, JobStatus
from imageforge.errors import JobExpired, JobNotFound, StorageUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueLimits:
    """How many jobs may wait, how long one may run, how long results stay readable, and what one client may
    hold (waiting and running jobs, and its open waits on them: see each queue's `held_by`) and submit per
    minute (0: no rate limit)."""

    max_queued: int = 32
    job_timeout_s: float | None = None
    result_ttl_s: float = 3600.0
    sweep_interval_s: float = 60.0
    client_share: int | None = None
    client_jobs_per_minute: int = 0


#: The limits of a queue built without any.
DEFAULT_LIMITS = QueueLimits()


class JobContext(Protocol):
    """What a running job function may do besides computing."""

    job_id: str

    def progress(self, step: int, total: int) -> None:
        """Report one step done."""
        ...

    def wants_preview(self) -> bool:
        """Whether someone follows this job's events with previews: only then is one worth computing."""
        ...

    def preview(self, data: dict[str, Any]) -> None:
        """Publish a live preview (kept in memory with the events, never stored)."""
        ...

    def stage(self, stage: str, details: dict[str, Any]) -> None:
        """Publish what the job is doing before or between its steps (`loading`, with the model), as a `stage`
        event: a wait its steps do not show."""
        ...

    def timing(self, name: str, ms: float) -> None:
        """Record a timing (`load_ms`) in the job's timings."""
        ...

    def should_stop(self) -> bool:
        """True once the job is cancelled or past its deadline: stop at the next step boundary."""
        ...


#: Runs one job: payload in, result out; raises an `ImageforgeError` to fail with its code.
JobFunction = Callable[[dict[str, Any], JobContext], dict[str, Any]]
#: Called when a finished job's result expires, to remove what it points to (served files).
ExpireHook = Callable[[Job], None]
#: Told of each event of a job (with the job as it is then), with the queue's lock held: it must be quick and
#: never raise (webhooks store a delivery and return).
EventListener = Callable[[Job, JobEvent], None]


class JobQueue(Protocol):
    """Submit, observe and cancel jobs.

    Each call that names a job takes the `caller`: a job someone else submitted is unknown to an isolated caller
    (see `Caller`), exactly as a job that never existed.
    """

    #: whether the jobs submitted here run in this process (the embedded queue) or on workers elsewhere
    runs_in_process: bool

    def register(self, kind: str, run: JobFunction, *, on_expire: ExpireHook | None = None) -> None: ...

    def listen(self, listener: EventListener) -> bool:
        """Tell `listener` of every event of every job from now on; False when this queue cannot (the distributed
        queue's events happen on its workers)."""
        ...

    def submit(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        dedupe_key: str | None = None,
        caller: Caller = LOCAL_CALLER,
    ) -> Job: ...

    def get(self, job_id: str, *, caller: Caller = LOCAL_CALLER) -> Job: ...

    def recent(
        self, statuses: Iterable[JobStatus] = (), *, limit: int = 100, caller: Caller = LOCAL_CALLER
    ) -> list[Job]: ...

    def position(self, job_id: str) -> int | None: ...

    def eta(self, job_id: str) -> float | None: ...

    def cancel(self, job_id: str, *, caller: Caller = LOCAL_CALLER) -> Job: ...

    def forget(self, job_id: str, *, caller: Caller = LOCAL_CALLER) -> None:
        """Delete an ended job: its record, and through its kind's expire hook its files."""
        ...

    def wait(self, job_id: str, timeout: float | None = None) -> Job: ...

    def events(
        self,
        job_id: str,
        after: int = -1,
        timeout: float = 15.0,
        *,
        previews: bool = False,
        caller: Caller = LOCAL_CALLER,
    ) -> list[JobEvent]: ...

    def follow(
        self, job_id: str, after: int = -1, *, previews: bool = False, caller: Caller = LOCAL_CALLER
    ) -> AsyncGenerator[JobEvent, None]: ...

    def sweep(self, now: float | None = None) -> list[str]: ...

    def results_with(self, key: str, value: str) -> list[Job]: ...

    def payloads_with(self, key: str, value: str) -> list[Job]: ...

    def storage_fault(self) -> StorageUnavailable | None: ...

    def describe(self) -> dict[str, Any]:
        """What /health says of the queue: its `kind`, and for a distributed one the workers seen."""
        ...

    def why_not_running(self) -> str | None:
        """Why the queue cannot take and run jobs now, in words for /health/ready, or None while it can."""
        ...

    def start(self) -> None: ...

    def close(self, timeout_s: float = ...) -> None: ...

    def end_follows(self) -> None: ...


def request_hash(kind: str, payload: dict[str, Any]) -> str:
    canonical = json.dumps({"kind": kind, "payload": payload}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def is_expired(job: Job, now: float) -> bool:
    """Whether the job's result is past its `expires_at` (an unfinished job never is)."""
    return job.expires_at is not None and job.expires_at <= now


def drop_files(hooks: dict[str, ExpireHook], job: Job) -> None:
    """Remove what the job's result points to, through its kind's expire hook; a failure is logged, never raised:
    the job's record goes either way."""
    hook = hooks.get(job.kind)
    try:
        if hook is not None:
            hook(job)
    except Exception:
        log.exception("removing the files of job %s failed", job.id)


def ended(job: Job) -> str:
    """How a job ended, for its last log line: `succeeded in 1234 ms`, `failed: timeout`."""
    if job.status is JobStatus.SUCCEEDED:
        return f"succeeded in {job.timings.get('run_ms', 0.0):.0f} ms"
    code = (job.error or {}).get("code")
    return f"{job.status.value}: {code}" if code else job.status.value


def unknown_job(job_id: str) -> JobNotFound:
    """The refusal of a job id that names no job the caller may see (never telling which)."""
    return JobNotFound(f"No job '{job_id}'.", hint="Check the id: it is the job_id that submitting the job answered.")


def readable(job: Job, now: float) -> Job:
    """`job`, unless its result has expired: then `JobExpired`."""
    if is_expired(job, now):
        raise JobExpired(
            f"Job '{job.id}' finished and its result expired.",
            hint="Results are kept for IMAGEFORGE_RESULT_TTL_S seconds; submit the job again.",
        )
    return job
