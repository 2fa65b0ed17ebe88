"""ArtifactCache: seeded results addressed by the hash of everything that changes their pixels."""

from __future__ import annotations

from pathlib import Path

from imageforge.storage.cache import ArtifactCache, cache_key


def test_cache_key_ignores_key_order_but_not_values() -> None:
    assert cache_key({"seed": 1, "prompt": "a"}) == cache_key({"prompt": "a", "seed": 1})
    assert cache_key({"seed": 1, "prompt": "a"}) != cache_key({"seed": 2, "prompt": "a"})
    assert cache_key({"seed": 1, "steps": None}) != cache_key({"seed": 1})


def test_put_then_get_returns_the_same_bytes_and_record(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    key = cache_key({"seed": 1})

    assert cache.get(key) is None
    cache.put(key, b"png bytes", {"seed": 1, "output_path": "/x.png"})

    assert cache.get(key) == (b"png bytes", {"seed": 1, "output_path": "/x.png"})
    assert (tmp_path / key[:2] / f"{key}.png").is_file()


def test_a_record_without_its_image_or_a_corrupt_record_is_a_miss(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    key = cache_key({"seed": 2})
    cache.put(key, b"png", {"seed": 2})

    (tmp_path / key[:2] / f"{key}.json").write_text("{not json")
    assert cache.get(key) is None

    cache.put(key, b"png", {"seed": 2})
    (tmp_path / key[:2] / f"{key}.png").unlink()
    assert cache.get(key) is None
