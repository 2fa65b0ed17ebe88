"""`imageforge serve` keeps its access rules for the life of the process: removing the last key of a network server
locks it rather than opening it, and forwarded headers count only from the proxies the admin names."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.contract.conftest import IMAGEFORGE, private_data, serving, user_environment

pytestmark = pytest.mark.slow

SMALL = {"width": 64, "height": 64, "steps": 1}
FORGED = "203.0.113.9"
#: The jobs these tests submit need not run: at stop the server waits a second for them, not the default five
#: (the first job is still loading the model then).
QUICK_STOP = {"IMAGEFORGE_SHUTDOWN_TIMEOUT_S": "1"}


def _audited_clients(data: Path) -> list[tuple[str, str]]:
    entries = [json.loads(line) for line in (data / "audit.jsonl").read_text().splitlines()]
    return [(entry["client"], entry["outcome"]) for entry in entries]


def test_keys_remove_of_the_last_key_locks_a_network_server(tmp_path: Path, data_dir: Path) -> None:
    data = private_data(tmp_path, data_dir)
    env = user_environment(data)
    key = subprocess.run(
        [str(IMAGEFORGE), "keys", "add", "only"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    # The test reaches the server at the bound address itself, so that name is allowed too.
    with serving(tmp_path, data, "--host", "0.0.0.0", settings={"IMAGEFORGE_ALLOWED_HOSTS": "0.0.0.0"}) as server:
        before = httpx.get(f"{server.url}/jobs", headers={"Authorization": f"Bearer {key}"}, timeout=5.0)
        subprocess.run([str(IMAGEFORGE), "keys", "remove", "only"], env=env, capture_output=True, check=True)
        listed = httpx.get(f"{server.url}/jobs", timeout=5.0)
        submitted = httpx.post(f"{server.url}/jobs", json={"prompt": "a fox", **SMALL}, timeout=5.0)
        health = httpx.get(f"{server.url}/health", timeout=5.0).json()

    assert before.status_code == 200
    for refused in (listed, submitted):
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "no_api_keys"
    assert health["auth"] == "no_api_keys"
    assert "no_api_keys" in server.logs()[1]
    assert [outcome for _, outcome in _audited_clients(data)] == ["no_api_keys", "no_api_keys"]


def test_a_forged_x_forwarded_for_neither_dodges_the_rate_limit_nor_reaches_the_audit_log(
    tmp_path: Path, data_dir: Path
) -> None:
    data = private_data(tmp_path, data_dir)
    with serving(tmp_path, data, settings={"IMAGEFORGE_RATE_LIMIT": "1", **QUICK_STOP}) as server:
        first = httpx.post(f"{server.url}/jobs", json={"prompt": "a fox", **SMALL}, timeout=5.0)
        forged = httpx.post(
            f"{server.url}/jobs",
            json={"prompt": "an owl", **SMALL},
            headers={"X-Forwarded-For": FORGED},
            timeout=5.0,
        )

    assert first.status_code == 202
    assert forged.json()["error"]["code"] == "rate_limited"
    assert _audited_clients(data) == [("127.0.0.1", "ok"), ("127.0.0.1", "rate_limited")]


def test_a_named_proxys_x_forwarded_for_names_the_client(tmp_path: Path, data_dir: Path) -> None:
    data = private_data(tmp_path, data_dir)
    settings = {"IMAGEFORGE_RATE_LIMIT": "1", "IMAGEFORGE_TRUSTED_PROXIES": "127.0.0.1", **QUICK_STOP}
    with serving(tmp_path, data, settings=settings) as server:
        answers = [
            httpx.post(
                f"{server.url}/jobs",
                json={"prompt": f"fox {client}", **SMALL},
                headers={"X-Forwarded-For": client},
                timeout=5.0,
            )
            for client in (FORGED, "203.0.113.10")
        ]

    assert [answer.status_code for answer in answers] == [202, 202], "two clients behind the proxy, one job each"
    assert _audited_clients(data) == [(FORGED, "ok"), ("203.0.113.10", "ok")]
