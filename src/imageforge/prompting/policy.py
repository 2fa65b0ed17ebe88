"""Policy: what imageforge adds to every generation, from a file the operator can edit or empty.

Three parts: a baseline negative prompt put before the caller's own, a text-faithfulness directive appended to
the prompt (one for prompts that ask for text, one for prompts that do not), and the restricted-use text agents
read in the MCP tool descriptions. A ready profile (`PROFILES`) adds one organisation's terms to the first and
the last. Each part is applied only where it works, and every result reports what was applied
(`policy_applied`), so nothing is filtered silently.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imageforge.domain import Policy, PolicyProfileName

log = logging.getLogger(__name__)

#: Counts a prompt's tokens for the model's text encoder: (tokens, window), or None when it has no limit.
TokenCounter = Callable[[str], tuple[int, int] | None]


@dataclass(frozen=True)
class PolicyProfile:
    """One organisation's policy, ready to use: terms put before the baseline negative prompt, and a
    restricted-use block (what the service suits, what it does not, and the sentence an agent answers with)."""

    negative_prompt: str
    restricted_use: str


#: The ready profiles by name; `none` is the absence of one.
PROFILES: Mapping[PolicyProfileName, PolicyProfile] = {
    # For an organisation that designs physical or medical products, where a convincing picture of a part, a
    # screen or a circuit could be mistaken for real engineering. The terms are the original design's policy
    # cluster, taken as they are; the restricted-use block says the same as its refusal block, in our words.
    "no-engineering": PolicyProfile(
        negative_prompt=(
            "engineering concept sketch, industrial design ideation, product enclosure, mechanical housing, "
            "UX wireframe, UI mockup, screen mockup, interaction flow, PCB layout, circuit board, hardware "
            "schematic, exploded view, assembly diagram, product design render, CAD rendering"
        ),
        restricted_use=(
            "This service is best suited for early visual ideas, mood boards and stock-art-style illustration. It "
            "is not suited for engineering or industrial-design work, CAD or photorealistic product renders, UX "
            "wireframes or UI mockups, circuit boards or hardware schematics, exploded or assembly views, "
            "dimensional drawings, or medical and scientific imagery: such a picture can look convincing and "
            'still be wrong. When asked for one of these, do not call this tool; tell the user: "This image '
            "service is for concept art, mood boards and illustrations, so it cannot make engineering, product, "
            'UX or medical images; please use your design or CAD tools for those."'
        ),
    ),
}

_TEXTS = ("negative_prompt", "directive", "no_text_directive", "restricted_use")


def load_policy(path: Path, profile: PolicyProfileName = "none") -> Policy:
    """The policy in `path` (TOML, a `[policy]` table), or the defaults when the file does not exist, with the
    ready `profile`'s terms added.

    A key left out keeps its default; an empty string switches that part off. An unreadable file falls back to
    the defaults and says so in `source`, so that a typo never silently drops the policy.
    """
    texts = {key: str(Policy.model_fields[key].default) for key in _TEXTS}
    source = "built-in defaults"
    if path.is_file():
        try:
            texts = _read_texts(path, texts)
            source = str(path)
        except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError is a ValueError
            log.error("policy file %s not used: %s", path, exc)
            source = f"built-in defaults ({path} not used: {exc})"
    if profile != "none":
        added = PROFILES[profile]
        texts["negative_prompt"] = _joined(", ", added.negative_prompt, texts["negative_prompt"])
        texts["restricted_use"] = _joined(" ", texts["restricted_use"], added.restricted_use)
    return Policy(**texts, profile=profile, source=source)


def _read_texts(path: Path, defaults: dict[str, str]) -> dict[str, str]:
    table = tomllib.loads(path.read_text(encoding="utf-8")).get("policy", {})
    if not isinstance(table, dict):
        raise ValueError("[policy] must be a table")
    texts = {key: table.get(key, default) for key, default in defaults.items()}
    for key, value in texts.items():
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
    return texts


def _joined(separator: str, *parts: str) -> str:
    return separator.join(part for part in parts if part)


#: Words in double or single quotes (straight, curly, guillemets, corner brackets). A straight single quote counts
#: only with no letter outside it, so that "the fox's den" quotes nothing.
_QUOTED = re.compile(
    r'"[^"]+"|\u201c[^\u201d]+\u201d|\u201e[^\u201c\u201d]+[\u201c\u201d]|\u00ab[^\u00bb]+\u00bb|\u300c[^\u300d]+\u300d'
    r"|\u2018[^\u2019]+\u2019|(?<!\w)'[^']+'(?!\w)"
)
#: Words by which a prompt asks for lettering without quoting it ("a few short labels", "a headline").
_LETTERING = re.compile(
    r"\b(text|lettering|letters|words?|writing|written|labels?|labell?ed|headlines?|captions?|titles?|headings?|"
    r"typography|slogans?|says|saying|reads|reading|inscriptions?|inscribed|signage|spelled|spelling)\b(?!-free)",
    re.IGNORECASE,
)
#: What before a lettering word asks for none of it ("no text", "without any lettering", "no logos or text").
_NEGATION = re.compile(
    r"\b(?:no|without|free of)\s+(?:any\s+)?(?:[\w-]+(?:\s*,\s*|\s+or\s+|\s+and\s+|\s+nor\s+))*$", re.IGNORECASE
)


def asks_for_text(prompt: str) -> tuple[bool, str]:
    """Whether `prompt` asks for text in the image, and why: it quotes words, or names lettering without
    "no"/"without" before it. Naming lettering counts, so that a whiteboard's "labels" never get a no-text
    directive; only a prompt with neither gets one."""
    quoted = _QUOTED.search(prompt)
    if quoted is not None:
        return True, f"the prompt quotes {quoted.group(0)}"
    negated = ""
    for match in _LETTERING.finditer(prompt):
        if _NEGATION.search(prompt[: match.start()]) is None:
            return True, f"the prompt asks for {match.group(0)}"
        negated = match.group(0)
    if negated:
        return False, f"the prompt asks for no {negated}"
    return False, "the prompt neither quotes words nor asks for lettering"


@dataclass(frozen=True)
class AppliedPolicy:
    """The prompts the model receives, and the report of what the policy added and why."""

    prompt: str
    negative_prompt: str
    report: dict[str, Any]


def apply_policy(
    policy: Policy,
    *,
    prompt: str,
    negative_prompt: str,
    negative_works: bool,
    why_no_negative: str,
    count_tokens: TokenCounter,
) -> AppliedPolicy:
    """Add the policy's parts where they take effect.

    The negative prompt (baseline first, then the caller's) is sent only when the model uses one
    (`negative_works`); baseline terms that would push the caller's words out of the text encoder's window are
    left out, last first. The directive is chosen by whether the prompt asks for text, and appended only when the
    prompt with it still fits the window, so it never pushes the caller's own words out either.
    """
    report: dict[str, Any] = {"version": policy.version, "profile": policy.profile}
    model_negative = ""
    if not (policy.negative_prompt or negative_prompt):
        report["negative_prompt"] = {"applied": False, "reason": "no negative prompt"}
    elif negative_works:
        model_negative, report["negative_prompt"] = _fit_negative(policy.negative_prompt, negative_prompt, count_tokens)
    else:
        report["negative_prompt"] = {"applied": False, "reason": why_no_negative}

    model_prompt = prompt
    counted = count_tokens(prompt)
    if counted is not None:
        report["prompt_tokens"], report["token_window"] = counted
        if counted[0] > counted[1]:
            report["prompt_truncated"] = True
    wants_text, because = asks_for_text(prompt)
    which = "directive" if wants_text else "no_text_directive"
    directive: str = getattr(policy, which)
    chosen = {"which": which, "because": because}
    if not directive:
        report["directive"] = {"applied": False, **chosen, "reason": "switched off in the policy"}
    else:
        candidate = f"{prompt}, {directive}"
        with_directive = count_tokens(candidate)
        if with_directive is not None and with_directive[0] > with_directive[1]:
            report["directive"] = {
                "applied": False,
                **chosen,
                "reason": f"the prompt with it would exceed the text encoder's {with_directive[1]} tokens",
            }
        else:
            model_prompt = candidate
            report["directive"] = {"applied": True, **chosen}
    report["model_prompt"] = model_prompt
    report["model_negative_prompt"] = model_negative
    return AppliedPolicy(prompt=model_prompt, negative_prompt=model_negative, report=report)


def _fit_negative(baseline: str, callers: str, count_tokens: TokenCounter) -> tuple[str, dict[str, Any]]:
    """The negative prompt the model gets, and its report: the baseline's terms, then the caller's whole negative
    prompt, leaving out the baseline's last terms while the whole is longer than the text encoder's window."""
    kept = [term.strip() for term in baseline.split(",") if term.strip()]
    left_out: list[str] = []
    negative = _joined(", ", *kept, callers)
    counted = count_tokens(negative)
    while counted is not None and counted[0] > counted[1] and kept:
        left_out.insert(0, kept.pop())
        negative = _joined(", ", *kept, callers)
        counted = count_tokens(negative)
    report: dict[str, Any] = {"applied": True, "baseline": bool(kept)}
    if counted is not None and left_out:
        report["left_out"] = left_out
        report["reason"] = (
            f"the whole baseline would push the negative prompt past the text encoder's {counted[1]} tokens"
        )
    if counted is not None and counted[0] > counted[1]:
        report["truncated"] = True
    return negative, report
