"""OutputStore: every result as a PNG that carries its own parameters, plus a JSON sidecar."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from PIL import Image

from imageforge.storage.outputs import OutputStore, encode_png, read_record

RECORD = {
    "task": "img2img",
    "model": "tiny",
    "prompt": "a red fox",
    "negative_prompt": "blur",
    "seed": 42,
    "steps": 4,
    "guidance": 1.5,
    "width": 64,
    "height": 32,
    "strength": 0.6,
    "sampler": "dpmpp_2m",
    "schedule": "karras",
}


def _png() -> bytes:
    return encode_png(Image.new("RGB", (64, 32), (10, 20, 30)), RECORD)


def test_png_carries_the_record_and_automatic1111s_parameters_text() -> None:
    png = _png()

    assert read_record(png) == RECORD
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (64, 32)
        text = image.info["parameters"]
    assert text.splitlines()[0] == "a red fox"
    assert text.splitlines()[1] == "Negative prompt: blur"
    assert text.splitlines()[2] == (
        "Steps: 4, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 1.5, Seed: 42, Size: 64x32, Model: tiny, "
        "Denoising strength: 0.6"
    )


def test_read_record_of_a_foreign_png_is_empty() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")

    assert read_record(buffer.getvalue()) == {}


def test_save_names_files_by_time_and_random_suffix_never_by_input(tmp_path: Path) -> None:
    store = OutputStore(tmp_path / "outputs")

    first = store.save(_png(), {**RECORD, "prompt": "../../etc/passwd"})
    second = store.save(_png(), RECORD)

    for path in (first, second):
        assert path.parent == tmp_path / "outputs"
        assert re.fullmatch(r"\d{8}_\d{6}_[0-9a-f]{6}\.png", path.name)
    assert first != second


def test_save_writes_the_png_and_a_sidecar_naming_it(tmp_path: Path) -> None:
    store = OutputStore(tmp_path)
    png = _png()

    path = store.save(png, RECORD)

    assert path.read_bytes() == png
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar == {**RECORD, "output_path": str(path)}
    assert not list(tmp_path.glob("*.tmp")), "no temporary files are left behind"
