"""The policy: loaded from a file the operator edits or empties, applied only where it takes effect."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest

from imageforge.domain import (
    DEFAULT_DIRECTIVE,
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_NO_TEXT_DIRECTIVE,
    Policy,
    PolicyProfileName,
)
from imageforge.prompting.policy import PROFILES, apply_policy, asks_for_text, load_policy
from imageforge.prompting.templates import BUILTIN_TEMPLATES, TemplateCatalog

#: The original design's terms against gibberish text, as it lists them.
GIBBERISH_TERMS = (
    "lorem ipsum, placeholder text, gibberish text, fake words, invented letterforms, text-shaped scribbles, "
    "garbled text"
)
#: The original design's policy cluster, as it lists it.
ENGINEERING_TERMS = (
    "engineering concept sketch, industrial design ideation, product enclosure, mechanical housing, UX wireframe, "
    "UI mockup, screen mockup, interaction flow, PCB layout, circuit board, hardware schematic, exploded view, "
    "assembly diagram, product design render, CAD rendering"
)


def _words(prompt: str) -> tuple[int, int]:
    """A stand-in encoder counting one token per word, with a window of 10."""
    return len(prompt.replace(",", " ").split()), 10


def test_no_file_means_the_defaults() -> None:
    policy = load_policy(Path("/nonexistent/policy.toml"))

    assert policy == Policy()
    assert policy.source == "built-in defaults"


def test_a_file_replaces_parts_and_empty_strings_switch_them_off(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[policy]\nnegative_prompt = ""\ndirective = "legible text"\n')

    policy = load_policy(path)

    assert (policy.negative_prompt, policy.directive) == ("", "legible text")
    assert policy.restricted_use == Policy().restricted_use, "a key left out keeps its default"
    assert policy.source == str(path)
    assert policy.version != Policy().version


def test_an_unreadable_file_falls_back_to_the_defaults_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[policy]\nnegative_prompt = 3\n")

    policy = load_policy(path)

    assert policy.negative_prompt == DEFAULT_NEGATIVE_PROMPT
    assert "not used" in policy.source
    assert "negative_prompt must be a string" in policy.source


def test_the_baseline_negative_comes_first_when_the_model_uses_negatives() -> None:
    applied = apply_policy(
        Policy(negative_prompt="blurry", no_text_directive=""),
        prompt="a fox",
        negative_prompt="cats",
        negative_works=True,
        why_no_negative="",
        count_tokens=_words,
    )

    assert applied.negative_prompt == "blurry, cats"
    assert applied.report["negative_prompt"] == {"applied": True, "baseline": True}
    assert applied.report["directive"]["reason"] == "switched off in the policy"


def test_a_model_without_negatives_gets_none_and_the_report_says_why() -> None:
    applied = apply_policy(
        Policy(negative_prompt="blurry"),
        prompt="a fox",
        negative_prompt="cats",
        negative_works=False,
        why_no_negative="guidance 0",
        count_tokens=_words,
    )

    assert applied.negative_prompt == ""
    assert applied.report["negative_prompt"] == {"applied": False, "reason": "guidance 0"}


def test_the_directive_is_appended_only_while_the_prompt_still_fits_the_window() -> None:
    policy = Policy(no_text_directive="legible text")
    fits = apply_policy(
        policy, prompt="a fox", negative_prompt="", negative_works=True, why_no_negative="", count_tokens=_words
    )
    long_prompt = "one two three four five six seven eight nine"
    too_long = apply_policy(
        policy, prompt=long_prompt, negative_prompt="", negative_works=True, why_no_negative="", count_tokens=_words
    )

    assert fits.prompt == "a fox, legible text"
    assert fits.report["directive"]["applied"] is True
    assert too_long.prompt == long_prompt, "the caller's words keep the whole window"
    assert too_long.report["directive"]["applied"] is False
    assert "10 tokens" in too_long.report["directive"]["reason"]
    assert (too_long.report["prompt_tokens"], too_long.report["token_window"]) == (9, 10)


def test_an_encoder_without_a_window_always_takes_the_directive() -> None:
    applied = apply_policy(
        Policy(no_text_directive="legible text"),
        prompt="word " * 500,
        negative_prompt="",
        negative_works=True,
        why_no_negative="",
        count_tokens=lambda prompt: None,
    )

    assert applied.report["directive"]["applied"] is True
    assert "prompt_tokens" not in applied.report


def _unbounded(policy: Policy, prompt: str, negative_prompt: str = "") -> tuple[str, str, dict[str, Any]]:
    """What a model without a token window (FLUX's T5 reads 512) gets for `prompt`, and the report."""
    applied = apply_policy(
        policy,
        prompt=prompt,
        negative_prompt=negative_prompt,
        negative_works=True,
        why_no_negative="",
        count_tokens=lambda prompt: None,
    )
    return applied.prompt, applied.negative_prompt, applied.report


def test_a_prompt_that_quotes_words_gets_the_exact_text_directive() -> None:
    prompt, _, report = _unbounded(Policy(), 'a shop sign saying "OPEN LATE"')

    assert prompt == f'a shop sign saying "OPEN LATE", {DEFAULT_DIRECTIVE}'
    assert "quoted words exactly as written" in prompt
    assert report["directive"] == {"applied": True, "which": "directive", "because": 'the prompt quotes "OPEN LATE"'}


def test_a_prompt_that_asks_for_no_text_gets_the_no_text_directive() -> None:
    prompt, _, report = _unbounded(Policy(), "a red fox in the snow")

    assert prompt == f"a red fox in the snow, {DEFAULT_NO_TEXT_DIRECTIVE}"
    assert DEFAULT_DIRECTIVE not in prompt
    assert report["directive"] == {
        "applied": True,
        "which": "no_text_directive",
        "because": "the prompt neither quotes words nor asks for lettering",
    }


def test_the_icon_template_no_longer_gets_a_directive_that_contradicts_its_no_text() -> None:
    icon = TemplateCatalog(BUILTIN_TEMPLATES).get("icon").render("a paper plane")

    prompt, _, report = _unbounded(Policy(), icon)

    assert icon.endswith("no text")
    assert prompt == f"{icon}, {DEFAULT_NO_TEXT_DIRECTIVE}"
    assert "exactly as written" not in prompt
    assert report["directive"] == {
        "applied": True,
        "which": "no_text_directive",
        "because": "the prompt asks for no text",
    }


@pytest.mark.parametrize("key", ["whiteboard", "poster"])
def test_templates_that_ask_for_lettering_get_the_text_directive_not_the_no_text_one(key: str) -> None:
    prompt, _, report = _unbounded(Policy(), TemplateCatalog(BUILTIN_TEMPLATES).get(key).render("a release plan"))

    assert prompt.endswith(DEFAULT_DIRECTIVE)
    assert report["directive"]["which"] == "directive"


@pytest.mark.parametrize(
    ("prompt", "wants_text"),
    [
        ("a door with \u201cPUSH\u201d on it", True),
        ("a banner reading \u2018WELCOME\u2019", True),
        ("a shop called 'Fox & Co'", True),
        ("a caption under a photo", True),
        ("no people, and a sign with text", True),
        ("the fox's den at dawn", False),
        ("a meadow, no logos or text", False),
        ("a forest without any lettering", False),
        ("a text-free banner", False),
    ],
)
def test_a_prompt_asks_for_text_by_quoting_words_or_naming_lettering_unless_it_says_none(
    prompt: str, wants_text: bool
) -> None:
    assert asks_for_text(prompt)[0] is wants_text


def test_a_policy_file_switches_either_directive_off_and_the_report_says_which(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[policy]\nno_text_directive = ""\n')

    policy = load_policy(path)
    plain, _, plain_report = _unbounded(policy, "a fox")
    quoted, _, _ = _unbounded(policy, 'a sign "STOP"')

    assert plain == "a fox"
    assert plain_report["directive"] == {
        "applied": False,
        "which": "no_text_directive",
        "because": "the prompt neither quotes words nor asks for lettering",
        "reason": "switched off in the policy",
    }
    assert quoted == f'a sign "STOP", {DEFAULT_DIRECTIVE}', "the other directive keeps its default"


def test_the_default_baseline_negative_carries_the_gibberish_text_terms() -> None:
    _, negative, report = _unbounded(Policy(), "a fox", "cats")

    assert negative.startswith(GIBBERISH_TERMS + ", ")
    assert negative.endswith(", cats")
    assert report["negative_prompt"] == {"applied": True, "baseline": True}
    assert report["profile"] == "none"


def test_the_no_engineering_profile_puts_its_terms_first_and_its_refusal_after_the_restricted_use() -> None:
    policy = load_policy(Path("/nonexistent/policy.toml"), "no-engineering")

    _, negative, report = _unbounded(policy, "a fox", "cats")

    assert policy.profile == "no-engineering"
    assert policy.negative_prompt == f"{ENGINEERING_TERMS}, {DEFAULT_NEGATIVE_PROMPT}"
    assert policy.restricted_use.startswith(Policy().restricted_use + " This service is best suited for")
    assert "do not call this tool" in policy.restricted_use
    assert policy.version != Policy().version, "results and cache keys tell the profile apart"
    assert negative == f"{ENGINEERING_TERMS}, {DEFAULT_NEGATIVE_PROMPT}, cats"
    assert report["profile"] == "no-engineering"


def test_a_profile_adds_its_terms_even_where_the_policy_file_switched_a_part_off(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[policy]\nnegative_prompt = ""\nrestricted_use = ""\n')

    policy = load_policy(path, "no-engineering")

    assert policy.negative_prompt == ENGINEERING_TERMS
    assert policy.restricted_use == PROFILES["no-engineering"].restricted_use
    assert policy.source == str(path)


def test_every_profile_a_setting_accepts_is_shipped() -> None:
    assert set(get_args(PolicyProfileName)) == {"none", *PROFILES}


def test_baseline_terms_that_would_push_the_callers_negative_out_of_the_window_are_left_out_last_first() -> None:
    applied = apply_policy(
        Policy(negative_prompt="one, two, three, four, five, six"),
        prompt="a fox",
        negative_prompt="seven eight nine ten eleven twelve",
        negative_works=True,
        why_no_negative="",
        count_tokens=_words,
    )

    assert applied.negative_prompt == "one, two, three, four, seven eight nine ten eleven twelve"
    assert applied.report["negative_prompt"] == {
        "applied": True,
        "baseline": True,
        "left_out": ["five", "six"],
        "reason": "the whole baseline would push the negative prompt past the text encoder's 10 tokens",
    }


def test_a_callers_negative_longer_than_the_window_takes_no_baseline_and_is_reported_truncated() -> None:
    applied = apply_policy(
        Policy(negative_prompt="blurry"),
        prompt="a fox",
        negative_prompt="one two three four five six seven eight nine ten eleven",
        negative_works=True,
        why_no_negative="",
        count_tokens=_words,
    )

    assert applied.negative_prompt == "one two three four five six seven eight nine ten eleven"
    assert applied.report["negative_prompt"]["baseline"] is False
    assert applied.report["negative_prompt"]["left_out"] == ["blurry"]
    assert applied.report["negative_prompt"]["truncated"] is True
