"""JobStore queries on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

from imageforge.jobs.job import Job, JobStatus
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
