"""An API node killed with SIGKILL while a client follows its job, on a cluster of real processes: API nodes hold
no job, so the job finishes on its worker, and the client, reconnecting to the other node, sees the result."""

from __future__ import annotations

import pytest

from imageforge.client import Client, ServerUnavailable
from tests.distributed.cluster import Cluster
from tests.distributed.conftest import WORKER_OPTIONS
from tests.distributed.test_across_nodes import PNG_SIGNATURE

pytestmark = pytest.mark.slow

STEPS = 60


def test_a_job_followed_on_an_api_node_that_is_killed_finishes_and_the_other_node_shows_its_result(
    cluster: Cluster,
) -> None:
    cluster.worker(*WORKER_OPTIONS)
    doomed, other = cluster.api(), cluster.api()
    with Client(doomed.url, timeout=120) as on_doomed, Client(other.url, timeout=120) as on_other:
        job = on_doomed.submit("a lighthouse at dusk", width=512, height=512, steps=STEPS)
        followed = on_doomed.events(job.job_id)
        for event in followed:
            if event.type == "progress":
                break

        cluster.kill9(doomed)
        with pytest.raises(ServerUnavailable):
            for _ in followed:
                pass
        result = on_other.wait(job.job_id)
        ended = on_other.job(job.job_id)

    assert ended.status == "succeeded"
    assert ended.progress.step == STEPS
    assert result.png.startswith(PNG_SIGNATURE)
