"""The server's log on stderr: plain text for a person at a terminal, or one JSON object a line for a log system
(`IMAGEFORGE_LOG_FORMAT`), and in both the job and the client that each line is about.

Whoever runs a job or handles a request says so once (`job_context`, `client_context`); every line logged inside,
in any module, then carries the job id and the client name, read from context variables, which follow a request
through its asyncio task and a job through the worker thread that runs it. No line carries a secret: signatures,
keys and tokens in URLs and credentials after `Bearer` or `Basic` are replaced by `REDACTED` wherever they appear.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any, Literal

#: `text`: one readable line per record; `json`: one JSON object per record; `auto`: text on a terminal, else JSON.
LogFormat = Literal["text", "json", "auto"]
#: The text line: time, level, logger, message, then `[job_id=… client=…]` while a job or request is under way.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_job_id: ContextVar[str | None] = ContextVar("imageforge_job_id", default=None)
_client: ContextVar[str | None] = ContextVar("imageforge_client", default=None)

#: A query parameter whose value opens something: a link's signature, or a key someone put in a URL.
_SECRET_PARAMETER = re.compile(r"([?&](?:sig|key|api_key|access_token|token)=)[^&\s\"]*", re.IGNORECASE)
#: A credential as an Authorization header carries it.
_CREDENTIAL = re.compile(r"\b((?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


@contextmanager
def job_context(job_id: str, client: str | None) -> Iterator[None]:
    """Within this block, every log line names the job `job_id` of `client`."""
    job_token, client_token = _job_id.set(job_id), _client.set(client)
    try:
        yield
    finally:
        _job_id.reset(job_token)
        _client.reset(client_token)


@contextmanager
def client_context(client: str) -> Iterator[None]:
    """Within this block (a request's handling), every log line names `client`."""
    token = _client.set(client)
    try:
        yield
    finally:
        _client.reset(token)


def current_job_id() -> str | None:
    """The job under way in this context, if any (for tracing spans)."""
    return _job_id.get()


def redact(text: str) -> str:
    """`text` with signatures, keys and tokens in URLs and credentials after Bearer or Basic replaced by
    `REDACTED`."""
    return _CREDENTIAL.sub(r"\1REDACTED", _SECRET_PARAMETER.sub(r"\1REDACTED", text))


class RedactSecrets(logging.Filter):
    """A handler filter for formatters other than imageforge's (uvicorn's text lines), which redact each argument
    of a record, or its message when it has none: a live signed link or a key in a log file would open what it
    opens for anyone who reads the log. imageforge's formatters redact the whole line they write."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif not record.args:
            # Only a message without arguments: in a template, a replaced `%s` would no longer take its argument.
            record.msg = redact(str(record.msg))
        return True


class TextLines(logging.Formatter):
    """`TEXT_FORMAT`, with `[job_id=… client=…]` appended while a job or a request is under way."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, **_: Any) -> None:
        # uvicorn's dictConfig passes its own keyword arguments (use_colors) to whatever formatter it is given.
        super().__init__(fmt or TEXT_FORMAT, datefmt)

    def format(self, record: logging.LogRecord) -> str:
        line = redact(super().format(record))
        where = " ".join(f"{name}={value}" for name, value in _context().items())
        return f"{line} [{where}]" if where else line


class JsonLines(logging.Formatter):
    """One JSON object per record: `ts` (UTC, ISO 8601), `level`, `logger`, `message`, then `job_id` and
    `client` while a job or request is under way, and `exception` (the traceback) when one is logged."""

    def __init__(self, *_: Any, **__: Any) -> None:
        super().__init__()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            **_context(),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter_class(log_format: LogFormat, stream: IO[str] | None = None) -> type[logging.Formatter]:
    """The formatter for `log_format` on `stream` (stderr by default): `auto` is text on a terminal, JSON elsewhere."""
    if log_format == "auto":
        stream = stream or sys.stderr
        log_format = "text" if stream.isatty() else "json"
    return JsonLines if log_format == "json" else TextLines


def log_to_stderr(log_format: LogFormat = "text") -> None:
    """Send every log record, and Python's warnings, to stderr in `log_format`: imageforge's from INFO, the
    libraries' from WARNING.

    Does nothing to a root logger that has a handler already (a test's, or an earlier call's), as
    `logging.basicConfig`; configuring it first also keeps libraries that call `basicConfig` themselves (the MCP
    SDK) on this format.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter_class(log_format)())
        handler.addFilter(RedactSecrets())
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
        logging.captureWarnings(True)
    logging.getLogger("imageforge").setLevel(logging.INFO)


def _context() -> dict[str, str]:
    values = {"job_id": _job_id.get(), "client": _client.get()}
    return {name: value for name, value in values.items() if value is not None}
