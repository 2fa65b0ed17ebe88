"""The server's log lines: JSON or text, each line of a job's life naming the job and its client, and no secret or
prompt in any of them unless prompts are audited."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.domain import Caller, GenerationParams, JobStatus, Task
from imageforge.logs import JsonLines, RedactSecrets, TextLines, formatter_class, job_context
from imageforge.storage.audit import AuditLog

PROMPT = "a zanzibarquokka on a windowsill"
WAIT_S = 120.0


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """imageforge's log records as the server writes them in JSON, into a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonLines())
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger("imageforge")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _run_job(settings: Settings, client: str, *, audited_prompts: bool = False) -> str:
    """Run a job as the served app builds its service: with the audit log of `settings`."""
    audit = AuditLog(settings.audit_path, prompts=audited_prompts)
    service = build_service(settings, audit=audit)
    service.start()
    try:
        params = GenerationParams(task=Task.TEXT2IMG, prompt=PROMPT, width=64, height=64, steps=1)
        job = service.submit(params, caller=Caller(client, isolated=True))
        done = service.wait_job(job.id, timeout=WAIT_S)
    finally:
        service.close()
    assert done.status is JobStatus.SUCCEEDED, done.error
    return job.id


def _lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_jobs_json_log_lines_parse_and_carry_its_id_and_client_without_its_prompt(
    settings: Settings, json_log: io.StringIO
) -> None:
    job_id = _run_job(settings, "alice")

    lines = _lines(json_log)
    of_job = [line for line in lines if line.get("job_id") == job_id]
    messages = [line["message"] for line in of_job]
    assert any(message.startswith("job submitted: text2img tiny, 64x64, 1 steps") for message in messages)
    assert any(message.startswith("job started") for message in messages)
    assert any(message.startswith("job succeeded") for message in messages)
    assert {line["client"] for line in of_job} == {"alice"}
    assert all({"ts", "level", "logger", "message"} <= line.keys() for line in lines)
    assert "zanzibarquokka" not in json_log.getvalue()


def test_the_prompt_is_logged_only_where_prompts_are_audited(settings: Settings, json_log: io.StringIO) -> None:
    job_id = _run_job(settings, "alice", audited_prompts=True)

    submitted = [line for line in _lines(json_log) if line.get("job_id") == job_id and "submitted" in line["message"]]
    assert len(submitted) == 1
    assert PROMPT in submitted[0]["message"]


def test_text_lines_name_the_job_and_client_they_are_about() -> None:
    record = logging.LogRecord("imageforge.jobs", logging.INFO, __file__, 1, "job started", None, None)
    with job_context("abc123", "alice"):
        inside = TextLines().format(record)
    outside = TextLines().format(record)

    assert inside.endswith("imageforge.jobs: job started [job_id=abc123 client=alice]")
    assert outside.endswith("imageforge.jobs: job started")


def test_no_line_shows_a_signature_a_key_or_a_bearer_credential() -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonLines())
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger("tests.logs.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning('"GET /images/a.png?exp=99&sig=%s HTTP/1.1" 200', "f00dfeedcafe")
        logger.warning("retrying with Authorization: Bearer %s", "s3cret-api-key-0123456789")
        logger.warning("opened /v1/images?api_key=another-secret-key&x=1")
    finally:
        logger.removeHandler(handler)

    text = buffer.getvalue()
    assert "f00dfeedcafe" not in text
    assert "s3cret-api-key" not in text
    assert "another-secret-key" not in text
    assert [json.loads(line)["message"] for line in text.splitlines()] == [
        '"GET /images/a.png?exp=99&sig=REDACTED HTTP/1.1" 200',
        "retrying with Authorization: Bearer REDACTED",
        "opened /v1/images?api_key=REDACTED&x=1",
    ]


def test_auto_writes_text_to_a_terminal_and_json_elsewhere() -> None:
    assert formatter_class("auto", _Terminal()) is TextLines
    assert formatter_class("auto", io.StringIO()) is JsonLines
    assert formatter_class("text", io.StringIO()) is TextLines
    assert formatter_class("json", _Terminal()) is JsonLines


def test_log_format_is_read_from_imageforge_log_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEFORGE_LOG_FORMAT", "json")

    assert Settings(_env_file=None).log_format == "json"
    assert Settings(_env_file=None, log_format="auto").log_format == "auto"
    with pytest.raises(ValueError, match="log_format"):
        Settings(_env_file=None, log_format="xml")
