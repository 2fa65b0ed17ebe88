"""PeakLog: the peak memory each generation took, in one SQLite file beside the job database, so that memory
estimates learn from this machine's runs and keep what they learnt across restarts."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: Runs kept per model, task and device: enough for a fit over many sizes, few enough to follow a new version.
KEPT = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS peaks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    task TEXT NOT NULL,
    device TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    count INTEGER NOT NULL,
    peak_gb REAL NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS peaks_key ON peaks (model, task, device, seq);
"""


@dataclass(frozen=True)
class Peak:
    """One generation's peak memory beyond the loaded weights, in GB, at `width` x `height`; `count` is how many
    images its job made, one after the other (each is measured on its own)."""

    width: int
    height: int
    count: int
    peak_gb: float

    @property
    def pixels(self) -> int:
        return self.width * self.height


class PeakLog:
    """Recorded peaks by (model, task, device), the newest `KEPT` of each."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def record(self, model: str, task: str, device: str, peak: Peak) -> None:
        """Keep `peak`; a write that fails is logged and dropped: a lost measurement costs only precision."""
        key = (model, task, device)
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO peaks (model, task, device, width, height, count, peak_gb, at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (*key, peak.width, peak.height, peak.count, peak.peak_gb, time.time()),
                )
                self._db.execute(
                    "DELETE FROM peaks WHERE model = ? AND task = ? AND device = ? AND seq NOT IN"
                    " (SELECT seq FROM peaks WHERE model = ? AND task = ? AND device = ? ORDER BY seq DESC LIMIT ?)",
                    (*key, *key, KEPT),
                )
        except sqlite3.Error as exc:
            log.warning("the peak memory of a %s run was not recorded: %s", model, exc)

    def peaks(self, model: str, task: str, device: str) -> list[Peak]:
        """The recorded peaks of `model` running `task` on `device`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT width, height, count, peak_gb FROM peaks WHERE model = ? AND task = ? AND device = ?"
                " ORDER BY seq",
                (model, task, device),
            ).fetchall()
        return [Peak(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
