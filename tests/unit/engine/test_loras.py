"""The LoRA folder: requests name `.safetensors` files of one folder, never a path, never a pickle."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from imageforge.engine.loras import LoraFolder
from imageforge.errors import LoraNotFound, PathForbidden, UnsafeWeights


@pytest.fixture
def folder(tmp_path: Path) -> LoraFolder:
    root = tmp_path / "loras"
    root.mkdir()
    (root / "ink.safetensors").write_bytes(b"ink")
    (root / "old.ckpt").write_bytes(b"pickle")
    (root / "older.pt").write_bytes(b"pickle")
    (root / ".hidden.safetensors").write_bytes(b"hidden")
    (root / "nested").mkdir()
    (root / "nested" / "deep.safetensors").write_bytes(b"deep")
    (tmp_path / "outside.safetensors").write_bytes(b"outside")
    return LoraFolder(root)


def test_the_listing_shows_the_safetensors_files_of_the_folder_only(folder: LoraFolder) -> None:
    assert [lora.name for lora in folder.catalog().loras] == ["ink"]


def test_a_missing_folder_lists_no_lora_and_finds_none(tmp_path: Path) -> None:
    folder = LoraFolder(tmp_path / "absent")

    assert folder.catalog().loras == []
    with pytest.raises(LoraNotFound):
        folder.find("ink")


def test_a_lora_is_found_by_its_name_with_or_without_the_suffix_and_its_digest(folder: LoraFolder) -> None:
    found = folder.find("ink")

    assert found.path == folder.root / "ink.safetensors"
    assert folder.find("ink.safetensors") == found
    assert found.sha256 == hashlib.sha256(b"ink").hexdigest()


def test_replacing_a_lora_file_changes_its_digest(folder: LoraFolder) -> None:
    before = folder.find("ink").sha256
    (folder.root / "ink.safetensors").write_bytes(b"another ink, longer")

    assert folder.find("ink").sha256 != before


def test_an_unknown_name_is_lora_not_found_with_a_hint(folder: LoraFolder) -> None:
    with pytest.raises(LoraNotFound) as raised:
        folder.find("watercolour")

    assert raised.value.code == "lora_not_found"
    assert "GET /loras" in raised.value.hint


@pytest.mark.parametrize("name", ["old", "old.ckpt", "older", "older.pt", "new.pth"])
def test_a_pickled_lora_is_refused_as_unsafe_weights(folder: LoraFolder, name: str) -> None:
    with pytest.raises(UnsafeWeights) as raised:
        folder.find(name)

    assert raised.value.code == "unsafe_weights"
    assert ".safetensors" in raised.value.hint


@pytest.mark.parametrize("name", ["../outside", "nested/deep", "nested\\deep", "/etc/passwd", ".hidden", "..", "ink\0"])
def test_a_name_that_is_a_path_is_refused_even_where_the_file_exists(folder: LoraFolder, name: str) -> None:
    with pytest.raises(PathForbidden) as raised:
        folder.find(name)

    assert raised.value.code == "path_forbidden"
