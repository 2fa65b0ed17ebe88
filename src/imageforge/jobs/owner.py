"""OwnerLock: one process at a time runs the jobs of a job database.

Starting a queue recovers the jobs a stopped process left (a `running` one ends `interrupted`, `queued` ones
run). A second process doing that on a database another process is serving would fail that process's running
job and run its queued jobs twice, so the queue takes an exclusive lock on a file beside the database first.
The operating system drops the lock when the process ends, however it ends.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from imageforge.errors import DataFolderInUse

try:
    import fcntl
except ImportError:  # Windows: no advisory file locks in the standard library
    fcntl = None  # type: ignore[assignment]


class OwnerLock:
    """An exclusive, non-blocking lock on `path`, holding the owner's process id for the error message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    @classmethod
    def of_database(cls, database: Path) -> OwnerLock:
        """The lock that guards the job database at `database` (a file beside it)."""
        return cls(database.with_name(database.name + ".lock"))

    def check_free(self) -> None:
        """Raise `DataFolderInUse` when another process holds the lock; hold nothing afterwards."""
        self.acquire()
        self.release()

    def acquire(self) -> None:
        """Take the lock, or raise `DataFolderInUse` naming the process that holds it."""
        if fcntl is None or self._file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise DataFolderInUse(
                f"Another imageforge process (pid {owner}) is running the jobs in {self.path.parent}.",
                hint="Use that process instead (imageforge generate --server URL, imageforge mcp --remote URL), "
                "or give this one its own IMAGEFORGE_DATA_DIR.",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the lock
            self._file = None
