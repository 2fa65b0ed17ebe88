"""GET /metrics: Prometheus's text format, parsed with its own parser after real jobs on the `tiny` model: counts,
histogram buckets, bounded labels, one registry per service, and behind the key like every route."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from tests.gated import GatedBackend
from tests.loopback import LOCAL_URL

SMALL = {"width": 64, "height": 64, "steps": 1}
KEY = "metrics-key-0123456789"
PROMPT = "a lighthouse counted by prometheus"


def samples(client: TestClient, **headers: str) -> list[Sample]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return [sample for family in text_string_to_metric_families(response.text) for sample in family.samples]


def value(found: list[Sample], name: str, **labels: str) -> float:
    """The one sample named `name` whose labels include `labels` (0 when there is none, as Prometheus reads it)."""
    matching = [sample for sample in found if sample.name == name and labels.items() <= sample.labels.items()]
    assert len(matching) <= 1, matching
    return matching[0].value if matching else 0.0


@pytest.fixture
def gated(settings: Settings) -> Iterator[tuple[TestClient, ImageService, GatedBackend]]:
    backend = GatedBackend(DiffusersBackend(device="cpu", models_path=settings.models_path))
    service = build_service(settings, backend=backend)
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        yield client, service, backend


def test_metrics_after_a_few_jobs_count_them_with_histogram_buckets_and_no_unbounded_label(
    gated: tuple[TestClient, ImageService, GatedBackend],
) -> None:
    client, service, backend = gated
    # One job held at its step while a second waits behind it and is cancelled.
    held = client.post("/jobs", json={"prompt": PROMPT, **SMALL, "seed": 1}).json()["job_id"]
    backend.wait_for_step()
    waiting = client.post("/jobs", json={"prompt": PROMPT, **SMALL, "seed": 2}).json()["job_id"]
    assert client.delete(f"/jobs/{waiting}").status_code == 200
    backend.release(1_000_000)
    assert service.wait_job(held, timeout=60).status.value == "succeeded"
    # The same seeded request again: the cache answers it.
    for _ in range(2):
        response = client.post("/generate", json={"prompt": PROMPT, **SMALL, "seed": 3})
        assert response.status_code == 200, response.text
    assert client.get(f"/jobs/{held}").status_code == 200

    found = samples(client)

    assert value(found, "imageforge_jobs_submitted_total", kind="image") == 4
    assert value(found, "imageforge_jobs_finished_total", outcome="succeeded", error_code="") == 3
    assert value(found, "imageforge_jobs_finished_total", outcome="cancelled", error_code="cancelled") == 1
    assert value(found, "imageforge_queue_depth") == 0
    assert value(found, "imageforge_jobs_running") == 0
    assert value(found, "imageforge_queue_wait_seconds_count") == 3, "the cancelled job never started"
    assert value(found, "imageforge_cache_lookups_total", result="miss") == 2
    assert value(found, "imageforge_cache_lookups_total", result="hit") == 1

    # Two images were made (the cache answered the third): a histogram's buckets are cumulative up to +Inf.
    made = {"model": "tiny", "task": "text2img"}
    assert value(found, "imageforge_generation_seconds_count", **made) == 2
    buckets = [
        s for s in found if s.name == "imageforge_generation_seconds_bucket" and made.items() <= s.labels.items()
    ]
    counts = [bucket.value for bucket in sorted(buckets, key=lambda bucket: float(bucket.labels["le"]))]
    assert counts == sorted(counts)
    assert counts[-1] == 2
    assert math.isinf(float(max(buckets, key=lambda bucket: float(bucket.labels["le"])).labels["le"]))
    runtime = next(bucket.labels["runtime"] for bucket in buckets)
    assert runtime.startswith("cpu/"), runtime

    assert value(found, "imageforge_model_load_seconds_count", model="tiny") == 1
    assert value(found, "imageforge_model_resident", model="tiny") == 1
    assert value(found, "imageforge_model_memory_bytes", model="tiny") > 0
    assert value(found, "imageforge_device_memory_bytes") > 0, "the CPU's memory is the machine's RAM"
    assert math.isnan(value(found, "imageforge_device_memory_used_bytes")), "the CPU does not say what is in use"

    assert value(found, "imageforge_http_requests_total", route="/generate", method="POST", status="200") == 2
    assert value(found, "imageforge_http_requests_total", route="/jobs/{job_id}", method="GET", status="200") == 1
    assert value(found, "imageforge_http_requests_total", route="/jobs/{job_id}", method="DELETE", status="200") == 1

    label_values = {label for sample in found for label in sample.labels.values()}
    assert not label_values & {held, waiting, PROMPT}
    assert not any(held in label or waiting in label or "lighthouse" in label for label in label_values)


def test_a_path_matching_no_route_is_counted_as_unmatched_not_by_its_path(client: TestClient) -> None:
    assert client.get("/no/such/path-12345").status_code == 404

    found = samples(client)

    assert value(found, "imageforge_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert not any("path-12345" in label for sample in found for label in sample.labels.values())


def test_refusals_of_the_queue_are_counted_by_reason(settings: Settings) -> None:
    service = build_service(settings.model_copy(update={"rate_limit": 1}))
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        assert client.post("/jobs", json={"prompt": "first", **SMALL}).status_code == 202
        refused = client.post("/jobs", json={"prompt": "second", **SMALL})
        assert refused.status_code == 429, refused.text

        found = samples(client)

    assert value(found, "imageforge_queue_refusals_total", reason="rate_limited") == 1
    assert value(found, "imageforge_http_requests_total", route="/jobs", method="POST", status="429") == 1


def test_prompt_assist_calls_are_counted_by_outcome(client: TestClient) -> None:
    # Nothing listens at the test settings' Ollama address: the prompt is passed through.
    assert client.post("/assist", json={"prompt": "a cat"}).status_code == 200

    assert value(samples(client), "imageforge_prompt_assist_calls_total", outcome="passed_through") == 1


def test_each_service_counts_in_its_own_registry(settings: Settings, service: ImageService) -> None:
    other_settings = settings.model_copy(update={"data_dir": settings.data_path.parent / "other-data"})
    (other_settings.data_path).mkdir()
    (other_settings.data_path / "models").symlink_to(settings.models_path.resolve(), target_is_directory=True)
    other = build_service(other_settings)
    with (
        TestClient(create_app(service), base_url=LOCAL_URL) as first,
        TestClient(create_app(other), base_url=LOCAL_URL) as second,
    ):
        assert first.post("/assist", json={"prompt": "only here"}).status_code == 200

        assert value(samples(first), "imageforge_prompt_assist_calls_total", outcome="passed_through") == 1
        assert value(samples(second), "imageforge_prompt_assist_calls_total", outcome="passed_through") == 0


def test_metrics_need_a_key_when_keys_are_configured_and_the_health_probes_do_not(service: ImageService) -> None:
    app = create_app(service, api_keys=ApiKeys((("prometheus", KEY),)))
    with TestClient(app, base_url=LOCAL_URL) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"

        found = samples(client, Authorization=f"Bearer {KEY}")
        assert client.get("/health/live").status_code == 200
        assert client.get("/health/ready").status_code == 200

    assert value(found, "imageforge_http_requests_total", route="/metrics", method="GET", status="401") == 1
