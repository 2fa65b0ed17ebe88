"""The MCP tools through the official MCP client, connected in memory to the server on the real tiny model."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import anyio
import pytest
from mcp.client.client import Client
from mcp_types import CallToolResult, ImageContent, TextContent
from PIL import Image

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.domain import JobStatus
from imageforge.service import ImageService
from imageforge.transports.mcp.server import build_mcp_server
from tests.gated import GatedBackend
from tests.transports.mcp.answers import error_of

pytestmark = pytest.mark.anyio

SMALL = {"width": 64, "height": 64, "steps": 2}
IMAGE_TOOLS = {"generate_image", "edit_image", "inpaint_image", "replay_image", "get_job_result"}
WAIT_S = 30.0


def _preview(result: CallToolResult) -> Image.Image:
    [image] = [block for block in result.content if isinstance(block, ImageContent)]
    return Image.open(io.BytesIO(base64.b64decode(image.data)))


async def test_the_tools_are_listed_with_guidance_and_output_schemas(mcp: Client) -> None:
    tools = {tool.name: tool for tool in (await mcp.list_tools()).tools}

    assert set(tools) == IMAGE_TOOLS | {
        "assist_prompt",
        "list_models",
        "list_loras",
        "list_styles",
        "list_images",
        "submit_async_job",
        "get_job_status",
        "cancel_job",
    }
    for name in IMAGE_TOOLS:
        description = tools[name].description or ""
        assert "output_path" in description, "agents are told to give the user the saved path"
        schema = tools[name].output_schema
        assert schema is not None
        assert "output_path" in schema["properties"]
    assert "every 5 seconds" in (tools["get_job_status"].description or "")
    assert "every 5 seconds" in (tools["submit_async_job"].description or "")
    assert tools["generate_image"].input_schema["required"] == ["prompt"]


async def test_generate_image_returns_preview_metadata_and_structured_content(mcp: Client) -> None:
    result = await mcp.call_tool("generate_image", {"prompt": "a fox", "seed": 5, **SMALL})

    assert not result.is_error
    structured = result.structured_content
    assert structured is not None
    assert (structured["model"], structured["seed"], structured["steps"]) == ("tiny", 5, 2)
    assert (structured["width"], structured["height"]) == (64, 64)
    assert structured["url"] is None, "no HTTP origin in memory, so no link"
    text = result.content[1]
    assert isinstance(text, TextContent)
    assert json.loads(text.text) == structured
    with Image.open(structured["output_path"]) as saved:
        assert saved.size == (64, 64)
    assert _preview(result).size == (64, 64)


async def test_progress_reports_the_model_loading_then_each_step(mcp: Client) -> None:
    reported: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reported.append((progress, total, message))

    result = await mcp.call_tool("generate_image", {"prompt": "a fox", **{**SMALL, "steps": 3}}, None, on_progress)

    assert not result.is_error
    # The service is new, so its first job loads the model; nothing else runs, so no queue wait is reported.
    # (On a slow machine a long load is also said again every 10 s, as "loading tiny (10 s)".)
    said = [report for report in reported if not (report[2] or "").endswith(" s)")]
    assert said == [(0.5, None, "loading tiny"), (1, 3, "step 1/3"), (2, 3, "step 2/3"), (3, 3, "step 3/3")]


async def test_bad_input_is_a_tool_error_with_the_http_code_and_hint(mcp: Client) -> None:
    size = await mcp.call_tool("generate_image", {"prompt": "a fox", "width": 100})
    model = await mcp.call_tool("generate_image", {"prompt": "a fox", "model": "nope"})
    outside = await mcp.call_tool("edit_image", {"prompt": "a fox", "image": "/etc/passwd"})

    assert error_of(size)["code"] == "invalid_request"
    assert "multiple of 8" in error_of(size)["hint"]
    assert error_of(model)["code"] == "model_not_found"
    assert error_of(outside)["code"] == "path_forbidden"


async def test_edit_and_inpaint_read_images_by_path_in_the_outputs(mcp: Client, settings: Settings) -> None:
    first = await mcp.call_tool("generate_image", {"prompt": "a fox", **SMALL})
    assert first.structured_content is not None
    image_path = Path(first.structured_content["output_path"])
    mask = settings.output_path / "mask.png"
    Image.new("L", (64, 64), 255).save(mask)
    relative = image_path.relative_to(settings.root_dir)  # project-relative paths work as well as absolute

    edited = await mcp.call_tool("edit_image", {"prompt": "at night", "image": str(relative), "steps": 2})
    inpainted = await mcp.call_tool(
        "inpaint_image", {"prompt": "a cat", "image": str(image_path), "mask": str(mask), "steps": 2}
    )

    assert edited.structured_content is not None
    assert inpainted.structured_content is not None
    assert (edited.structured_content["task"], edited.structured_content["width"]) == ("img2img", 64)
    assert inpainted.structured_content["task"] == "inpaint"


async def test_a_1024_pixel_result_stays_under_one_mebibyte(mcp: Client) -> None:
    result = await mcp.call_tool("generate_image", {"prompt": "noise", "width": 1024, "height": 1024, "steps": 1})

    assert not result.is_error
    assert result.structured_content is not None
    assert Path(result.structured_content["output_path"]).stat().st_size > 1024 * 1024, "the full image is large"
    assert len(result.model_dump_json(by_alias=True)) < 1024 * 1024
    assert max(_preview(result).size) <= 512


async def test_assist_prompt_falls_back_to_the_prompt_and_says_why(mcp: Client) -> None:
    result = await mcp.call_tool("assist_prompt", {"prompt": "a red fox", "style": "pencil sketch"})

    assert result.structured_content is not None
    assert result.structured_content["source"] == "passthrough"
    assert result.structured_content["prompt"] == "a red fox"
    assert "unreachable" in result.structured_content["reason"]


async def test_list_models_shows_the_catalog(mcp: Client) -> None:
    result = await mcp.call_tool("list_models", {})

    assert result.structured_content is not None
    assert result.structured_content["default"] == "tiny"
    assert "sd-turbo" in {model["key"] for model in result.structured_content["models"]}


async def test_async_job_flow_submit_status_result_read_twice(mcp: Client) -> None:
    submitted = await mcp.call_tool("submit_async_job", {"prompt": "a fox", "seed": 9, **SMALL})
    assert submitted.structured_content is not None
    job_id = submitted.structured_content["job_id"]

    with anyio.fail_after(WAIT_S):
        while True:
            status = await mcp.call_tool("get_job_status", {"job_id": job_id})
            assert status.structured_content is not None
            if status.structured_content["status"] == "succeeded":
                break
            await anyio.sleep(0.05)  # an agent's polling; the test only bounds it

    first = await mcp.call_tool("get_job_result", {"job_id": job_id})
    again = await mcp.call_tool("get_job_result", {"job_id": job_id})
    assert first.structured_content is not None
    assert first.structured_content["seed"] == 9
    assert again.structured_content == first.structured_content
    assert "get_job_result" in status.structured_content["next"]


async def test_job_results_answer_distinct_errors_for_unknown_failed_and_cancelled_jobs(mcp: Client) -> None:
    unknown = await mcp.call_tool("get_job_result", {"job_id": "nope"})
    bad_task = await mcp.call_tool("submit_async_job", {"prompt": "a fox", "task": "paint"})
    no_image = await mcp.call_tool("submit_async_job", {"prompt": "a fox", "task": "img2img"})

    assert error_of(unknown)["code"] == "job_not_found"
    assert error_of(bad_task)["code"] == "invalid_request"
    assert error_of(no_image)["code"] == "invalid_request"


async def test_result_of_a_running_job_says_it_is_not_ready_and_cancel_stops_it(
    gated: tuple[ImageService, GatedBackend],
) -> None:
    service, backend = gated
    async with Client(build_mcp_server(service)) as mcp:
        submitted = await mcp.call_tool("submit_async_job", {"prompt": "slow", **{**SMALL, "steps": 20}})
        assert submitted.structured_content is not None
        job_id = submitted.structured_content["job_id"]
        await anyio.to_thread.run_sync(backend.wait_for_step)

        early = await mcp.call_tool("get_job_result", {"job_id": job_id})
        cancelled = await mcp.call_tool("cancel_job", {"job_id": job_id})
        backend.release(1)
        ended = await anyio.to_thread.run_sync(lambda: service.wait_job(job_id, WAIT_S))
        result = await mcp.call_tool("get_job_result", {"job_id": job_id})
        again = await mcp.call_tool("cancel_job", {"job_id": job_id})

    assert error_of(early)["code"] == "job_not_ready"
    assert "step 1 of 20" in error_of(early)["message"]
    assert cancelled.structured_content is not None
    assert cancelled.structured_content["status"] == "running", "a running job stops at its next step"
    assert ended.status is JobStatus.CANCELLED
    assert ended.step < 20
    assert error_of(result)["code"] == "cancelled"
    assert error_of(again)["code"] == "job_finished"


async def test_cancelling_the_tool_call_cancels_its_job(gated: tuple[ImageService, GatedBackend]) -> None:
    service, backend = gated
    async with Client(build_mcp_server(service)) as mcp:
        async with anyio.create_task_group() as group:
            group.start_soon(mcp.call_tool, "generate_image", {"prompt": "slow", **{**SMALL, "steps": 20}})
            await anyio.to_thread.run_sync(backend.wait_for_step)
            group.cancel_scope.cancel()
        [job] = service.list_jobs()
        backend.release(1)
        ended = await anyio.to_thread.run_sync(lambda: service.wait_job(job.id, WAIT_S))

    assert ended.status is JobStatus.CANCELLED
    assert ended.step < 20


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_results_of_failed_and_expired_jobs_say_so_with_their_codes(settings: Settings) -> None:
    clock = Clock()
    service = build_service(settings.model_copy(update={"result_ttl_s": 60}), clock=clock)
    service.start()
    try:
        async with Client(build_mcp_server(service)) as mcp:
            # sd-turbo's weights are not on this machine and the Hub is off: the job itself fails.
            failing = await mcp.call_tool("submit_async_job", {"prompt": "a fox", "model": "sd-turbo"})
            done = await mcp.call_tool("submit_async_job", {"prompt": "a fox", **SMALL})
            assert failing.structured_content is not None
            assert done.structured_content is not None
            failed_id, done_id = failing.structured_content["job_id"], done.structured_content["job_id"]
            await anyio.to_thread.run_sync(lambda: service.wait_job(done_id, WAIT_S))

            failed = await mcp.call_tool("get_job_result", {"job_id": failed_id})
            status = await mcp.call_tool("get_job_status", {"job_id": failed_id})
            clock.now += 61
            expired = await mcp.call_tool("get_job_result", {"job_id": done_id})
    finally:
        service.close()

    assert error_of(failed)["code"] == "weights_unavailable"
    assert status.structured_content is not None
    assert status.structured_content["status"] == "failed"
    assert "see error" in status.structured_content["next"]
    assert error_of(expired)["code"] == "expired"


async def test_arguments_the_input_schema_refuses_are_a_tool_error_with_invalid_request(mcp: Client) -> None:
    wrong_type = await mcp.call_tool("generate_image", {"prompt": "a fox", "steps": "many"})
    out_of_bounds = await mcp.call_tool("submit_async_job", {"prompt": "a fox", "seed": -1})

    assert error_of(wrong_type)["code"] == "invalid_request"
    assert error_of(wrong_type)["message"].startswith("steps:")
    assert error_of(wrong_type)["hint"].startswith("steps: at least 1.")
    assert error_of(out_of_bounds)["message"] == "seed: Input should be greater than or equal to 0"


async def test_the_policy_profile_reaches_agents_in_the_tool_descriptions_and_in_each_result(
    settings: Settings,
) -> None:
    described: dict[str, dict[str, str]] = {}
    for profile in ("none", "no-engineering"):
        service = build_service(settings.model_copy(update={"policy_profile": profile}))
        service.start()
        try:
            async with Client(build_mcp_server(service)) as mcp:
                described[profile] = {tool.name: tool.description or "" for tool in (await mcp.list_tools()).tools}
                result = await mcp.call_tool("generate_image", {"prompt": "a fox", "guidance": 2.0, **SMALL})
        finally:
            service.close()

    refusal = "When asked for one of these, do not call this tool; tell the user:"
    for name in ("generate_image", "edit_image", "inpaint_image", "submit_async_job"):
        assert refusal in described["no-engineering"][name]
        assert refusal not in described["none"][name], "without the profile agents are not told to refuse"
    assert result.structured_content is not None
    applied = result.structured_content["policy_applied"]
    assert applied["profile"] == "no-engineering"
    assert applied["model_negative_prompt"].startswith("engineering concept sketch, industrial design ideation")
    assert applied["directive"]["which"] == "no_text_directive"


async def test_replay_image_makes_a_results_image_again_from_its_manifest_or_from_the_image(mcp: Client) -> None:
    made = await mcp.call_tool("generate_image", {"prompt": "a fox", "seed": 5, **SMALL})
    assert made.structured_content is not None
    original = made.structured_content

    from_manifest = await mcp.call_tool("replay_image", {"manifest": original["manifest"]})
    from_image = await mcp.call_tool("replay_image", {"image": original["output_path"]})
    without_either = await mcp.call_tool("replay_image", {})

    for replayed in (from_manifest, from_image):
        assert not replayed.is_error
        assert replayed.structured_content is not None
        assert replayed.structured_content["replay"]["matches"] is True
        with (
            Image.open(replayed.structured_content["output_path"]) as again,
            Image.open(original["output_path"]) as first,
        ):
            assert again.tobytes() == first.tobytes()
    assert error_of(without_either)["code"] == "invalid_request"
