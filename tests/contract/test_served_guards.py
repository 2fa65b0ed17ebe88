"""`imageforge serve` applies the browser-protection, per-client-limit and audit settings from the environment."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.contract.conftest import private_data, serving

pytestmark = pytest.mark.slow

SMALL = {"width": 64, "height": 64, "steps": 1}
STUDIO = "https://studio.example"


def test_serve_takes_hosts_origins_rate_and_audit_settings_from_the_environment(tmp_path: Path, data_dir: Path) -> None:
    data = private_data(tmp_path, data_dir)
    settings = {
        "IMAGEFORGE_ALLOWED_HOSTS": "imageforge.lan",
        "IMAGEFORGE_CORS_ORIGINS": STUDIO,
        "IMAGEFORGE_RATE_LIMIT": "1",
        "IMAGEFORGE_AUDIT_PROMPTS": "1",
        # The job it submits need not run: at stop the server waits a second for it, not the default five.
        "IMAGEFORGE_SHUTDOWN_TIMEOUT_S": "1",
    }
    with serving(tmp_path, data, settings=settings) as server:
        named = httpx.get(f"{server.url}/health", headers={"Host": "imageforge.lan:8765"}, timeout=5.0)
        foreign = httpx.get(f"{server.url}/health", headers={"Host": "evil.example"}, timeout=5.0)
        preflight = httpx.options(
            f"{server.url}/jobs", headers={"Origin": STUDIO, "Access-Control-Request-Method": "POST"}, timeout=5.0
        )
        first = httpx.post(f"{server.url}/jobs", json={"prompt": "a fox", **SMALL}, timeout=5.0)
        second = httpx.post(f"{server.url}/jobs", json={"prompt": "an owl", **SMALL}, timeout=5.0)

    assert "imageforge.lan" in named.json()["allowed_hosts"]
    assert foreign.json()["error"]["code"] == "host_not_allowed"
    assert preflight.headers["access-control-allow-origin"] == STUDIO
    assert first.status_code == 202
    assert second.json()["error"]["code"] == "rate_limited"
    entries = [json.loads(line) for line in (data / "audit.jsonl").read_text().splitlines()]
    assert [(entry["client"], entry["outcome"], entry.get("prompt")) for entry in entries] == [
        ("127.0.0.1", "host_not_allowed", None),
        ("127.0.0.1", "ok", "a fox"),
        ("127.0.0.1", "rate_limited", "an owl"),
    ]
