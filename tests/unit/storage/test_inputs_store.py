"""FolderInputStore: decoded input images once each by the digest of their pixels, read back exactly."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from PIL import Image

from imageforge.errors import InputMissing, StorageFull
from imageforge.storage import files
from imageforge.storage.inputs import FolderInputStore, image_digest


def _noise(mode: str, size: tuple[int, int] = (48, 32)) -> Image.Image:
    return Image.effect_noise(size, 64).convert(mode)


def _stored_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.png"))


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_an_image_put_twice_is_stored_once_and_read_back_pixel_for_pixel(tmp_path: Path, mode: str) -> None:
    store = FolderInputStore(tmp_path / "inputs")
    image = _noise(mode)

    digest = store.put(image)
    assert store.put(image.copy()) == digest == image_digest(image)

    assert len(_stored_files(store.root)) == 1
    read = store.get(digest)
    assert (read.mode, read.size, read.tobytes()) == (mode, image.size, image.tobytes())


def test_equal_pixels_in_another_mode_or_shape_are_another_image(tmp_path: Path) -> None:
    store = FolderInputStore(tmp_path / "inputs")
    grey = Image.new("L", (64, 32), 7)

    digests = {store.put(grey), store.put(grey.convert("RGB")), store.put(Image.new("L", (32, 64), 7))}

    assert len(digests) == 3


@pytest.mark.parametrize("digest", ["0" * 64, "../../jobs", "A" * 64, ""])
def test_an_unknown_or_malformed_digest_is_input_missing(tmp_path: Path, digest: str) -> None:
    store = FolderInputStore(tmp_path / "inputs")

    with pytest.raises(InputMissing) as raised:
        store.get(digest)

    assert "submit the request again" in raised.value.hint.lower()


def test_a_damaged_or_replaced_file_is_input_missing_not_another_image(tmp_path: Path) -> None:
    store = FolderInputStore(tmp_path / "inputs")
    damaged, replaced = store.put(_noise("RGB")), store.put(_noise("L"))
    [path_damaged] = store.root.rglob(f"{damaged}.png")
    path_damaged.write_bytes(path_damaged.read_bytes()[:100])
    [path_replaced] = store.root.rglob(f"{replaced}.png")
    Image.new("L", (48, 32), 0).save(path_replaced)

    for digest in (damaged, replaced):
        with pytest.raises(InputMissing):
            store.get(digest)


def test_delete_removes_that_image_only(tmp_path: Path) -> None:
    store = FolderInputStore(tmp_path / "inputs")
    kept, removed = store.put(_noise("RGB")), store.put(_noise("RGB"))

    store.delete(removed)
    store.delete(removed)  # already gone: nothing to do
    store.delete("../outside")

    assert store.get(kept).size == (48, 32)
    with pytest.raises(InputMissing):
        store.get(removed)


def test_a_full_disk_is_storage_full_naming_the_data_dir_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(folder: Path, data: bytes, prefix: str) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "write_temporary", full)
    store = FolderInputStore(tmp_path / "inputs")

    with pytest.raises(StorageFull) as raised:
        store.put(_noise("RGB"))

    assert "IMAGEFORGE_DATA_DIR" in raised.value.message
    assert str(tmp_path) not in raised.value.message + raised.value.hint
    assert _stored_files(tmp_path) == []
