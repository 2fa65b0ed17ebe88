"""A client's side of MCP Tasks (revision 2025-11-25), on the official client's connection.

mcp 2.3.0's client has the Tasks types but no Tasks calls, and it checks a `tools/call` answer as a
`CallToolResult`, which a `CreateTaskResult` is not; so a task-augmented call goes out as a raw request on the
client's own connection, and the `tasks/*` requests as typed ones, each answer checked against the SDK's Tasks types.
"""

from __future__ import annotations

from typing import Any

from mcp.client.client import Client
from mcp_types import (
    CallToolResult,
    CancelTaskRequest,
    CancelTaskRequestParams,
    CancelTaskResult,
    CreateTaskResult,
    GetTaskPayloadRequest,
    GetTaskPayloadRequestParams,
    GetTaskRequest,
    GetTaskRequestParams,
    GetTaskResult,
    ListTasksRequest,
    ListTasksResult,
)

#: The revision whose Tasks imageforge serves; the official client reaches it with mode="legacy" (the handshake).
TASKS_VERSION = "2025-11-25"


class TaskCalls:
    """The Tasks requests of one connected client."""

    def __init__(self, client: Client) -> None:
        assert client.protocol_version == TASKS_VERSION
        self.client = client

    async def call_as_task(self, tool: str, arguments: dict[str, Any], ttl_ms: int = 60_000) -> dict[str, Any]:
        """tools/call with `task`: the raw answer (a `CreateTaskResult`, or a tool error for a refused request)."""
        dispatcher = self.client.session._dispatcher  # the client has no public raw send
        params = {"name": tool, "arguments": arguments, "task": {"ttl": ttl_ms}}
        return await dispatcher.send_raw_request("tools/call", params, {"timeout": 120.0})

    async def create(self, tool: str, arguments: dict[str, Any]) -> CreateTaskResult:
        """A new task, checked against the SDK's `CreateTaskResult`."""
        return CreateTaskResult.model_validate(await self.call_as_task(tool, arguments), by_name=False)

    async def get(self, task_id: str) -> GetTaskResult:
        request = GetTaskRequest(params=GetTaskRequestParams(task_id=task_id))
        return await self.client.session.send_request(request, GetTaskResult)

    async def result(self, task_id: str) -> CallToolResult:
        request = GetTaskPayloadRequest(params=GetTaskPayloadRequestParams(task_id=task_id))
        return await self.client.session.send_request(request, CallToolResult, request_read_timeout_seconds=120.0)

    async def cancel(self, task_id: str) -> CancelTaskResult:
        request = CancelTaskRequest(params=CancelTaskRequestParams(task_id=task_id))
        return await self.client.session.send_request(request, CancelTaskResult)

    async def list(self) -> ListTasksResult:
        return await self.client.session.send_request(ListTasksRequest(), ListTasksResult)
