"""Webhooks: a job that names one (`webhook` in its payload) has its events posted there, signed the Standard
Webhooks way, retried with backoff, recorded in a SQLite file beside the job database and resumed after a restart.

The queue tells `WebhookDispatcher.on_event` of each event of its jobs; a delivery the job asked for is stored at
once and posted by the dispatcher's own threads, so that a slow or dead receiver never holds up a job.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from imageforge import __version__
from imageforge.domain import (
    DeliveryStatus,
    Job,
    JobEvent,
    JobStatus,
    JobWebhook,
    WebhookDelivery,
    WebhookEvent,
    iso_time,
)
from imageforge.errors import StorageUnavailable, WebhookNotAllowed, storage_error
from imageforge.jobs.webhook_targets import Target, WebhookTargets

log = logging.getLogger(__name__)

#: How long one attempt may take, connection included.
DEFAULT_TIMEOUT_S = 10.0
#: How many deliveries are posted at once: a receiver that hangs holds one of them.
DEFAULT_SENDERS = 4
#: Standard Webhooks' prefix of a secret written as text (`whsec_` + base64).
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
#: How much of a receiver's error text is recorded.
_ERROR_CHARS = 200

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    job_id TEXT NOT NULL,
    event TEXT NOT NULL,
    url TEXT NOT NULL,
    body BLOB NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL,
    last_status_code INTEGER,
    last_error TEXT,
    created_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS deliveries_job ON deliveries (job_id, seq);
CREATE INDEX IF NOT EXISTS deliveries_status ON deliveries (status, finished_at);
"""


