"""The job record, its status and its events: plain data, serialisable as JSON, knowing nothing of images."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

#: The client of the command line and of MCP over stdio: the user of this machine.
LOCAL_CLIENT = "local"


class JobStatus(enum.StrEnum):
    """Where a job is in its life; the last three are terminal."""

    #: accepted and waiting for the worker
    QUEUED = "queued"
    #: the worker is running it
    RUNNING = "running"
    #: finished with a result
    SUCCEEDED = "succeeded"
    #: finished with an error (code and message)
    FAILED = "failed"
    #: stopped on request before it finished
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass
class Job:
    """One unit of queued work and everything a client may ask about it."""

    id: str
    #: the registered function that runs it
    kind: str
    payload: dict[str, Any]
    status: JobStatus = JobStatus.QUEUED
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    step: int = 0
    total: int = 0
    result: dict[str, Any] | None = None
    #: {"code", "message", "hint"} when failed or cancelled
    error: dict[str, str] | None = None
    #: queue_ms, run_ms and whatever the job function reports (load_ms)
    timings: dict[str, float] = field(default_factory=dict)
    idempotency_key: str | None = None
    #: a hash of the submitted payload, to tell a repeated Idempotency-Key with another body
    request_hash: str = ""
    #: jobs with the same key that are in flight together run once (seeded image requests)
    dedupe_key: str | None = None
    #: who submitted it: an API key's name, a peer address, or `local`; per-client limits count by it
    client: str = LOCAL_CLIENT

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Caller:
    """Who asks the queue for something, and so which jobs they may see, cancel and find again by key.

    With API keys on, `name` is the key's name and proven (`isolated`): the caller sees only the jobs it submitted,
    and its idempotency keys are its own, unless it is an `admin`, who sees and cancels every job. Without keys
    there is no identity to tell users apart: `name` (a peer address, or `local`) only counts for per-client limits,
    and every caller sees every job.
    """

    name: str = LOCAL_CLIENT
    #: `name` is a proven identity (an API key's), so the caller's jobs are kept apart from other callers'
    isolated: bool = False
    #: an admin key: sees and cancels every client's jobs
    admin: bool = False

    @property
    def sees_all(self) -> bool:
        """Whether this caller may see every client's jobs."""
        return not self.isolated or self.admin

    def sees(self, job: Job) -> bool:
        """Whether this caller may see (and so cancel) `job`."""
        return self.sees_all or job.client == self.name

    def scoped(self, key: str) -> str:
        """`key` (an idempotency or dedupe key) in this caller's own namespace: the same key from two isolated
        callers names two jobs. A newline cannot come in an HTTP header, so no client can forge another's."""
        return f"{self.name}\n{key}" if self.isolated else key


#: The user of this machine (CLI, MCP over stdio), who sees every job.
LOCAL_CALLER = Caller()


@dataclass(frozen=True)
class JobEvent:
    """Something that happened to a job: `state` (status change), `progress` (one step) or `preview`."""

    type: str
    job_id: str
    data: dict[str, Any]
    #: position in the job's event log, so that a reader can resume after the last event it saw
    index: int = 0

    @property
    def is_terminal(self) -> bool:
        return self.type == "state" and JobStatus(self.data["status"]).is_terminal
