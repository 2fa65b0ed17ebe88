"""AuditLog: who did what, when, and how it ended, one JSON object a line.

Both network transports write to it (the HTTP API per request, the MCP tools per call), from the event loop and
from worker threads alike, so each line is written whole under a lock. The file is opened per line: an
external log rotation needs no signal.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from imageforge.errors import write_problem

log = logging.getLogger(__name__)


class AuditLog:
    """Appends audit records to `path` (None: records nothing). Prompts are left out unless `prompts`."""

    def __init__(self, path: Path | None = None, *, prompts: bool = False) -> None:
        self.path = path
        self.prompts = prompts
        self._lock = threading.Lock()

    def record(self, *, client: str, action: str, outcome: str, **details: Any) -> None:
        """One line: `ts`, `client` (key name or address), `action`, `outcome` ("ok" or an error code), and
        `details` such as `status` and `job_id`; a `prompt` only where prompts are audited."""
        if self.path is None:
            return
        if not self.prompts:
            details.pop("prompt", None)
        entry = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "client": client,
            "action": action,
            "outcome": outcome,
            **{key: value for key, value in details.items() if value is not None},
        }
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as file:
                    file.write(line)
            except OSError as exc:
                # A full or read-only disk must not turn the answer it records into an error: the record goes to
                # the server's log instead.
                log.error("audit log %s; the record: %s", write_problem(exc), line.rstrip())
