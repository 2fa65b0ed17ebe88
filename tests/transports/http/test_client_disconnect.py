"""A synchronous client that hangs up does not lose its work: a real server on loopback, a raw socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.transports.http.app import create_app
from tests.events import wait_for_end
from tests.gated import WAIT_S, GatedBackend
from tests.loopback import post_unanswered, serving_app

SEEDED = {"prompt": "a lighthouse at dusk", "seed": 11, "steps": 2, "width": 64, "height": 64}


@pytest.fixture
def backend(settings: Settings) -> GatedBackend:
    return GatedBackend(DiffusersBackend(device="cpu", models_path=settings.models_path))


@pytest.fixture
def server_url(settings: Settings, backend: GatedBackend) -> Iterator[str]:
    with serving_app(create_app(build_service(settings, backend=backend))) as url:
        try:
            yield url
        finally:
            backend.release(1000)  # a held job would keep the server from shutting down


def post_then_hang_up(url: str, path: str, body: dict[str, object], backend: GatedBackend) -> None:
    """Send a request on a raw socket, wait until its job holds at a step, and close the connection unanswered."""
    with post_unanswered(url, path, body, timeout=WAIT_S):
        backend.wait_for_step()


def test_generate_whose_client_hung_up_still_succeeds_and_fills_the_cache(
    server_url: str, backend: GatedBackend
) -> None:
    with httpx.Client(base_url=server_url, timeout=WAIT_S) as client:
        post_then_hang_up(server_url, "/generate", SEEDED, backend)
        [job] = client.get("/jobs").json()["jobs"]
        assert job["status"] == "running", "the job outlives the request that submitted it"

        backend.release(1000)

        assert wait_for_end(client, job) == "succeeded"
        done = client.get(job["links"]["self"]).json()
        assert (done["result"]["seed"], done["result"]["cached"]) == (11, False)
        image = client.get(done["links"]["image"])
        assert image.status_code == 200
        assert image.content == Path(done["result"]["output_path"]).read_bytes()

        again = client.post("/generate", json={**SEEDED, "return_mode": "path"})

        assert again.status_code == 200, again.json()
        assert again.json()["cached"] is True
        assert again.json()["output_path"] == done["result"]["output_path"]
