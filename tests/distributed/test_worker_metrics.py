"""Metrics across real processes: an `imageforge worker --metrics-port` serves the jobs it ran (their ends, waits,
generation and load times) for Prometheus, and the API node that accepted them counts their submission."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from imageforge.client import Client
from tests.contract.conftest import free_port
from tests.distributed.cluster import Cluster
from tests.distributed.conftest import WORKER_OPTIONS

pytestmark = pytest.mark.slow


def scrape(url: str) -> list[Sample]:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text
    return [sample for family in text_string_to_metric_families(response.text) for sample in family.samples]


def value(found: list[Sample], name: str, **labels: str) -> float:
    matching = [sample.value for sample in found if sample.name == name and labels.items() <= sample.labels.items()]
    return sum(matching)


def test_a_worker_exports_the_jobs_it_ran_and_the_api_node_the_jobs_it_accepted(cluster: Cluster) -> None:
    port = free_port()
    cluster.worker(*WORKER_OPTIONS, "--metrics-port", str(port))
    api = cluster.api()
    with Client(api.url, timeout=120) as client:
        job = client.submit("a lighthouse at dusk", width=64, height=64, steps=2)
        client.wait(job.job_id)

    on_worker = scrape(f"http://127.0.0.1:{port}/metrics")
    assert value(on_worker, "imageforge_jobs_finished_total", kind="image", outcome="succeeded") == 1
    assert value(on_worker, "imageforge_queue_wait_seconds_count") == 1
    assert value(on_worker, "imageforge_generation_seconds_count", model="tiny", task="text2img") == 1
    assert value(on_worker, "imageforge_model_load_seconds_count", model="tiny") == 1
    assert value(on_worker, "imageforge_jobs_submitted_total") == 0, "the worker submitted nothing"

    on_api = scrape(f"{api.url}/metrics")
    assert value(on_api, "imageforge_jobs_submitted_total", kind="image") == 1
    assert value(on_api, "imageforge_queue_depth") == 0
    assert value(on_api, "imageforge_generation_seconds_count") == 0, "API nodes run no job"
