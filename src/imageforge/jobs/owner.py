"""OwnerLock: one process at a time runs the jobs of a job database, and says how to reach it.

Starting a queue recovers the jobs a stopped process left (a `running` one ends `interrupted`, `queued` ones
run). A second process doing that on a database another process is serving would fail that process's running
job and run its queued jobs twice, so the queue takes an exclusive lock on a file beside the database first.
The operating system drops the lock when the process ends, however it ends.

The owner also leaves a record beside the lock (`Owner`): its process id, what it is, and, for a server, the URL
it takes requests at, so that a process turned away can use the owner instead: `imageforge mcp` started beside
`imageforge serve` relays to it. The record is replaced in one rename, so a reader never sees half of it, and
only this user may read it. It counts only while its owner holds the lock: a process that was killed leaves
its record behind, and the next owner replaces it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from imageforge.errors import DataFolderInUse

try:
    import fcntl
except ImportError:  # Windows: no advisory file locks in the standard library
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Owner:
    """Who runs a job database's jobs, as the lock records it for the processes it turns away."""

    #: what the process is, in words a user recognises ("imageforge serve", "imageforge mcp over stdio")
    role: str = "imageforge"
    #: where it takes requests from other processes of this machine; None when it takes none
    url: str | None = None
    #: the certificate (a PEM file) its https `url` presents, so that a local client can verify a self-signed one
    ca_cert: str | None = None
    #: its process id; None when the lock names none that matches the record
    pid: int | None = field(default_factory=os.getpid)


class OwnerLock:
    """An exclusive, non-blocking lock on `path`, with the `owner`'s record beside it while it is held."""

    def __init__(self, path: Path, owner: Owner | None = None) -> None:
        self.path = path
        self.owner = owner or Owner()
        #: the owner's record: `jobs.sqlite.owner.json` beside `jobs.sqlite.lock`
        self.record_path = path.with_suffix(".owner.json")
        self._file: IO[str] | None = None

    @classmethod
    def of_database(cls, database: Path, owner: Owner | None = None) -> OwnerLock:
        """The lock that guards the job database at `database` (a file beside it)."""
        return cls(database.with_name(database.name + ".lock"), owner)

    def check_free(self) -> None:
        """Raise `DataFolderInUse` when another process holds the lock; hold nothing afterwards."""
        self.acquire()
        self.release()

    def holder(self) -> Owner | None:
        """The process holding the lock now, as its record describes it; None when none does (and on Windows)."""
        if fcntl is None:
            return None
        try:
            handle = self.path.open(encoding="utf-8")
        except FileNotFoundError:
            return None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return self._recorded_owner(handle.read())
            return None  # closing the file drops the shared lock just taken

    def acquire(self) -> None:
        """Take the lock and write the owner's record, or raise `DataFolderInUse` naming the process that holds it."""
        if fcntl is None or self._file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = self._recorded_owner(handle.read())
            handle.close()
            raise in_use(holder, self.path.parent) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        self._write_record()

    def release(self) -> None:
        if self._file is not None:
            self.record_path.unlink(missing_ok=True)
            self._file.close()  # closing the descriptor drops the lock
            self._file = None

    def _write_record(self) -> None:
        """Replace the record in one rename, from a file created readable and writable by this user only."""
        record = asdict(Owner(self.owner.role, self.owner.url, self.owner.ca_cert, os.getpid()))
        temporary = self.record_path.with_name(f".{self.record_path.name}.{os.getpid()}")
        try:
            temporary.unlink(missing_ok=True)
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump(record, file)
            temporary.replace(self.record_path)
        except OSError as exc:
            # The jobs run all the same; only other processes cannot tell where this one listens.
            log.warning("Could not record this process as the owner of %s: %s", self.path.parent, exc)

    def _recorded_owner(self, locked_pid: str) -> Owner:
        """The holder as its record says, when the record is the holder's (its pid is the one in the lock file)."""
        pid = int(locked_pid) if locked_pid.strip().isdigit() else None
        try:
            record = json.loads(self.record_path.read_text(encoding="utf-8"))
            owner = Owner(
                role=str(record["role"]),
                url=record.get("url"),
                ca_cert=record.get("ca_cert"),
                pid=int(record["pid"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return Owner(pid=pid)
        return owner if owner.pid == pid else Owner(pid=pid)


def in_use(holder: Owner, folder: Path) -> DataFolderInUse:
    """The refusal of a process that found `holder` running the jobs in `folder`, saying what to do instead."""
    pid = "unknown" if holder.pid is None else holder.pid
    message = f"Another imageforge process ({holder.role}, pid {pid}) is running the jobs in {folder}."
    if holder.url is not None:
        hint = (
            f"Use that server at {holder.url} (imageforge generate --server URL; imageforge mcp relays to it by "
            "itself), or give this process its own IMAGEFORGE_DATA_DIR."
        )
    else:
        hint = (
            "Stop it first, or give this process its own IMAGEFORGE_DATA_DIR. To share one queue between agents, "
            "the web UI and the command line, run `imageforge serve`: `imageforge mcp` and `imageforge generate` "
            "started beside it use it."
        )
    return DataFolderInUse(message, hint=hint)
