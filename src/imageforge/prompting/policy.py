"""Policy: what imageforge adds to every generation, from a file the operator can edit or empty.

Three parts: a baseline negative prompt put before the caller's own, a text-faithfulness directive appended to
the prompt, and the restricted-use text agents read in the MCP tool descriptions. Each is applied only where it
works, and every result reports what was applied (`policy_applied`), so nothing is filtered silently.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imageforge.domain import Policy

log = logging.getLogger(__name__)

#: Counts a prompt's tokens for the model's text encoder: (tokens, window), or None when it has no limit.
TokenCounter = Callable[[str], tuple[int, int] | None]


def load_policy(path: Path) -> Policy:
    """The policy in `path` (TOML, a `[policy]` table); the defaults when the file does not exist.

    A key left out keeps its default; an empty string switches that part off. An unreadable file falls back to
    the defaults and says so in `source`, so that a typo never silently drops the policy.
    """
    if not path.is_file():
        return Policy()
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("policy", {})
        if not isinstance(table, dict):
            raise ValueError("[policy] must be a table")
        parts = ("negative_prompt", "directive", "restricted_use")
        texts = {key: table.get(key, Policy.model_fields[key].default) for key in parts}
        for key, value in texts.items():
            if not isinstance(value, str):
                raise ValueError(f"{key} must be a string")
    except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        log.error("policy file %s not used: %s", path, exc)
        return Policy(source=f"built-in defaults ({path} not used: {exc})")
    return Policy(**texts, source=str(path))


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
    (`negative_works`). The directive is appended only when the prompt with it still fits the text encoder's
    window, so it never pushes the caller's own words out.
    """
    report: dict[str, Any] = {"version": policy.version}

    negatives = [part for part in (policy.negative_prompt, negative_prompt) if part]
    if not negatives:
        report["negative_prompt"] = {"applied": False, "reason": "no negative prompt"}
        model_negative = ""
    elif negative_works:
        model_negative = ", ".join(negatives)
        report["negative_prompt"] = {"applied": True, "baseline": bool(policy.negative_prompt)}
    else:
        model_negative = ""
        report["negative_prompt"] = {"applied": False, "reason": why_no_negative}

    model_prompt = prompt
    counted = count_tokens(prompt)
    if counted is not None:
        report["prompt_tokens"], report["token_window"] = counted
        if counted[0] > counted[1]:
            report["prompt_truncated"] = True
    if not policy.directive:
        report["directive"] = {"applied": False, "reason": "switched off in the policy"}
    else:
        candidate = f"{prompt}, {policy.directive}"
        with_directive = count_tokens(candidate)
        if with_directive is not None and with_directive[0] > with_directive[1]:
            report["directive"] = {
                "applied": False,
                "reason": f"the prompt with it would exceed the text encoder's {with_directive[1]} tokens",
            }
        else:
            model_prompt = candidate
            report["directive"] = {"applied": True}
    report["model_prompt"] = model_prompt
    report["model_negative_prompt"] = model_negative
    return AppliedPolicy(prompt=model_prompt, negative_prompt=model_negative, report=report)
