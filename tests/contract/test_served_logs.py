"""What a running server writes to its log: requests and events, never a prompt or a live signed link."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.contract.conftest import private_data, serving

KEY = "logs-test-key-0123456789"


def test_the_log_holds_neither_prompts_nor_image_link_signatures(tmp_path: Path, data_dir: Path) -> None:
    # Past the text encoder's 77 tokens, so that the library reports the part it cut off.
    prompt = "a lighthouse on a cliff " * 30 + "zanzibarquokka"
    headers = {"Authorization": f"Bearer {KEY}"}
    with serving(
        tmp_path, private_data(tmp_path, data_dir), settings={"IMAGEFORGE_API_KEYS": f"alice:{KEY}"}
    ) as server:
        job = httpx.post(
            f"{server.url}/jobs", json={"prompt": prompt, "width": 64, "height": 64}, headers=headers, timeout=30
        ).json()
        done = httpx.get(f"{server.url}/jobs/{job['job_id']}", headers=headers, timeout=30).json()
        while done["status"] in ("queued", "running"):
            events = httpx.get(done["links"]["events"], headers=headers, timeout=120)
            assert events.status_code == 200
            done = httpx.get(done["links"]["self"], headers=headers, timeout=30).json()
        assert done["status"] == "succeeded", done
        link = done["links"]["image"]
        assert httpx.get(link, timeout=30).status_code == 200
        signature = parse_qs(urlsplit(link).query)["sig"][0]
    log = "".join(server.logs())

    assert "zanzibarquokka" not in log
    assert "lighthouse" not in log
    assert signature not in log
    assert "sig=REDACTED" in log  # the request itself is still logged


def test_with_json_logs_every_line_parses_and_the_jobs_lines_carry_its_id_and_client(
    tmp_path: Path, data_dir: Path
) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    settings = {"IMAGEFORGE_API_KEYS": f"alice:{KEY}", "IMAGEFORGE_LOG_FORMAT": "json"}
    with serving(tmp_path, private_data(tmp_path, data_dir), settings=settings) as server:
        job = httpx.post(
            f"{server.url}/jobs",
            json={"prompt": "a zanzibarquokka", "width": 64, "height": 64, "steps": 1},
            headers=headers,
            timeout=30,
        ).json()
        done = httpx.get(f"{server.url}/jobs/{job['job_id']}", headers=headers, timeout=30).json()
        while done["status"] in ("queued", "running"):
            assert httpx.get(done["links"]["events"], headers=headers, timeout=120).status_code == 200
            done = httpx.get(done["links"]["self"], headers=headers, timeout=30).json()
        assert done["status"] == "succeeded", done
    stderr = server.logs()[1]
    # The command's own words before the server starts (the address it serves) are for the person who started it.
    lines = [json.loads(line) for line in stderr.splitlines() if not line.startswith("imageforge on ")]

    assert {"ts", "level", "logger", "message"} <= lines[0].keys()
    of_job = [line for line in lines if line.get("job_id") == job["job_id"]]
    messages = [line["message"] for line in of_job]
    assert messages[0].startswith("job submitted: text2img tiny, 64x64, 1 steps")
    assert messages[1].startswith("job started")
    assert "loaded tiny" in " ".join(messages), "what happens within the job (its model's load) names it too"
    assert messages[-1].startswith("job succeeded")
    assert {line["client"] for line in of_job} == {"alice"}
    access = [line for line in lines if line["logger"] == "uvicorn.access" and "POST /jobs" in line["message"]]
    assert [line["client"] for line in access] == ["alice"]
    assert "zanzibarquokka" not in stderr
    assert KEY not in stderr
