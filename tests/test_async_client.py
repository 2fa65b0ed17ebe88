"""The asynchronous Python client against a real server on loopback running the tiny model: what `Client` does,
awaited, and many calls at once from one client."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from imageforge.bootstrap import build_service
from imageforge.client import AsyncClient, JobEvent
from imageforge.config import Settings
from imageforge.domain import AssistResult, ImageResult, Progress, Task
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.errors import (
    Cancelled,
    ImageforgeError,
    InvalidRequest,
    JobFinished,
    JobNotFound,
    ModelNotFound,
    QueueFull,
    ServerUnavailable,
)
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from tests.contract.conftest import free_port
from tests.gated import GatedBackend
from tests.loopback import serving_app
from tests.test_client import CLIENT_PAGE, DOCS_ADDRESS, assert_png, png_bytes

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """asyncio, whose `gather` the tests use."""
    return "asyncio"


@pytest.fixture
def url(service: ImageService, settings: Settings) -> Iterator[str]:
    """A real server on loopback."""
    with serving_app(create_app(service, max_body_bytes=int(settings.max_body_mb * 1024 * 1024))) as url:
        yield url


@pytest.fixture
def gated(settings: Settings) -> Iterator[tuple[str, GatedBackend]]:
    """A server whose generations hold at every step until the test releases them; one job may wait."""
    backend = GatedBackend(DiffusersBackend(device="cpu", models_path=settings.models_path))
    service = build_service(settings.model_copy(update={"max_queue": 1, "queue_share": 2}), backend=backend)
    with serving_app(create_app(service)) as url:
        try:
            yield url, backend
        finally:
            backend.release(1000)


async def test_service_calls_answer_as_the_blocking_clients_do(url: str) -> None:
    async with AsyncClient(url) as client:
        health = await client.health()
        models = await client.models()
        loaded = await client.load_model("tiny")
        unloaded = await client.unload_model("tiny")
        templates = await client.templates()
        filled = await client.template(templates[0]["key"], "a fox")
        assisted = await client.assist("a red fox")

    assert (health["ok"], health["default_model"], models["default"]) == (True, "tiny", "tiny")
    assert (loaded["resident"], unloaded["resident"], unloaded["changed"]) == (True, False, True)
    assert "a fox" in filled["prompt"]
    assert isinstance(assisted, AssistResult)
    assert (assisted.prompt, assisted.source) == ("a red fox", "passthrough")


async def test_generate_returns_the_png_with_the_seed_asked_for(url: str) -> None:
    async with AsyncClient(url) as client:
        result = await client.generate("a fox", seed=3, steps=2, width=64, height=64)
        again = await client.generate("a fox", seed=3, steps=2, width=64, height=64)

    assert isinstance(result, ImageResult)
    assert (result.task, result.model, result.seed, result.steps, result.cached) == (Task.TEXT2IMG, "tiny", 3, 2, False)
    assert_png(result.png, (64, 64))
    assert Path(result.output_path).read_bytes() == result.png
    assert again.cached, "the same seeded request hits the cache"


async def test_edit_and_inpaint_send_images_given_as_bytes_or_local_files(url: str, tmp_path: Path) -> None:
    mask = tmp_path / "mask.png"
    mask.write_bytes(png_bytes(color=255, mode="L"))

    async with AsyncClient(url) as client:
        edited = await client.edit("a fox at night", png_bytes(), seed=1)
        painted = await client.inpaint("an owl", png_bytes(), mask, seed=1, strength=0.9)
        from_server = await client.edit("the same fox", init_image_path=edited.output_path, seed=1)

    assert (edited.task, edited.strength, edited.width) == (Task.IMG2IMG, 0.6, 64)
    assert (painted.task, painted.strength, painted.width) == (Task.INPAINT, 0.9, 64)
    assert (from_server.task, from_server.width) == (Task.IMG2IMG, 64)
    assert_png(painted.png, (64, 64))


async def test_submit_then_events_stream_each_step_up_to_the_final_state(url: str) -> None:
    async with AsyncClient(url) as client:
        job = await client.submit("a lighthouse", seed=2, steps=3, width=64, height=64)
        events = [event async for event in client.events(job.job_id)]
        done = await client.job(job.job_id)
        listed = await client.jobs("succeeded")
        assert done.image_url is not None
        png = await client.image(done.image_url)

    assert (job.task, job.model) == ("text2img", "tiny")
    assert all(isinstance(event, JobEvent) for event in events)
    assert events[0].type == "state"
    assert [event.data["step"] for event in events if event.type == "progress"] == [1, 2, 3]
    assert events[-1].is_terminal
    assert events[-1].data["status"] == "succeeded"
    assert not any(event.is_terminal for event in events[:-1])
    assert (done.status, done.progress, [one.job_id for one in listed]) == ("succeeded", Progress(3, 3), [job.job_id])
    assert_png(png, (64, 64))


async def test_wait_reports_each_step_to_a_function_or_a_coroutine_and_returns_the_image(url: str) -> None:
    plain: list[Progress] = []
    awaited: list[Progress] = []

    async def report(progress: Progress) -> None:
        await anyio.lowlevel.checkpoint()
        awaited.append(progress)

    async with AsyncClient(url) as client:
        first = await client.submit("a fox", seed=5, steps=3, width=64, height=64)
        second = await client.submit("an owl", seed=6, steps=2, width=64, height=64)
        result = await client.wait(first.job_id, on_progress=plain.append)
        owl = await client.wait(second.job_id, on_progress=report)

    assert [(progress.step, progress.total) for progress in plain] == [(1, 3), (2, 3), (3, 3)]
    assert [progress.step for progress in awaited] == [1, 2]
    assert (result.seed, result.steps, result.width) == (5, 3, 64)
    assert result.png == Path(result.output_path).read_bytes()
    assert (owl.seed, owl.steps) == (6, 2)


async def test_cancel_held_job_ends_it_cancelled_and_wait_raises_cancelled(gated: tuple[str, GatedBackend]) -> None:
    url, backend = gated
    async with AsyncClient(url) as client:
        job = await client.submit("long", steps=20, width=64, height=64)
        await anyio.to_thread.run_sync(backend.wait_for_step)

        answer = await client.cancel(job.job_id)
        backend.release()

        with pytest.raises(Cancelled) as caught:
            await client.wait(job.job_id)
        ended = await client.job(job.job_id)
        with pytest.raises(JobFinished):
            await client.cancel(job.job_id)

    assert not answer.is_terminal, "a running job stops at its next step"
    assert caught.value.code == "cancelled"
    assert (ended.status, ended.error is not None and ended.error["code"]) == ("cancelled", "cancelled")
    assert ended.progress.step < 20


async def test_server_errors_raise_the_same_imageforge_errors_with_their_codes(url: str) -> None:
    async with AsyncClient(url) as client:
        with pytest.raises(InvalidRequest) as invalid:
            await client.generate("a fox", width=100)
        with pytest.raises(InvalidRequest) as queued:
            await client.submit("a fox", width=100)
        with pytest.raises(ModelNotFound) as model:
            await client.generate("a fox", model="no-such-model")
        with pytest.raises(JobNotFound):
            await client.job("nope")
        with pytest.raises(JobNotFound):
            [event async for event in client.events("nope")]
        listed = await client.jobs()

    for caught in (invalid, queued):
        assert type(caught.value) is InvalidRequest
        assert caught.value.code == "invalid_request"
        assert "width 100 is not a multiple of 8" in caught.value.message
        assert caught.value.hint
    assert (model.value.code, "tiny" in model.value.hint) == ("model_not_found", True)
    assert listed == [], "a refused job is never queued"


async def test_a_full_queue_raises_queue_full_with_the_servers_retry_after() -> None:
    answer = {"ok": False, "error": {"code": "queue_full", "message": "The queue is full.", "hint": "Retry later."}}

    def full(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json=answer, headers={"Retry-After": "17"})

    async with AsyncClient(transport=httpx.MockTransport(full)) as client:
        with pytest.raises(QueueFull) as caught:
            await client.submit("p")

    assert (caught.value.code, caught.value.retry_after_s, caught.value.hint) == ("queue_full", 17, "Retry later.")


@pytest.mark.parametrize(("status", "content"), [(502, b"<html>Bad Gateway</html>"), (200, b"[1, 2]")])
async def test_an_answer_that_is_not_imageforge_raises_http_error(status: int, content: bytes) -> None:
    def proxy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content)

    async with AsyncClient(transport=httpx.MockTransport(proxy)) as client:
        with pytest.raises(ImageforgeError) as caught:
            await client.health()

    assert caught.value.code == "http_error"
    assert f"answered {status}" in caught.value.message


async def test_refused_connection_raises_server_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there any more

    async with AsyncClient(url) as client:
        with pytest.raises(ServerUnavailable) as caught:
            await client.health()

    assert caught.value.code == "server_unavailable"
    assert url in caught.value.message
    assert "imageforge serve" in caught.value.hint


async def test_several_generates_at_once_from_one_client_each_return_their_own_image(url: str) -> None:
    seeds = [11, 12, 13, 14]

    async with AsyncClient(url) as client:
        results = await asyncio.gather(
            *(client.generate(f"a fox {seed}", seed=seed, steps=1, width=64, height=64) for seed in seeds)
        )

    assert [result.seed for result in results] == seeds
    assert [result.prompt for result in results] == [f"a fox {seed}" for seed in seeds]
    assert len({result.output_path for result in results}) == len(seeds)
    for result in results:
        assert Path(result.output_path).read_bytes() == result.png


def documented_async_example() -> str:
    """The ```python block of docs/python-client.md that uses AsyncClient."""
    blocks = re.findall(r"^```python\n(.*?)^```", CLIENT_PAGE.read_text(encoding="utf-8"), re.M | re.S)
    found = [block for block in blocks if "AsyncClient(" in block]
    assert found, "docs/python-client.md has no AsyncClient example"
    return str(found[0])


def test_documented_async_example_runs_as_it_is_against_a_server(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = documented_async_example().replace(DOCS_ADDRESS, url.removeprefix("http://"))
    monkeypatch.chdir(tmp_path)

    exec(compile(script, str(CLIENT_PAGE), "exec"), {"__name__": "documented_example"})

    printed = capsys.readouterr().out.splitlines()
    assert printed[:3] == ["fox 1: seed 1", "fox 2: seed 2", "fox 3: seed 3"]
    assert "lighthouse step 4/4" in printed
    assert printed[-1].startswith("invalid_request: width 100 is not a multiple of 8")
    for name in ("fox-1.png", "fox-2.png", "fox-3.png", "lighthouse.png"):
        assert_png((tmp_path / name).read_bytes(), (256, 256))
