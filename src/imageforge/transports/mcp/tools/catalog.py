"""The tools that help before drawing: list_models says what this server can run, list_loras which LoRAs the
drawing tools' `loras` take, list_styles which styles they take, assist_prompt writes a better prompt."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult
from pydantic import Field

from imageforge.domain import AssistResult, LoraCatalog, ModelCatalog, Prompt
from imageforge.transports.mcp.results import StyleListOutput
from imageforge.transports.mcp.tools.toolkit import READING, Toolkit


def register_catalog_tools(mcp: MCPServer, kit: Toolkit) -> None:
    """Add assist_prompt, list_models, list_loras and list_styles to `mcp`."""
    service = kit.service

    @mcp.tool(
        title="Improve a prompt",
        description="Expand a short image request into a detailed diffusion prompt with tags, through the local "
        "LLM (Ollama). When it is unavailable the prompt comes back unchanged with source 'passthrough' and "
        "the reason. Use it to show the user a better prompt before drawing.",
        annotations=READING,
    )
    async def assist_prompt(
        prompt: Prompt,
        style: Annotated[str | None, Field(description="A style to write it in, e.g. 'pencil sketch'.")] = None,
    ) -> Annotated[CallToolResult, AssistResult]:
        return await kit.answer(lambda: service.assist(prompt, style))

    @mcp.tool(
        title="List models",
        description="List the models this server can run: key, what each is good at, operations, default steps "
        "and size, memory, whether its weights are on disk and whether it is loaded.",
        annotations=READING,
    )
    async def list_models() -> ModelCatalog:
        return await to_thread.run_sync(service.list_models)

    @mcp.tool(
        title="List LoRAs",
        description="List the LoRAs the drawing tools' `loras` argument takes, by name: style or subject add-ons "
        "applied to the model for one request, each with a weight. Name one only when the user asks for it; a "
        "LoRA must suit the model's family (sd, sdxl, flux).",
        annotations=READING,
    )
    async def list_loras() -> LoraCatalog:
        return await to_thread.run_sync(service.list_loras)

    @mcp.tool(
        title="List styles",
        description="List the styles the drawing tools' `style` argument takes: key, title, what each is for, "
        "its size (scaled down to the server's MAX_RES when larger) and the prompt it wraps the prompt in. "
        "Use one when the user asks for a kind of picture (a logo or icon, a diagram, a photo, a sketch, a "
        "poster): pass its key as `style` and only the subject as `prompt`.",
        annotations=READING,
    )
    async def list_styles() -> StyleListOutput:
        return StyleListOutput(styles=service.list_templates())
