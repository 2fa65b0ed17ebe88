"""The style templates over MCP: each is a resource (`imageforge://templates/<key>`, its JSON) and a prompt
(`style_<key>`) that hands the agent generate_image's arguments for a subject."""

from __future__ import annotations

import json
from typing import Annotated

from mcp.server.mcpserver import MCPServer, UserMessage
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from pydantic import Field

from imageforge.domain import RenderedTemplate, StyleTemplate
from imageforge.errors import ImageforgeError
from imageforge.service import ImageService


def register_templates(mcp: MCPServer, service: ImageService) -> None:
    """Add each of the service's style templates to `mcp` as a resource and a prompt."""
    # A function per handler, so that each closes over its own template rather than the loop's last one.
    for template in service.list_templates():
        _add_resource(mcp, template)
        _add_prompt(mcp, service, template)


def _add_resource(mcp: MCPServer, template: StyleTemplate) -> None:
    """Register the template as the resource `imageforge://templates/<key>`: its JSON."""

    @mcp.resource(
        f"imageforge://templates/{template.key}",
        name=f"template_{template.key}",
        title=template.title,
        description=f"Style template '{template.key}': {template.description}",
        mime_type="application/json",
    )
    async def read_template() -> str:
        return template.model_dump_json()


def _add_prompt(mcp: MCPServer, service: ImageService, template: StyleTemplate) -> None:
    """Register the template as the prompt `style_<key>`, which takes the subject to draw."""

    @mcp.prompt(
        name=f"style_{template.key}",
        title=template.title,
        description=f"Draw a subject as a {template.title.lower()}: a starting prompt and size for generate_image, "
        "which you may edit.",
    )
    async def style_prompt(
        subject: Annotated[str, Field(description="What to draw, in plain words.")],
    ) -> UserMessage:
        try:
            start = service.render_template(template.key, subject)
        except ImageforgeError as exc:
            raise MCPError(INVALID_PARAMS, exc.message, data={"code": exc.code, "hint": exc.hint}) from exc
        return UserMessage(_instructions(template, start))


def _instructions(template: StyleTemplate, start: RenderedTemplate) -> str:
    """What the prompt tells the agent: draw the subject with generate_image, starting from these arguments."""
    arguments = {"prompt": start.prompt, "width": start.width, "height": start.height}
    if start.negative_prompt:
        arguments["negative_prompt"] = start.negative_prompt
    return (
        f"Make an image of: {start.subject}\n"
        f"Use the imageforge style template '{template.key}' ({template.title}): {template.description}\n"
        "Call generate_image with these arguments. They are a starting point: edit the prompt (or the size) "
        "where the request needs it.\n"
        f"{json.dumps(arguments)}\n"
        "Then tell the user the output_path and the prompt you used."
    )
