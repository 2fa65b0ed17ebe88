"""submit_async_job takes a webhook as POST /jobs does: refused with the same code outside the allow-list,
delivered signed to an allowed receiver."""

from __future__ import annotations

import json

import pytest
from mcp.client.client import Client
from standardwebhooks import Webhook

from imageforge.bootstrap import build_service, webhook_secret
from imageforge.config import Settings
from imageforge.transports.mcp.server import build_mcp_server
from tests.transports.mcp.answers import error_of, structured_of
from tests.webhook_receiver import receiving

pytestmark = pytest.mark.anyio

JOB = {"prompt": "a fox", "steps": 2, "width": 64, "height": 64}


async def test_a_webhook_is_refused_with_its_code_while_the_allow_list_is_empty(mcp: Client) -> None:
    result = await mcp.call_tool("submit_async_job", {**JOB, "webhook": "http://127.0.0.1:9/hook"})

    error = error_of(result)
    assert error["code"] == "webhook_not_allowed"
    assert "IMAGEFORGE_WEBHOOK_ALLOW" in error["hint"]


async def test_a_webhook_outside_the_allow_list_is_refused_with_its_code(settings: Settings) -> None:
    service = build_service(settings.model_copy(update={"webhook_allow": ["hooks.example.net"]}))
    async with Client(build_mcp_server(service)) as mcp:
        result = await mcp.call_tool("submit_async_job", {**JOB, "webhook": "http://169.254.169.254/latest/"})

    assert error_of(result)["code"] == "webhook_not_allowed"


async def test_a_queued_job_posts_its_events_to_an_allowed_webhook(settings: Settings) -> None:
    with receiving() as receiver:
        allowed = {"webhook_allow": [f"127.0.0.1:{receiver.port}"], "webhook_retry_s": []}
        service = build_service(settings.model_copy(update=allowed))
        service.start()
        try:
            async with Client(build_mcp_server(service)) as mcp:
                submitted = await mcp.call_tool(
                    "submit_async_job", {**JOB, "webhook": receiver.url, "webhook_events": ["started", "completed"]}
                )
            job_id = structured_of(submitted)["job_id"]
            service.wait_job(job_id, timeout=60)
            assert service.settle_webhooks(60)
            started, completed = receiver.wait_for(2)
        finally:
            service.close()

    verify = Webhook(webhook_secret(settings)).verify
    assert [verify(delivery.body, delivery.headers)["type"] for delivery in (started, completed)] == [
        "job.started",
        "job.completed",
    ]
    assert json.loads(completed.body)["data"]["job_id"] == job_id
