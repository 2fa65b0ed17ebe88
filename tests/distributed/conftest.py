"""Fixtures of the distributed queue's tests: a real Redis and a `Cluster` of real processes around it, all
killed when the test ends, and every process's log in the report of a test that failed."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from imageforge.engine.backends import tiny
from imageforge.engine.catalog import TINY
from tests.distributed.cluster import Cluster, running_cluster
from tests.redis_server import running_redis

#: The section of a failed test's report that holds the cluster's logs.
LOGS_SECTION = "cluster logs"


@pytest.fixture(scope="session")
def built_models(data_dir: Path) -> Path:
    """The session's models folder with the `tiny` model built, before any worker starts: two workers loading
    it at once would otherwise both build it in the same place."""
    models = data_dir / "models"
    models.mkdir(exist_ok=True)
    tiny.build_tiny_sd(models / TINY)
    return models


#: How a test's workers run: the `tiny` model only, on the CPU.
WORKER_OPTIONS = ("--models", TINY, "--device", "cpu")


@pytest.fixture
def cluster(tmp_path: Path, built_models: Path) -> Iterator[Cluster]:
    """A running Redis and an empty cluster on it; the test starts the workers and API nodes it needs."""
    with (
        running_redis(tmp_path / "redis") as redis,
        running_cluster(tmp_path / "cluster", built_models, redis) as started,
    ):
        yield started


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory: pytest.TempPathFactory, built_models: Path) -> Iterator[Cluster]:
    """Two workers and two API nodes on one Redis, shared by a module's tests that kill nothing."""
    root = tmp_path_factory.mktemp("two-by-two")
    with running_redis(root / "redis") as redis, running_cluster(root / "cluster", built_models, redis) as started:
        for _ in range(2):
            started.worker(*WORKER_OPTIONS)
            started.api()
        yield started


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Cluster):
                report.sections.append((LOGS_SECTION, value.logs()))
    return report