def sign(secret: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header of a delivery: `v1,` and the base64 HMAC-SHA256 of `id.timestamp.body`."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()


def secret_key(text: str) -> bytes:
    """The HMAC key of a secret written as Standard Webhooks writes it (`whsec_` + base64); `ValueError` else."""
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX}")
    try:
        key = base64.b64decode(text.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError:
        raise ValueError(f"a webhook secret is {SECRET_PREFIX} and base64") from None
    if len(key) < 16:
        raise ValueError("a webhook secret holds at least 16 bytes")
    return key


def secret_from_file(path: Path) -> str:
    """The webhook secret kept in `path` (written 0600, `whsec_` + base64, on first use), so that it outlives a
    restart and receivers keep verifying."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text + "\n")
    return text


@dataclass(frozen=True)
class _Row:
    """One stored delivery."""

    id: str
    job_id: str
    event: WebhookEvent
    url: str
    body: bytes
    status: DeliveryStatus
    attempts: int
    next_at: float | None
    last_status_code: int | None
    last_error: str | None
    finished_at: float | None

    def public(self) -> WebhookDelivery:
        return WebhookDelivery(
            id=self.id,
            event=self.event,
            status=self.status,
            attempts=self.attempts,
            last_status_code=self.last_status_code,
            last_error=self.last_error,
            next_attempt_at=iso_time(self.next_at) if self.status is DeliveryStatus.PENDING else None,
            finished_at=iso_time(self.finished_at),
        )


_COLUMNS = "id, job_id, event, url, body, status, attempts, next_at, last_status_code, last_error, finished_at"


class DeliveryStore:
    """Deliveries in one SQLite file: every one a job asked for, until some time after it ended."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def add(self, job_id: str, event: WebhookEvent, url: str, body: bytes, now: float) -> str:
        """Store a pending delivery due `now`; its id (the `webhook-id` every attempt sends)."""
        delivery_id = "msg_" + secrets.token_hex(12)
        self._write(
            "INSERT INTO deliveries (id, job_id, event, url, body, status, next_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (delivery_id, job_id, event.value, url, body, DeliveryStatus.PENDING.value, now, now),
        )
        return delivery_id

    def attempted(
        self,
        delivery_id: str,
        *,
        status: DeliveryStatus,
        attempts: int,
        status_code: int | None,
        error: str | None,
        next_at: float | None,
        now: float,
    ) -> None:
        """Record one attempt's outcome."""
        self._write(
            "UPDATE deliveries SET status = ?, attempts = ?, last_status_code = ?, last_error = ?, next_at = ?,"
            " finished_at = ? WHERE id = ?",
            (
                status.value,
                attempts,
                status_code,
                error,
                next_at,
                None if status is DeliveryStatus.PENDING else now,
                delivery_id,
            ),
        )

    def get(self, delivery_id: str) -> _Row | None:
        rows = self._rows(f"SELECT {_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,))
        return rows[0] if rows else None

    def of_job(self, job_id: str) -> list[_Row]:
        return self._rows(f"SELECT {_COLUMNS} FROM deliveries WHERE job_id = ? ORDER BY seq", (job_id,))

    def pending(self) -> list[_Row]:
        return self._rows(
            f"SELECT {_COLUMNS} FROM deliveries WHERE status = ? ORDER BY seq", (DeliveryStatus.PENDING.value,)
        )

    def prune(self, before: float) -> None:
        """Forget the deliveries that finished before `before`."""
        self._write("DELETE FROM deliveries WHERE finished_at IS NOT NULL AND finished_at < ?", (before,))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, statement: str, parameters: tuple[Any, ...]) -> None:
        with self._lock:
            try:
                self._db.execute(statement, parameters)
            except sqlite3.OperationalError as exc:
                raise storage_error(exc, "The webhook database", "IMAGEFORGE_DATA_DIR") from exc

    def _rows(self, query: str, parameters: tuple[Any, ...]) -> list[_Row]:
        with self._lock:
            found = self._db.execute(query, parameters).fetchall()
        return [
            _Row(
                id=row[0],
                job_id=row[1],
                event=WebhookEvent(row[2]),
                url=row[3],
                body=bytes(row[4]),
                status=DeliveryStatus(row[5]),
                attempts=row[6],
                next_at=row[7],
                last_status_code=row[8],
                last_error=row[9],
                finished_at=row[10],
            )
            for row in found
        ]


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    delivery_id: str = field(compare=False)
    job_id: str = field(compare=False)


class WebhookDispatcher:
    """Posts the deliveries jobs asked for from its own threads, retrying each until a 2xx answer: `retry_s`
    are the seconds between one attempt and the next, so there are one more attempts than delays.

    A delivery goes only to an address the allow-list admits, checked again before each attempt on a fresh
    resolution, and it connects to the address it checked; redirects are not followed; the environment's proxy
    settings are ignored (a proxy would decide where the post goes).
    """

    def __init__(
        self,
        store: DeliveryStore,
        targets: WebhookTargets,
        secret: str,
        *,
        retry_s: Sequence[float],
        timeout_s: float = DEFAULT_TIMEOUT_S,
        senders: int = DEFAULT_SENDERS,
        keep_s: float = 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.targets = targets
        self._key = secret_key(secret)
        self._retry_s = tuple(retry_s)
        self._senders = senders
        self._keep_s = keep_s
        self._clock = clock
        self._http = httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False)
        self._changed = threading.Condition()
        self._due: list[_Due] = []
        self._seq = 0
        #: jobs with a delivery being posted now: their next one waits, so that one job's events arrive in order
        self._busy: set[str] = set()
        self._closing = False
        self._threads: list[threading.Thread] = []

    def check(self, url: str) -> None:
        """`WebhookNotAllowed` unless `url` is one the allow-list admits now."""
        self.targets.check(url)

    def on_event(self, job: Job, event: JobEvent) -> None:
        """Store the delivery of `event` if `job` asked for it; called by the queue with its lock held, so this
        only writes a row and never raises."""
        webhook = job.payload.get("webhook")
        kind = _webhook_event(event)
        if not isinstance(webhook, dict) or kind is None or kind.value not in webhook.get("events", ()):
            return
        now = self._clock()
        body = json.dumps(
            {"type": f"job.{kind.value}", "timestamp": iso_time(now), "data": job_summary(job)},
            separators=(",", ":"),
        ).encode()
        try:
            delivery_id = self._store.add(job.id, kind, str(webhook["url"]), body, now)
        except StorageUnavailable as exc:
            log.error("the %s webhook of job %s was not stored: %s", kind.value, job.id, exc.message)
            return
        self._schedule(delivery_id, job.id, now)

    def webhook(self, job: Job) -> JobWebhook | None:
        """`job`'s webhook and its deliveries so far, or None when it has none."""
        webhook = job.payload.get("webhook")
        if not isinstance(webhook, dict):
            return None
        deliveries = [row.public() for row in self._store.of_job(job.id)]
        return JobWebhook(url=webhook["url"], events=webhook["events"], deliveries=deliveries)

    def start(self) -> None:
        """Resume the deliveries a previous run left pending (each at once: the receiver may have been waiting)
        and start the senders."""
        if self._threads:
            return
        self._store.prune(self._clock() - self._keep_s)
        now = self._clock()
        for row in self._store.pending():
            self._schedule(row.id, row.job_id, now)
        for number in range(self._senders):
            thread = threading.Thread(target=self._send, name=f"imageforge-webhook-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def settle(self, timeout_s: float) -> bool:
        """Wait until no delivery is being posted or due now (those due later do not count), or `timeout_s` has
        passed; whether it settled."""
        with self._changed:
            return self._changed.wait_for(self._settled, timeout_s)

    def _settled(self) -> bool:
        now = self._clock()
        return not self._busy and not any(due.at <= now for due in self._due)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop sending; pending deliveries stay stored for the next start. An attempt under way is left to its
        own timeout and recorded if it ends in time."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if not any(thread.is_alive() for thread in self._threads):
            self._http.close()
            self._store.close()
        self._threads.clear()

    # -- the senders ----------------------------------------------------------------------------------

    def _schedule(self, delivery_id: str, job_id: str, at: float) -> None:
        with self._changed:
            self._seq += 1
            heapq.heappush(self._due, _Due(at, self._seq, delivery_id, job_id))
            self._changed.notify_all()  # a sender and whoever waits to settle may both be waiting

    def _send(self) -> None:
        while True:
            with self._changed:
                due = self._next()
                while due is None:
                    if self._closing:
                        return
                    self._changed.wait(self._wait_s())
                    due = self._next()
                self._busy.add(due.job_id)
            try:
                self._attempt(due.delivery_id)
            except Exception:  # a full disk, for one: the delivery stays pending for the next start
                log.exception("webhook delivery %s failed", due.delivery_id)
            finally:
                with self._changed:
                    self._busy.discard(due.job_id)
                    self._changed.notify_all()

    def _next(self) -> _Due | None:
        """The first due delivery of a job with none being posted (caller holds the lock); None while closing."""
        if self._closing:
            return None
        now, held = self._clock(), []
        found = None
        while self._due and self._due[0].at <= now:
            candidate = heapq.heappop(self._due)
            if candidate.job_id in self._busy:
                held.append(candidate)
                continue
            found = candidate
            break
        for candidate in held:
            heapq.heappush(self._due, candidate)
        return found

    def _wait_s(self) -> float | None:
        """How long until a delivery may be due (caller holds the lock); None: until woken."""
        later = [due.at for due in self._due if due.job_id not in self._busy]
        return max(0.0, min(later) - self._clock()) if later else None

    def _attempt(self, delivery_id: str) -> None:
        row = self._store.get(delivery_id)
        if row is None or row.status is not DeliveryStatus.PENDING:
            return
        attempts = row.attempts + 1
        status_code, error, final = self._post(row)
        now = self._clock()
        if status_code is not None and 200 <= status_code < 300:
            status, next_at = DeliveryStatus.DELIVERED, None
        elif final or attempts > len(self._retry_s):
            status, next_at = DeliveryStatus.GIVEN_UP, None
        else:
            status, next_at = DeliveryStatus.PENDING, now + self._retry_s[attempts - 1]
        self._store.attempted(
            delivery_id,
            status=status,
            attempts=attempts,
            status_code=status_code,
            error=error,
            next_at=next_at,
            now=now,
        )
        if next_at is not None:
            self._schedule(delivery_id, row.job_id, next_at)
        else:
            self._store.prune(now - self._keep_s)

    def _post(self, row: _Row) -> tuple[int | None, str | None, bool]:
        """Post `row` once: the receiver's status code, why it failed, and whether trying again is pointless."""
        try:
            target = self.targets.target(row.url)
        except OSError as exc:  # a host that does not resolve now may resolve at the next attempt
            return None, f"the host does not resolve ({exc.strerror or exc})", False
        except WebhookNotAllowed as exc:
            return None, exc.message, True
        timestamp = int(self._clock())
        headers = {
            "content-type": "application/json",
            "user-agent": f"imageforge/{__version__}",
            "webhook-id": row.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, row.id, timestamp, row.body),
        }
        try:
            response = self._http.send(_pinned(target, row.body, headers))
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS], False
        if 200 <= response.status_code < 300:
            return response.status_code, None, False
        if response.is_redirect:
            return response.status_code, "a redirect, not followed", False
        return response.status_code, response.text[:_ERROR_CHARS] or response.reason_phrase, False


