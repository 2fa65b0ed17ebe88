"""The policy through HTTP on the real tiny model (a CLIP text encoder with the 77-token window)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.transports.http.app import create_app
from tests.loopback import LOCAL_URL

SMALL = {"width": 64, "height": 64, "steps": 1}
#: The original design's policy cluster, as it lists it.
ENGINEERING_TERMS = (
    "engineering concept sketch, industrial design ideation, product enclosure, mechanical housing, UX wireframe, "
    "UI mockup, screen mockup, interaction flow, PCB layout, circuit board, hardware schematic, exploded view, "
    "assembly diagram, product design render, CAD rendering"
)


def _generate(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/generate", json={"prompt": "a fox", "seed": 1, "return_mode": "path", **SMALL, **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_get_policy_shows_the_active_policy(client: TestClient) -> None:
    policy = client.get("/policy").json()

    assert policy["source"] == "built-in defaults"
    assert policy["profile"] == "none"
    assert "gibberish text" in policy["negative_prompt"]
    assert "exactly as written" in policy["directive"]
    assert policy["no_text_directive"].startswith("no text")
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

    applied = result["policy_applied"]
    assert applied["negative_prompt"]["applied"] is True
    # The tiny tokenizer spends a token per letter: the baseline's last terms give way to the caller's words.
    kept = applied["model_negative_prompt"].removesuffix(", cats")
    assert applied["model_negative_prompt"].endswith(", cats")
    assert ", ".join([kept, *applied["negative_prompt"]["left_out"]]) == policy["negative_prompt"]
    assert "77 tokens" in applied["negative_prompt"]["reason"]
    assert applied["version"] == policy["version"]


def test_a_long_prompt_keeps_all_its_words_inside_the_clip_window(client: TestClient) -> None:
    short = _generate(client, prompt="a fox")
    # Just inside 77 tokens with the tiny tokenizer; the directive would push the end out of the window.
    long_prompt = "a fox " * 12
    long = _generate(client, prompt=long_prompt.strip())

    assert short["policy_applied"]["directive"]["applied"] is True
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
    (settings.root_dir / "policy.toml").write_text('[policy]\nno_text_directive = ""\n')
    with TestClient(create_app(build_service(settings)), base_url=LOCAL_URL) as client:
        assert client.get("/policy").json()["no_text_directive"] == ""
        after_change = _generate(client)

    assert (first["cached"], repeat["cached"]) == (False, True)
    assert after_change["cached"] is False
    assert after_change["policy_applied"]["directive"]["applied"] is False
    assert after_change["policy_applied"]["version"] != first["policy_applied"]["version"]


def test_a_quoted_prompt_gets_the_exact_text_directive_and_a_plain_one_the_no_text_directive(
    client: TestClient,
) -> None:
    policy = client.get("/policy").json()

    plain = _generate(client, prompt="a fox")["policy_applied"]
    quoted = _generate(client, prompt='a sign "OPEN"')["policy_applied"]

    assert plain["directive"]["which"] == "no_text_directive"
    assert plain["model_prompt"] == f"a fox, {policy['no_text_directive']}"
    assert quoted["directive"]["which"] == "directive"
    assert quoted["directive"]["because"] == 'the prompt quotes "OPEN"'
    # The tiny tokenizer spends a token per letter: the whole exact-text directive does not fit its 77.
    assert quoted["directive"]["applied"] is False
    assert quoted["model_prompt"] == 'a sign "OPEN"', "no no-text directive on a prompt that asks for text"


def test_the_icon_template_is_not_told_to_render_text(client: TestClient) -> None:
    icon = client.get("/templates/icon", params={"subject": "a paper plane"}).json()

    applied = _generate(client, prompt=icon["prompt"])["policy_applied"]

    assert applied["directive"]["which"] == "no_text_directive"
    assert applied["directive"]["because"] == "the prompt asks for no text"
    assert "exactly as written" not in applied["model_prompt"]


def test_one_setting_turns_on_the_no_engineering_profile_seen_in_get_policy_and_in_results(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(create_app(build_service(settings)), base_url=LOCAL_URL) as client:
        default = client.get("/policy").json()
    monkeypatch.setenv("IMAGEFORGE_POLICY_PROFILE", "no-engineering")
    profiled = Settings(
        _env_file=None,
        default_model="tiny",
        root_dir=settings.root_dir,
        data_dir=settings.data_dir,
        ollama_url=settings.ollama_url,
    )
    with TestClient(create_app(build_service(profiled)), base_url=LOCAL_URL) as client:
        policy = client.get("/policy").json()
        applied = _generate(client, negative_prompt="cats", guidance=2.0)["policy_applied"]

    assert policy["profile"] == "no-engineering"
    assert policy["negative_prompt"] == f"{ENGINEERING_TERMS}, {default['negative_prompt']}"
    assert policy["restricted_use"].startswith(default["restricted_use"])
    assert "do not call this tool" in policy["restricted_use"]
    assert policy["version"] != default["version"]
    assert (applied["profile"], applied["version"]) == ("no-engineering", policy["version"])
    assert applied["model_negative_prompt"].startswith("engineering concept sketch, ")
    assert applied["model_negative_prompt"].endswith(", cats"), "the caller's words stay inside the 77 tokens"
    assert applied["negative_prompt"]["left_out"][-1] == "extra limbs"
