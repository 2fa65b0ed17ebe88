"""/health/live and /health/ready, the orchestrators' probes: live while the process answers; ready while the
folders and the job store take writes, the queue runs and the default model can be served, and 503 naming the
failing checks otherwise, back to 200 once the fault heals. Both answer without a key and leak nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from tests.faults.conftest import SMALL, serving
from tests.loopback import LOCAL_URL

ALL_OK = {"storage": {"ok": True}, "queue": {"ok": True}, "model": {"ok": True}}
KEY = "probe-key-0123456789ab"


@contextmanager
def file_in_place_of(folder: Path) -> Iterator[None]:
    """`folder` moved aside and a file in its place (whatever user runs the tests: root writes through permission
    bits), then put back. Open files in it, the job database's, stay open."""
    aside = folder.with_name(folder.name + "-aside")
    folder.rename(aside)
    folder.write_text("in the way")
    try:
        yield
    finally:
        folder.unlink()
        aside.rename(folder)


def test_live_and_ready_answer_ok_on_a_healthy_server(client: TestClient) -> None:
    live = client.get("/health/live")
    assert (live.status_code, live.json()) == (200, {"ok": True, "status": "alive"})

    ready = client.get("/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ok": True, "status": "ready", "checks": ALL_OK})


def test_ready_turns_false_while_the_data_folder_is_unwritable_and_back_when_it_heals(settings: Settings) -> None:
    with serving(settings) as (client, _, _):
        with file_in_place_of(settings.data_path):
            ready = client.get("/health/ready")

            assert ready.status_code == 503, ready.text
            body = ready.json()
            assert (body["ok"], body["status"]) == (False, "not_ready")
            assert (body["checks"]["queue"], body["checks"]["model"]) == ({"ok": True}, {"ok": True})
            storage = body["checks"]["storage"]
            assert (storage["ok"], storage["code"]) == (False, "storage_unavailable")
            assert storage["message"] == (
                "A folder the server writes cannot be written: IMAGEFORGE_DATA_DIR is not a folder (a file is in the "
                "way)."
            )
            assert str(settings.root_dir) not in ready.text
            assert client.get("/health/live").status_code == 200, "alive all along: restarting would not help"

        healed = client.get("/health/ready")
        assert (healed.status_code, healed.json()["checks"]) == (200, ALL_OK)
        assert client.post("/generate", json={"prompt": "healed", **SMALL}).status_code == 200


def test_ready_without_a_key_names_the_failing_check_and_its_code_but_not_why(
    settings: Settings, service: ImageService
) -> None:
    app = create_app(service, api_keys=ApiKeys((("ops", KEY),)))
    with TestClient(app, base_url=LOCAL_URL) as client, file_in_place_of(settings.output_path):
        anonymous = client.get("/health/ready")
        keyed = client.get("/health/ready", headers={"Authorization": f"Bearer {KEY}"})

    assert anonymous.status_code == 503
    assert anonymous.json()["checks"]["storage"] == {"ok": False, "code": "storage_unavailable"}
    assert keyed.json()["checks"]["storage"]["message"].startswith("A folder the server writes cannot be written: ")
    assert "OUTPUT_DIR" in keyed.json()["checks"]["storage"]["message"]


def test_ready_fails_on_a_default_model_whose_weights_are_not_on_this_machine(settings: Settings) -> None:
    service = build_service(settings.model_copy(update={"default_model": "sd-turbo"}))
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        ready = client.get("/health/ready")

    assert ready.status_code == 503
    model = ready.json()["checks"]["model"]
    assert (model["ok"], model["code"]) == (False, "weights_unavailable")
    assert model["hint"].startswith("Fetch them with `imageforge models pull sd-turbo`")


def test_ready_fails_once_the_queue_has_stopped(settings: Settings) -> None:
    service = build_service(settings)
    assert service.readiness().checks["queue"] is not None, "not started yet"
    service.start()
    assert service.readiness().ready
    service.close()

    stopped = service.readiness().checks["queue"]
    assert stopped is not None
    assert stopped.code == "queue_unavailable"
