"""`imageforge mcp --selftest [--gen]`: the MCP server checked through the official MCP client.

The client connects in process over in-memory streams with the same initialize handshake a desktop client
sends over stdio, so the check is fast and needs no GPU. It runs on the user's settings (default model, models
file, Ollama, limits, preview size), which is what an agent's server would run on, but with the outputs, the
cache and the job database in a temporary folder: it leaves nothing behind, a cached image cannot stand in for
a generation, and it never touches the job database of a server running in the same folder (starting a queue
on it would end that server's running job as `interrupted`).
"""

from __future__ import annotations

import base64
import io
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import typer
from mcp.client.client import Client
from mcp_types import CallToolResult, ImageContent, TextContent
from PIL import Image

from imageforge import __version__
from imageforge.config import Settings
from imageforge.logs import log_to_stderr
from imageforge.transports.mcp.server import McpOptions, build_mcp_server

#: The tools an agent must find; the image tools also declare an output schema.
EXPECTED_TOOLS = (
    "generate_image",
    "edit_image",
    "inpaint_image",
    "assist_prompt",
    "list_models",
    "submit_async_job",
    "get_job_status",
    "get_job_result",
    "cancel_job",
)
IMAGE_TOOLS = ("generate_image", "edit_image", "inpaint_image", "get_job_result")
#: What Claude's clients accept as one tool result.
RESULT_LIMIT_BYTES = 1024 * 1024
#: Bounds a quick check; none of them loads a model.
CHECK_TIMEOUT_S = 60.0
#: Bounds the generation, which may load (or, for `tiny`, build) a model on a CPU first.
GENERATION_TIMEOUT_S = 900.0
SEED = 7


class CheckFailed(Exception):
    """A self-test check whose answer was wrong; the message says what."""


def run_mcp_selftest(settings: Settings, *, generate: bool = False) -> int:
    """Run the checks, print one `[selftest]` line each and a summary; 0 when all pass, else 1."""
    from imageforge.bootstrap import build_service

    log_to_stderr()
    with tempfile.TemporaryDirectory(prefix="imageforge-mcp-selftest-") as scratch:
        root = Path(scratch)
        trial = settings.model_copy(
            update={"output_dir": root / "outputs", "cache_dir": root / "cache", "data_dir": root / "data"}
        )
        service = build_service(trial)
        service.start()
        try:
            server = build_mcp_server(service, McpOptions(preview_px=settings.mcp_preview_px))
            # mode="legacy": the initialize handshake that desktop clients send over stdio today.
            client = Client(server, mode="legacy", read_timeout_seconds=CHECK_TIMEOUT_S)
            failed = anyio.run(_run_checks, _Session(client, settings, generate))
        finally:
            service.close()
    if failed:
        _say(f"FAILED: {len(failed)} check(s): {', '.join(failed)}")
        return 1
    _say("ALL PASS")
    return 0


def _say(line: str) -> None:
    typer.echo(f"[selftest] {line}")


@dataclass
class _Session:
    """The client and what the checks learn on the way (the catalog decides the model to generate with)."""

    client: Client
    settings: Settings
    generate: bool
    models: dict[str, Any] | None = None


async def _run_checks(session: _Session) -> list[str]:
    """Connect, run every check whatever the others gave, and return the names of those that failed."""
    checks: list[tuple[str, Callable[[_Session], Awaitable[str]], float]] = [
        ("tool list", _check_tools, CHECK_TIMEOUT_S),
        ("list_models", _check_models, CHECK_TIMEOUT_S),
        ("assist_prompt", _check_assist, CHECK_TIMEOUT_S),
        ("error", _check_error, CHECK_TIMEOUT_S),
    ]
    if session.generate:
        checks.append(("generate_image", _check_generation, GENERATION_TIMEOUT_S))
    failed: list[str] = []
    connected = False
    try:
        async with session.client:
            connected = True
            for name, check, timeout_s in [("handshake", _check_handshake, CHECK_TIMEOUT_S), *checks]:
                try:
                    with anyio.fail_after(timeout_s):
                        detail = await check(session)
                except Exception as exc:
                    failed.append(name)
                    _say(f"FAIL {name}: {exc if isinstance(exc, CheckFailed) else f'{type(exc).__name__}: {exc}'}")
                else:
                    _say(f"PASS {name}: {detail}")
    except Exception as exc:
        stage = "disconnect" if connected else "handshake"
        _say(f"FAIL {stage}: {type(exc).__name__}: {exc}")
        failed.append(stage)
    return failed


