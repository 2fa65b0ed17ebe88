"""The MCP tools over Streamable HTTP on the API nodes of a cluster of real processes (no model on them): a drawing
tool reports a worker's steps as progress and returns its image, and a job submitted over HTTP on one node is
cancelled with the MCP tool on the other."""

from __future__ import annotations

from pathlib import Path

import pytest
from anyio import to_thread
from mcp.client.client import Client as McpClient

from imageforge.client import Client
from tests.distributed.cluster import Cluster
from tests.distributed.test_across_nodes import LONG, api_nodes, first_step

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

STEPS = 8


@pytest.fixture
def anyio_backend() -> str:
    """The event loop the MCP SDK and uvicorn use."""
    return "asyncio"


async def test_generate_image_on_an_api_node_reports_a_workers_steps_and_returns_its_image(
    two_by_two: Cluster,
) -> None:
    _, node = api_nodes(two_by_two)
    steps: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if message and message.startswith("step "):  # the queue and the model load report without a total
            steps.append(progress)

    async with McpClient(f"{node.url}/mcp") as mcp:
        arguments = {"prompt": "a lighthouse at dusk", "width": 256, "height": 256, "steps": STEPS}
        result = await mcp.call_tool("generate_image", arguments, progress_callback=on_progress)

    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    assert Path(result.structured_content["output_path"]).parent == (two_by_two.shared / "outputs").resolve()
    assert steps, "no step reached the MCP client"
    assert steps == sorted(steps)


async def test_a_job_submitted_over_http_on_one_api_node_is_cancelled_with_the_mcp_tool_on_another(
    two_by_two: Cluster,
) -> None:
    first, second = api_nodes(two_by_two)
    with Client(first.url, timeout=120) as on_a:
        job = on_a.submit("a lighthouse at dusk", **LONG)
        await to_thread.run_sync(first_step, on_a, job.job_id)

        async with McpClient(f"{second.url}/mcp") as mcp:
            answer = await mcp.call_tool("cancel_job", {"job_id": job.job_id})

        last = await to_thread.run_sync(lambda: list(on_a.events(job.job_id))[-1])
        ended = on_a.job(job.job_id)

    assert not answer.is_error, answer.content
    assert last.data["status"] == "cancelled"
    assert ended.status == "cancelled"
