"""build_mcp_server(service): the MCP surface. stdio and Streamable HTTP serve the same server on the same service.

Each tool parses its arguments, calls `ImageService`, and formats what comes back; a failure is a tool result
with `isError` and the same `{"error": {"code", "message", "hint"}}` body the HTTP API answers. Generations
run as jobs: progress goes out as MCP progress notifications, and a client that cancels the request cancels
the job.

The parts: `tools/` (a module per group of tools, and the resource of earlier images), `templates` (the style
templates as resources and prompts), `arguments` (the tools' arguments, from the request's declaration),
`results` (what the tools answer), `tasks` (MCP Tasks on the drawing tools' jobs, a middleware of the SDK's lower
layer).
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp_types import CallToolResult, InputRequiredResult
from mcp_types import Tool as MCPTool
from pydantic import ValidationError

from imageforge import __version__
from imageforge.service import ImageService
from imageforge.transports.mcp.arguments import invalid_arguments, sealed_schema, unknown_arguments
from imageforge.transports.mcp.results import ImageOutput, JobOutput, McpOptions, error_result
from imageforge.transports.mcp.tasks import TaskMiddleware, with_task_support
from imageforge.transports.mcp.templates import register_templates
from imageforge.transports.mcp.tools.catalog import register_catalog_tools
from imageforge.transports.mcp.tools.history import register_history
from imageforge.transports.mcp.tools.images import register_image_tools
from imageforge.transports.mcp.tools.jobs import register_job_tools
from imageforge.transports.mcp.tools.toolkit import Toolkit

# The outputs and `error_result` lived here before the split; other modules may still import them from here.
__all__ = ["INSTRUCTIONS", "ImageOutput", "JobOutput", "McpOptions", "build_mcp_server", "error_result"]

INSTRUCTIONS = """imageforge draws images on this machine (no cloud, no API key) with local diffusion models.
Use generate_image for a picture from words, edit_image to change an existing image, inpaint_image to repaint a
masked region. Results come back as a small inline preview plus metadata with the saved file path; some
clients hide the preview, so always tell the user the output_path (and the url when there is one). For slow
models or big sizes use submit_async_job and poll get_job_status every 5 seconds. For a common look (whiteboard
diagram, icon or logo, photo, sketch, poster, ...) pass a `style` key (list_styles lists them) with only the
subject as the prompt; the prompts style_<key> give the same as a starting prompt and size to edit.
list_images finds earlier results; resources/read on an image's uri (imageforge://images/<name>) answers its PNG."""

_DEFAULT_OPTIONS = McpOptions()


def build_mcp_server(service: ImageService, options: McpOptions = _DEFAULT_OPTIONS) -> MCPServer:
    """The imageforge MCP server on `service`; the caller starts and closes the service. Calls that submit or
    cancel jobs are audited through the service."""
    # The SDK configures the root logger at this level; imageforge's own logging is set up by its entry points.
    mcp = _Server(
        _server_bounds(service), name="imageforge", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
    )
    kit = Toolkit(service, options)
    mcp.middleware.append(TaskMiddleware(kit))
    register_image_tools(mcp, kit)
    register_catalog_tools(mcp, kit)
    register_job_tools(mcp, kit)
    register_history(mcp, kit)
    register_templates(mcp, service)
    return mcp


def _server_bounds(service: ImageService) -> dict[str, dict[str, Any]]:
    """What this server takes beyond the request's static bounds: its largest side and most steps (MAX_RES,
    MAX_STEPS), the models it can run (their guards open) and its style templates' keys."""
    side = {"maximum": service.limits.max_res, "multipleOf": 8}
    return {
        "width": side,
        "height": side,
        "steps": {"maximum": service.limits.max_steps},
        "model": {"enum": [model.key for model in service.list_models(memory=False).models if model.available]},
        "style": {"enum": [template.key for template in service.list_templates()]},
    }


class _Server(MCPServer):
    """The SDK's server, with input schemas that say all this server takes and refuse what they do not declare:
    an unknown argument, or one that does not fit its schema, is answered like every other bad request
    (`invalid_request`, naming the argument) rather than dropped or answered in the SDK's bare text."""

    def __init__(self, bounds: dict[str, dict[str, Any]], **settings: Any) -> None:
        super().__init__(**settings)
        self._bounds = bounds

    async def list_tools(self) -> list[MCPTool]:
        tools = await super().list_tools()
        return [
            with_task_support(tool.model_copy(update={"input_schema": sealed_schema(tool.input_schema, self._bounds)}))
            for tool in tools
        ]

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        # The declared arguments are the same sealed or not; the SDK's own listing copies nothing.
        schema = next((tool.input_schema for tool in await super().list_tools() if tool.name == name), None)
        if schema is not None and (unknown := set(arguments) - set(schema.get("properties", {}))):
            return error_result(unknown_arguments(name, unknown, schema))
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc, UnexpectedToolError) or not isinstance(exc.__cause__, ValidationError):
                raise
            return error_result(invalid_arguments(exc.__cause__))
