"""An image result read back from a job's record: every surface's description comes from it."""

from __future__ import annotations

from imageforge.domain import ImageDescription, ImageResult, Task

RECORD = {
    "task": "img2img",
    "model": "tiny",
    "seed": 7,
    "steps": 2,
    "guidance": 0.0,
    "width": 64,
    "height": 64,
    "strength": 0.5,
    "prompt": "a fox, watercolor",
    "original_prompt": "a fox",
    "negative_prompt": "blurry",
    "assisted": True,
    "cached": False,
    "elapsed_s": 1.5,
    "output_path": "/data/outputs/x.png",
    "assist": {"source": "ollama", "reason": "", "tags": []},
    "runtime": {"dtype": "float32"},
    "model_source": "builtin:tiny",
    "created_at": "2026-12-05T00:00:00+00:00",
}


def test_a_record_becomes_a_result_whose_description_leaves_out_the_bytes_and_the_path() -> None:
    result = ImageResult.from_record(RECORD, b"png")
    described = result.described()

    assert type(described) is ImageDescription
    assert described.task is Task.IMG2IMG
    assert (described.seed, described.strength, described.assist) == (7, 0.5, RECORD["assist"])
    assert "output_path" not in described.model_dump()
    assert "png" not in result.model_dump()
    assert result.png == b"png"
    assert result.output_path == RECORD["output_path"]


def test_a_record_from_an_older_version_without_the_newer_fields_still_reads() -> None:
    old = {name: RECORD[name] for name in ("task", "model", "seed", "steps", "guidance", "width", "height", "prompt")}

    result = ImageResult.from_record(old, b"png")

    assert (result.original_prompt, result.negative_prompt, result.strength) == ("a fox, watercolor", "", None)
    assert (result.cached, result.assisted, result.elapsed_s, result.decoder) == (False, False, 0.0, "full")


def test_a_record_of_several_images_reads_as_the_first_with_every_image_and_its_png() -> None:
    images = [
        {"seed": 7, "output_path": "/data/outputs/x.png", "cached": False, "elapsed_s": 1.5},
        {"seed": 8, "output_path": "/data/outputs/y.png", "cached": True, "elapsed_s": 0.0},
    ]

    result = ImageResult.from_images({**RECORD, "images": images}, [b"x", b"y"])

    assert (result.seed, result.png, result.output_path) == (7, b"x", "/data/outputs/x.png")
    assert [(image.seed, image.png, image.cached) for image in result.images] == [(7, b"x", False), (8, b"y", True)]
    assert [image.prompt for image in result.images] == [RECORD["prompt"]] * 2, "the request's fields are shared"
    assert "images" not in result.model_dump()


def test_a_record_from_before_count_reads_as_its_one_image() -> None:
    result = ImageResult.from_images(RECORD, [b"png"])

    assert [(image.seed, image.output_path) for image in result.images] == [(7, RECORD["output_path"])]
