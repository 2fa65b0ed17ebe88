"""The A1111 fields we map take their bounds from the one request declaration: a value just past a declared
bound is refused under its A1111 name, with the declaration's own words as the hint."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageforge.domain import REQUEST_FIELDS, accepted
from imageforge.transports.a1111.mapping import A1111_NAMES

#: The mapped numeric and text fields, by their declared name.
MAPPED = ["prompt", "negative_prompt", "steps", "guidance", "width", "height", "seed", "strength"]
SMALL = {"prompt": "a fox", "width": 64, "height": 64, "steps": 1, "init_images": ["aGVsbG8="]}


def past_bounds(name: str) -> list[Any]:
    """A value just past each static bound the declaration gives `name`."""
    values: list[Any] = []
    for rule in REQUEST_FIELDS[name].metadata:
        if getattr(rule, "ge", None) is not None:
            values.append(rule.ge - 1)
        if getattr(rule, "gt", None) is not None:
            values.append(rule.gt)
        if getattr(rule, "le", None) is not None:
            values.append(rule.le + 1)
        if getattr(rule, "max_length", None) is not None:
            values.append("x" * (rule.max_length + 1))
    # A1111's seed -1 means "random", so the first value past the declared minimum is -2.
    return [-2 if name == "seed" and value == -1 else value for value in values]


CASES = [(name, value) for name in MAPPED for value in past_bounds(name)]


def test_every_mapped_field_has_a_declared_bound_to_check() -> None:
    assert {name for name, _ in CASES} == set(MAPPED)


@pytest.mark.parametrize(("declared", "value"), CASES)
def test_a_value_past_a_declared_bound_is_refused_in_a1111s_words(
    client: TestClient, declared: str, value: Any
) -> None:
    shown = A1111_NAMES.get(declared, declared)

    answer = client.post("/sdapi/v1/img2img", json={**SMALL, shown: value})

    assert answer.status_code == 400
    assert answer.json()["message"].startswith(f"{shown}: ")
    assert answer.json()["hint"] == accepted(declared, shown)
