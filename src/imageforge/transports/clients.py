"""Who is asking: the identity per-client limits and the audit log count by, the same for every transport."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imageforge.jobs.job import LOCAL_CLIENT


def client_of(scope: Mapping[str, Any]) -> str:
    """The caller of an ASGI request: its API key's name when keys are on, else its peer address.

    A request with neither (a Unix socket) is the local user's, as are the CLI and MCP over stdio.
    """
    name = scope.get("state", {}).get("api_key_name")
    if name:
        return str(name)
    peer = scope.get("client")
    return str(peer[0]) if peer else LOCAL_CLIENT
