"""build_mcp_server(service): the MCP tools. stdio and Streamable HTTP serve the same server on the same service.

Each tool parses its arguments, calls `ImageService`, and formats what comes back; a failure is a tool result
with `isError` and the same `{"error": {"code", "message", "hint"}}` body the HTTP API answers. Generations
run as jobs: progress goes out as MCP progress notifications, and a client that cancels the request cancels
the job.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import anyio
from anyio import to_thread
from mcp.server.mcpserver import Context, MCPServer, UserMessage
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult, ContentBlock, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from imageforge import __version__
from imageforge.domain import (
    LOCAL_CALLER,
    LOCAL_CLIENT,
    REQUEST_FIELDS,
    AssistResult,
    Caller,
    GenerationParams,
    ImageDescription,
    ImageResult,
    ImageSource,
    Job,
    JobStatus,
    ModelCatalog,
    Prompt,
    StyleTemplate,
    Task,
    TextToImageFields,
    accepted_fields,
)
from imageforge.errors import ImageforgeError, InvalidRequest, JobNotReady
from imageforge.service import ImageService
from imageforge.transports import clients
from imageforge.transports.mcp.content import image_link, metadata_content, preview_content

#: How often an agent should poll a job; said in the async tools' descriptions.
POLL_INTERVAL_S = 5

INSTRUCTIONS = """imageforge draws images on this machine (no cloud, no API key) with local diffusion models.
Use generate_image for a picture from words, edit_image to change an existing image, inpaint_image to repaint a
masked region. Results come back as a small inline preview plus metadata with the saved file path; some
clients hide the preview, so always tell the user the output_path (and the url when there is one). For slow
models or big sizes use submit_async_job and poll get_job_status every 5 seconds. For a common look (whiteboard
diagram, icon, photo, sketch, poster, ...) the prompts style_<key> and resources imageforge://templates/<key>
give a starting prompt and size to edit."""

_RESULT_NOTE = (
    " Returns an inline preview (at most IMAGEFORGE_MCP_PREVIEW_PX px; some clients do not show it, so tell the "
    "user the saved output_path, and the url when given), the metadata (seed, model, steps, size, elapsed_s, "
    "output_path, url) and, over HTTP, a link to the full-resolution image. A seed makes the image reproducible."
)

# The image tools' request arguments are the domain's declaration (`declared_arguments`); these are their own.
ImagePath = Annotated[
    str, Field(description="The input image: an absolute path or one relative to the project, in an allowed folder.")
]
MaskPath = Annotated[str, Field(description="The mask, same size as the image: white = repaint, black = keep.")]
JobId = Annotated[str, Field(description="The job_id submit_async_job returned.")]


class ImageOutput(ImageDescription):
    """The structured result of the image tools: the image's description, and where the full image is."""

    job_id: str
    output_path: str = Field(
        description="Where the full image is saved: on the server's machine, or this machine's copy through the "
        "remote proxy."
    )
    remote_output_path: str | None = Field(None, description="Through the remote proxy: the server's own path.")
    url: str | None = Field(None, description="The full image over HTTP, when the server is reached over HTTP.")


class JobOutput(BaseModel):
    """A job's state, as the async tools report it."""

    job_id: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled.")
    queue_position: int | None = Field(None, description="1 = next to run; 0 = running; null once ended.")
    step: int
    total: int
    error: dict[str, str] | None = None
    expires_at: float | None = Field(None, description="Unix time after which the result is gone.")
    next: str = Field(description="What to do next.")


@dataclass(frozen=True)
class McpOptions:
    """How the MCP surface presents results."""

    #: longest side of the inline preview
    preview_px: int = 512
    #: what follows an image link to open it without an API key ("?exp=…&sig=…", "" when none is needed)
    image_query: Callable[[str], str] = lambda name: ""