def _expect(condition: object, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


async def _check_handshake(session: _Session) -> str:
    info = session.client.server_info
    _expect(info is not None and info.name == "imageforge", f"the server calls itself {info!r}")
    assert info is not None
    _expect(info.version == __version__, f"server version {info.version}, this package {__version__}")
    _expect(session.client.instructions, "the server sent no instructions for the agent")
    return f"{info.name} {info.version}, protocol {session.client.protocol_version}"


async def _check_tools(session: _Session) -> str:
    tools = {tool.name: tool for tool in (await session.client.list_tools()).tools}
    missing = [name for name in EXPECTED_TOOLS if name not in tools]
    _expect(not missing, f"missing tools: {', '.join(missing)}")
    undescribed = [name for name in EXPECTED_TOOLS if not tools[name].description]
    _expect(not undescribed, f"tools without a description: {', '.join(undescribed)}")
    unschemed = [name for name in IMAGE_TOOLS if tools[name].output_schema is None]
    _expect(not unschemed, f"image tools without an output schema: {', '.join(unschemed)}")
    return f"{len(tools)} tools ({', '.join(tools)})"


async def _check_models(session: _Session) -> str:
    answer = _structured(await session.client.call_tool("list_models", {}), "list_models")
    rows = {row["key"]: row for row in answer["models"]}
    default = answer["default"]
    _expect(default in rows, f"the default model {default!r} is not in the catalog")
    session.models = answer
    weights = "on disk" if rows[default]["weights_present"] else "not downloaded yet"
    return f"{len(rows)} models; default {default} (weights {weights})"


async def _check_assist(session: _Session) -> str:
    prompt = "a lighthouse at dusk"
    answer = _structured(await session.client.call_tool("assist_prompt", {"prompt": prompt}), "assist_prompt")
    if answer["source"] == "passthrough":
        # No local LLM is a supported setup: the prompt comes back unchanged and says why.
        _expect(answer["prompt"] == prompt, "a passthrough changed the prompt")
        _expect(answer["reason"], "a passthrough without a reason")
        return f"passthrough, the local LLM was not used: {answer['reason']}"
    _expect(answer["prompt"], "the expanded prompt is empty")
    return f"expanded by {answer['source']} to {len(answer['prompt'])} characters"


async def _check_error(session: _Session) -> str:
    # `tiny` is always in the catalog, so the answer is about the width whatever the default model is.
    arguments = {"prompt": "selftest", "model": "tiny", "width": 100}
    result = await session.client.call_tool("generate_image", arguments)
    _expect(result.is_error, "a width of 100 (not a multiple of 8) was accepted")
    error = json.loads(_text(result))["error"]
    _expect(error["code"] == "invalid_request", f"a bad width answered {error['code']}, not invalid_request")
    return "a width of 100 answers isError with code invalid_request"


async def _check_generation(session: _Session) -> str:
    _expect(session.models is not None, "list_models failed, so the model to use is unknown")
    assert session.models is not None
    model = _model_to_generate_with(session.models)
    arguments: dict[str, Any] = {"prompt": "a red fox in the snow, selftest", "model": model, "seed": SEED}
    if model == "tiny":
        arguments.update(width=256, height=256)
    steps: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        steps.append((progress, total))

    started = time.perf_counter()
    result = await session.client.call_tool(
        "generate_image", arguments, read_timeout_seconds=GENERATION_TIMEOUT_S, progress_callback=on_progress
    )
    elapsed = time.perf_counter() - started
    metadata = _structured(result, "generate_image")
    size = len(result.model_dump_json(by_alias=True, exclude_none=True))
    _expect(size < RESULT_LIMIT_BYTES, f"the result takes {size} bytes, over the 1 MiB clients accept")
    _expect(json.loads(_text(result, index=1)) == metadata, "the metadata text differs from the structured content")
    _expect((metadata["model"], metadata["seed"]) == (model, SEED), f"asked {model} seed {SEED}, got {metadata}")
    _expect(Path(metadata["output_path"]).is_file(), f"no image at {metadata['output_path']}")
    _expect(steps and steps[-1][0] == steps[-1][1], f"progress notifications {steps} did not reach the last step")
    preview = _preview(result)
    limit = session.settings.mcp_preview_px
    _expect(max(preview.size) <= limit, f"the preview is {preview.size}, over IMAGEFORGE_MCP_PREVIEW_PX={limit}")
    return (
        f"{model} {metadata['width']}x{metadata['height']} in {elapsed:.1f}s, {len(steps)} progress "
        f"notifications, preview {preview.size[0]}x{preview.size[1]}, result {size // 1024} KiB"
    )


def _model_to_generate_with(models: dict[str, Any]) -> str:
    """The default model when its weights are on disk and it is allowed, else the offline `tiny`.

    The self-test never downloads gigabytes: a user without weights yet still learns that generation works.
    """
    default = next(row for row in models["models"] if row["key"] == models["default"])
    return str(default["key"]) if default["weights_present"] and default["available"] else "tiny"


def _structured(result: CallToolResult, tool: str) -> dict[str, Any]:
    """The structured content of a successful call; an error result fails the check with its body."""
    if result.is_error:
        raise CheckFailed(f"{tool} answered an error: {_text(result)}")
    _expect(isinstance(result.structured_content, dict), f"{tool} answered no structured content")
    answer: dict[str, Any] = result.structured_content
    return answer


def _text(result: CallToolResult, index: int = 0) -> str:
    block = result.content[index] if index < len(result.content) else None
    _expect(isinstance(block, TextContent), f"content block {index} is not text: {block!r}")
    assert isinstance(block, TextContent)
    return block.text


def _preview(result: CallToolResult) -> Image.Image:
    images = [block for block in result.content if isinstance(block, ImageContent)]
    _expect(len(images) == 1, f"{len(images)} image blocks, not one preview")
    with Image.open(io.BytesIO(base64.b64decode(images[0].data))) as image:
        image.load()
        return image.copy()
