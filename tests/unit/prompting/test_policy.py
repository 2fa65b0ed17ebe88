"""The policy: loaded from a file the operator edits or empties, applied only where it takes effect."""

from __future__ import annotations

from pathlib import Path

from imageforge.domain import DEFAULT_NEGATIVE_PROMPT, Policy
from imageforge.prompting.policy import apply_policy, load_policy


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
        Policy(negative_prompt="blurry", directive=""),
        prompt="a fox",
        negative_prompt="cats",
        negative_works=True,
        why_no_negative="",
        count_tokens=_words,
    )

    assert applied.negative_prompt == "blurry, cats"
    assert applied.report["negative_prompt"] == {"applied": True, "baseline": True}
    assert applied.report["directive"] == {"applied": False, "reason": "switched off in the policy"}


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
    policy = Policy(directive="legible text")
    fits = apply_policy(
        policy, prompt="a fox", negative_prompt="", negative_works=True, why_no_negative="", count_tokens=_words
    )
    long_prompt = "one two three four five six seven eight nine"
    too_long = apply_policy(
        policy, prompt=long_prompt, negative_prompt="", negative_works=True, why_no_negative="", count_tokens=_words
    )

    assert fits.prompt == "a fox, legible text"
    assert fits.report["directive"] == {"applied": True}
    assert too_long.prompt == long_prompt, "the caller's words keep the whole window"
    assert too_long.report["directive"]["applied"] is False
    assert "10 tokens" in too_long.report["directive"]["reason"]
    assert (too_long.report["prompt_tokens"], too_long.report["token_window"]) == (9, 10)


def test_an_encoder_without_a_window_always_takes_the_directive() -> None:
    applied = apply_policy(
        Policy(directive="legible text"),
        prompt="word " * 500,
        negative_prompt="",
        negative_works=True,
        why_no_negative="",
        count_tokens=lambda prompt: None,
    )

    assert applied.report["directive"] == {"applied": True}
    assert "prompt_tokens" not in applied.report
