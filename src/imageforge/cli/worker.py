"""`imageforge worker`: one GPU worker of the job queue across machines; it runs the jobs of its models, one at
a time, that API nodes (`imageforge serve --queue`) accepted into the shared Redis."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from imageforge.cli.settings import load_settings


def worker(
    queue: Annotated[
        str | None, typer.Option(help="The shared Redis, redis://HOST:PORT/DB (IMAGEFORGE_QUEUE_URL).")
    ] = None,
    models: Annotated[
        str | None,
        typer.Option(
            help="Run jobs of these model keys only, comma-separated (IMAGEFORGE_WORKER_MODELS); default all."
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="The device: cuda, cuda:N (one GPU of several), mps or cpu (DEVICE).")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve this worker's Prometheus metrics at http://HOST:PORT/metrics (IMAGEFORGE_WORKER_METRICS_PORT); "
            "0: none."
        ),
    ] = None,
    metrics_host: Annotated[
        str | None,
        typer.Option(help="The address the metrics port listens on (IMAGEFORGE_WORKER_METRICS_HOST); loopback."),
    ] = None,
) -> None:
    """Run jobs from the shared queue (one process per device, one job at a time) until stopped.

    Writes `imageforge worker ready` to stderr once it takes jobs. SIGTERM or Ctrl+C: it takes no new job, lets
    the running one finish, then exits; a worker killed before that has its job run again on another. With
    `--metrics-port`, the jobs it ran, their waits, generation and load times are served for Prometheus (without
    a key: keep it on loopback, or on a network only the scraper reaches).
    """
    from imageforge.cli.server_side import require_distributed, require_server_side

    require_server_side("`imageforge worker`")
    from imageforge.errors import InvalidRequest

    shown_device = device
    if device is not None and device.startswith("cuda:"):
        # One process per GPU: the process sees only its own, as `cuda`, before torch is imported.
        index = device.partition(":")[2]
        if not index.isdigit():
            raise InvalidRequest(f"--device {device}: not a GPU index.", hint="Give cuda:0, cuda:1, …")
        os.environ["CUDA_VISIBLE_DEVICES"] = index
        device = "cuda"
    settings = load_settings(
        queue_url=queue,
        worker_models=models,
        device=device,
        worker_metrics_port=metrics_port,
        worker_metrics_host=metrics_host,
    )
    if not settings.queue_url:
        raise InvalidRequest(
            "`imageforge worker` needs the shared queue's Redis.",
            hint="Pass --queue redis://HOST:PORT/DB or set IMAGEFORGE_QUEUE_URL, the same as the API nodes'.",
        )
    require_distributed("`imageforge worker`")
    from imageforge import tracing
    from imageforge.bootstrap import build_queue, build_service
    from imageforge.logs import log_to_stderr

    log_to_stderr(settings.log_format)
    tracing.configure(settings.tracing_endpoint)
    from imageforge.jobs.distributed.queue import DistributedJobQueue
    from imageforge.metrics import Metrics

    metrics = Metrics()
    job_queue = build_queue(settings, metrics=metrics)
    assert isinstance(job_queue, DistributedJobQueue)
    service = build_service(settings, queue=job_queue, metrics=metrics)
    routes = [service.catalog.require(key).key for key in settings.worker_models] or [
        spec.key for spec in service.catalog if service.catalog.is_allowed(spec)
    ]
    typer.echo(f"imageforge worker: models {', '.join(routes)} on {shown_device or settings.device}", err=True)
    if settings.worker_metrics_port:
        from prometheus_client import start_http_server

        host, port = settings.worker_metrics_host, settings.worker_metrics_port
        try:
            start_http_server(port, addr=host, registry=metrics.registry)
        except OSError as exc:
            raise InvalidRequest(
                f"The metrics port cannot listen on {host}:{port}: {exc.strerror or exc}.",
                hint="Pick a free port with --metrics-port (IMAGEFORGE_WORKER_METRICS_PORT), or 0 for none.",
            ) from None
        typer.echo(f"imageforge worker: metrics at http://{host}:{port}/metrics", err=True)
    service.start()
    try:
        job_queue.make_worker(routes, device=shown_device or settings.device).start()
    finally:
        service.close()