def build_mcp_server(service: ImageService, options: McpOptions = McpOptions()) -> MCPServer:
    """The imageforge MCP server on `service`; the caller starts and closes the service. Calls that submit or
    cancel jobs are audited through the service."""
    # The SDK configures the root logger at this level; imageforge's own logging is set up by its entry points.
    mcp = _Server(name="imageforge", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING")
    tools = _Tools(service, options)
    restricted_use = service.policy.restricted_use
    restricted = f" Restricted use: {restricted_use}" if restricted_use else ""
    drawing = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
    reading = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @mcp.tool(
        description="Draw an image from a text prompt on the local engine and wait for it. Best for "
        "illustrations, concept art, icons and photos of ideas; fast with the default model (seconds)."
        + _RESULT_NOTE
        + restricted,
        annotations=drawing,
    )
    @declared_arguments(*_IMAGE_FIELDS, "width", "height")
    async def generate_image(ctx: Context, **fields: Any) -> Annotated[CallToolResult, ImageOutput]:
        return await tools.generate(ctx, request_params(Task.TEXT2IMG, **fields), "generate_image")

    @mcp.tool(
        description="Change an existing image following a prompt (image to image), keeping its composition; "
        "strength 0.3 stays close to it, 0.8 changes a lot. The size follows the input unless given."
        + _RESULT_NOTE
        + restricted,
        annotations=drawing,
    )
    @declared_arguments(*_IMAGE_FIELDS, "strength")
    async def edit_image(
        ctx: Context, *, image_path: ImagePath, **fields: Any
    ) -> Annotated[CallToolResult, ImageOutput]:
        return await tools.generate(ctx, request_params(Task.IMG2IMG, image_path=image_path, **fields), "edit_image")

    @mcp.tool(
        description="Repaint only the white region of a mask in an image following a prompt (inpainting); the "
        "black region is kept. Best for replacing or removing an object." + _RESULT_NOTE + restricted,
        annotations=drawing,
    )
    @declared_arguments(*_IMAGE_FIELDS, "strength")
    async def inpaint_image(
        ctx: Context, *, image_path: ImagePath, mask_path: MaskPath, **fields: Any
    ) -> Annotated[CallToolResult, ImageOutput]:
        params = request_params(Task.INPAINT, image_path=image_path, mask_path=mask_path, **fields)
        return await tools.generate(ctx, params, "inpaint_image")

    @mcp.tool(
        description="Expand a short image request into a detailed diffusion prompt with tags, through the local "
        "LLM (Ollama). When it is unavailable the prompt comes back unchanged with source 'passthrough' and "
        "the reason. Use it to show the user a better prompt before drawing.",
        annotations=reading,
    )
    async def assist_prompt(
        prompt: Prompt,
        style: Annotated[str | None, Field(description="A style to write it in, e.g. 'pencil sketch'.")] = None,
    ) -> Annotated[CallToolResult, AssistResult]:
        return await tools.answer(lambda: service.assist(prompt, style))

    @mcp.tool(
        description="List the models this server can run: key, what each is good at, operations, default steps "
        "and size, memory, whether its weights are on disk and whether it is loaded.",
        annotations=reading,
    )
    async def list_models() -> ModelCatalog:
        return await to_thread.run_sync(service.list_models)

    @mcp.tool(
        description="Queue an image job and return its job_id at once, for slow models or big sizes. task is "
        "text2img (default), img2img (needs image_path) or inpaint (needs image_path and mask_path). Then "
        f"poll get_job_status every {POLL_INTERVAL_S} seconds (not faster) and call get_job_result once it "
        "has succeeded." + restricted,
        annotations=drawing,
    )
    @declared_arguments(*_IMAGE_FIELDS, "task", "strength", "width", "height")
    async def submit_async_job(
        ctx: Context,
        *,
        image_path: Annotated[str | None, Field(description="The input image for img2img and inpaint.")] = None,
        mask_path: Annotated[str | None, Field(description="The mask for inpaint (white = repaint).")] = None,
        **fields: Any,
    ) -> Annotated[CallToolResult, JobOutput]:
        def submit() -> BaseModel:
            params = request_params(image_path=image_path, mask_path=mask_path, **fields)
            return tools.job_output(service.submit(params, caller=caller_of(ctx)))

        return await tools.answer(submit, audit=(ctx, "submit_async_job", fields["prompt"]))

    @mcp.tool(
        description=f"The state of a job: status, queue position, progress (step of total). Poll every "
        f"{POLL_INTERVAL_S} seconds, not faster; once it has succeeded, call get_job_result.",
        annotations=reading,
    )
    async def get_job_status(ctx: Context, job_id: JobId) -> Annotated[CallToolResult, JobOutput]:
        return await tools.answer(lambda: tools.job_output(service.get_job(job_id, caller=caller_of(ctx))))

    @mcp.tool(
        description="The image of a finished job, as generate_image returns it; it can be read again until the "
        "job expires. A job not finished yet, failed, cancelled, expired or unknown answers an error saying "
        "which." + _RESULT_NOTE,
        annotations=reading,
    )
    async def get_job_result(ctx: Context, job_id: JobId) -> Annotated[CallToolResult, ImageOutput]:
        return await tools.result(ctx, job_id)

    @mcp.tool(
        description="Cancel a job: a queued one at once, a running one at its next step. Other jobs are not affected.",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False),
    )
    async def cancel_job(ctx: Context, job_id: JobId) -> Annotated[CallToolResult, JobOutput]:
        return await tools.answer(
            lambda: tools.job_output(service.cancel_job(job_id, caller=caller_of(ctx))), audit=(ctx, "cancel_job", None)
        )

    for template in service.list_templates():
        _add_template(mcp, service, template)
    return mcp


