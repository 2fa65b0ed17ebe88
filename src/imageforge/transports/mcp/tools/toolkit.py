"""What the tool groups share: who calls, answering a blocking service call as a tool result, the audit of calls
that submit or cancel jobs, and the tools' annotations."""

from __future__ import annotations

from collections.abc import Callable

from anyio import to_thread
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import BaseModel

from imageforge.domain import LOCAL_CALLER, LOCAL_CLIENT, Caller, ImageSource
from imageforge.errors import ImageforgeError
from imageforge.service import ImageService
from imageforge.transports import clients
from imageforge.transports.mcp.arguments import image_source
from imageforge.transports.mcp.results import McpOptions, error_result, structured_result

#: A tool that draws: it adds images and jobs, and takes nothing away.
DRAWING = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
#: A tool that only reads: calling it again changes nothing.
READING = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)

#: The call's context, the tool's name and the prompt, of a call that submits or cancels a job.
Audit = tuple[Context, str, str | None]


class Toolkit:
    """The service and options every tool works with, and how a tool answers and is audited."""

    def __init__(self, service: ImageService, options: McpOptions) -> None:
        self.service = service
        self.options = options
        restricted_use = service.policy.restricted_use
        #: What the drawing tools' descriptions end with: the policy's restricted use, if any.
        self.restricted = f" Restricted use: {restricted_use}" if restricted_use else ""

    async def answer(self, produce: Callable[[], BaseModel], *, audit: Audit | None = None) -> CallToolResult:
        """Run a blocking service call and answer its model as structured content, or its error.

        `audit` (the call's context, the tool's name, the prompt) records a call that submits or cancels a job.
        """
        try:
            output: BaseModel = await to_thread.run_sync(produce)
        except ImageforgeError as exc:
            self._record_call(audit, exc.code, None)
            return error_result(exc)
        self._record_call(audit, "ok", getattr(output, "job_id", None))
        return structured_result(output)

    def image(self, ctx: Context, value: str | None) -> ImageSource | None:
        """The input image an agent named in `value` (see `image_source`); an earlier result only when the
        caller may see it."""
        if value is None:
            return None
        caller = caller_of(ctx)
        return image_source(value, result_path=lambda name: self.service.image_path(name, caller=caller))

    def record(self, client: str, tool: str, outcome: str, job_id: str | None, prompt: str | None) -> None:
        """Audit one call of `tool` by `client` and how it ended (`ok` or the error's code)."""
        self.service.audit(client=client, action=f"mcp {tool}", outcome=outcome, job_id=job_id, prompt=prompt)

    def _record_call(self, audit: Audit | None, outcome: str, job_id: str | None) -> None:
        if audit is not None:
            ctx, tool, prompt = audit
            self.record(client_of(ctx), tool, outcome, job_id, prompt)


def client_of(ctx: Context) -> str:
    """Who calls: over HTTP, the request's API key name or peer address; over stdio, the local user."""
    return request_client(ctx.request_context.request)


def caller_of(ctx: Context) -> Caller:
    """Whose jobs the caller may see: over HTTP, as its request's API key says; over stdio, the local user's."""
    return request_caller(ctx.request_context.request)


def base_url(ctx: Context) -> str | None:
    """The HTTP origin the client reached this server at; None over stdio."""
    return request_base_url(ctx.request_context.request)


def request_client(request: object) -> str:
    """`client_of` for the transport's request of an MCP message (a Starlette request over HTTP, None over
    stdio), for code below the tools that has no tool context."""
    scope = getattr(request, "scope", None)
    return LOCAL_CLIENT if scope is None else clients.client_of(scope)


def request_caller(request: object) -> Caller:
    """`caller_of` for the transport's request of an MCP message."""
    scope = getattr(request, "scope", None)
    return LOCAL_CALLER if scope is None else clients.caller_of(scope)


def request_base_url(request: object) -> str | None:
    """`base_url` for the transport's request of an MCP message."""
    headers = getattr(request, "headers", None)
    url = getattr(request, "url", None)
    if headers is None or url is None or "host" not in headers:
        return None
    return f"{url.scheme}://{headers['host']}"
