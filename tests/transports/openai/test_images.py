"""The OpenAI Images API under /v1, through the official `openai` SDK against a real server: generations, edits,
variations, the model list, and refusals raised as the SDK's own exception classes with our stable codes."""

from __future__ import annotations

import base64
import io
import json
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any, Literal

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types import ImagesResponse
from PIL import Image

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.domain import Task
from imageforge.service import ImageService
from imageforge.storage.audit import AuditLog
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from tests.loopback import serving_app
from tests.transports.openai.conftest import BEARER, KEY, TIMEOUT_S, png

SMALL = {"steps": 1}
BODIES = Path(__file__).with_name("bodies")


def _decoded(b64: str | None) -> Image.Image:
    assert b64 is not None
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_two_images_come_inline_with_consecutive_seeds(sdk: OpenAI, service: ImageService) -> None:
    answer = sdk.images.generate(model="tiny", prompt="a red fox", n=2, size="64x64", extra_body={"seed": 7, **SMALL})

    assert answer.data is not None
    assert len(answer.data) == 2
    assert all(_decoded(image.b64_json).size == (64, 64) for image in answer.data)
    assert (answer.output_format, answer.size) == ("png", "64x64")
    [job] = service.list_jobs()
    assert job.result is not None
    assert [image["seed"] for image in job.result["images"]] == [7, 8]


def test_a_url_answer_opens_the_stored_png_without_a_header(sdk: OpenAI) -> None:
    answer = sdk.images.generate(prompt="a red fox", size="64x64", response_format="url", extra_body=SMALL)

    assert answer.data is not None
    assert answer.data[0].url is not None
    opened = httpx.get(answer.data[0].url, timeout=TIMEOUT_S)
    assert opened.status_code == 200
    assert opened.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(opened.content)).size == (64, 64)


@pytest.mark.parametrize(("output_format", "magic"), [("jpeg", b"\xff\xd8\xff"), ("webp", b"RIFF")])
def test_output_format_reencodes_the_image(sdk: OpenAI, output_format: Literal["jpeg", "webp"], magic: bytes) -> None:
    answer = sdk.images.generate(
        prompt="a red fox",
        size="64x64",
        output_format=output_format,
        output_compression=80,
        extra_body=SMALL,
    )

    assert answer.data is not None
    assert answer.data[0].b64_json is not None
    assert base64.b64decode(answer.data[0].b64_json).startswith(magic)
    assert answer.output_format == output_format
    assert _decoded(answer.data[0].b64_json).format == output_format.upper()


def test_an_edit_with_a_mask_repaints_its_transparent_pixels(sdk: OpenAI, service: ImageService) -> None:
    # OpenAI's convention: transparent pixels (alpha 0) are repainted. Here the left half.
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 32, 64))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")

    answer = sdk.images.edit(
        image=("photo.png", png(), "image/png"),
        mask=("mask.png", buffer.getvalue(), "image/png"),
        prompt="a blue door",
        extra_body={"seed": 3, "steps": 2},
    )

    assert answer.data is not None
    assert _decoded(answer.data[0].b64_json).size == (64, 64)
    [job] = service.list_jobs()
    assert job.payload["task"] == Task.INPAINT
    # The engine got our convention: white (repaint) where the mask was transparent, black elsewhere.
    base = str(sdk.base_url).removesuffix("/v1/")
    stored = httpx.get(f"{base}/jobs/{job.id}/mask_image", headers=BEARER, timeout=TIMEOUT_S)
    ours = Image.open(io.BytesIO(stored.content)).convert("L")
    assert ours.getpixel((10, 32)) == 255
    assert ours.getpixel((50, 32)) == 0


def test_an_edit_without_a_mask_is_image_to_image(sdk: OpenAI, service: ImageService) -> None:
    sdk.images.edit(image=("photo.png", png(), "image/png"), prompt="a blue door", extra_body={"strength": 0.5})

    [job] = service.list_jobs()
    assert job.payload["task"] == Task.IMG2IMG
    assert job.payload["strength"] == 0.5


def test_a_mask_without_transparency_is_refused_before_any_job(sdk: OpenAI, service: ImageService) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.images.edit(
            image=("photo.png", png(), "image/png"), mask=("mask.png", png(), "image/png"), prompt="a blue door"
        )

    assert refused.value.code == "invalid_image"
    assert service.list_jobs() == []


