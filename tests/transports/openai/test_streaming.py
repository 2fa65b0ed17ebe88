"""Streamed image answers (`stream=True`): partial images from the live previews, then each image, as the SDK's
own event types; a job that fails mid-stream reaches the SDK as its APIError."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types import (
    ImageEditCompletedEvent,
    ImageEditPartialImageEvent,
    ImageGenCompletedEvent,
    ImageGenPartialImageEvent,
)
from PIL import Image

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from imageforge.transports.openai import streaming
from tests.gated import GatedBackend
from tests.loopback import serving_app
from tests.transports.openai.conftest import KEY, TIMEOUT_S, png


@pytest.fixture
def gated(settings: Settings) -> Iterator[tuple[OpenAI, GatedBackend]]:
    """The SDK on a server whose generations hold at every step until the test releases them: the stream is
    open before the steps that make its partial images."""
    backend = GatedBackend(DiffusersBackend(device="cpu", models_path=settings.models_path))
    service = build_service(settings, backend=backend)
    with serving_app(create_app(service, api_keys=ApiKeys([("alice", KEY)]))) as url:
        try:
            with OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=TIMEOUT_S) as sdk:
                yield sdk, backend
        finally:
            backend.release(1000)


def test_a_streamed_generation_sends_partial_images_then_the_image(gated: tuple[OpenAI, GatedBackend]) -> None:
    sdk, backend = gated

    stream = sdk.images.generate(
        prompt="a red fox", size="64x64", stream=True, partial_images=2, extra_body={"steps": 6, "seed": 1}
    )
    backend.release(1000)
    events = list(stream)

    partials = [event for event in events if isinstance(event, ImageGenPartialImageEvent)]
    assert [event.partial_image_index for event in partials] == [0, 1]
    assert all(Image.open(io.BytesIO(base64.b64decode(event.b64_json))).format == "PNG" for event in partials)
    completed = events[-1]
    assert isinstance(completed, ImageGenCompletedEvent)
    assert Image.open(io.BytesIO(base64.b64decode(completed.b64_json))).size == (64, 64)
    assert (completed.size, completed.output_format) == ("64x64", "png")


def test_a_streamed_edit_sends_image_edit_events(gated: tuple[OpenAI, GatedBackend]) -> None:
    sdk, backend = gated

    stream = sdk.images.edit(
        image=("photo.png", png(), "image/png"),
        prompt="a blue door",
        stream=True,
        partial_images=1,
        output_format="jpeg",
        extra_body={"steps": 8, "strength": 1.0},
    )
    backend.release(1000)
    events = list(stream)

    assert isinstance(events[0], ImageEditPartialImageEvent)
    assert isinstance(events[-1], ImageEditCompletedEvent)
    assert base64.b64decode(events[-1].b64_json).startswith(b"\xff\xd8\xff")


def test_a_job_cancelled_mid_stream_is_raised_as_the_sdks_api_error(gated: tuple[OpenAI, GatedBackend]) -> None:
    sdk, backend = gated

    stream = sdk.images.generate(prompt="a red fox", size="64x64", stream=True, extra_body={"steps": 4})
    backend.wait_for_step()
    base = str(sdk.base_url).removesuffix("/v1/")
    [job] = sdk.get(f"{base}/jobs", cast_to=dict)["jobs"]
    sdk.delete(f"{base}/jobs/{job['job_id']}", cast_to=dict)
    backend.release(1000)

    with pytest.raises(openai.APIError) as failed:
        list(stream)

    assert failed.value.code == "cancelled"


def test_a_quiet_stream_sends_keepalive_comments_the_sdk_skips(
    gated: tuple[OpenAI, GatedBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    sdk, backend = gated
    monkeypatch.setattr(streaming, "KEEPALIVE_S", 0.01)
    body = {"prompt": "a red fox", "size": "64x64", "stream": True, "steps": 2}
    url = f"{str(sdk.base_url).rstrip('/')}/images/generations"

    with httpx.stream("POST", url, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=TIMEOUT_S) as answer:
        lines = answer.iter_lines()
        assert next(line for line in lines if line.startswith(":")) == ": keep-alive"  # while the job holds
        backend.release(1000)
        events = [line for line in lines if line.startswith("event: ")]

    assert events == ["event: image_generation.completed"]
