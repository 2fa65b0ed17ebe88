"""A job's payload: the validated request as plain data, read back by whichever process runs the job."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from imageforge.domain import Decoder, LoraWeight, QueuedRequest, Sampler, Schedule, Task

QUEUED = QueuedRequest(
    task=Task.TEXT2IMG,
    model="tiny",
    prompt="a fox",
    negative_prompt="",
    steps=2,
    guidance=0.0,
    width=64,
    height=64,
    decoder=Decoder.FULL,
    seed=7,
    init_image=None,
    mask_image=None,
    assist_prompt=False,
    use_cache=True,
    count=3,
)


def test_a_payload_reads_back_as_the_request_it_was_written_from() -> None:
    assert QueuedRequest.from_payload(QUEUED.to_payload()) == QUEUED


def test_a_payload_queued_before_count_asks_for_one_image() -> None:
    payload = QUEUED.to_payload()
    del payload["count"]

    assert QueuedRequest.from_payload(payload).count == 1


def test_a_payload_keeps_the_sampler_and_schedule_as_their_types() -> None:
    chosen = replace(QUEUED, sampler=Sampler.DPMPP_2M_SDE, schedule=Schedule.KARRAS)
    payload = chosen.to_payload()

    assert (payload["sampler"], payload["schedule"]) == ("dpmpp_2m_sde", "karras")
    assert QueuedRequest.from_payload(payload) == chosen


def test_a_payload_queued_before_samplers_runs_the_models_own() -> None:
    payload = QUEUED.to_payload()
    del payload["sampler"], payload["schedule"]

    read = QueuedRequest.from_payload(payload)

    assert (read.sampler, read.schedule) == (None, Schedule.DEFAULT)


def test_a_payload_carries_the_loras_as_plain_json_and_reads_them_back() -> None:
    chosen = replace(QUEUED, loras=(LoraWeight(name="ink", weight=0.5), LoraWeight(name="film", weight=-1.0)))
    payload = json.loads(json.dumps(chosen.to_payload()))

    assert payload["loras"] == [{"name": "ink", "weight": 0.5}, {"name": "film", "weight": -1.0}]
    assert QueuedRequest.from_payload(payload) == chosen


def test_a_payload_queued_before_loras_applies_none() -> None:
    payload = QUEUED.to_payload()
    del payload["loras"]

    assert QueuedRequest.from_payload(payload).loras == ()


def test_a_payload_with_a_lora_outside_the_declaration_is_not_a_queued_request() -> None:
    payload = {**QUEUED.to_payload(), "loras": [{"name": "ink", "weight": 9}]}

    with pytest.raises(ValueError, match="not a queued request"):
        QueuedRequest.from_payload(payload)