class _Server(MCPServer):
    """The SDK's server, but arguments that do not fit a tool's input schema are answered like every other bad
    request (`invalid_request`, naming the field) rather than as the SDK's bare text."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc, UnexpectedToolError) or not isinstance(exc.__cause__, ValidationError):
                raise
            return error_result(invalid_arguments(exc.__cause__))


def invalid_arguments(exc: ValidationError) -> InvalidRequest:
    """The error for tool arguments the input schema refuses: each field with what is wrong with it, and the
    declaration of the request fields among them as the hint."""
    problems = [f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in exc.errors()]
    declared = accepted_fields(str(item["loc"][0]) for item in exc.errors() if item["loc"])
    return InvalidRequest(
        "; ".join(problems),
        hint=declared or "The tool's input schema (tools/list) gives each argument's type and bounds.",
    )


#: The declared request fields every image tool takes; the tools name `assist_prompt` `assist`.
_IMAGE_FIELDS = ("prompt", "model", "steps", "guidance", "seed", "negative_prompt", "assist_prompt", "decoder")
_TOOL_NAMES = {"assist_prompt": "assist"}
_Tool = TypeVar("_Tool", bound=Callable[..., Any])


def declared_arguments(*names: str) -> Callable[[_Tool], _Tool]:
    """Give a tool the declared request fields `names` as arguments (it takes them as `**fields`), each with the
    type, bounds, default and description `REQUEST_FIELDS` declares: `prompt` first, then the tool's own
    keyword arguments, then the others in the declaration's order."""

    def declare(tool: _Tool) -> _Tool:
        own = inspect.signature(tool, eval_str=True)
        declared = {name: _parameter(name) for name in sorted(names, key=list(REQUEST_FIELDS).index)}
        positional = [p for p in own.parameters.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        keyword = [p for p in own.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        first = [declared.pop("prompt")] if "prompt" in declared else []
        tool.__signature__ = own.replace(parameters=[*positional, *first, *keyword, *declared.values()])  # type: ignore[attr-defined]
        return tool

    return declare


def _parameter(name: str) -> inspect.Parameter:
    """The declared request field `name` as a tool's keyword argument."""
    field = REQUEST_FIELDS[name]
    return inspect.Parameter(
        _TOOL_NAMES.get(name, name),
        inspect.Parameter.KEYWORD_ONLY,
        default=inspect.Parameter.empty if field.is_required() else field.default,
        annotation=cast(Any, Annotated)[field.annotation, field],
    )


def request_params(
    task: Task = Task.TEXT2IMG,
    *,
    image_path: str | None = None,
    mask_path: str | None = None,
    strength: float | None = None,
    assist: bool = False,
    **fields: Any,
) -> GenerationParams:
    """The request an image tool's arguments make: the declared fields, under the tools' names (`assist`), with
    the input image and mask as paths."""
    return TextToImageFields(assist_prompt=assist, **fields).to_params(
        task,
        init_image=ImageSource(path=image_path) if image_path else None,
        mask_image=ImageSource(path=mask_path) if mask_path else None,
        strength=strength,
    )


def _add_template(mcp: MCPServer, service: ImageService, template: StyleTemplate) -> None:
    """Register one style template as a resource and as a prompt (`style_<key>`).

    A function of its own, so that each handler closes over its own template rather than the loop's last one.
    """
    key = template.key

    @mcp.resource(
        f"imageforge://templates/{key}",
        name=f"template_{key}",
        title=template.title,
        description=f"Style template '{key}': {template.description}",
        mime_type="application/json",
    )
    async def read_template() -> str:
        return template.model_dump_json()

    @mcp.prompt(
        name=f"style_{key}",
        title=template.title,
        description=f"Draw a subject as a {template.title.lower()}: a starting prompt and size for generate_image, "
        "which you may edit.",
    )
    async def style_prompt(
        subject: Annotated[str, Field(description="What to draw, in plain words.")],
    ) -> UserMessage:
        try:
            start = service.render_template(key, subject)
        except ImageforgeError as exc:
            raise MCPError(INVALID_PARAMS, exc.message, data={"code": exc.code, "hint": exc.hint}) from exc
        arguments = {"prompt": start.prompt, "width": start.width, "height": start.height}
        if start.negative_prompt:
            arguments["negative_prompt"] = start.negative_prompt
        return UserMessage(
            f"Make an image of: {start.subject}\n"
            f"Use the imageforge style template '{key}' ({template.title}): {template.description}\n"
            "Call generate_image with these arguments. They are a starting point: edit the prompt (or the size) "
            "where the request needs it.\n"
            f"{json.dumps(arguments)}\n"
            "Then tell the user the output_path and the prompt you used."
        )


class _Tools:
    """What the tools share: running a job with progress and cancellation, and shaping results."""

    def __init__(self, service: ImageService, options: McpOptions) -> None:
        self._service = service
        self._options = options

    async def generate(self, ctx: Context, params: GenerationParams, tool: str) -> CallToolResult:
        """Submit the caller's job, report its steps as progress, and return its image; cancelling the call
        cancels it. The call is audited as `tool`."""
        client, caller = client_of(ctx), caller_of(ctx)
        job_id = None
        try:
            job = await to_thread.run_sync(functools.partial(self._service.submit, params, caller=caller))
            job_id = job.id
            result = await self._follow(ctx, job.id, caller)
            answer = await to_thread.run_sync(self._image_result, job.id, result, _base_url(ctx))
        except ImageforgeError as exc:
            self._record(client, tool, exc.code, job_id, params.prompt)
            return error_result(exc)
        self._record(client, tool, "ok", job_id, params.prompt)
        return answer

    def _record(self, client: str, tool: str, outcome: str, job_id: str | None, prompt: str | None) -> None:
        self._service.audit(client=client, action=f"mcp {tool}", outcome=outcome, job_id=job_id, prompt=prompt)

    def _record_call(self, audit: tuple[Context, str, str | None] | None, outcome: str, job_id: str | None) -> None:
        if audit is not None:
            ctx, tool, prompt = audit
            self._record(client_of(ctx), tool, outcome, job_id, prompt)

    async def result(self, ctx: Context, job_id: str) -> CallToolResult:
        def read() -> CallToolResult:
            job = self._service.get_job(job_id, caller=caller_of(ctx))
            if not job.status.is_terminal:
                raise JobNotReady(
                    f"Job '{job_id}' has not finished: it is {job.status.value}"
                    + (f" at step {job.step} of {job.total}." if job.total else "."),
                    hint=f"Poll get_job_status every {POLL_INTERVAL_S} seconds and ask again once it has succeeded.",
                )
            return self._image_result(job_id, self._service.image_result(job), _base_url(ctx))

        try:
            return await to_thread.run_sync(read)
        except ImageforgeError as exc:
            return error_result(exc)

    async def _follow(self, ctx: Context, job_id: str, caller: Caller) -> ImageResult:
        """Report the job's steps as progress until it ends (holding no thread meanwhile), then read its image."""
        try:
            async for event in self._service.follow(job_id, caller=caller):
                if event.type == "progress":
                    step, total = event.data["step"], event.data["total"]
                    await ctx.report_progress(step, total, f"step {step}/{total}")
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await to_thread.run_sync(self._cancel_quietly, job_id)
            raise
        job = await to_thread.run_sync(functools.partial(self._service.get_job, job_id, caller=caller))
        return await to_thread.run_sync(self._service.image_result, job)

    def _cancel_quietly(self, job_id: str) -> None:
        with contextlib.suppress(ImageforgeError):  # it ended meanwhile
            self._service.cancel_job(job_id)

    def _image_result(self, job_id: str, result: ImageResult, base_url: str | None) -> CallToolResult:
        name = Path(result.output_path).name
        url = f"{base_url}/images/{name}{self._options.image_query(name)}" if base_url else None
        output = ImageOutput(**result.described().model_dump(), job_id=job_id, output_path=result.output_path, url=url)
        structured = output.model_dump(mode="json")
        content: list[ContentBlock] = [
            preview_content(result.png, self._options.preview_px),
            metadata_content(structured),
        ]
        if url is not None:
            content.append(image_link(url, name, len(result.png)))
        return CallToolResult(content=content, structured_content=structured)

    def job_output(self, job: Job) -> JobOutput:
        position = self._service.queue_position(job.id)
        advice = {
            JobStatus.QUEUED: f"Wait; poll get_job_status in {POLL_INTERVAL_S} seconds.",
            JobStatus.RUNNING: f"Wait; poll get_job_status in {POLL_INTERVAL_S} seconds.",
            JobStatus.SUCCEEDED: "Call get_job_result to get the image.",
            JobStatus.FAILED: "It failed; see error. Fix the request and submit again.",
            JobStatus.CANCELLED: "It was cancelled; submit again if it is still wanted.",
        }
        return JobOutput(
            job_id=job.id,
            status=job.status.value,
            queue_position=position,
            step=job.step,
            total=job.total,
            error=job.error,
            expires_at=job.expires_at,
            next=advice[job.status],
        )

    async def answer(
        self, produce: Callable[[], BaseModel], *, audit: tuple[Context, str, str | None] | None = None
    ) -> CallToolResult:
        """Run a blocking service call and answer its model as structured content, or its error.

        `audit` (the call's context, the tool's name, the prompt) records a call that submits or cancels a job.
        """
        try:
            output: BaseModel = await to_thread.run_sync(produce)
        except ImageforgeError as exc:
            self._record_call(audit, exc.code, None)
            return error_result(exc)
        self._record_call(audit, "ok", getattr(output, "job_id", None))
        structured = output.model_dump(mode="json")
        return CallToolResult(content=[metadata_content(structured)], structured_content=structured)


def error_result(exc: ImageforgeError) -> CallToolResult:
    """A failed tool call: the HTTP API's error body, as text an agent reads."""
    body = {"error": {"code": exc.code, "message": exc.message, "hint": exc.hint}}
    return CallToolResult(content=[TextContent(text=json.dumps(body))], is_error=True)


def client_of(ctx: Context) -> str:
    """Who calls: over HTTP, the request's API key name or peer address; over stdio, the local user."""
    scope = getattr(ctx.request_context.request, "scope", None)
    return LOCAL_CLIENT if scope is None else clients.client_of(scope)


def caller_of(ctx: Context) -> Caller:
    """Whose jobs the caller may see: over HTTP, as its request's API key says; over stdio, the local user's."""
    scope = getattr(ctx.request_context.request, "scope", None)
    return LOCAL_CALLER if scope is None else clients.caller_of(scope)


def _base_url(ctx: Context) -> str | None:
    """The HTTP origin the client reached this server at; None over stdio."""
    request = ctx.request_context.request
    headers = getattr(request, "headers", None)
    url = getattr(request, "url", None)
    if headers is None or url is None or "host" not in headers:
        return None
    return f"{url.scheme}://{headers['host']}"
