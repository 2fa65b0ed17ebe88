"""The composition root: the only place that wires components together."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from imageforge import tracing
from imageforge.config import Settings
from imageforge.domain import Backend
from imageforge.engine.backends import speed
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.engine.backends.memory import DeviceMemory
from imageforge.engine.backends.sdcpp import SdcppBackend
from imageforge.engine.catalog import DOWNLOAD_GB, build_catalog
from imageforge.engine.engines import Engines
from imageforge.engine.loras import LoraFolder
from imageforge.engine.memory import MemoryProbe
from imageforge.engine.pool import ModelPool, PoolPolicy
from imageforge.engine.protocol import EngineOptions, ImageBackend
from imageforge.errors import ServerSideMissing, folder_unwritable
from imageforge.inputs import ImageLimits, InputPaths
from imageforge.jobs.embedded import EmbeddedJobQueue
from imageforge.jobs.owner import Owner
from imageforge.jobs.queue import JobQueue, QueueLimits
from imageforge.jobs.store import JobStore
from imageforge.jobs.webhook_targets import WebhookTargets
from imageforge.jobs.webhooks import DeliveryStore, WebhookDispatcher, secret_from_file
from imageforge.metrics import Metrics
from imageforge.prompting.assist import PromptAssistant
from imageforge.prompting.policy import load_policy
from imageforge.prompting.templates import load_templates
from imageforge.service import ImageService, ServiceLimits
from imageforge.service.memory import MemoryPlanner, MemoryPolicy
from imageforge.storage.audit import AuditLog
from imageforge.storage.cache import ArtifactCache
from imageforge.storage.files import probe_folder
from imageforge.storage.inputs import FolderInputStore
from imageforge.storage.outputs import OutputStore
from imageforge.storage.peaks import PeakLog


def written_folders(settings: Settings) -> tuple[tuple[str, Path], ...]:
    """The folders the service writes, each with the setting that names it."""
    return (
        ("IMAGEFORGE_DATA_DIR", settings.data_path),
        ("OUTPUT_DIR", settings.output_path),
        ("CACHE_DIR", settings.cache_path),
    )


def check_folders(settings: Settings) -> None:
    """Refuse to start on a folder the service writes that is not a writable folder (made when missing):
    `FolderUnwritable` naming the setting, before any job runs and fails on it."""
    for setting, folder in written_folders(settings):
        try:
            probe_folder(folder)
        except OSError as exc:
            raise folder_unwritable(exc, setting, folder) from None


if TYPE_CHECKING:
    from fastapi import FastAPI


def build_queue(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    owner: Owner | None = None,
    metrics: Metrics | None = None,
) -> JobQueue:
    """The job queue `settings` ask for: the embedded SQLite queue of one machine, or with IMAGEFORGE_QUEUE_URL
    the distributed one on Redis and Celery (imported only then: it is an optional extra); it counts in
    `metrics`."""
    limits = QueueLimits(
        max_queued=settings.max_queue,
        job_timeout_s=settings.job_timeout_s,
        result_ttl_s=settings.result_ttl_s,
        client_share=settings.client_queue_share,
        client_jobs_per_minute=settings.rate_limit,
    )
    if settings.queue_url:
        from imageforge.jobs.distributed.queue import DistributedJobQueue

        return DistributedJobQueue(settings.queue_url, limits, clock=clock, metrics=metrics)
    return EmbeddedJobQueue(JobStore(settings.jobs_path), limits, clock=clock, owner=owner, metrics=metrics)


def webhook_secret(settings: Settings) -> str:
    """The secret webhooks are signed with: IMAGEFORGE_WEBHOOK_SECRET, or the one kept in the data folder (made on
    first use)."""
    return settings.webhook_secret or secret_from_file(settings.webhook_secret_path)


def build_webhooks(settings: Settings) -> WebhookDispatcher | None:
    """The webhook sender of the embedded queue; None on the distributed queue, which refuses webhooks. It keeps
    the real time whatever clock the jobs get: receivers check a delivery's timestamp against theirs."""
    if settings.queue_url:
        return None
    return WebhookDispatcher(
        DeliveryStore(settings.webhooks_path),
        WebhookTargets(settings.webhook_allow),
        webhook_secret(settings),
        retry_s=settings.webhook_retry_s,
        keep_s=max(settings.result_ttl_s, 86400.0),
    )


