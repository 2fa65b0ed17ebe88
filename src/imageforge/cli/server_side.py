"""Whether this installation has imageforge's server side: the engine (torch, diffusers) and the HTTP server.

`pip install imageforge` is the client side only, a few tens of MB: the CLI and the Python client against a
server, and the MCP relay (`imageforge mcp` beside a server or with --remote, the Claude Desktop extension).
`pip install 'imageforge[server]'` (what ./start.sh installs) adds the GBs that generate. A command that would
run the engine in its own process checks first, and says what to do instead of failing at the first import.
"""

from __future__ import annotations

from imageforge.errors import ServerSideMissing
from imageforge.extras import EXTRA_MODULES, install_line, missing

#: What the `server` extra brings that the client side lacks, by import name.
SERVER_SIDE_MODULES = EXTRA_MODULES["server"]


def require_server_side(doing: str) -> None:
    """Raise `ServerSideMissing` when the engine or the HTTP server is not installed; `doing` says what needs it."""
    lacking = missing("server")
    if lacking:
        raise server_side_missing(doing, lacking)


def require_distributed(doing: str) -> None:
    """Raise `ServerSideMissing` when the distributed queue's libraries (Celery, redis) are not installed."""
    lacking = missing("distributed")
    if lacking:
        raise ServerSideMissing(
            f"{doing} on the shared queue needs Celery and redis, which this install lacks ({', '.join(lacking)}).",
            hint=f"Install them with {install_line('server', 'distributed')} (./start.sh worker does, and "
            "./start.sh serve with --queue or IMAGEFORGE_QUEUE_URL).",
        )


def server_side_missing(doing: str, lacking: list[str]) -> ServerSideMissing:
    """The refusal of `doing` on an install that lacks the `lacking` modules of the server side."""
    return ServerSideMissing(
        f"{doing} needs imageforge's server side, and this is the client-only install ({', '.join(lacking)} missing).",
        hint=f"Install it with {install_line('server')} (./start.sh does), or use a server running "
        "elsewhere: imageforge mcp --remote URL, imageforge generate --server URL.",
    )
