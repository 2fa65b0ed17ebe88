"""A property-based fuzz run of the HTTP API from its own OpenAPI schema: no request makes a server error.

Schemathesis's own runner (`st run`, its documented interface) sends schema-valid and schema-violating requests
for every operation to a real uvicorn server on loopback, on the offline `tiny` model, and checks every answer
against the schema. Generation is deterministic, so every run sends the same cases; the number of cases is
printed in pytest's terminal summary (see conftest.py). The CLI rather than Schemathesis's pytest plugin: the
plugin needs the schema at import time, before any server runs, and its fixture-based loader relies on a pytest
internal (`Function._nodeid`) that pytest 9.2 no longer has.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.transports.http.app import create_app
from tests.conftest import FUZZ_SUMMARY
from tests.loopback import serving_app

#: About two minutes on an idle 2-core machine; a loaded one took nearly four, so the limits leave room.
RUN_TIMEOUT_S = 540
pytestmark = [pytest.mark.slow, pytest.mark.timeout(RUN_TIMEOUT_S + 60)]

#: The Schemathesis CLI installed beside the interpreter running the tests (the `dev` extra).
ST = Path(sys.executable).parent / "st"
#: Cases per operation, phases and checks.
CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_fuzzed_requests_get_no_server_error(
    settings: Settings, tmp_path: Path, record_property: Callable[[str, object], None], caplog: pytest.LogCaptureFixture
) -> None:
    # Small limits keep every accepted generation cheap: tiny at up to 128 px and 4 steps.
    service = build_service(settings.model_copy(update={"max_res": 128, "max_steps": 4}))
    report = tmp_path / "report.json"
    with serving_app(create_app(service)) as url:
        run = subprocess.run(
            [str(ST), "--config-file", str(CONFIG), "--no-color", "run", f"{url}/openapi.json",
             "--report", "json", "--report-json-path", str(report)],
            cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False,
        )  # fmt: skip
        after = httpx.get(f"{url}/health", timeout=10)

    assert report.exists(), f"st run wrote no report (exit {run.returncode}):\n{run.stdout[-4000:]}\n{run.stderr}"
    summary = json.loads(report.read_text())
    cases = summary["test_cases"]
    record_property(
        FUZZ_SUMMARY,
        f"schemathesis: {cases['generated']} cases on {summary['operations']['tested']} operations, "
        f"{cases['with_failures']} failing, {cases['errored']} errored",
    )
    assert run.returncode == 0, run.stdout[-8000:]
    assert summary["operations"]["tested"] == summary["operations"]["total"], "some operations were not fuzzed"
    assert cases["with_failures"] == cases["errored"] == 0
    # No request reached the catch-all error handler, and the server that answered every case is still serving.
    assert not [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert after.status_code == 200
    assert after.json()["status"] == "ok"
