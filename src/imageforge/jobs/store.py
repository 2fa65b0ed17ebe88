"""JobStore: job records in one SQLite file, so that jobs and results survive a restart."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from imageforge.domain import Job, JobStatus
from imageforge.errors import StorageUnavailable, storage_error

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    idempotency_key TEXT UNIQUE,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expires_at);
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL);
"""


class JobStore:
    """Write-through storage of `Job` records; the columns are what queries filter on, the body is the JSON."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def save(self, job: Job) -> None:
        """Insert or replace the record of `job`; `StorageFull` or `StorageUnavailable` when the write fails."""
        self._write(
            "INSERT INTO jobs (id, kind, status, created_at, expires_at, idempotency_key, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET status = excluded.status, expires_at = excluded.expires_at,"
            " body = excluded.body",
            (
                job.id,
                job.kind,
                job.status.value,
                job.created_at,
                job.expires_at,
                job.idempotency_key,
                json.dumps(job.as_dict()),
            ),
        )

    def probe(self, now: float) -> None:
        """Write one small row, to learn whether the database takes writes again after a failed one."""
        self._write("INSERT OR REPLACE INTO probe (id, at) VALUES (1, ?)", (now,))

    def get(self, job_id: str) -> Job | None:
        return self._one("SELECT body FROM jobs WHERE id = ?", (job_id,))

    def by_idempotency_key(self, key: str) -> Job | None:
        return self._one("SELECT body FROM jobs WHERE idempotency_key = ?", (key,))

    def release_idempotency_key(self, job_id: str) -> None:
        """Free the idempotency key of `job_id` (an expired job) for a new job; the record keeps the rest."""
        with self._lock:
            self._db.execute("UPDATE jobs SET idempotency_key = NULL WHERE id = ?", (job_id,))

    def recent(
        self, statuses: Iterable[JobStatus] = (), *, now: float, limit: int = 100, client: str | None = None
    ) -> list[Job]:
        """The newest jobs not expired by `now` first, optionally only those in `statuses` or of `client`."""
        wanted = [status.value for status in statuses]
        query = "SELECT body FROM jobs WHERE (expires_at IS NULL OR expires_at > ?)"
        parameters: list[Any] = [now]
        if wanted:
            query += f" AND status IN ({', '.join('?' * len(wanted))})"
            parameters += wanted
        if client is not None:
            query += " AND json_extract(body, '$.client') = ?"
            parameters.append(client)
        return self._many(query + " ORDER BY seq DESC LIMIT ?", (*parameters, limit))

    def in_status(self, status: JobStatus) -> list[Job]:
        """Every job in `status`, oldest first (the order they were accepted)."""
        return self._many("SELECT body FROM jobs WHERE status = ? ORDER BY seq", (status.value,))

    def expired(self, now: float) -> list[Job]:
        """Jobs whose result expired by `now` and still hold a payload or result (not yet swept)."""
        return self._many(
            "SELECT body FROM jobs WHERE expires_at IS NOT NULL AND expires_at <= ?"
            " AND (json_extract(body, '$.result') IS NOT NULL OR json_extract(body, '$.payload') != '{}')",
            (now,),
        )

    def results_with(self, key: str, value: str, now: float) -> list[Job]:
        """Jobs whose result is still readable at `now` and has `value` under `key`, at any depth (a result
        that lists several items, each under `key`, is found by any of them)."""
        return self._many(
            "SELECT body FROM jobs WHERE (expires_at IS NULL OR expires_at > ?)"
            " AND EXISTS (SELECT 1 FROM json_tree(body, '$.result') WHERE key = ? AND atom = ?)",
            (now, key, value),
        )

    def payloads_with(self, key: str, value: str, now: float) -> list[Job]:
        """Jobs not expired by `now` (queued, running, or finished with a readable result) whose payload has
        `value` under `key`."""
        return self._many(
            "SELECT body FROM jobs WHERE (expires_at IS NULL OR expires_at > ?)"
            " AND json_extract(body, '$.payload.' || ?) = ?",
            (now, key, value),
        )

    def delete(self, job_ids: Iterable[str]) -> None:
        """Remove the records of `job_ids`; `StorageFull` or `StorageUnavailable` when the write fails."""
        with self._lock:
            try:
                self._db.executemany("DELETE FROM jobs WHERE id = ?", [(job_id,) for job_id in job_ids])
            except sqlite3.OperationalError as exc:
                raise _write_error(exc) from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, statement: str, parameters: tuple[Any, ...]) -> None:
        with self._lock:
            try:
                self._db.execute(statement, parameters)
            except sqlite3.OperationalError as exc:  # full, read-only, an I/O error: the disk's state, not a bug
                raise _write_error(exc) from exc

    def _one(self, query: str, parameters: tuple[Any, ...]) -> Job | None:
        found = self._many(query, parameters)
        return found[0] if found else None

    def _many(self, query: str, parameters: tuple[Any, ...]) -> list[Job]:
        with self._lock:
            rows = self._db.execute(query, parameters).fetchall()
        return [_job(json.loads(body)) for (body,) in rows]


def _write_error(exc: sqlite3.OperationalError) -> StorageUnavailable:
    return storage_error(exc, "The job database", "IMAGEFORGE_DATA_DIR")


def _job(data: dict[str, Any]) -> Job:
    data["status"] = JobStatus(data["status"])
    return Job(**data)
