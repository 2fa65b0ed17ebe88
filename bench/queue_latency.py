"""What the distributed queue (issue 19: Redis + Celery) costs against the embedded one, on the offline `tiny` model.

Real processes on loopback, driven through the HTTP API as a client would, in one run:

- latency: the same light `POST /generate` (256 px, 2 steps) on an embedded `imageforge serve` and on an
  `imageforge serve --queue` API node with one `imageforge worker`, in turn, N runs each: the medians, and the
  milliseconds Redis and Celery add;
- throughput: jobs per minute of a heavier job (512 px, 10 steps) from several concurrent clients, through the
  embedded server, then the API node with one worker, then with two (the ratio), each after a warm-up batch.

Each process gets OMP_NUM_THREADS=1 (`--threads`), so that a worker uses one core as it would use its own GPU.
On a 2-core machine the API node, Redis and the clients share those two cores with the two workers, so the
two-worker ratio is below what machines with a GPU per worker would see. The processes come from the
distributed tests' harness (tests/distributed/cluster.py).

    PYTHONPATH=src .venv/bin/python bench/queue_latency.py [--runs 20] [--jobs 60] [--clients 4] [--json]

`--json` prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# Before huggingface_hub is imported: the tiny model is built locally and nothing may be downloaded.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The harness lives with the tests (tests/distributed/cluster.py), which are importable from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from tests.contract.conftest import IMAGEFORGE, free_port
from tests.distributed.cluster import Cluster, Process, ProcessSpec, running_cluster
from tests.redis_server import RedisServer

from imageforge.engine.backends import tiny
from imageforge.engine.catalog import TINY


def body(size: int, steps: int) -> dict[str, Any]:
    # No seed and no cache: every request is a new job, never merged with another or answered from the cache.
    return {"prompt": "a red fox in the snow", "width": size, "height": size, "steps": steps, "use_cache": False}


def generate(client: httpx.Client, job: dict[str, Any]) -> None:
    response = client.post("/generate", json=job)
    response.raise_for_status()


def embedded_server(cluster: Cluster) -> Process:
    """A plain `imageforge serve` (the embedded queue) with a data folder of its own: it owns its job database."""
    data = cluster.root / "embedded-data"
    data.mkdir()
    (data / "models").symlink_to(cluster.data / "models", target_is_directory=True)
    port = free_port()
    command = (str(IMAGEFORGE), "serve", "--port", str(port))
    return cluster.start(ProcessSpec("embedded", command, port=port, env={"IMAGEFORGE_DATA_DIR": str(data)}))


def latencies(urls: dict[str, str], job: dict[str, Any], runs: int, warmup: int = 2) -> dict[str, list[float]]:
    """Each path once per round, in turn, so that load from elsewhere on the machine falls on both alike."""
    samples: dict[str, list[float]] = {name: [] for name in urls}
    clients = {name: httpx.Client(base_url=url, timeout=120) for name, url in urls.items()}
    try:
        for round_ in range(warmup + runs):
            for name, client in clients.items():
                started = time.perf_counter()
                generate(client, job)
                if round_ >= warmup:
                    samples[name].append(time.perf_counter() - started)
    finally:
        for client in clients.values():
            client.close()
    return samples


def throughput(url: str, job: dict[str, Any], jobs: int, clients: int) -> float:
    """Jobs per minute: `jobs` generations from `clients` concurrent clients, from the first send to the last end,
    after a warm-up batch."""

    def client_run(count: int) -> None:
        with httpx.Client(base_url=url, timeout=300) as client:
            for _ in range(count):
                generate(client, job)

    def batch(count: int) -> float:
        shares = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(client_run, shares))
        return time.perf_counter() - started

    # A warm-up batch first, so that every worker has loaded the model before the timed one.
    batch(2 * clients)
    return 60 * jobs / batch(jobs)


def run(
    runs: int, jobs: int, clients: int, light: dict[str, Any], heavy: dict[str, Any], threads: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="imageforge-bench-") as folder:
        root = Path(folder)
        models = root / "models"
        models.mkdir()
        tiny.build_tiny_sd(models / TINY)  # once, before two workers could both build it
        redis = RedisServer(root / "redis")
        redis.start()
        try:
            settings = {"OMP_NUM_THREADS": str(threads)}
            with running_cluster(root / "cluster", models, redis, settings) as cluster:
                embedded = embedded_server(cluster)
                api = cluster.api()
                cluster.worker()
                samples = latencies({"embedded": embedded.url, "distributed": api.url}, light, runs)
                results: dict[str, Any] = {"runs": runs, "latency_job": light, "threads": threads}
                for name, values in samples.items():
                    results[f"{name}_ms"] = 1000 * statistics.median(values)
                    results[f"{name}_best_ms"] = 1000 * min(values)
                results["added_ms"] = results["distributed_ms"] - results["embedded_ms"]
                results["latency_ratio"] = results["distributed_ms"] / results["embedded_ms"]
                rate: dict[str, float] = {"embedded": throughput(embedded.url, heavy, jobs, clients)}
                embedded.stop()  # its engine would otherwise hold memory the workers may want
                rate["one_worker"] = throughput(api.url, heavy, jobs, clients)
                cluster.worker()
                rate["two_workers"] = throughput(api.url, heavy, jobs, clients)
                results["throughput"] = {
                    "job": heavy,
                    "jobs": jobs,
                    "clients": clients,
                    **{f"{name}_per_min": value for name, value in rate.items()},
                    "two_over_one": rate["two_workers"] / rate["one_worker"],
                    "one_worker_over_embedded": rate["one_worker"] / rate["embedded"],
                }
        finally:
            redis.kill()
    return results


def report(results: dict[str, Any]) -> None:
    light = results["latency_job"]
    print(f"tiny model, {results['threads']} thread(s) per process")
    print(
        f"latency of POST /generate at {light['width']}px, {light['steps']} steps, median of {results['runs']} "
        "(fastest run in brackets):"
    )
    for name in ("embedded", "distributed"):
        print(f"  {name:<12} {results[f'{name}_ms']:7.1f} ms ({results[f'{name}_best_ms']:.1f})")
    print(f"  added by Redis + Celery: {results['added_ms']:+.1f} ms ({results['latency_ratio']:.2f}x)")
    rate = results["throughput"]
    heavy = rate["job"]
    print(
        f"throughput at {heavy['width']}px, {heavy['steps']} steps, {rate['jobs']} jobs from {rate['clients']} "
        "concurrent clients:"
    )
    print(f"  embedded         {rate['embedded_per_min']:7.1f} jobs/min")
    print(f"  one worker       {rate['one_worker_per_min']:7.1f} jobs/min ({rate['one_worker_over_embedded']:.2f}x)")
    print(f"  two workers      {rate['two_workers_per_min']:7.1f} jobs/min ({rate['two_over_one']:.2f}x one worker)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed requests per path (after 2 warm-up rounds)")
    parser.add_argument("--jobs", type=int, default=60, help="jobs per throughput measurement")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients for the throughput runs")
    parser.add_argument("--size", type=int, default=256, help="image side of the latency runs, px")
    parser.add_argument("--steps", type=int, default=2, help="steps of the latency runs")
    parser.add_argument("--throughput-size", type=int, default=512, help="image side of the throughput runs, px")
    parser.add_argument("--throughput-steps", type=int, default=10, help="steps of the throughput runs")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    arguments = parser.parse_args()
    light = body(arguments.size, arguments.steps)
    heavy = body(arguments.throughput_size, arguments.throughput_steps)
    results = run(arguments.runs, arguments.jobs, arguments.clients, light, heavy, arguments.threads)
    report(results)
    if arguments.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