def build_sdcpp_backend(settings: Settings) -> SdcppBackend:
    """The stable-diffusion.cpp engine `settings` describe; it starts no process until a model loads."""
    return SdcppBackend(
        server=None if settings.sdcpp_server is None else settings.resolve(settings.sdcpp_server),
        flavour=settings.sdcpp_build,
        threads=settings.threads,
        load_timeout_s=settings.sdcpp_load_timeout_s,
        download_sizes_gb=DOWNLOAD_GB,
        # Beside the job database: the children this data folder's server started, for the next one to find.
        records=settings.data_path / "sdcpp-children",
        loras=LoraFolder(settings.lora_path),
    )


def check_runtime(settings: Settings) -> None:
    """Refuse to start when the settings ask for OpenVINO or int8 and the `openvino` extra is not installed."""
    asked = []
    if settings.runtime == "openvino":
        asked.append("IMAGEFORGE_RUNTIME=openvino")
    if settings.precision == "int8":
        asked.append("IMAGEFORGE_PRECISION=int8")
    missing = speed.openvino_missing(int8=settings.precision == "int8") if asked else []
    if missing:
        raise ServerSideMissing(
            f"{' and '.join(asked)} needs {', '.join(missing)}, which this install lacks.",
            hint="Install them with pip install 'imageforge[openvino]' (./start.sh test does), or set "
            "IMAGEFORGE_RUNTIME=auto and IMAGEFORGE_PRECISION=auto to run torch.",
        )


