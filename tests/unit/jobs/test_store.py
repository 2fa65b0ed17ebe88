"""JobStore queries on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

from imageforge.domain import Job, JobStatus
from imageforge.jobs.store import JobStore


def _finished(job_id: str, result: dict[str, str] | None, expires_at: float) -> Job:
    return Job(
        id=job_id,
        kind="k",
        payload={},
        status=JobStatus.SUCCEEDED,
        finished_at=expires_at - 60,
        expires_at=expires_at,
        result=result,
    )


def test_results_with_finds_only_readable_results_holding_the_value(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    try:
        store.save(_finished("readable", {"file": "a.png"}, expires_at=200))
        store.save(_finished("expired", {"file": "a.png"}, expires_at=100))
        store.save(_finished("swept", None, expires_at=50))
        store.save(_finished("other", {"file": "b.png"}, expires_at=200))
        store.save(Job(id="running", kind="k", payload={}, status=JobStatus.RUNNING))

        assert [job.id for job in store.results_with("file", "a.png", now=100)] == ["readable"]
        assert store.results_with("file", "a.png", now=200) == []
        assert store.results_with("missing", "a.png", now=0) == []
    finally:
        store.close()


def test_results_with_finds_a_value_held_by_any_item_of_a_list_in_the_result(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    try:
        listing = Job(
            id="several",
            kind="k",
            payload={},
            status=JobStatus.SUCCEEDED,
            expires_at=200,
            result={"file": "a.png", "items": [{"file": "a.png"}, {"file": "b.png"}]},
        )
        store.save(listing)

        assert [job.id for job in store.results_with("file", "b.png", now=100)] == ["several"]
        assert [job.id for job in store.results_with("file", "a.png", now=100)] == ["several"], "found once"
    finally:
        store.close()


def test_payloads_with_finds_jobs_not_expired_naming_the_value_queued_running_or_readable(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    try:
        store.save(Job(id="queued", kind="k", payload={"init_image": "d1"}))
        store.save(Job(id="running", kind="k", payload={"init_image": "d1"}, status=JobStatus.RUNNING))
        readable = _finished("readable", {"file": "a.png"}, expires_at=200)
        store.save(Job(**{**readable.__dict__, "payload": {"init_image": "d1"}}))
        expired = _finished("expired", {"file": "b.png"}, expires_at=100)
        store.save(Job(**{**expired.__dict__, "payload": {"init_image": "d1"}}))
        store.save(Job(id="other", kind="k", payload={"init_image": "d2", "mask_image": "d1"}))

        assert sorted(job.id for job in store.payloads_with("init_image", "d1", now=150)) == [
            "queued",
            "readable",
            "running",
        ]
        assert [job.id for job in store.payloads_with("mask_image", "d1", now=150)] == ["other"]
    finally:
        store.close()


def test_recent_fills_its_page_with_readable_jobs_past_expired_ones(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    try:
        store.save(_finished("old-1", {"file": "1.png"}, expires_at=200))
        store.save(_finished("old-2", {"file": "2.png"}, expires_at=200))
        store.save(_finished("new-expired-1", {"file": "3.png"}, expires_at=100))
        store.save(_finished("new-expired-2", {"file": "4.png"}, expires_at=100))
        store.save(Job(id="queued", kind="k", payload={}))

        assert [job.id for job in store.recent(now=150, limit=3)] == ["queued", "old-2", "old-1"]
        assert [job.id for job in store.recent([JobStatus.SUCCEEDED], now=150, limit=1)] == ["old-2"]
    finally:
        store.close()
