"""AUTOMATIC1111's "infotext": the plain-text parameters of an image, as its PNG `parameters` chunk carries them and
its PNG Info tab, Civitai and sd-parsers read them::

    a red fox in the snow, "quoted", detailed
    Negative prompt: blurry
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x512, Model: sdxl

The prompt comes first (it may span lines), then the negative prompt's line when there is one, then one line of
`Key: value` pairs; a value holding a comma, a colon or a newline is written as a JSON string. Pure: the output
store writes it, and the AUTOMATIC1111-compatible API's `png-info` reads it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from imageforge.domain import A1111_SAMPLER_NAMES, A1111_SCHEDULE_NAMES, Schedule

NEGATIVE_PREFIX = "Negative prompt:"
#: One `Key: value` pair of the last line: a key of words, then a JSON string or anything up to the next comma.
#: A key is at most 64 characters (AUTOMATIC1111's and its extensions' are under 40): unbounded, a long line without
#: a colon costs time in the square of its length, and the text may come from anyone's PNG.
_PAIR = re.compile(r'\s*(\w[\w \-/]{1,63}):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")
#: A last line with fewer pairs than this is part of the prompt, as AUTOMATIC1111 reads it.
_LEAST_PAIRS = 3

_SAMPLERS_BY_NAME = {name: sampler for sampler, name in A1111_SAMPLER_NAMES.items()}
_SCHEDULES_BY_NAME = {name: schedule for schedule, name in A1111_SCHEDULE_NAMES.items()}
_SAMPLER_NAMES: Mapping[str, str] = {sampler.value: name for sampler, name in A1111_SAMPLER_NAMES.items()}
_SCHEDULE_NAMES: Mapping[str, str] = {schedule.value: name for schedule, name in A1111_SCHEDULE_NAMES.items()}


def quote(value: object) -> str:
    """`value` as an infotext value: as it is, or as a JSON string when a comma, colon or newline would end it."""
    text = str(value)
    if not any(mark in text for mark in ",:\n"):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(value: str) -> str:
    """An infotext value as written: a JSON string's text, anything else as it is."""
    if len(value) < 2 or not (value.startswith('"') and value.endswith('"')):
        return value
    try:
        text = json.loads(value)
    except ValueError:
        return value
    return text if isinstance(text, str) else value


def _number(value: object) -> str:
    # AUTOMATIC1111 writes a whole CFG scale as "7", not "7.0".
    return f"{value:g}" if isinstance(value, float) else str(value)


def format_infotext(record: Mapping[str, Any]) -> str:
    """A result record (a job's result, an `ImageDescription`'s fields) as AUTOMATIC1111's infotext; fields the
    record lacks are left out, and `Denoising strength` is written for img2img and inpaint only."""
    sampler, schedule = record.get("sampler"), record.get("schedule")
    strength = record.get("strength") if record.get("task", "text2img") != "text2img" else None
    pairs = {
        "Steps": record.get("steps"),
        "Sampler": _SAMPLER_NAMES.get(sampler or ""),
        # A schedule is the sampler's: without a sampler's name it says nothing.
        "Schedule type": _SCHEDULE_NAMES.get(schedule or "") if sampler in _SAMPLER_NAMES else None,
        "CFG scale": record.get("guidance"),
        "Seed": record.get("seed"),
        "Size": f"{record['width']}x{record['height']}" if "width" in record and "height" in record else None,
        "Model": record.get("model"),
        "Denoising strength": strength,
    }
    lines = [str(record.get("prompt", ""))]
    if record.get("negative_prompt"):
        lines.append(f"{NEGATIVE_PREFIX} {record['negative_prompt']}")
    lines.append(", ".join(f"{key}: {quote(_number(value))}" for key, value in pairs.items() if value is not None))
    return "\n".join(lines)


def parse_infotext(text: str) -> dict[str, str]:
    """An infotext read as AUTOMATIC1111 reads it: `Prompt`, `Negative prompt` (empty when none), and each pair of
    the last line with its value unquoted; a size (`Size: 512x768`) as `Size-1` and `Size-2`."""
    *lines, last = text.strip().split("\n")
    if len(_PAIR.findall(last)) < _LEAST_PAIRS:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] | None = None
    for line in (line.strip() for line in lines):
        if negative is None and line.startswith(NEGATIVE_PREFIX):
            negative = [line.removeprefix(NEGATIVE_PREFIX).strip()]
        elif negative is not None:
            negative.append(line)
        else:
            prompt.append(line)
    parsed = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative or [])}
    for key, raw in _PAIR.findall(last):
        value = unquote(raw)
        size = _SIZE.match(value)
        if size is not None:
            parsed[f"{key}-1"], parsed[f"{key}-2"] = size.group(1), size.group(2)
        else:
            parsed[key] = value
    return parsed


def request_fields(parsed: Mapping[str, str]) -> dict[str, Any]:
    """The request fields an infotext (`parse_infotext`) names, under imageforge's names and types; pairs with no
    field here (Model hash, Clip skip, a sampler imageforge does not run) are left out, and so is a schedule
    without its sampler. An older infotext's "DPM++ 2M Karras" is the sampler dpmpp_2m with the karras schedule."""
    fields: dict[str, Any] = {"prompt": parsed.get("Prompt", ""), "negative_prompt": parsed.get("Negative prompt", "")}
    for key, name, kind in (
        ("Steps", "steps", int),
        ("CFG scale", "guidance", float),
        ("Seed", "seed", int),
        ("Size-1", "width", int),
        ("Size-2", "height", int),
        ("Denoising strength", "strength", float),
    ):
        if key in parsed:
            try:
                fields[name] = kind(parsed[key])
            except ValueError:
                continue
    if "Model" in parsed:
        fields["model"] = parsed["Model"]
    sampler, schedule = parsed.get("Sampler", ""), parsed.get("Schedule type")
    # Before AUTOMATIC1111 1.9 the schedule was part of the sampler's name: "DPM++ 2M Karras".
    for spacing, name in A1111_SCHEDULE_NAMES.items():
        if spacing is not Schedule.DEFAULT and sampler.endswith(f" {name}") and schedule is None:
            sampler, schedule = sampler.removesuffix(f" {name}"), name
    if sampler in _SAMPLERS_BY_NAME:
        fields["sampler"] = _SAMPLERS_BY_NAME[sampler].value
        if schedule in _SCHEDULES_BY_NAME:
            fields["schedule"] = _SCHEDULES_BY_NAME[schedule].value
    return fields