def _create_variation(sdk: OpenAI, **options: Any) -> ImagesResponse:
    """The SDK's `create_variation`, which it marks deprecated (OpenAI retired the endpoint, not the SDK's call).
    Only that warning is silenced: the server runs in this process, and its own warnings must still fail a test."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="deprecated", category=DeprecationWarning)
        return sdk.images.create_variation(image=("photo.png", png(), "image/png"), **options)


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims an RGBA canvas of `width` x `height` with no pixel data: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [5_000, 100_000])
def test_a_mask_claiming_a_huge_canvas_is_refused_before_it_is_decoded(
    sdk: OpenAI, service: ImageService, side: int
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.images.edit(
            image=("photo.png", png(), "image/png"),
            mask=("mask.png", _png_header(side, side), "image/png"),
            prompt="a blue door",
        )

    assert (refused.value.code, refused.value.param) == ("invalid_image", "mask")
    assert service.list_jobs() == []


def test_a_variation_is_image_to_image_with_the_prompt_sent_as_an_extra_field(
    sdk: OpenAI, service: ImageService
) -> None:
    answer = _create_variation(sdk, extra_body={"prompt": "a blue door", "steps": 2})

    assert answer.data is not None
    assert len(answer.data) == 1
    [job] = service.list_jobs()
    assert job.payload["task"] == Task.IMG2IMG


def test_a_variation_without_a_prompt_is_refused_naming_it(sdk: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        _create_variation(sdk)

    assert (refused.value.code, refused.value.param) == ("invalid_request", "prompt")


def test_an_unknown_extra_field_is_refused_naming_it_before_any_job(sdk: OpenAI, service: ImageService) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.images.generate(prompt="a red fox", extra_body={"sampler_name": "Euler"})

    assert (refused.value.code, refused.value.param) == ("invalid_request", "sampler_name")
    assert service.list_jobs() == []


def test_a_field_added_to_the_native_request_is_an_extra_field_here_too(sdk: OpenAI, service: ImageService) -> None:
    sdk.images.generate(prompt="a red fox", size="64x64", extra_body={"sampler": "heun", "schedule": "karras"})

    [job] = service.list_jobs()
    assert (job.payload["sampler"], job.payload["schedule"]) == ("heun", "karras")


def test_a_size_over_max_res_is_refused_with_our_code_before_any_job(sdk: OpenAI, service: ImageService) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.images.generate(prompt="a red fox", size="4096x4096")

    assert (refused.value.code, refused.value.param) == ("invalid_request", "size")
    assert service.list_jobs() == []


def test_our_fields_keep_their_declared_bounds(sdk: OpenAI, service: ImageService) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.images.generate(prompt="a red fox", extra_body={"guidance": 99})

    assert (refused.value.code, refused.value.param) == ("invalid_request", "guidance")
    body = refused.value.body
    assert isinstance(body, dict)
    assert "at most 30" in body["hint"]
    assert service.list_jobs() == []


def test_a_value_openai_names_is_refused_under_its_openai_name(sdk: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.images.generate(prompt="a red fox", n=9)

    assert (refused.value.code, refused.value.param) == ("invalid_request", "n")


def test_a_transparent_background_is_refused(sdk: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.images.generate(prompt="a red fox", background="transparent")

    assert (refused.value.code, refused.value.param) == ("unsupported_operation", "background")


def test_a_missing_or_wrong_key_is_an_authentication_error(served: str) -> None:
    with (
        OpenAI(base_url=f"{served}/v1", api_key="not-" + KEY, max_retries=0) as stranger,
        pytest.raises(openai.AuthenticationError) as refused,
    ):
        stranger.images.generate(prompt="a red fox")

    assert refused.value.code == "unauthorized"
    assert refused.value.type == "authentication_error"


def test_an_unknown_model_is_not_found(sdk: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as refused:
        sdk.images.generate(model="no-such-model", prompt="a red fox")

    assert refused.value.code == "model_not_found"


def test_the_model_list_is_the_catalog_and_openai_names_resolve(sdk: OpenAI, service: ImageService) -> None:
    listed = sdk.models.list()

    assert {model.id for model in listed} == {spec.key for spec in service.catalog}
    assert all(model.object == "model" and model.owned_by == "imageforge" for model in listed)
    assert sdk.models.retrieve("gpt-image-1").id == "gpt-image-1"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("no-such-model")


@pytest.mark.parametrize("body", sorted(BODIES.glob("open_webui_generation_*.json")), ids=lambda path: path.stem)
def test_open_webuis_request_bodies_are_answered(served: str, body: Path) -> None:
    answer = httpx.post(
        f"{served}/v1/images/generations",
        content=body.read_bytes(),
        headers={**BEARER, "Content-Type": "application/json"},
        timeout=TIMEOUT_S,
    )

    assert answer.status_code == 200, answer.text
    [image] = answer.json()["data"]
    assert _decoded(image["b64_json"]).format == "PNG"


def test_open_webuis_edit_form_is_answered(served: str, service: ImageService) -> None:
    fields = json.loads((BODIES / "open_webui_edit.json").read_text())
    answer = httpx.post(
        f"{served}/v1/images/edits",
        data=fields,
        files=[("image", ("0b8f.png", png(), "image/png"))],
        headers=BEARER,
        timeout=TIMEOUT_S,
    )

    assert answer.status_code == 200, answer.text
    [image] = answer.json()["data"]
    assert _decoded(image["b64_json"]).size == (64, 64)
    [job] = service.list_jobs()
    assert job.payload["task"] == Task.IMG2IMG


def test_a_form_field_an_edit_refuses_is_named_as_openai_names_it(sdk: OpenAI, service: ImageService) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.images.edit(image=("photo.png", png(), "image/png"), prompt="a blue door", n=9)

    assert (refused.value.code, refused.value.param) == ("invalid_request", "n")
    assert service.list_jobs() == []


def test_several_input_images_are_refused(sdk: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.images.edit(image=[("a.png", png(), "image/png"), ("b.png", png(), "image/png")], prompt="a blue door")

    assert (refused.value.code, refused.value.param) == ("invalid_request", "image")


def test_an_error_under_v1_has_openais_shape(served: str) -> None:
    answer = httpx.post(f"{served}/v1/images/generations", json={"prompt": ""}, headers=BEARER, timeout=TIMEOUT_S)

    assert answer.status_code == 400
    error = answer.json()["error"]
    assert set(error) >= {"message", "type", "param", "code", "hint"}
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "prompt", "invalid_request")
    assert json.loads(answer.text) == {"error": error}


@pytest.mark.parametrize(("quality", "factor", "answered"), [("low", 0.5, "low"), ("hd", 2, "high")])
def test_quality_scales_the_models_default_steps(
    sdk: OpenAI, service: ImageService, quality: Literal["low", "hd"], factor: float, answered: str
) -> None:
    answer = sdk.images.generate(model="tiny", prompt="a red fox", size="64x64", quality=quality)

    [job] = service.list_jobs()
    assert job.payload["steps"] == max(1, int(service.catalog.require("tiny").default_steps * factor))
    assert answer.quality == answered


def test_low_quality_on_an_edit_keeps_one_denoising_step(sdk: OpenAI, service: ImageService) -> None:
    sdk.images.edit(image=("photo.png", png(), "image/png"), prompt="a blue door", quality="low")

    [job] = service.list_jobs()
    assert int(job.payload["steps"] * job.payload["strength"]) >= 1


def test_the_openai_user_is_recorded_in_the_audit_log(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    service = build_service(settings, audit=AuditLog(log))
    with (
        serving_app(create_app(service, api_keys=ApiKeys([("alice", KEY)]))) as url,
        OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=TIMEOUT_S) as sdk,
    ):
        sdk.images.generate(prompt="a red fox", size="64x64", user="end-user-42", extra_body=SMALL)

    [record] = [json.loads(line) for line in log.read_text().splitlines()]
    assert (record["client"], record["action"]) == ("alice", "POST /v1/images/generations")
    assert (record["openai_user"], record["outcome"]) == ("end-user-42", "ok")


def test_the_servers_model_aliases_replace_openais_names(service: ImageService) -> None:
    app = create_app(service, api_keys=ApiKeys([("alice", KEY)]), openai_model_aliases={"house-model": "tiny"})
    with (
        serving_app(app) as url,
        OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=TIMEOUT_S) as sdk,
    ):
        sdk.images.generate(model="house-model", prompt="a red fox", size="64x64", extra_body=SMALL)
        with pytest.raises(openai.NotFoundError):
            sdk.images.generate(model="gpt-image-1", prompt="a red fox")

    [job] = service.list_jobs()
    assert job.payload["model"] == "tiny"


def test_the_per_client_rate_limit_is_the_sdks_rate_limit_error(settings: Settings) -> None:
    service = build_service(settings.model_copy(update={"rate_limit": 1}))
    with (
        serving_app(create_app(service, api_keys=ApiKeys([("alice", KEY)]))) as url,
        OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=TIMEOUT_S) as sdk,
    ):
        sdk.images.generate(prompt="a red fox", size="64x64", extra_body=SMALL)
        with pytest.raises(openai.RateLimitError) as refused:
            sdk.images.generate(prompt="a red fox", size="64x64", extra_body=SMALL)

    assert (refused.value.code, refused.value.type) == ("rate_limited", "rate_limit_error")


def test_loras_are_an_extra_field_and_an_unknown_one_is_refused_with_its_code(
    sdk: OpenAI, service: ImageService, loras: Path
) -> None:
    sdk.images.generate(prompt="a red fox", size="64x64", extra_body={"loras": [{"name": "one", "weight": 0.5}]})
    with pytest.raises(openai.NotFoundError) as refused:
        sdk.images.generate(prompt="a red fox", extra_body={"loras": [{"name": "watercolour"}]})

    [job] = service.list_jobs()
    assert job.payload["loras"] == [{"name": "one", "weight": 0.5}]
    assert refused.value.code == "lora_not_found"
