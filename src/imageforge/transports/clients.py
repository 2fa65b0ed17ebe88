"""Who is asking: the identity per-client limits, job ownership and the audit log count by, the same for every
transport."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imageforge.domain import LOCAL_CLIENT, Caller


def client_of(scope: Mapping[str, Any]) -> str:
    """The caller of an ASGI request: its API key's name when keys are on, else its peer address.

    A request with neither (a Unix socket) is the local user's, as are the CLI and MCP over stdio.
    """
    name = scope.get("state", {}).get("api_key_name")
    if name:
        return str(name)
    peer = scope.get("client")
    return str(peer[0]) if peer else LOCAL_CLIENT


def caller_of(scope: Mapping[str, Any]) -> Caller:
    """The caller of an ASGI request as the job queue sees it: a key holder sees its own jobs (an admin key all),
    and without keys, where nobody proved who they are, everyone sees every job."""
    state = scope.get("state", {})
    if state.get("api_key_name"):
        return Caller(str(state["api_key_name"]), isolated=True, admin=bool(state.get("api_key_admin")))
    return Caller(client_of(scope))
