"""Admission: whether the queue takes one more job or wait, by the queue's room, a client's share of it and a
client's rate. The worker that runs the jobs knows nothing of these limits."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Protocol

from imageforge.errors import ImageforgeError, QueueFull, QueueShareExceeded, RateLimited
from imageforge.metrics import Metrics

#: The window of the per-client rate limit.
RATE_WINDOW_S = 60.0


class RateLog(Protocol):
    """When each client's recent jobs were accepted, for the per-client rate."""

    def recent(self, client: str, since: float) -> list[float]:
        """When `client`'s jobs accepted after `since` were, oldest first; older entries are forgotten."""
        ...

    def note(self, client: str, at: float) -> None:
        """Remember that a job of `client` was accepted at `at`."""
        ...


class MemoryRateLog:
    """A `RateLog` in this process's memory: one process's queue."""

    def __init__(self) -> None:
        #: per client, when its jobs of the last RATE_WINDOW_S were accepted
        self._accepted_at: dict[str, deque[float]] = {}

    def recent(self, client: str, since: float) -> list[float]:
        accepted = self._accepted_at.get(client)
        if accepted is None:
            return []
        while accepted and accepted[0] <= since:
            accepted.popleft()
        if not accepted:
            del self._accepted_at[client]
        return list(accepted)

    def note(self, client: str, at: float) -> None:
        self._accepted_at.setdefault(client, deque()).append(at)


class Admission:
    """The queue's limits on what it accepts: `max_queued` jobs waiting in all, `client_share` jobs and waits held
    by one client (None: no share), `jobs_per_minute` new jobs of one client (0: no rate limit).

    `held_by(client)` says what a client holds now and `retry_after_s()` when a refused caller should try again;
    the queue, which knows both, supplies them, and `rate_log` where accepted jobs are counted (this process's
    memory unless given: a queue across machines keeps it where all its nodes count). Each refusal is counted in
    `metrics` by its code. Callers hold the queue's lock.
    """

    def __init__(
        self,
        *,
        max_queued: int,
        client_share: int | None,
        jobs_per_minute: int,
        held_by: Callable[[str], int],
        retry_after_s: Callable[[], int],
        clock: Callable[[], float],
        rate_log: RateLog | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._max_queued = max_queued
        self._client_share = client_share
        self._jobs_per_minute = jobs_per_minute
        self._held_by = held_by
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._rate_log = rate_log or MemoryRateLog()
        self._metrics = metrics or Metrics()

    def check_job(self, client: str, waiting: int) -> None:
        """Refuse a new job of `client`, with `waiting` jobs queued: `QueueFull`, `QueueShareExceeded` or
        `RateLimited`."""
        if waiting >= self._max_queued:
            raise self._refused(
                QueueFull(
                    f"The queue is full ({self._max_queued} jobs waiting).",
                    hint="Retry after the time in the Retry-After header.",
                    retry_after_s=self._retry_after_s(),
                )
            )
        self.check_share(client)
        self._check_rate(client)

    def check_share(self, client: str) -> None:
        """Refuse one more job or wait of `client` past its share of the queue (`QueueShareExceeded`)."""
        if self._client_share is None:
            return
        held = self._held_by(client)
        if held >= self._client_share:
            raise self._refused(
                QueueShareExceeded(
                    f"You have {held} jobs waiting or running (each request waiting on one counts), your share of "
                    "this server's queue.",
                    hint="Wait for one to finish (or cancel one, or close a wait on one), then try again; the server's "
                    "admin sets the share with IMAGEFORGE_QUEUE_SHARE.",
                    retry_after_s=self._retry_after_s(),
                )
            )

    def accepted(self, client: str, at: float) -> None:
        """Count a job of `client` accepted at `at` against its rate."""
        if self._jobs_per_minute:
            self._rate_log.note(client, at)

    def _check_rate(self, client: str) -> None:
        if not self._jobs_per_minute:
            return
        now = self._clock()
        accepted = self._rate_log.recent(client, now - RATE_WINDOW_S)
        if len(accepted) >= self._jobs_per_minute:
            raise self._refused(
                RateLimited(
                    f"You submitted {len(accepted)} jobs in the last minute, the most this server accepts.",
                    hint="Retry after the time in the Retry-After header; the server's admin sets the rate with "
                    "IMAGEFORGE_RATE_LIMIT.",
                    retry_after_s=max(1, math.ceil(accepted[0] + RATE_WINDOW_S - now)),
                )
            )

    def _refused(self, refusal: ImageforgeError) -> ImageforgeError:
        self._metrics.refusals.labels(refusal.code).inc()
        return refusal
