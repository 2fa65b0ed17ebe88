"""The Python client against a real server on loopback running the tiny model: every call, every error mapping."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from imageforge.bootstrap import build_service
from imageforge.client import Client
from imageforge.config import Settings
from imageforge.domain import AssistResult, ImageResult, Progress, Task
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.errors import (
    Cancelled,
    IdempotencyConflict,
    ImageforgeError,
    ImageNotFound,
    InvalidRequest,
    JobFinished,
    JobNotFound,
    LoraNotFound,
    ModelNotFound,
    QueueFull,
    ServerUnavailable,
)
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from tests.contract.conftest import free_port
from tests.gated import GatedBackend
from tests.helpers import png_base64
from tests.loopback import serving_app

CLIENT_PAGE = Path(__file__).resolve().parents[1] / "docs" / "python-client.md"
DOCS_ADDRESS = "127.0.0.1:8765"


@pytest.fixture
def remote(service: ImageService, settings: Settings) -> Iterator[Client]:
    """A client of a real server on loopback."""
    app = create_app(service, max_body_bytes=int(settings.max_body_mb * 1024 * 1024))
    with serving_app(app) as url, Client(url) as client:
        yield client


@pytest.fixture
def gated(settings: Settings) -> Iterator[tuple[Client, GatedBackend]]:
    """A client of a server whose generations hold at every step until the test releases them; one job may wait."""
    backend = GatedBackend(DiffusersBackend(device="cpu", models_path=settings.models_path))
    service = build_service(settings.model_copy(update={"max_queue": 1, "queue_share": 2}), backend=backend)
    with serving_app(create_app(service)) as url, Client(url) as client:
        try:
            yield client, backend
        finally:
            backend.release(1000)


def png_bytes(
    size: tuple[int, int] = (64, 64), color: int | tuple[int, int, int] = (200, 40, 40), mode: str = "RGB"
) -> bytes:
    return base64.b64decode(png_base64(size, color, mode))


def assert_png(data: bytes, size: tuple[int, int]) -> None:
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.size) == ("PNG", size)


def test_health_and_models_describe_the_server(remote: Client) -> None:
    health = remote.health()
    models = remote.models()

    assert (health["ok"], health["default_model"]) == (True, "tiny")
    assert models["default"] == "tiny"
    assert "tiny" in [model["key"] for model in models["models"]]


def test_assist_returns_the_servers_answer_as_an_assist_result(remote: Client) -> None:
    # The server's Ollama is down (the discard port): a passthrough, which is an answer, not an error.
    result = remote.assist("a red fox", style="pencil sketch")

    assert isinstance(result, AssistResult)
    assert (result.prompt, result.original_prompt, result.tags) == ("a red fox", "a red fox", [])
    assert (result.source, result.assisted) == ("passthrough", False)
    assert "unreachable" in result.reason
    with pytest.raises(InvalidRequest):
        remote.assist("  ")


def test_load_and_unload_model_change_what_is_resident(remote: Client) -> None:
    loaded = remote.load_model("tiny")
    unloaded = remote.unload_model("tiny")

    assert (loaded["resident"], loaded["resident_models"]) == (True, ["tiny"])
    assert (unloaded["resident"], unloaded["changed"]) == (False, True)
    assert remote.health()["resident_models"] == []
    with pytest.raises(ModelNotFound):
        remote.load_model("nope")


def test_generate_returns_the_png_and_its_parameters(remote: Client) -> None:
    result = remote.generate("a fox", seed=3, steps=2, width=64, height=64)

    assert isinstance(result, ImageResult)
    assert (result.task, result.model, result.seed, result.steps) == (Task.TEXT2IMG, "tiny", 3, 2)
    assert (result.width, result.height, result.prompt, result.cached) == (64, 64, "a fox", False)
    assert_png(result.png, (64, 64))
    assert Path(result.output_path).read_bytes() == result.png
    assert remote.generate("a fox", seed=3, steps=2, width=64, height=64).cached, (
        "the same seeded request hits the cache"
    )


def test_edit_and_inpaint_send_images_given_as_bytes_or_local_files(remote: Client, tmp_path: Path) -> None:
    mask = tmp_path / "mask.png"
    mask.write_bytes(png_bytes(color=255, mode="L"))

    edited = remote.edit("a fox at night", png_bytes(), seed=1)
    painted = remote.inpaint("an owl", png_bytes(), mask, seed=1, strength=0.9)

    assert (edited.task, edited.strength, edited.width) == (Task.IMG2IMG, 0.6, 64)
    assert (painted.task, painted.strength, painted.width) == (Task.INPAINT, 0.9, 64)
    assert_png(painted.png, (64, 64))


def test_an_image_given_by_server_path_is_read_on_the_server(remote: Client) -> None:
    first = remote.generate("a fox", seed=4, width=64, height=64)

    edited = remote.edit("the same fox", init_image_path=first.output_path, seed=4)

    assert (edited.task, edited.width, edited.height) == (Task.IMG2IMG, 64, 64)


def test_submit_then_events_arrive_in_order_and_end_with_the_final_state(remote: Client) -> None:
    job = remote.submit("a lighthouse", seed=2, steps=3, width=64, height=64)

    events = list(remote.events(job.job_id))

    assert (job.task, job.model) == ("text2img", "tiny")
    assert job.url.endswith(f"/jobs/{job.job_id}")
    assert events[0].type == "state"
    assert [event.index for event in events] == sorted(event.index for event in events)
    steps = [event.data["step"] for event in events if event.type == "progress"]
    assert steps == sorted(steps)
    assert steps[-1] == 3
    assert events[-1].is_terminal
    assert events[-1].data["status"] == "succeeded"
    assert all(not event.is_terminal for event in events[:-1])
    done = remote.job(job.job_id)
    assert (done.status, done.progress, done.queue_position) == ("succeeded", Progress(3, 3), None)
    assert done.result is not None
    assert done.result["seed"] == 2
    assert done.image_url is not None
    assert_png(remote.image(done.image_url), (64, 64))


def test_events_of_an_ended_job_are_its_final_state_alone(remote: Client) -> None:
    job = remote.submit("a fox", width=64, height=64)
    remote.wait(job.job_id)

    events = list(remote.events(job.job_id))

    assert [(event.type, event.data["status"]) for event in events] == [("state", "succeeded")]


def test_wait_reports_each_step_and_returns_the_image(gated: tuple[Client, GatedBackend]) -> None:
    client, backend = gated
    job = client.submit("a fox", seed=5, steps=3, width=64, height=64)
    backend.wait_for_step()
    seen: list[Progress] = []

    def step_on(progress: Progress) -> None:
        # The job holds at the end of each step until the report of that step reached the caller.
        seen.append(progress)
        backend.release()

    result = client.wait(job.job_id, on_progress=step_on)

    assert [progress.step for progress in seen] == [1, 2, 3]
    assert {progress.total for progress in seen} == {3}
    assert (result.seed, result.steps, result.width) == (5, 3, 64)
    assert result.png == Path(result.output_path).read_bytes()


def test_jobs_for_edit_and_inpaint_are_chosen_by_task(remote: Client) -> None:
    edit = remote.submit("p", task="img2img", init_image=png_bytes())
    inpaint = remote.submit("p", task=Task.INPAINT, init_image=png_bytes(), mask_image=png_bytes(color=255, mode="L"))

    assert (remote.wait(edit.job_id).task, remote.wait(inpaint.job_id).task) == (Task.IMG2IMG, Task.INPAINT)


def test_image_is_read_by_file_name_output_path_or_url(remote: Client) -> None:
    job = remote.submit("a fox", width=64, height=64)
    result = remote.wait(job.job_id)
    url = remote.job(job.job_id).image_url
    assert url is not None

    by_name = remote.image(Path(result.output_path).name)

    assert by_name == remote.image(result.output_path) == remote.image(url) == result.png


def test_jobs_lists_recent_jobs_filtered_by_status(remote: Client) -> None:
    job = remote.submit("a fox", width=64, height=64)
    remote.wait(job.job_id)

    assert [one.job_id for one in remote.jobs()] == [job.job_id]
    assert [one.job_id for one in remote.jobs("succeeded")] == [job.job_id]
    assert remote.jobs(["queued", "running"]) == []


def test_idempotency_key_returns_the_same_job_and_conflicts_for_another_body(remote: Client) -> None:
    first = remote.submit("a fox", idempotency_key="abc", width=64, height=64)
    again = remote.submit("a fox", idempotency_key="abc", width=64, height=64)

    with pytest.raises(IdempotencyConflict):
        remote.submit("an owl", idempotency_key="abc", width=64, height=64)
    assert again.job_id == first.job_id


def test_cancel_running_job_ends_it_cancelled_and_wait_raises_cancelled(gated: tuple[Client, GatedBackend]) -> None:
    client, backend = gated
    job = client.submit("long", steps=20, width=64, height=64)
    backend.wait_for_step()

    answer = client.cancel(job.job_id)
    backend.release()

    assert not answer.is_terminal, "a running job stops at its next step"
    with pytest.raises(Cancelled) as caught:
        client.wait(job.job_id)
    assert caught.value.code == "cancelled"
    ended = client.job(job.job_id)
    assert ended.status == "cancelled"
    assert ended.error is not None
    assert ended.error["code"] == "cancelled"
    assert ended.progress.step < 20


def test_cancel_finished_job_raises_job_finished(remote: Client) -> None:
    job = remote.submit("a fox", width=64, height=64)
    remote.wait(job.job_id)

    with pytest.raises(JobFinished) as caught:
        remote.cancel(job.job_id)
    assert caught.value.code == "job_finished"


def test_invalid_request_raises_invalid_request_with_its_message_and_hint(remote: Client) -> None:
    with pytest.raises(InvalidRequest) as sync:
        remote.generate("a fox", width=100)
    with pytest.raises(InvalidRequest) as queued:
        remote.submit("a fox", width=100)

    for caught in (sync, queued):
        assert type(caught.value) is InvalidRequest
        assert caught.value.code == "invalid_request"
        assert "width 100 is not a multiple of 8" in caught.value.message
        assert caught.value.hint
    assert remote.jobs() == [], "a refused job is never queued"


def test_unknown_model_job_and_image_raise_their_own_errors(remote: Client) -> None:
    with pytest.raises(ModelNotFound) as model:
        remote.generate("a fox", model="no-such-model")
    with pytest.raises(JobNotFound):
        remote.job("nope")
    with pytest.raises(JobNotFound):
        list(remote.events("nope"))
    with pytest.raises(ImageNotFound):
        remote.image("20260101_000000_abcdef.png")

    assert "tiny" in model.value.hint, "the hint names the keys that exist"


def test_full_queue_raises_queue_full_with_retry_after(gated: tuple[Client, GatedBackend]) -> None:
    client, backend = gated
    client.submit("running", width=64, height=64)
    backend.wait_for_step()
    client.submit("waiting", width=64, height=64)

    with pytest.raises(QueueFull) as caught:
        client.submit("one too many", width=64, height=64)

    assert caught.value.code == "queue_full"
    assert caught.value.retry_after_s >= 1
    assert "Retry-After" in caught.value.hint


def test_queue_full_keeps_the_servers_retry_after() -> None:
    answer = {"ok": False, "error": {"code": "queue_full", "message": "The queue is full.", "hint": "Retry later."}}

    def full(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json=answer, headers={"Retry-After": "17"})

    with Client(transport=httpx.MockTransport(full)) as client, pytest.raises(QueueFull) as caught:
        client.submit("p")

    assert (caught.value.retry_after_s, caught.value.message, caught.value.hint) == (
        17,
        "The queue is full.",
        "Retry later.",
    )


def test_refused_connection_raises_server_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there any more

    with Client(url) as client, pytest.raises(ServerUnavailable) as caught:
        client.health()

    assert caught.value.code == "server_unavailable"
    assert url in caught.value.message
    assert "imageforge serve" in caught.value.hint


def test_an_address_without_a_scheme_is_reached_over_http() -> None:
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"ok": True})

    with Client("127.0.0.1:9000/prefix/", transport=httpx.MockTransport(record)) as client:
        client.health()

    assert seen == ["http://127.0.0.1:9000/prefix/health"]


@pytest.mark.parametrize(
    ("status", "content"), [(502, b"<html>Bad Gateway</html>"), (200, b"<html>not an API</html>"), (200, b"[1, 2]")]
)
def test_an_answer_that_is_not_imageforge_raises_http_error(status: int, content: bytes) -> None:
    def proxy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content)

    with Client(transport=httpx.MockTransport(proxy)) as client, pytest.raises(ImageforgeError) as caught:
        client.health()

    assert caught.value.code == "http_error"
    assert f"answered {status}" in caught.value.message
    assert "imageforge server" in caught.value.hint


def documented_client_example() -> str:
    """The first ```python block of docs/python-client.md."""
    block = re.search(r"^```python\n(.*?)^```", CLIENT_PAGE.read_text(encoding="utf-8"), re.M | re.S)
    assert block is not None, "docs/python-client.md has no python example"
    return block.group(1)


def test_documented_example_runs_as_it_is_against_a_server(
    remote: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = documented_client_example().replace(DOCS_ADDRESS, remote.base_url.removeprefix("http://"))
    monkeypatch.chdir(tmp_path)

    exec(compile(script, str(CLIENT_PAGE), "exec"), {"__name__": "documented_example"})

    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("tiny 42 False ")
    assert "step 4/4" in printed
    assert printed[-1].startswith("invalid_request: width 100 is not a multiple of 8")
    assert_png((tmp_path / "fox.png").read_bytes(), (256, 256))
    assert_png((tmp_path / "lighthouse.png").read_bytes(), (256, 256))


def test_generate_with_count_returns_every_image_with_its_seed_and_png(remote: Client) -> None:
    result = remote.generate("a fox", seed=21, count=3, width=64, height=64, steps=1)

    assert [image.seed for image in result.images] == [21, 22, 23]
    assert [image.png for image in result.images] == [Path(image.output_path).read_bytes() for image in result.images]
    assert (result.seed, result.png) == (21, result.images[0].png), "the result itself is the first image"


def test_wait_on_a_job_with_count_fetches_every_image(remote: Client) -> None:
    job = remote.submit("a fox", seed=30, count=2, width=64, height=64, steps=1)

    result = remote.wait(job.job_id)

    assert [image.seed for image in result.images] == [30, 31]
    assert [image.png for image in result.images] == [Path(image.output_path).read_bytes() for image in result.images]


def test_generate_with_a_sampler_returns_the_sampler_and_schedule_that_ran(remote: Client) -> None:
    chosen = remote.generate("a fox", seed=2, width=64, height=64, sampler="heun", schedule="exponential")
    own = remote.generate("a fox", seed=2, width=64, height=64)

    assert (chosen.sampler, chosen.schedule) == ("heun", "exponential")
    assert (own.sampler, own.schedule) == ("euler", "default")


def test_loras_lists_the_servers_loras_and_generate_applies_them(remote: Client, loras: Path) -> None:
    listed = remote.loras()
    result = remote.generate("a fox", seed=2, width=64, height=64, loras=[{"name": "one", "weight": 0.5}])

    assert [lora["name"] for lora in listed["loras"]] == ["one", "two"]
    assert [(lora.name, lora.weight) for lora in result.loras] == [("one", 0.5)]


def test_an_unknown_lora_raises_its_error(remote: Client, loras: Path) -> None:
    with pytest.raises(LoraNotFound):
        remote.generate("a fox", loras=[{"name": "watercolour"}])
