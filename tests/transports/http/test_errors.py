"""Every bad input to the HTTP API is a clear 4xx with a stable code, and none of them harms the server.

Each error body is `{"ok": false, "error": {"code", "message", "hint"}}`; the tests check the status, the code,
and that the message or hint tells the client what to change.
"""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.domain import MAX_SEED
from imageforge.engine.catalog import BUILTIN_MODELS
from imageforge.transports.http.app import create_app
from tests.helpers import png_base64
from tests.loopback import LOCAL_URL

MIB = 1024 * 1024
SMALL = {"width": 64, "height": 64}


@contextmanager
def serving(settings: Settings, *, max_body_bytes: int | None = None) -> Iterator[TestClient]:
    """A client on a service built from `settings`, for tests that need other settings than the fixture's."""
    body_limit = int(settings.max_body_mb * MIB) if max_body_bytes is None else max_body_bytes
    with TestClient(create_app(build_service(settings), max_body_bytes=body_limit), base_url=LOCAL_URL) as client:
        yield client


class Response(Protocol):
    """What the tests read of a test client's response (Starlette's client is built on httpx or httpx2)."""

    @property
    def status_code(self) -> int: ...
    @property
    def text(self) -> str: ...
    def json(self) -> Any: ...


def error_of(response: Response, status: int, code: str) -> dict[str, str]:
    """The error object of `response`, after checking the status, the code and the shape of the body."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["ok"] is False
    assert set(body["error"]) == {"code", "message", "hint"}
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    error: dict[str, str] = body["error"]
    return error


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width`x`height` pixels and that carries no pixel data: a few dozen bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def write_png(path: Path, size: tuple[int, int] = (64, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 120, 30)).save(path, format="PNG")
    return path


def generate_ok(client: TestClient) -> None:
    response = client.post("/generate", json={"prompt": "still alive", "seed": 1, "use_cache": False, **SMALL})
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True


# -- sizes ------------------------------------------------------------------------------------------------


def test_width_not_multiple_of_8_is_refused_with_invalid_request(client: TestClient) -> None:
    error = error_of(client.post("/generate", json={"prompt": "x", "width": 100, "height": 64}), 400, "invalid_request")

    assert "width 100" in error["message"]
    assert "multiple of 8" in error["message"]
    assert "96" in error["hint"]


def test_height_not_multiple_of_8_is_refused_with_invalid_request(client: TestClient) -> None:
    error = error_of(client.post("/generate", json={"prompt": "x", "width": 64, "height": 76}), 400, "invalid_request")

    assert "height 76" in error["message"]
    assert "multiple of 8" in error["message"]
    assert "72" in error["hint"]


def test_size_over_max_res_is_refused_naming_the_limit(settings: Settings) -> None:
    with serving(settings.model_copy(update={"max_res": 128})) as client:
        error = error_of(
            client.post("/generate", json={"prompt": "x", "width": 136, "height": 64}), 400, "invalid_request"
        )

    assert "width 136" in error["message"]
    assert "64..128" in error["message"]
    assert "MAX_RES" in error["hint"]
    assert "128" in error["hint"]


def test_size_below_the_minimum_is_refused_naming_the_range(client: TestClient) -> None:
    error = error_of(client.post("/generate", json={"prompt": "x", "width": 64, "height": 32}), 400, "invalid_request")

    assert error["message"] == "height: Input should be greater than or equal to 64"
    assert "height: at least 64." in error["hint"]
    assert "MAX_RES" in error["hint"]


@pytest.mark.parametrize("width", [0, -64])
def test_zero_or_negative_width_is_refused_with_invalid_request(client: TestClient, width: int) -> None:
    error = error_of(
        client.post("/generate", json={"prompt": "x", "width": width, "height": 64}), 400, "invalid_request"
    )

    assert error["message"].startswith("width:")


def test_hint_for_a_misaligned_width_suggests_a_width_that_is_accepted(client: TestClient) -> None:
    error = error_of(client.post("/generate", json={"prompt": "x", "width": 65, "height": 64}), 400, "invalid_request")
    suggestion = re.search(r"e\.g\. (\d+)", error["hint"])
    assert suggestion is not None, error

    retry = client.post("/generate", json={"prompt": "x", "width": int(suggestion[1]), "height": 64})
    assert retry.status_code == 200, retry.text


def test_max_res_not_a_multiple_of_8_still_serves_requests_without_a_size(settings: Settings) -> None:
    with serving(settings.model_copy(update={"max_res": 100})) as client:
        response = client.post("/generate", json={"prompt": "x"})

    assert response.status_code == 200, response.text
    assert response.json()["width"] == 96


# -- models -----------------------------------------------------------------------------------------------


def test_unknown_model_is_refused_with_model_not_found_naming_the_keys_that_can_run(client: TestClient) -> None:
    error = error_of(client.post("/generate", json={"prompt": "x", "model": "sd-9000"}), 404, "model_not_found")

    assert "sd-9000" in error["message"]
    for spec in BUILTIN_MODELS:
        assert (spec.key in error["hint"]) == (spec.guard is None), spec.key
    assert "/models" in error["hint"]


@pytest.mark.parametrize(("model", "setting"), [("flux-q4", "ALLOW_FLUX"), ("flux2-klein", "ALLOW_KLEIN")])
def test_guarded_model_is_refused_with_model_guarded_naming_the_reason_and_setting(
    client: TestClient, model: str, setting: str
) -> None:
    error = error_of(client.post("/generate", json={"prompt": "x", "model": model}), 403, "model_guarded")

    assert model in error["message"]
    assert "16 GB" in error["message"]  # the reason: what the model needs
    assert f"{setting}=1" in error["hint"]


def test_model_without_local_weights_is_refused_with_weights_unavailable_and_server_keeps_serving(
    client: TestClient,
) -> None:
    listed = {entry["key"]: entry for entry in client.get("/models").json()["models"]}
    if listed["sd-turbo"]["weights_present"]:
        pytest.skip("sd-turbo's weights are in this machine's Hugging Face cache")

    error = error_of(
        client.post("/generate", json={"prompt": "x", "model": "sd-turbo", **SMALL}), 503, "weights_unavailable"
    )

    assert "sd-turbo" in error["message"]
    assert "stabilityai/sd-turbo" in error["message"]
    assert "imageforge models pull sd-turbo" in error["hint"]
    generate_ok(client)
    assert "sd-turbo" not in client.get("/health").json()["resident_models"]


def test_operation_the_model_does_not_support_is_refused_with_unsupported_operation(settings: Settings) -> None:
    tiny_folder = build_service(settings).pull("tiny")  # pulling needs no running service
    (settings.root_dir / "models.toml").write_text(
        f'[models.tiny-t2i]\nsource = "{tiny_folder}"\nfamily = "sd"\nsteps = 1\nsize = 64\ntasks = ["text2img"]\n'
    )
    with serving(settings) as client:
        edit = client.post("/edit", json={"prompt": "x", "model": "tiny-t2i", "init_image": png_base64()})
        inpaint = client.post(
            "/inpaint",
            json={
                "prompt": "x",
                "model": "tiny-t2i",
                "init_image": png_base64(),
                "mask_image": png_base64(mode="L", color=255),
            },
        )
        generate = client.post("/generate", json={"prompt": "x", "model": "tiny-t2i", "seed": 1})

    for response, task in ((edit, "img2img"), (inpaint, "inpaint")):
        error = error_of(response, 400, "unsupported_operation")
        assert f"'tiny-t2i' does not support {task}" in error["message"]
        assert "text2img" in error["hint"]
        assert "/models" in error["hint"]
    assert generate.status_code == 200, generate.text  # the model itself is real and works for its task
    assert (generate.json()["model"], generate.json()["width"]) == ("tiny-t2i", 64)


# -- input images -----------------------------------------------------------------------------------------


def test_malformed_base64_image_is_refused_with_invalid_image(client: TestClient) -> None:
    error = error_of(client.post("/edit", json={"prompt": "x", "init_image": "not*base64!"}), 400, "invalid_image")

    assert "init_image is not valid base64" in error["message"]
    assert "base64" in error["hint"]


def test_undecodable_image_bytes_are_refused_with_invalid_image(client: TestClient) -> None:
    garbage = base64.b64encode(b"this is not an image at all" * 10).decode()

    error = error_of(client.post("/edit", json={"prompt": "x", "init_image": garbage}), 400, "invalid_image")

    assert "init_image could not be decoded" in error["message"]
    assert "PNG" in error["hint"]


def test_truncated_png_is_refused_with_invalid_image(client: TestClient) -> None:
    whole = base64.b64decode(png_base64((64, 64)))
    truncated = base64.b64encode(whole[: len(whole) // 2]).decode()

    error = error_of(client.post("/edit", json={"prompt": "x", "init_image": truncated}), 400, "invalid_image")

    assert "init_image" in error["message"]


def test_image_in_a_format_other_than_png_jpeg_or_webp_is_refused_with_invalid_image(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="TIFF")
    tiff = base64.b64encode(buffer.getvalue()).decode()

    error = error_of(client.post("/edit", json={"prompt": "x", "init_image": tiff}), 400, "invalid_image")

    assert "PNG, JPEG or WebP" in error["hint"]


@pytest.mark.parametrize("side", [5_000, 12_000, 50_000])  # past our limit; past Pillow's warning; its error
def test_decompression_bomb_png_is_refused_with_payload_too_large(client: TestClient, side: int) -> None:
    bomb = png_claiming(side, side)
    assert len(bomb) < 100  # small on the wire, huge once decoded

    response = client.post("/edit", json={"prompt": "x", "init_image": base64.b64encode(bomb).decode()})

    error = error_of(response, 413, "payload_too_large")
    assert "init_image" in error["message"]
    assert "pixels" in error["message"]
    assert "Downscale" in error["hint"]


def test_mask_of_another_size_than_the_init_image_is_refused_with_invalid_request(client: TestClient) -> None:
    body = {"prompt": "x", "init_image": png_base64((64, 64)), "mask_image": png_base64((32, 48), 255, mode="L")}

    error = error_of(client.post("/inpaint", json=body), 400, "invalid_request")

    assert "mask_image is 32x48 but init_image is 64x64" in error["message"]
    assert "exactly the init image's size" in error["hint"]


def test_both_init_image_and_init_image_path_are_refused_with_invalid_request(
    client: TestClient, settings: Settings
) -> None:
    path = write_png(settings.output_path / "input.png")
    body = {"prompt": "x", "init_image": png_base64(), "init_image_path": str(path)}

    error = error_of(client.post("/edit", json=body), 400, "invalid_request")

    assert "exactly one of init_image (base64) or init_image_path" in error["message"]


def test_edit_without_any_init_image_is_refused_with_invalid_request(client: TestClient) -> None:
    error = error_of(client.post("/edit", json={"prompt": "x"}), 400, "invalid_request")

    assert "init_image" in error["message"]
    assert "required" in error["hint"]


def test_inpaint_without_a_mask_is_refused_with_invalid_request(client: TestClient) -> None:
    error = error_of(client.post("/inpaint", json={"prompt": "x", "init_image": png_base64()}), 400, "invalid_request")

    assert "mask_image" in error["message"]


# -- payload size -----------------------------------------------------------------------------------------


def test_body_over_max_body_mb_with_declared_length_is_refused_with_payload_too_large(settings: Settings) -> None:
    with serving(settings.model_copy(update={"max_body_mb": 0.25})) as client:
        response = client.post("/generate", json={"prompt": "x" * (300 * 1024)})
        assert int(response.request.headers["content-length"]) > MIB // 4
        error = error_of(response, 413, "payload_too_large")
        assert client.post("/generate", json={"prompt": "x", "width": 63}).json()["error"]["code"] == "invalid_request"

    assert "0.25 MiB" in error["message"]
    assert "IMAGEFORGE_MAX_BODY_MB" in error["hint"]


def test_streamed_body_over_max_body_mb_without_length_is_refused_with_payload_too_large(settings: Settings) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(5):
            yield b"x" * (64 * 1024)
        yield b'"}'

    with serving(settings.model_copy(update={"max_body_mb": 0.25})) as client:
        request = client.build_request(
            "POST", "/generate", content=chunks(), headers={"content-type": "application/json"}
        )
        assert "content-length" not in request.headers
        response = client.send(request)
        error = error_of(response, 413, "payload_too_large")
        assert client.post("/generate", json={"prompt": "x", "width": 63}).json()["error"]["code"] == "invalid_request"

    assert "0.25 MiB" in error["message"]
    assert "IMAGEFORGE_MAX_BODY_MB" in error["hint"]


def test_base64_image_over_the_image_limit_is_refused_with_payload_too_large(settings: Settings) -> None:
    # The image limit follows IMAGEFORGE_MAX_BODY_MB; a wider body limit shows the image check on its own.
    with serving(settings.model_copy(update={"max_body_mb": 0.0625}), max_body_bytes=MIB) as client:
        large = base64.b64encode(bytes(100 * 1024)).decode()
        error = error_of(client.post("/edit", json={"prompt": "x", "init_image": large}), 413, "payload_too_large")

    assert "init_image is larger than 0.0625 MiB" in error["message"]
    assert "smaller image" in error["hint"]


def test_input_file_over_the_image_limit_is_refused_with_payload_too_large(settings: Settings) -> None:
    large = settings.output_path / "large.png"
    large.parent.mkdir(parents=True)
    large.write_bytes(bytes(100 * 1024))

    with serving(settings.model_copy(update={"max_body_mb": 0.0625})) as client:
        error = error_of(
            client.post("/edit", json={"prompt": "x", "init_image_path": str(large)}), 413, "payload_too_large"
        )

    assert "init_image is larger than 0.0625 MiB" in error["message"]


# -- numbers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [0, -1])
def test_steps_below_one_are_refused_with_what_the_declaration_accepts(client: TestClient, steps: int) -> None:
    error = error_of(client.post("/generate", json={"prompt": "x", "steps": steps, **SMALL}), 400, "invalid_request")

    assert error["message"] == "steps: Input should be greater than or equal to 1"
    assert "steps: at least 1." in error["hint"]


def test_steps_over_max_steps_are_refused_with_invalid_request(client: TestClient) -> None:
    error = error_of(client.post("/generate", json={"prompt": "x", "steps": 101, **SMALL}), 400, "invalid_request")

    assert "steps 101 is out of range" in error["message"]
    assert "1 to 100" in error["hint"]


def test_steps_above_a_configured_max_steps_are_refused_naming_that_maximum(settings: Settings) -> None:
    with serving(settings.model_copy(update={"max_steps": 8})) as client:
        error = error_of(client.post("/generate", json={"prompt": "x", "steps": 9, **SMALL}), 400, "invalid_request")

    assert "steps 9" in error["message"]
    assert "1 to 8" in error["hint"]


def test_steps_times_strength_below_one_on_edit_is_refused_with_invalid_request(client: TestClient) -> None:
    body = {"prompt": "x", "init_image": png_base64(), "steps": 2, "strength": 0.3}

    error = error_of(client.post("/edit", json=body), 400, "invalid_request")

    assert "steps 2 at strength 0.3 leaves no denoising step" in error["message"]
    assert "at least 4 steps" in error["hint"]


@pytest.mark.parametrize("strength", [0.0, -0.5, 1.5])
def test_strength_out_of_range_is_refused_with_invalid_request(client: TestClient, strength: float) -> None:
    body = {"prompt": "x", "init_image": png_base64(), "strength": strength}

    error = error_of(client.post("/edit", json=body), 400, "invalid_request")

    assert error["message"].startswith("strength: Input should be")
    assert "strength: more than 0 and at most 1." in error["hint"]


@pytest.mark.parametrize("guidance", [-1.0, 30.5])
def test_guidance_out_of_range_is_refused_with_invalid_request(client: TestClient, guidance: float) -> None:
    error = error_of(
        client.post("/generate", json={"prompt": "x", "guidance": guidance, **SMALL}), 400, "invalid_request"
    )

    assert error["message"].startswith("guidance: Input should be")
    assert "guidance: at least 0 and at most 30." in error["hint"]


def test_non_finite_guidance_is_refused_with_invalid_request(client: TestClient) -> None:
    # Python's JSON parser accepts the NaN literal; the service must not pass it to the model.
    response = client.post(
        "/generate", content=b'{"prompt": "x", "guidance": NaN}', headers={"content-type": "application/json"}
    )

    error = error_of(response, 400, "invalid_request")
    assert "guidance" in error["message"]


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 10**30])
def test_seed_out_of_range_is_refused_with_invalid_request(client: TestClient, seed: int) -> None:
    error = error_of(client.post("/generate", json={"prompt": "x", "seed": seed, **SMALL}), 400, "invalid_request")

    assert error["message"].startswith("seed: Input should be")
    assert f"seed: at least 0 and at most {MAX_SEED}." in error["hint"]


# -- prompt and body --------------------------------------------------------------------------------------


def test_empty_prompt_is_refused_with_invalid_request(client: TestClient) -> None:
    error = error_of(client.post("/generate", json={"prompt": "", **SMALL}), 400, "invalid_request")

    assert error["message"].startswith("prompt:")
    assert "at least 1 character" in error["message"]


def test_whitespace_prompt_is_refused_with_invalid_request(client: TestClient) -> None:
    error = error_of(client.post("/generate", json={"prompt": " \n\t ", **SMALL}), 400, "invalid_request")

    assert "prompt is empty" in error["message"]
    assert "Describe the image" in error["hint"]


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_over_long_prompt_is_refused_with_invalid_request(client: TestClient, field: str) -> None:
    body = {"prompt": "x", field: "a" * 4001, **SMALL}

    error = error_of(client.post("/generate", json=body), 400, "invalid_request")

    assert error["message"] == f"{field}: String should have at most 4000 characters"
    assert "at most 4000 characters" in error["hint"]


def test_unknown_extra_field_is_refused_naming_the_field(client: TestClient) -> None:
    error = error_of(client.post("/generate", json={"prompt": "x", "sampler_name": "Euler"}), 400, "invalid_request")

    assert "sampler_name: Extra inputs are not permitted" in error["message"]
    assert "/docs" in error["hint"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x", "width": "wide"}, "width"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "x", "seed": 1.5}, "seed"),
        ({"prompt": "x", "steps": [2]}, "steps"),
        ({"prompt": "x", "return_mode": "url"}, "return_mode"),
        ({"prompt": "x", "use_cache": "sometimes"}, "use_cache"),
        ({"width": 64}, "prompt"),
    ],
)
def test_wrong_json_types_are_refused_naming_the_field(client: TestClient, body: dict[str, Any], field: str) -> None:
    error = error_of(client.post("/generate", json=body), 400, "invalid_request")

    assert error["message"].startswith(f"{field}:")
    assert error["hint"].startswith(f"{field}:"), "the hint says what the declaration accepts"


@pytest.mark.parametrize("payload", [[1, 2], "a prompt", None])
def test_json_that_is_not_an_object_is_refused_with_invalid_request(client: TestClient, payload: Any) -> None:
    error = error_of(client.post("/generate", json=payload), 400, "invalid_request")

    assert error["message"].startswith("body:")


def test_non_json_body_is_refused_with_invalid_request(client: TestClient) -> None:
    response = client.post("/generate", content=b"prompt=a fox", headers={"content-type": "application/json"})

    error = error_of(response, 400, "invalid_request")
    assert "not valid JSON" in error["message"]
    assert "at character 0" in error["message"]
    assert "JSON body" in error["hint"]


def test_body_that_is_not_text_is_refused_with_invalid_request(client: TestClient) -> None:
    response = client.post("/generate", content=b"\xff\xfe\x00{garbage", headers={"content-type": "application/json"})

    error = error_of(response, 400, "invalid_request")
    assert "JSON body" in error["hint"]


def test_missing_body_is_refused_with_invalid_request(client: TestClient) -> None:
    error = error_of(client.post("/generate"), 400, "invalid_request")

    assert "Field required" in error["message"]


# -- paths ------------------------------------------------------------------------------------------------


def test_absolute_path_outside_the_allowed_roots_is_refused_with_path_forbidden(client: TestClient) -> None:
    error = error_of(
        client.post("/edit", json={"prompt": "x", "init_image_path": "/etc/passwd"}), 403, "path_forbidden"
    )

    assert "'/etc/passwd' is outside the folders this server may read" in error["message"]
    assert "IMAGEFORGE_INPUT_DIRS" in error["hint"]
    assert "base64" in error["hint"]


@pytest.mark.parametrize("relative", [True, False])
def test_dotdot_escape_from_the_output_folder_is_refused_with_path_forbidden(
    client: TestClient, settings: Settings, relative: bool
) -> None:
    write_png(settings.root_dir / "secret.png")  # a real image, just outside the output folder
    settings.output_path.mkdir(parents=True, exist_ok=True)
    escape = "outputs/../secret.png" if relative else f"{settings.output_path}/../secret.png"

    error = error_of(client.post("/edit", json={"prompt": "x", "init_image_path": escape}), 403, "path_forbidden")

    assert escape in error["message"]


def test_symlink_inside_the_output_folder_pointing_outside_is_refused_with_path_forbidden(
    client: TestClient, settings: Settings
) -> None:
    secret = write_png(settings.root_dir / "secret.png")
    link = settings.output_path / "innocent.png"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(secret)

    error = error_of(client.post("/edit", json={"prompt": "x", "init_image_path": str(link)}), 403, "path_forbidden")

    assert "innocent.png" in error["message"]


def test_missing_file_inside_the_allowed_roots_is_refused_saying_it_does_not_exist(
    client: TestClient, settings: Settings
) -> None:
    missing = settings.output_path / "never-made.png"

    error = error_of(
        client.post("/edit", json={"prompt": "x", "init_image_path": str(missing)}), 400, "invalid_request"
    )

    assert "never-made.png' does not exist" in error["message"]
    assert "Check the path" in error["hint"]


def test_folder_inside_the_allowed_roots_is_refused_as_not_a_file(client: TestClient, settings: Settings) -> None:
    (settings.output_path / "album").mkdir(parents=True)

    error = error_of(
        client.post("/edit", json={"prompt": "x", "init_image_path": "outputs/album"}), 400, "invalid_request"
    )

    assert "'outputs/album' is not a file" in error["message"]


@pytest.mark.parametrize(
    "raw",
    ["outputs/a\x00b.png", "outputs/" + "a" * 300 + ".png", "outputs/" + "b/" * 3000],
    ids=["nul-byte", "name-too-long", "path-too-long"],
)
def test_unusable_path_strings_are_refused_with_invalid_request(client: TestClient, raw: str) -> None:
    error = error_of(client.post("/edit", json={"prompt": "x", "init_image_path": raw}), 400, "invalid_request")

    assert "init_image_path" in error["message"]


def test_a_tilde_user_path_answers_the_same_whether_the_user_exists_or_not(client: TestClient) -> None:
    # `root` exists on every Unix machine; expanding `~name` would read the password database and tell them apart.
    answers = [
        error_of(client.post("/edit", json={"prompt": "x", "init_image_path": f"~{user}/a.png"}), 403, "path_forbidden")
        for user in ("root", "no-such-user-imageforge")
    ]

    assert [answer["hint"] for answer in answers] == [answers[0]["hint"]] * 2
    assert all("/root" not in answer["message"] for answer in answers)


LONE_SURROGATE = "a \udfff b"


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/generate", {"prompt": "x", "negative_prompt": LONE_SURROGATE}, "negative_prompt"),
        ("/generate", {"prompt": "x", "model": LONE_SURROGATE}, "model"),
        ("/jobs", {"prompt": "x", "negative_prompt": LONE_SURROGATE}, "negative_prompt"),
        ("/edit", {"prompt": "x", "init_image_path": LONE_SURROGATE}, "init_image_path"),
        ("/inpaint", {"prompt": "x", "init_image": "AAAA", "mask_image_path": LONE_SURROGATE}, "mask_image_path"),
        ("/assist", {"prompt": "x", "style": LONE_SURROGATE}, "style"),
    ],
    ids=["negative-prompt", "model", "job", "init-path", "mask-path", "assist-style"],
)
def test_text_that_is_not_valid_unicode_is_refused_before_any_work(
    client: TestClient, settings: Settings, route: str, body: dict[str, str], field: str
) -> None:
    # Python's json writes the lone surrogate as the escape \udfff, as a hostile client would send it.
    response = client.post(route, content=json.dumps(body), headers={"Content-Type": "application/json"})

    error = error_of(response, 400, "invalid_request")
    assert field in error["message"]
    # Constrained text (prompts) is refused by the schema, other text by the service: both say it is not Unicode.
    assert "surrogate" in error["message"] or "unicode" in error["message"]
    assert client.get("/jobs").json()["jobs"] == []
    assert not settings.output_path.exists() or not any(settings.output_path.iterdir())


def test_input_dirs_make_an_extra_folder_readable(settings: Settings) -> None:
    picture = write_png(settings.root_dir / "photos" / "cat.png")
    body = {"prompt": "x", "init_image_path": str(picture), "seed": 1}

    with serving(settings) as client:
        error_of(client.post("/edit", json=body), 403, "path_forbidden")
    with serving(settings.model_copy(update={"input_dirs": [Path("photos")]})) as client:
        response = client.post("/edit", json=body)

    assert response.status_code == 200, response.text
    assert (response.json()["task"], response.json()["width"]) == ("img2img", 64)


# -- routes -----------------------------------------------------------------------------------------------


def test_unknown_route_is_a_404_in_the_error_shape(client: TestClient) -> None:
    error = error_of(client.get("/generat"), 404, "not_found")

    assert "GET /generat" in error["message"]
    assert "/docs" in error["hint"]


def test_wrong_method_is_a_405_in_the_error_shape_naming_the_allowed_method(client: TestClient) -> None:
    response = client.get("/generate")

    error = error_of(response, 405, "method_not_allowed")
    assert "/generate does not accept GET" in error["message"]
    assert "POST" in error["hint"]
    assert response.headers["allow"] == "POST"


# -- resilience -------------------------------------------------------------------------------------------


def test_server_keeps_generating_after_a_barrage_of_bad_requests(client: TestClient, settings: Settings) -> None:
    bomb = base64.b64encode(png_claiming(60_000, 60_000)).decode()
    json_requests: list[tuple[str, Any]] = [
        ("/generate", {"prompt": "x", "width": 65}),
        ("/generate", {"prompt": "x", "width": 4096, "height": 4096}),
        ("/generate", {"prompt": "x", "model": "nope"}),
        ("/generate", {"prompt": "x", "model": "flux-q4"}),
        ("/generate", {"prompt": "x", "steps": 10**9}),
        ("/generate", {"prompt": "x", "seed": -(10**40)}),
        ("/generate", {"prompt": "x", "guidance": 1e308}),
        ("/generate", {"prompt": "\x00" * 5000}),
        ("/generate", {"prompt": {"nested": ["x"]}}),
        ("/generate", [None]),
        ("/edit", {"prompt": "x", "init_image": "=" * 64}),
        ("/edit", {"prompt": "x", "init_image": bomb}),
        ("/edit", {"prompt": "x", "init_image": "data:image/png;base64,"}),
        ("/edit", {"prompt": "x", "init_image_path": "/dev/zero"}),
        ("/edit", {"prompt": "x", "init_image_path": "../../../../proc/self/environ"}),
        ("/edit", {"prompt": "x", "init_image_path": str(settings.output_path)}),
        ("/edit", {"prompt": "x", "init_image": png_base64(), "strength": -1e308}),
        ("/inpaint", {"prompt": "x", "init_image": png_base64(), "mask_image": bomb}),
        ("/inpaint", {"prompt": "x", "init_image": png_base64(), "mask_image": png_base64((8, 8))}),
    ]
    for path, payload in json_requests:
        response = client.post(path, json=payload)
        assert 400 <= response.status_code < 500, (path, payload, response.text)
        assert response.json()["ok"] is False
    for raw in (b"", b"{", b"]", b'{"prompt": "x"', b"\x00\x01\x02"):
        response = client.post("/generate", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 400, (raw, response.text)

    generate_ok(client)
    assert client.get("/health").json()["status"] == "ok"
