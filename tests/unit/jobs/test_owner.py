"""OwnerLock: the lock on a job database, and the record of who holds it that other processes read."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageforge.errors import DataFolderInUse
from imageforge.jobs.owner import Owner, OwnerLock

SERVER = Owner("imageforge serve", url="https://127.0.0.1:8765", ca_cert="/data/tls/cert.pem")


@pytest.fixture
def held(tmp_path: Path) -> Iterator[OwnerLock]:
    """The lock of `tmp_path/jobs.sqlite`, held for a server (a second OwnerLock on the same file stands for
    another process: flock locks belong to an open file, not to a process)."""
    lock = OwnerLock.of_database(tmp_path / "jobs.sqlite", SERVER)
    lock.acquire()
    yield lock
    lock.release()


def test_the_holder_of_a_data_folder_is_read_with_its_url_certificate_and_pid(held: OwnerLock, tmp_path: Path) -> None:
    holder = OwnerLock.of_database(tmp_path / "jobs.sqlite").holder()

    assert holder == Owner(SERVER.role, url=SERVER.url, ca_cert=SERVER.ca_cert, pid=os.getpid())


def test_the_owner_record_is_readable_by_this_user_only(held: OwnerLock) -> None:
    mode = stat.S_IMODE(held.record_path.stat().st_mode)

    assert mode & 0o077 == 0, oct(mode)
    assert json.loads(held.record_path.read_text())["url"] == "https://127.0.0.1:8765"
    assert [path.name for path in held.record_path.parent.iterdir() if path.name.startswith(".")] == [], (
        "the temporary file of the atomic write is gone"
    )


def test_a_released_lock_has_no_holder_and_leaves_no_record(tmp_path: Path) -> None:
    lock = OwnerLock.of_database(tmp_path / "jobs.sqlite", SERVER)
    lock.acquire()
    lock.release()

    assert OwnerLock.of_database(tmp_path / "jobs.sqlite").holder() is None
    assert not lock.record_path.exists()


def test_a_record_left_by_a_killed_owner_is_not_believed(tmp_path: Path) -> None:
    lock = OwnerLock.of_database(tmp_path / "jobs.sqlite")
    lock.path.write_text("999999")
    stale = {"role": "imageforge serve", "url": "http://127.0.0.1:1", "ca_cert": None, "pid": 999999}
    lock.record_path.write_text(json.dumps(stale))

    assert lock.holder() is None, "nobody holds the lock: the record is a dead process's"
    lock.acquire()
    try:
        holder = OwnerLock.of_database(tmp_path / "jobs.sqlite").holder()
    finally:
        lock.release()
    assert holder == Owner("imageforge", url=None, pid=os.getpid()), "the new owner replaced the record"


def test_a_record_that_is_not_the_holders_gives_no_url(held: OwnerLock, tmp_path: Path) -> None:
    # Written by an earlier owner, read in the moment before the new one replaced it.
    other = {"role": "imageforge serve", "url": "http://127.0.0.1:1", "ca_cert": None, "pid": os.getpid() + 1}
    held.record_path.write_text(json.dumps(other))

    holder = OwnerLock.of_database(tmp_path / "jobs.sqlite").holder()

    assert holder == Owner(pid=os.getpid())


def test_a_process_refused_by_a_server_is_told_its_url(held: OwnerLock, tmp_path: Path) -> None:
    with pytest.raises(DataFolderInUse) as refused:
        OwnerLock.of_database(tmp_path / "jobs.sqlite").acquire()

    assert f"(imageforge serve, pid {os.getpid()})" in refused.value.message
    assert "https://127.0.0.1:8765" in refused.value.hint


def test_a_process_refused_by_an_agents_mcp_server_is_told_to_stop_it_or_run_a_server(tmp_path: Path) -> None:
    agent = OwnerLock.of_database(tmp_path / "jobs.sqlite", Owner("imageforge mcp over stdio"))
    agent.acquire()
    try:
        with pytest.raises(DataFolderInUse) as refused:
            OwnerLock.of_database(tmp_path / "jobs.sqlite").acquire()
    finally:
        agent.release()

    assert "imageforge mcp over stdio" in refused.value.message
    assert "Stop it first" in refused.value.hint
    assert "imageforge serve" in refused.value.hint
