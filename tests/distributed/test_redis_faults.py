"""Redis restarted (SIGTERM, append-only file on) or down under a cluster of real processes: no job is lost, a
submit while it is down is refused at once with a stable code, and the API node and the worker go on by
themselves once it is back, with no restart of their own."""

from __future__ import annotations

import pytest

from imageforge.client import Client
from imageforge.errors import QueueUnavailable
from tests.distributed.cluster import Cluster
from tests.distributed.conftest import WORKER_OPTIONS
from tests.distributed.test_across_nodes import first_step

pytestmark = pytest.mark.slow


def test_a_redis_restart_loses_no_running_or_queued_job_and_the_nodes_take_new_ones_by_themselves(
    cluster: Cluster,
) -> None:
    cluster.worker(*WORKER_OPTIONS)
    api = cluster.api()
    with Client(api.url, timeout=120) as client:
        running = client.submit("a lighthouse at dusk", width=512, height=512, steps=100)
        first_step(client, running.job_id)
        queued = [client.submit("a lighthouse at dusk", width=64, height=64, steps=2) for _ in range(2)]
        assert [client.job(job.job_id).status for job in queued] == ["queued", "queued"]

        cluster.restart_redis()
        ends = [list(client.events(job.job_id))[-1].data["status"] for job in (running, *queued)]
        after = client.submit("a lighthouse at dusk", width=64, height=64, steps=2)
        after_end = list(client.events(after.job_id))[-1].data["status"]

    assert ends == ["succeeded", "succeeded", "succeeded"]
    assert after_end == "succeeded"


def test_while_redis_is_down_a_submit_is_refused_with_queue_unavailable_and_jobs_run_again_once_it_is_back(
    cluster: Cluster,
) -> None:
    cluster.worker(*WORKER_OPTIONS)
    api = cluster.api()
    with Client(api.url, timeout=120) as client:
        cluster.redis.stop()
        with pytest.raises(QueueUnavailable) as refused:
            client.submit("a lighthouse at dusk", width=64, height=64, steps=2)

        cluster.redis.start()
        job = client.submit("a lighthouse at dusk", width=64, height=64, steps=2)
        end = list(client.events(job.job_id))[-1].data["status"]

    assert refused.value.hint
    assert end == "succeeded"
