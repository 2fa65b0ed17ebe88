"""imageforge's optional features and the extras of pyproject.toml that install them, so that a feature whose
packages are missing says the exact `pip install` line that brings them.

`pip install imageforge` is the client side; `server` adds the engine and the HTTP server; `distributed` the job
queue across machines (Celery, Redis); `gguf` the GGUF-quantised transformers (`flux-q4`); `tracing`
OpenTelemetry. The OpenVINO runtime adds its own extra here when it lands.
"""

from __future__ import annotations

import importlib.util
import sys

#: The import names each extra brings that a feature checks for before it starts.
EXTRA_MODULES: dict[str, frozenset[str]] = {
    "server": frozenset(
        {"torch", "diffusers", "transformers", "accelerate", "peft", "safetensors", "huggingface_hub", "fastapi"}
    ),
    "distributed": frozenset({"celery", "kombu", "redis"}),
    "gguf": frozenset({"gguf"}),
    "tracing": frozenset({"opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"}),
}


def install_line(*extras: str) -> str:
    """The pip command that installs `extras`: `pip install 'imageforge[server,distributed]'`."""
    return f"pip install 'imageforge[{','.join(extras)}]'"


def missing(extra: str) -> list[str]:
    """The import names of `extra` that this installation lacks, sorted; empty when it is installed."""
    return sorted(name for name in EXTRA_MODULES[extra] if not installed(name))


def installed(name: str) -> bool:
    """Whether the module `name` can be imported here, without importing it (its parent packages aside)."""
    if sys.modules.get(name) is not None:
        # Imported already. kombu swaps its module for a lazy one without `__spec__`, which find_spec refuses.
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
