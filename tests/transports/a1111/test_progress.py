"""A1111's progress, interrupt and skip on a real server whose job holds at a step: what `webuiapi` reads while
its txt2img waits, and how that wait ends."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import webuiapi
from PIL import Image

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.domain import JobStatus
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from tests.gated import WAIT_S, GatedBackend
from tests.loopback import serving_app


class HeldTxt2Img:
    """A webuiapi txt2img of `steps` steps, sent from a thread, whose job holds at each step until released."""

    def __init__(self, api: webuiapi.WebUIApi, steps: int) -> None:
        self.outcome: BaseException | webuiapi.WebUIApiResult | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(api, steps), daemon=True)
        self._thread.start()

    def _run(self, api: webuiapi.WebUIApi, steps: int) -> None:
        try:
            self.outcome = api.txt2img(prompt="a slow heron", steps=steps, width=64, height=64)
        except BaseException as exc:  # the test reads it: webuiapi raises RuntimeError on an error status
            self.outcome = exc
        finally:
            self.done.set()


@pytest.fixture
def held(settings: Settings) -> Iterator[tuple[webuiapi.WebUIApi, GatedBackend, ImageService]]:
    backend = GatedBackend(DiffusersBackend(device="cpu", models_path=settings.models_path))
    service = build_service(settings, backend=backend)
    with serving_app(create_app(service)) as url:
        address = urlsplit(url)
        api = webuiapi.WebUIApi(host=address.hostname, port=address.port)
        try:
            yield api, backend, service
        finally:
            backend.release(1000)


def test_progress_shows_the_running_jobs_step_and_its_live_preview(
    held: tuple[webuiapi.WebUIApi, GatedBackend, ImageService],
) -> None:
    api, backend, _ = held
    request = HeldTxt2Img(api, steps=4)
    backend.wait_for_step()

    first = api.get_progress()  # asks the job for previews from its next step on
    backend.release(1)
    backend.wait_for_step()
    second = api.get_progress()
    backend.release(1000)
    assert request.done.wait(WAIT_S)

    assert first["state"]["job_count"] == 1
    assert (first["state"]["sampling_step"], first["state"]["sampling_steps"]) == (1, 4)
    assert first["progress"] == 0.25
    assert second["state"]["sampling_step"] == 2
    assert second["progress"] == 0.5
    preview = Image.open(io.BytesIO(base64.b64decode(second["current_image"])))
    assert preview.format == "PNG"
    assert isinstance(request.outcome, webuiapi.WebUIApiResult)
    idle = api.get_progress()
    assert (idle["progress"], idle["state"]["job_count"]) == (0.0, 0)


def test_progress_leaves_the_preview_out_when_asked_to_skip_it(
    held: tuple[webuiapi.WebUIApi, GatedBackend, ImageService],
) -> None:
    api, backend, _ = held
    request = HeldTxt2Img(api, steps=3)
    backend.wait_for_step()
    api.get_progress()
    backend.release(1)
    backend.wait_for_step()

    answer = api.session.get(f"{api.baseurl}/progress", params={"skip_current_image": "true"}).json()

    backend.release(1000)
    assert request.done.wait(WAIT_S)
    assert answer["state"]["sampling_step"] == 2
    assert answer["current_image"] is None


@pytest.mark.parametrize("stop", ["interrupt", "skip"])
def test_interrupt_and_skip_end_the_callers_running_job_cancelled(
    held: tuple[webuiapi.WebUIApi, GatedBackend, ImageService], stop: str
) -> None:
    api, backend, service = held
    request = HeldTxt2Img(api, steps=4)
    backend.wait_for_step()

    assert getattr(api, stop)() == {}
    backend.release(1000)
    assert request.done.wait(WAIT_S)

    assert isinstance(request.outcome, RuntimeError)
    status, text = request.outcome.args
    assert status == 409
    assert '"error": "cancelled"' in text.replace('":"', '": "')
    [job] = service.list_jobs()
    assert job.status is JobStatus.CANCELLED
