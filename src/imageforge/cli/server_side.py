"""Whether this installation has imageforge's server side: the engine (torch, diffusers) and the HTTP server.

`pip install imageforge` is the client side only, a few tens of MB: the CLI and the Python client against a
server, and the MCP relay (`imageforge mcp` beside a server or with --remote, the Claude Desktop extension).
`pip install 'imageforge[server]'` (what ./start.sh installs) adds the GBs that generate. A command that would
run the engine in its own process checks first, and says what to do instead of failing at the first import.
"""

from __future__ import annotations

import importlib.util
import sys

from imageforge.errors import ServerSideMissing

#: What the `server` extra brings that the client side lacks, by import name.
SERVER_SIDE_MODULES = frozenset(
    {"torch", "diffusers", "transformers", "accelerate", "peft", "safetensors", "huggingface_hub", "fastapi"}
)


def require_server_side(doing: str) -> None:
    """Raise `ServerSideMissing` when the engine or the HTTP server is not installed; `doing` says what needs it."""
    missing = sorted(name for name in SERVER_SIDE_MODULES if not _installed(name))
    if missing:
        raise server_side_missing(doing, missing)


#: What the `distributed` extra brings: the job queue across machines (`--queue`), by import name.
DISTRIBUTED_MODULES = frozenset({"celery", "kombu", "redis"})


def require_distributed(doing: str) -> None:
    """Raise `ServerSideMissing` when the distributed queue's libraries (Celery, redis) are not installed."""
    missing = sorted(name for name in DISTRIBUTED_MODULES if not _installed(name))
    if missing:
        raise ServerSideMissing(
            f"{doing} on the shared queue needs Celery and redis, which this install lacks ({', '.join(missing)}).",
            hint="Install them with pip install 'imageforge[server,distributed]' (./start.sh worker does, and "
            "./start.sh serve with --queue or IMAGEFORGE_QUEUE_URL).",
        )


def server_side_missing(doing: str, missing: list[str]) -> ServerSideMissing:
    """The refusal of `doing` on an install that lacks the `missing` modules of the server side."""
    return ServerSideMissing(
        f"{doing} needs imageforge's server side, and this is the client-only install ({', '.join(missing)} missing).",
        hint="Install it with pip install 'imageforge[server]' (./start.sh does), or use a server running "
        "elsewhere: imageforge mcp --remote URL, imageforge generate --server URL.",
    )


def _installed(name: str) -> bool:
    if sys.modules.get(name) is not None:
        # Imported already. kombu swaps its module for a lazy one without `__spec__`, which find_spec refuses.
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
