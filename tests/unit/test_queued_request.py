"""A job's payload: the validated request as plain data, read back by whichever process runs the job."""

from __future__ import annotations

from imageforge.domain import Decoder, QueuedRequest, Task

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
