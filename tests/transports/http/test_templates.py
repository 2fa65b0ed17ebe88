"""GET /templates and GET /templates/{key}?subject=: style templates as starting points, on the real service."""

from __future__ import annotations

from fastapi.testclient import TestClient

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.prompting.templates import BUILTIN_TEMPLATES
from imageforge.transports.http.app import create_app
from tests.loopback import LOCAL_URL


def test_get_templates_lists_every_template_with_its_body_and_size(client: TestClient) -> None:
    response = client.get("/templates")

    assert response.status_code == 200
    answer = response.json()
    assert answer["ok"] is True
    assert answer["templates"] == [template.model_dump() for template in BUILTIN_TEMPLATES]
    assert set(answer["templates"][0]) == {
        "key",
        "title",
        "description",
        "body",
        "width",
        "height",
        "negative_prompt",
    }


def test_get_template_with_a_subject_answers_the_prompt_and_size_to_start_from(client: TestClient) -> None:
    response = client.get("/templates/sketch", params={"subject": "an old lighthouse"})

    assert response.status_code == 200
    answer = response.json()
    assert answer["prompt"].startswith("a graphite pencil sketch of an old lighthouse, ")
    assert (answer["key"], answer["subject"], answer["width"], answer["height"]) == (
        "sketch",
        "an old lighthouse",
        768,
        768,
    )
    assert answer["negative_prompt"]


def test_the_starting_point_is_a_request_the_server_accepts(client: TestClient) -> None:
    start = client.get("/templates/icon", params={"subject": "a fox"}).json()

    body = {key: start[key] for key in ("prompt", "negative_prompt", "width", "height")}
    response = client.post("/generate", json={**body, "steps": 1, "return_mode": "path"})

    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["width"], result["height"]) == (512, 512)
    assert result["prompt"] == start["prompt"]


def test_an_unknown_template_is_404_template_not_found_naming_the_keys(client: TestClient) -> None:
    response = client.get("/templates/watercolour", params={"subject": "a fox"})

    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "template_not_found"
    assert "whiteboard" in error["hint"]


def test_a_missing_subject_is_400_invalid_request(client: TestClient) -> None:
    response = client.get("/templates/photo")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert "subject is empty" in response.json()["error"]["message"]


def test_templates_from_the_templates_file_are_served(settings: Settings) -> None:
    (settings.root_dir / "templates.toml").write_text(
        '[templates.blueprint]\ntitle = "Blueprint"\nbody = "a blueprint of {subject}"\nwidth = 1024\nheight = 640\n'
    )

    with TestClient(create_app(build_service(settings)), base_url=LOCAL_URL) as client:
        keys = [template["key"] for template in client.get("/templates").json()["templates"]]
        start = client.get("/templates/blueprint", params={"subject": "a bridge"}).json()

    assert keys[-1] == "blueprint"
    assert (start["prompt"], start["width"], start["height"]) == ("a blueprint of a bridge", 1024, 640)


def test_a_size_over_max_res_is_scaled_to_fit_it(settings: Settings) -> None:
    app = create_app(build_service(settings.model_copy(update={"max_res": 512})))
    with TestClient(app, base_url=LOCAL_URL) as client:
        start = client.get("/templates/whiteboard", params={"subject": "a plan"}).json()
        listed = client.get("/templates").json()["templates"][0]

    assert (start["width"], start["height"]) == (512, 384)
    assert (listed["width"], listed["height"]) == (1024, 768), "the list shows the template as written"


def test_generate_with_a_style_draws_the_templates_prompt_at_its_size(settings: Settings) -> None:
    app = create_app(build_service(settings.model_copy(update={"max_res": 128})))
    with TestClient(app, base_url=LOCAL_URL) as client:
        response = client.post(
            "/generate", json={"prompt": "a paper plane", "style": "icon", "steps": 1, "return_mode": "path"}
        )

    assert response.status_code == 200, response.text
    drawn = response.json()
    assert drawn["prompt"].startswith("a flat vector clipart icon of a paper plane, ")
    assert drawn["negative_prompt"].startswith("photorealistic")
    assert (drawn["width"], drawn["height"], drawn["style"]) == (128, 128, "icon")


def test_a_job_with_an_unknown_style_is_404_template_not_found_naming_the_keys(client: TestClient) -> None:
    generated = client.post("/generate", json={"prompt": "a fox", "style": "watercolour"})
    queued = client.post("/jobs", json={"prompt": "a fox", "style": "watercolour"})

    for response in (generated, queued):
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "template_not_found"
        assert "Use one of: whiteboard, icon" in error["hint"]
    assert client.get("/jobs").json()["jobs"] == []