def build_service(
    settings: Settings,
    *,
    backend: ImageBackend | None = None,
    clock: Callable[[], float] = time.time,
    audit: AuditLog | None = None,
    owner: Owner | None = None,
    queue: JobQueue | None = None,
    metrics: Metrics | None = None,
    memory_probe: MemoryProbe | None = None,
    sdcpp: ImageBackend | None = None,
) -> ImageService:
    """An `ImageService` for `settings`. Cheap: no model loads and torch is not imported until needed.

    `backend` replaces the diffusers engine and `sdcpp` the stable-diffusion.cpp one (tests wrap the real ones to
    hold a job at a step); `clock` is the
    jobs' wall clock (tests move it to expire results); `audit` keeps the audit log (the served HTTP app's; the
    CLI and MCP over stdio are the local user's own process and keep none); `owner` is what the data folder's lock
    records of this process for the others it turns away (a server's URL); `queue` replaces the one `build_queue`
    makes (a worker keeps its own to consume from); `metrics` is where the service and its components count
    (a fresh registry unless given: a given `queue` should count in the same); `memory_probe` replaces the
    device's free and peak memory (tests set what is free). `FolderUnwritable` when a folder it writes is
    unusable.
    """
    check_folders(settings)
    metrics = metrics or Metrics()
    check_runtime(settings)
    guards = [
        name
        for name, on in (
            ("ALLOW_FLUX", settings.allow_flux),
            ("ALLOW_KLEIN", settings.allow_klein),
            ("ALLOW_QWEN_IMAGE", settings.allow_qwen_image),
        )
        if on
    ]
    catalog = build_catalog(
        lora_portrait=settings.lora_portrait,
        models_file=settings.resolve(settings.models_file),
        allowed_guards=guards,
    )
    loras = LoraFolder(settings.lora_path)
    if backend is None:
        options = EngineOptions(
            dtype=settings.dtype,
            channels_last=settings.channels_last,
            threads=settings.threads,
            memory_savers=settings.memory_savers,
            compile=settings.compile,
            compile_cache=settings.compile_cache_path,
            runtime=settings.runtime,
            precision=settings.precision,
            openvino_cache=settings.openvino_cache_path,
        )
        backend = DiffusersBackend(
            device=settings.device, models_path=settings.models_path, options=options, loras=loras
        )
    backend = Engines(
        {
            Backend.DIFFUSERS: backend,
            Backend.SDCPP: sdcpp or build_sdcpp_backend(settings),
        }
    )
    if memory_probe is None:
        info = backend.device_info
        memory_probe = DeviceMemory(lambda: (info().device, info().dtype), offload=settings.memory_savers != "off")
    pool = ModelPool(
        backend,
        PoolPolicy(memory_budget_gb=settings.memory_budget_gb, idle_unload_s=settings.idle_unload_s),
        metrics=metrics,
    )
    return ImageService(
        catalog=catalog,
        loras=loras,
        backend=backend,
        pool=pool,
        outputs=OutputStore(settings.output_path),
        cache=ArtifactCache(settings.cache_path, metrics=metrics),
        # Beside the job database, whose payloads name them: expired with their jobs, never served.
        inputs=FolderInputStore(settings.data_path / "inputs"),
        assistant=PromptAssistant(
            settings.ollama_url, settings.ollama_model, timeout_s=settings.assist_timeout_s, metrics=metrics
        ),
        policy=load_policy(settings.resolve(settings.policy_file), settings.policy_profile),
        templates=load_templates(settings.resolve(settings.templates_file)),
        paths=InputPaths(settings.root_dir, settings.input_roots),
        queue=queue or build_queue(settings, clock=clock, owner=owner, metrics=metrics),
        default_model=settings.default_model,
        limits=ServiceLimits(
            max_res=settings.max_res,
            max_steps=settings.max_steps,
            images=ImageLimits(max_bytes=int(settings.max_body_mb * 1024 * 1024)),
            assist_concurrency=settings.assist_concurrency,
            shutdown_timeout_s=settings.shutdown_timeout_s,
            # An API node of the distributed queue runs no job: the workers' memory is not this machine's.
            local_memory=not settings.queue_url,
        ),
        memory=MemoryPlanner(
            memory_probe,
            PeakLog(settings.data_path / "memory.sqlite"),
            pool,
            MemoryPolicy(
                admission=settings.memory_admission,
                margin_gb=settings.memory_margin_gb,
                fallback=tuple(settings.oom_fallback),
            ),
        ),
        audit=audit,
        metrics=metrics,
        folders=written_folders(settings),
        webhooks=build_webhooks(settings) if queue is None else None,
    )


def http_app_from_env() -> FastAPI:
    """The HTTP application for the settings in the environment and `.env` (uvicorn's factory).

    The web stack is imported here, not with this module: the command line and MCP over stdio build a service
    without it.
    """
    from imageforge.transports.http.app import create_app
    from imageforge.transports.http.auth import ApiKeys
    from imageforge.transports.http.signed_urls import ImageUrlSigner
    from imageforge.transports.mcp.server import McpOptions

    settings = Settings()
    tracing.configure(settings.tracing_endpoint)
    tls = settings.tls
    # Recorded with the data folder's lock: `imageforge mcp` started beside this server finds it there.
    owner = Owner("imageforge serve", url=settings.local_url, ca_cert=None if tls is None else str(tls[0]))
    return create_app(
        build_service(settings, audit=AuditLog(settings.audit_path, prompts=settings.audit_prompts), owner=owner),
        max_body_bytes=int(settings.max_body_mb * 1024 * 1024),
        # An API node of the distributed queue runs no job: its models load on the workers.
        warmup=settings.warmup and not settings.queue_url,
        mcp_options=McpOptions(preview_px=settings.mcp_preview_px),
        host=settings.host,
        api_keys=ApiKeys(settings.api_keys, file=settings.keys_path),
        image_urls=ImageUrlSigner.with_secret_file(
            settings.data_path / "image-url.secret", settings.image_url_ttl_s or settings.result_ttl_s
        ),
        allowed_hosts=settings.allowed_hosts,
        cors_origins=settings.cors_origins,
        insecure_no_auth=settings.insecure_no_auth,
        mcp_sessions_per_client=settings.mcp_sessions_per_client,
        openai_model_aliases=settings.openai_model_aliases,
    )
