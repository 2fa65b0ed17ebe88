"""The policy through HTTP on the real tiny model (a CLIP text encoder with the 77-token window)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.transports.http.app import create_app
from tests.loopback import LOCAL_URL

SMALL = {"width": 64, "height": 64, "steps": 1}


def _generate(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/generate", json={"prompt": "a fox", "seed": 1, "return_mode": "path", **SMALL, **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_get_policy_shows_the_active_policy(client: TestClient) -> None:
    policy = client.get("/policy").json()

    assert policy["source"] == "built-in defaults"
    assert policy["negative_prompt"]
    assert policy["directive"]
    assert len(policy["version"]) == 12


def test_at_guidance_zero_the_negative_prompt_is_reported_as_not_applied(client: TestClient) -> None:
    result = _generate(client, negative_prompt="cats", guidance=0.0)

    negative = result["policy_applied"]["negative_prompt"]
    assert negative["applied"] is False
    assert "guidance 0" in negative["reason"]
    assert result["policy_applied"]["model_negative_prompt"] == ""
    assert result["negative_prompt"] == "cats", "the response still shows what the caller asked for"


def test_above_guidance_one_the_baseline_comes_before_the_callers_negative(client: TestClient) -> None:
    policy = client.get("/policy").json()

    result = _generate(client, negative_prompt="cats", guidance=2.0)

    assert result["policy_applied"]["negative_prompt"]["applied"] is True
    assert result["policy_applied"]["model_negative_prompt"] == f"{policy['negative_prompt']}, cats"
    assert result["policy_applied"]["version"] == policy["version"]


def test_a_long_prompt_keeps_all_its_words_inside_the_clip_window(client: TestClient) -> None:
    short = _generate(client, prompt="a fox")
    # Just inside 77 tokens with the tiny tokenizer; the directive would push the end out of the window.
    long_prompt = "a fox " * 12
    long = _generate(client, prompt=long_prompt.strip())

    assert short["policy_applied"]["directive"] == {"applied": True}
    assert short["policy_applied"]["model_prompt"].startswith("a fox, ")
    applied = long["policy_applied"]
    assert applied["prompt_tokens"] <= applied["token_window"] == 77
    assert applied["directive"]["applied"] is False
    assert "77 tokens" in applied["directive"]["reason"]
    assert applied["model_prompt"] == long_prompt.strip()


def test_changing_the_policy_changes_the_cache_key(settings: Settings) -> None:
    with TestClient(create_app(build_service(settings)), base_url=LOCAL_URL) as client:
        first = _generate(client)
        repeat = _generate(client)
    (settings.root_dir / "policy.toml").write_text('[policy]\ndirective = ""\n')
    with TestClient(create_app(build_service(settings)), base_url=LOCAL_URL) as client:
        assert client.get("/policy").json()["directive"] == ""
        after_change = _generate(client)

    assert (first["cached"], repeat["cached"]) == (False, True)
    assert after_change["cached"] is False
    assert after_change["policy_applied"]["directive"]["applied"] is False
    assert after_change["policy_applied"]["version"] != first["policy_applied"]["version"]