def _pinned(target: Target, body: bytes, headers: dict[str, str]) -> httpx.Request:
    """A POST of `body` to `target` that connects to its checked address, naming its host in the Host header and,
    over https, in the TLS handshake (whose certificate is checked against that name)."""
    url = httpx.URL(target.url)
    connect = url.copy_with(host=str(target.addresses[0]))
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    request = httpx.Request("POST", connect, content=body, headers={**headers, "host": url.netloc.decode("ascii")})
    request.extensions.update(extensions)
    return request


def _webhook_event(event: JobEvent) -> WebhookEvent | None:
    """The webhook event a job event is, if any."""
    if event.type == "progress":
        return WebhookEvent.PROGRESS
    if event.type != "state":
        return None
    status = JobStatus(event.data["status"])
    if status is JobStatus.RUNNING:
        return WebhookEvent.STARTED
    return WebhookEvent.COMPLETED if status.is_terminal else None


def job_summary(job: Job) -> dict[str, Any]:
    """What a delivery's `data` says of a job: its status, progress, times, and its result or error."""
    return {
        "job_id": job.id,
        "status": job.status.value,
        "step": job.step,
        "total": job.total,
        "created_at": iso_time(job.created_at),
        "started_at": iso_time(job.started_at),
        "finished_at": iso_time(job.finished_at),
        "result": job.result,
        "error": job.error,
    }
