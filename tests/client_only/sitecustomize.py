"""A Python process started with this folder on PYTHONPATH cannot import imageforge's server side (the `server`
extra: torch, diffusers, transformers, fastapi, ...), as in an install of the client side only: the test suite's
environment has everything installed, and this takes it away again for one subprocess."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

#: The import names of what only `pip install 'imageforge[server]'` brings.
SERVER_SIDE = frozenset(
    {"torch", "diffusers", "transformers", "accelerate", "peft", "safetensors", "huggingface_hub", "fastapi"}
)
#: What this process lacks: the server side, or the import names in IMAGEFORGE_TEST_ABSENT (comma-separated),
#: which stands for another extra left out (the `distributed` one: celery,kombu,redis).
ABSENT = frozenset(filter(None, os.environ.get("IMAGEFORGE_TEST_ABSENT", "").split(","))) or SERVER_SIDE


class ServerSideAbsent(MetaPathFinder):
    """Answers every import of a server-side package as a package that is not installed."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname.partition(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


sys.meta_path.insert(0, ServerSideAbsent())
