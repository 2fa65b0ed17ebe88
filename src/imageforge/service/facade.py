"""ImageService: the one façade every transport calls.

It validates a request against the catalog and limits and queues it as a job (`ImageJob` runs it); it follows,
waits for, lists and cancels jobs for the caller that may see them, and answers the catalog, health, templates
and prompt assist. Transports parse their wire format, call one method here and format what comes back; they
never call each other.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from imageforge import __version__, tracing
from imageforge.domain import (
    LOCAL_CALLER,
    AssistResult,
    Caller,
    GenerationParams,
    Health,
    ImageResult,
    ImageSource,
    Job,
    JobEvent,
    JobStatus,
    JobWebhook,
    LoraCatalog,
    ModelCatalog,
    Policy,
    Progress,
    ProgressCallback,
    QueuedRequest,
    RenderedTemplate,
    StyleTemplate,
    WebhookEvent,
    result_images,
)
from imageforge.engine.catalog import Catalog
from imageforge.engine.loras import LoraFolder
from imageforge.engine.pool import ModelPool
from imageforge.engine.protocol import ImageBackend
from imageforge.errors import (
    AssistBusy,
    ImageforgeError,
    ImageNotFound,
    InvalidRequest,
    JobExpired,
    JobNotFound,
    QueueUnavailable,
    StorageUnavailable,
    WebhooksUnavailable,
    WeightsUnavailable,
    from_code,
    storage_error,
)
from imageforge.inputs import InputPaths, require_text
from imageforge.jobs.queue import JobQueue
from imageforge.jobs.webhooks import WebhookDispatcher
from imageforge.logs import job_context
from imageforge.metrics import Metrics
from imageforge.prompting.assist import PromptAssistant
from imageforge.prompting.templates import TemplateCatalog
from imageforge.service import replay
from imageforge.service.faults import StorageFaults
from imageforge.service.image_job import ImageJob
from imageforge.service.job_files import JobFiles
from imageforge.service.memory import MemoryPlanner
from imageforge.service.readiness import CheckFailure, Readiness
from imageforge.storage.audit import AuditLog
from imageforge.storage.cache import ArtifactCache, cache_key
from imageforge.storage.files import probe_folder
from imageforge.storage.inputs import InputStore
from imageforge.storage.outputs import OutputStore
from imageforge.validation import RequestLimits, RequestValidator, assist_texts, require_texts

log = logging.getLogger(__name__)

#: The kind under which image jobs are registered with the queue.
IMAGE_JOB = "image"
#: When a caller refused with `assist_busy` should try again: a local LLM expands a prompt in seconds.
ASSIST_RETRY_AFTER_S = 2


@dataclass(frozen=True)
class ServiceLimits(RequestLimits):
    """Request bounds enforced before any work is queued, and the service's own."""

    #: how many `assist` calls may wait on the local LLM at once; more are refused with `assist_busy`
    assist_concurrency: int = 2
    #: how long `close` waits for the running job to stop at its next step
    shutdown_timeout_s: float = 5.0
    #: whether jobs run in this machine's memory: only then does submit refuse a job that would not fit it
    #: (`insufficient_memory`, where the memory policy has admission on) and `list_models` show estimates; off on
    #: the distributed queue's API nodes, whose jobs run on the workers
    local_memory: bool = True


def _ignore_progress(progress: Progress) -> None:
    return None


class ImageService:
    """Generate, edit and inpaint images; list models; report health, readiness and metrics.

    `metrics` is where this service and its components count (the components built with the same one);
    `folders` are the folders it writes, by the setting that names them, which readiness probes.
    """

    def __init__(
        self,
        *,
        catalog: Catalog,
        loras: LoraFolder,
        backend: ImageBackend,
        pool: ModelPool,
        outputs: OutputStore,
        cache: ArtifactCache,
        inputs: InputStore,
        assistant: PromptAssistant,
        policy: Policy,
        templates: TemplateCatalog,
        paths: InputPaths,
        queue: JobQueue,
        default_model: str,
        limits: ServiceLimits,
        memory: MemoryPlanner,
        audit: AuditLog | None = None,
        metrics: Metrics | None = None,
        folders: Iterable[tuple[str, Path]] = (),
        webhooks: WebhookDispatcher | None = None,
    ) -> None:
        self.catalog = catalog
        self._loras = loras
        self._backend = backend
        self._pool = pool
        self._outputs = outputs
        self._assistant = assistant
        self.policy = policy
        self._templates = templates
        self._queue = queue
        self.default_model = default_model
        self.limits = limits
        self._validator = RequestValidator(limits, paths)
        self._faults = StorageFaults(queue.storage_fault)
        self._files = JobFiles(queue, inputs, outputs, self._faults)
        self._assist_slots = threading.BoundedSemaphore(limits.assist_concurrency)
        self._audit = audit or AuditLog()
        self.metrics = metrics or Metrics()
        self.metrics.watch_device_memory(lambda: backend.device_info().memory_gb, backend.memory_in_use_gb)
        self._folders = tuple(folders)
        self._memory = memory
        self._admits_by_memory = limits.local_memory and memory.policy.admission
        run = ImageJob(
            catalog, loras, backend, pool, outputs, cache, inputs, assistant, policy, self._faults, self.metrics, memory
        )
        queue.register(IMAGE_JOB, run, on_expire=self._files.expire)
        #: None where jobs carry no webhook: none was given, or the queue cannot tell it of every job's events
        self._webhooks = webhooks if webhooks is not None and queue.listen(webhooks.on_event) else None

    # -- jobs ---------------------------------------------------------------------------------------

    def submit(
        self, params: GenerationParams, *, caller: Caller = LOCAL_CALLER, idempotency_key: str | None = None
    ) -> Job:
        """Validate a request and queue it as `caller`'s job; bad input is refused here, before anything is queued.

        A request that names a `style` is framed by that template first (`StyleTemplate.frame`); an unknown key
        is `TemplateNotFound`.

        The caller's name (an API key's name, a peer address, or `local`) is what per-client limits count by;
        an isolated caller's idempotency key finds only its own jobs. While a folder or the job database cannot be
        written, the job is refused with that error (`StorageFull`, `StorageUnavailable`): it would only fail.
        """
        require_texts(params)
        if params.style is not None:
            params = self._templates.get(params.style).frame(params, max_side=self.limits.max_res)
        spec = self.catalog.require(params.model or self.default_model)
        request = self._validator.validate(params, spec)
        for lora in request.loras:
            self._loras.find(lora.name)  # refused now rather than failing the job: unknown, a pickle, a path
        webhook = self._webhook(params)
        if self._admits_by_memory:
            self._memory.admit(spec, request.task, request.width, request.height)
        fault = self.storage_fault()
        if fault is not None:
            raise type(fault)(fault.message, hint=fault.hint)  # a new one each time: threads may raise it at once
        with self._files.stored_inputs(request) as (init_digest, mask_digest):
            # The payload is the validated request (an Idempotency-Key compares it) with its images as digests;
            # an absent seed is drawn when the job runs, and the result reports it.
            payload = QueuedRequest(
                **request.shared(),
                seed=params.seed,
                init_image=init_digest,
                mask_image=mask_digest,
                assist_prompt=params.assist_prompt,
                use_cache=params.use_cache,
                count=params.count,
                style=params.style,
                allow_downsize=params.allow_downsize,
            ).to_payload()
            if webhook is not None:
                payload["webhook"] = webhook
            # Seeded requests with the same parameters make the same pixels: in flight together, they run once.
            dedupe_key = cache_key(payload) if params.seed is not None else None
            job = self._queue.submit(
                IMAGE_JOB, payload, idempotency_key=idempotency_key, dedupe_key=dedupe_key, caller=caller
            )
        tracing.submitted(job.id)
        with job_context(job.id, caller.name):
            # The prompt is the client's own words: in the log only where the operator audits prompts.
            prompt = f", prompt {request.prompt!r}" if self._audit.prompts else ""
            log.info(
                "job submitted: %s %s, %dx%d, %d steps, %d image(s)%s",
                request.task.value,
                spec.key,
                request.width,
                request.height,
                request.steps,
                params.count,
                prompt,
            )
        return job

    def replay(
        self,
        *,
        manifest: Mapping[str, Any] | None = None,
        image: ImageSource | None = None,
        caller: Caller = LOCAL_CALLER,
    ) -> Job:
        """Queue a job that makes a manifest's image again, from `manifest` or from an image that carries one; its
        result reports under `replay` whether the pixels match the recorded ones.

        The prompts go to the model as the manifest recorded them (after prompt assist and the policy), with its
        seed, numbers and scheduler; the input images of an img2img or inpaint manifest must still be in the input
        store (`InputMissing` otherwise). The cache is not asked: the point is to run it again.
        """
        if (manifest is None) == (image is None):
            raise InvalidRequest(
                "Send either manifest or image.",
                hint="manifest: a result's `manifest` as it came; image: a PNG imageforge made, as it was saved.",
            )
        if image is not None:
            manifest = replay.manifest_of_png(self._validator.image_bytes(image, "image"))
        assert manifest is not None
        recipe = replay.recipe(manifest)
        stored = {name: self._files.stored_base64(digest) for name, digest in recipe.inputs.items() if digest}
        params = replace(
            recipe.params,
            init_image=ImageSource(base64=stored["init_image"]) if "init_image" in stored else None,
            mask_image=ImageSource(base64=stored["mask_image"]) if "mask_image" in stored else None,
        )
        spec = self.catalog.require(recipe.model)
        request = self._validator.validate(params, spec)
        fault = self.storage_fault()
        if fault is not None:
            raise type(fault)(fault.message, hint=fault.hint)
        with self._files.stored_inputs(request) as (init_digest, mask_digest):
            payload = QueuedRequest(
                **request.shared(),
                seed=params.seed,
                init_image=init_digest,
                mask_image=mask_digest,
                assist_prompt=False,
                use_cache=False,
                policy=False,
            ).to_payload()
            payload["replay"] = {"pixels": recipe.expected, "weights": recipe.weights}
            job = self._queue.submit(IMAGE_JOB, payload, caller=caller)
        tracing.submitted(job.id)
        with job_context(job.id, caller.name):
            log.info("job submitted: replay of a %s %s manifest", request.task.value, spec.key)
        return job

    def _webhook(self, params: GenerationParams) -> dict[str, Any] | None:
        """The webhook `params` asks for, as its job's payload carries it, once its URL is one the operator allows
        (`WebhookNotAllowed`) on a queue that can send it (`WebhooksUnavailable`); None when it asks for none."""
        if params.webhook is None:
            return None
        if self._webhooks is None:
            raise WebhooksUnavailable(
                "This server sends no webhooks: its jobs run on the distributed queue's workers.",
                hint="Follow the job with GET /jobs/{id}/events or poll GET /jobs/{id}; webhooks need the embedded "
                "queue (imageforge serve without --queue).",
            )
        self._webhooks.check(params.webhook)
        return {
            "url": params.webhook,
            "events": [event.value for event in WebhookEvent if event in params.webhook_events],
        }

    def job_webhook(self, job: Job) -> JobWebhook | None:
        """`job`'s webhook with each of its deliveries so far (attempts, last status, delivered or given up), or
        None when it has none."""
        return None if self._webhooks is None else self._webhooks.webhook(job)

    def settle_webhooks(self, timeout_s: float) -> bool:
        """Wait until no webhook delivery is being posted or due now, or `timeout_s` has passed; whether it
        settled (a delivery due later, after a failed attempt, does not count)."""
        return self._webhooks is None or self._webhooks.settle(timeout_s)

    def generate(
        self,
        params: GenerationParams,
        *,
        on_progress: ProgressCallback = _ignore_progress,
    ) -> ImageResult:
        """Submit a job and wait for its image: the synchronous form of `submit` and `wait`, for a caller without
        an event loop (the command line's in-process path); `on_progress` hears each step.

        The job belongs to the queue, not to the caller: a caller that goes away leaves it to finish, and its
        result stays readable (and cached when seeded); closing the service stops it.
        """
        job = self.submit(params)

        async def follow() -> Job:
            async for event in self.follow(job.id):
                if event.type == "progress":
                    on_progress(Progress(step=event.data["step"], total=event.data["total"]))
            return self._queue.get(job.id)

        return self.image_result(asyncio.run(follow()))

    def wait_job(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job ends (or `timeout` passes) and return it as it is then."""
        return self._queue.wait(job_id, timeout)

    def follow(
        self, job_id: str, after: int = -1, *, previews: bool = False, caller: Caller = LOCAL_CALLER
    ) -> AsyncGenerator[JobEvent, None]:
        """The job's events until its terminal one, without holding a thread: first its current state (or the
        events after `after`), then each state change, step and, with `previews`, live preview.

        `JobNotFound` for a job the caller may not see. While open it counts against the caller's share of the
        queue (`QueueShareExceeded` at the first event when there is no room); it ends with `Interrupted` when
        the service closes first.
        """
        return self._queue.follow(job_id, after, previews=previews, caller=caller)

    async def wait(self, job_id: str, *, caller: Caller = LOCAL_CALLER) -> Job:
        """The job once it has ended, waited for without holding a thread; the wait counts as `follow` does."""
        async for _ in self.follow(job_id, caller=caller):
            pass  # the follow ends with the job's terminal event
        return self._queue.get(job_id, caller=caller)

    def live_preview(self, job_id: str, *, caller: Caller = LOCAL_CALLER) -> str | None:
        """The newest live preview of a running job (a PNG data URL), or None; asking makes the job publish one
        at each step from its next on, so that a client polling for it (A1111's progress) sees one from then.
        `JobNotFound` for a job the caller may not see."""
        events = self._queue.events(job_id, timeout=0, previews=True, caller=caller)
        previews = [event for event in events if event.type == "preview"]
        return str(previews[-1].data["image"]) if previews else None

    def get_job(self, job_id: str, *, caller: Caller = LOCAL_CALLER) -> Job:
        """The job as it is now; `JobNotFound` also for a job the caller may not see (`Caller`)."""
        return self._queue.get(job_id, caller=caller)

    def job_input(self, job_id: str, name: str, *, caller: Caller = LOCAL_CALLER) -> bytes:
        """The PNG of a job's input image, `init_image` or `mask_image`, kept as long as the job is readable (a
        client restoring the job needs it back); `ImageNotFound` when the job had none."""
        png = self._files.input_png(self._queue.get(job_id, caller=caller), name)
        if png is None:
            raise ImageNotFound(
                f"Job '{job_id}' has no {name}.", hint="Only img2img and inpaint jobs have an input image."
            )
        return png

    def list_jobs(
        self, statuses: Iterable[JobStatus] = (), *, limit: int = 100, caller: Caller = LOCAL_CALLER
    ) -> list[Job]:
        """The newest jobs the caller may see: its own, or all for an admin or where there are no identities."""
        return self._queue.recent(statuses, limit=limit, caller=caller)

    def queue_position(self, job_id: str) -> int | None:
        return self._queue.position(job_id)

    def job_eta(self, job_id: str) -> float | None:
        """About how many seconds until the job ends, from recent step and run times; None once it has ended or
        while nothing has run yet to go by."""
        return self._queue.eta(job_id)

    def cancel_job(self, job_id: str, *, caller: Caller = LOCAL_CALLER) -> Job:
        """Cancel a job the caller may see; `JobNotFound` for any other."""
        return self._queue.cancel(job_id, caller=caller)

    def delete_job(self, job_id: str, *, caller: Caller = LOCAL_CALLER) -> None:
        """Delete an ended job the caller may see, with its image and its inputs unless another job shares them;
        `JobNotFound` for any other job, `JobNotReady` while it is queued or running."""
        self._queue.forget(job_id, caller=caller)

    def image_result(self, job: Job) -> ImageResult:
        """The image of a finished job, with every image it made as `images`; the job's error when it failed or
        was cancelled."""
        if job.error is not None:
            raise from_code(job.error["code"], job.error["message"], job.error.get("hint", ""))
        if job.result is None:
            raise JobNotFound(f"Job '{job.id}' has no result yet ({job.status.value}).", hint="Wait for it to end.")
        try:
            pngs = [Path(image.output_path).read_bytes() for image in result_images(job.result)]
        except OSError:
            raise JobExpired(f"The image of job '{job.id}' is no longer on disk.", hint="Submit it again.") from None
        return ImageResult.from_images(job.result, pngs)

    def image_path(self, name: str, *, caller: Caller = LOCAL_CALLER) -> Path:
        """A result image in the output store, by file name; `ImageNotFound` for anything else, and for an image
        that none of an isolated caller's readable jobs made (names are short enough to guess)."""
        path = self._outputs.find(name)
        if caller.sees_all or any(caller.sees(job) for job in self._queue.results_with("output_path", str(path))):
            return path
        raise ImageNotFound(f"No image '{name}'.", hint="Use the image link of a finished job.")

    def sweep_expired(self) -> list[str]:
        """Remove expired results now rather than at the sweeper's next round; returns the swept job ids."""
        return self._queue.sweep()

    def storage_fault(self) -> StorageUnavailable | None:
        """Why jobs cannot be stored now (a full disk, a read-only folder, the job database), or None."""
        return self._faults.current()

    def assist(self, prompt: str, style: str | None = None) -> AssistResult:
        """Expand a prompt through the local LLM (optionally in a style); passes it through when unavailable.

        At most `limits.assist_concurrency` calls wait on the LLM at once (each holds its caller's thread);
        one more is refused with `AssistBusy` rather than queued behind a slow LLM.
        """
        prompt, style = assist_texts(prompt, style)
        if not self._assist_slots.acquire(blocking=False):
            self.metrics.assist_calls.labels("busy").inc()
            raise AssistBusy(
                f"{self.limits.assist_concurrency} prompt expansions are already waiting on the local LLM.",
                hint="Retry after the time in the Retry-After header; the server's admin sets how many run at "
                "once with IMAGEFORGE_ASSIST_CONCURRENCY.",
                retry_after_s=ASSIST_RETRY_AFTER_S,
            )
        try:
            return self._assistant.expand(prompt, style=style)
        finally:
            self._assist_slots.release()

    # -- audit ------------------------------------------------------------------------------------------

    @property
    def auditing(self) -> bool:
        """Whether audit records are kept (IMAGEFORGE_AUDIT_LOG); transports skip building them otherwise."""
        return self._audit.path is not None

    def audit(self, *, client: str, action: str, outcome: str, **details: Any) -> None:
        """Record who (`client`) did what (`action`) and how it ended (`outcome`: "ok" or an error code), with
        `details` such as `status`, `job_id` and `prompt` (kept only where prompts are audited)."""
        self._audit.record(client=client, action=action, outcome=outcome, **details)

    # -- style templates ----------------------------------------------------------------------------

    def list_templates(self) -> list[StyleTemplate]:
        """The style templates: built-ins plus the user's templates file."""
        return list(self._templates)

    def render_template(self, key: str, subject: str) -> RenderedTemplate:
        """A template filled with `subject`, sized to fit MAX_RES: a starting point the caller edits and sends
        as a request; nothing is generated here. `TemplateNotFound` for an unknown key."""
        require_text(key, field="key")
        require_text(subject, field="subject")
        return self._templates.get(key).start(subject, max_side=self.limits.max_res)

    # -- catalog and health -------------------------------------------------------------------------

    def list_models(self, *, memory: bool = True) -> ModelCatalog:
        """Every catalog entry with its capabilities, defaults, guard and local availability, and with `memory`
        what a job at its default size needs of this machine's memory (where jobs run here; it reads the device,
        so a caller that must stay fast, such as the MCP handshake, leaves it out)."""
        resident = set(self.resident_models())
        estimated = memory and self.limits.local_memory
        return ModelCatalog(
            default=self.default_model,
            max_res=self.limits.max_res,
            models=[
                self.catalog.info(
                    spec,
                    weights_present=self._backend.weights_present(spec),
                    resident=self.catalog.loaded_as(spec).key in resident,
                    default=spec.key == self.default_model,
                ).model_copy(update={"memory": self._memory.describe(spec) if estimated else None})
                for spec in self.catalog
            ],
        )

    def list_loras(self) -> LoraCatalog:
        """The LoRAs a request's `loras` may name: the `.safetensors` files of the LoRA folder."""
        return self._loras.catalog()

    def health(self) -> Health:
        """Service status: device, resident models, default model, version, Ollama reachability.

        `status` is `degraded` while jobs cannot be stored, with the error as `reason` (it names the setting,
        never a path).
        """
        info = self._backend.device_info()
        fault = self.storage_fault()
        return Health(
            status="ok" if fault is None else "degraded",
            reason=None if fault is None else {"code": fault.code, "message": fault.message, "hint": fault.hint},
            version=__version__,
            device=info.device,
            dtype=info.dtype,
            cuda=info.cuda_available,
            mps=info.mps_available,
            resident_models=self.resident_models(),
            model_memory=self._pool.status(),
            default_model=self.default_model,
            versions=info.versions,
            runtime=info.runtime,
            ollama=self._assistant.status(),
            queue=self._queue.describe(),
        )

    def readiness(self) -> Readiness:
        """Whether this service can take and run jobs now (`service.readiness`): the folders it writes take a
        write and the job store takes writes, the queue runs, and the default model is resident, loading or
        loadable here. Probes each folder with a small write, so that a folder that broke is seen before a job
        fails on it."""
        return Readiness({"storage": self._storage_check(), "queue": self._queue_check(), "model": self._model_check()})

    def _storage_check(self) -> CheckFailure | None:
        for setting, folder in self._folders:
            try:
                probe_folder(folder)
            except OSError as exc:
                return CheckFailure.of(storage_error(exc, "A folder the server writes", setting))
        fault = self.storage_fault()
        return None if fault is None else CheckFailure.of(fault)

    def _queue_check(self) -> CheckFailure | None:
        why = self._queue.why_not_running()
        if why is None:
            return None
        return CheckFailure(QueueUnavailable.code, why, "Jobs are refused until it runs; see the server's log.")

    def _model_check(self) -> CheckFailure | None:
        try:
            spec = self.catalog.require(self.default_model)
        except ImageforgeError as exc:
            return CheckFailure.of(exc)
        if not self._queue.runs_in_process or spec.key in self._pool.resident() or self._pool.loading() == spec.key:
            return None
        if self._backend.weights_present(spec):
            return None
        return CheckFailure(
            WeightsUnavailable.code,
            f"The default model '{spec.key}' is not loaded and its weights are not on this machine.",
            f"Fetch them with `imageforge models pull {spec.key}`, or set IMAGEFORGE_MODEL to a model that is here.",
        )

    def load_model(self, key: str) -> float:
        """Make a model resident now (the entry it loads as, `Catalog.loaded_as`); returns the seconds spent
        loading (0 when it already was)."""
        return self._pool.load(self.catalog.loaded_as(self.catalog.require(key)))

    def resident_models(self) -> list[str]:
        """The keys of the resident models, least recently used first."""
        return self._pool.resident()

    def unload_model(self, key: str) -> bool:
        """Unload a resident model; returns whether it was resident. `ModelBusy` while a job uses it."""
        return self._pool.unload(self.catalog.loaded_as(self.catalog.get(key)).key)

    def pull(self, key: str) -> str:
        """Download a model's weights ahead of time; returns where they are."""
        return self._backend.pull(self.catalog.get(key))

    def start(self) -> None:
        """Start running jobs (and recover those a previous run left) and the idle-unload timer."""
        self._queue.start()
        self._pool.start()
        if self._webhooks is not None:
            self._webhooks.start()

    def end_follows(self) -> None:
        """End every open `follow` with `Interrupted` at once, leaving the jobs running: the first step of a
        server's shutdown, which would otherwise wait on each open event stream."""
        self._queue.end_follows()

    def close(self) -> None:
        """Stop running jobs (the running one ends `interrupted` within `limits.shutdown_timeout_s`, queued ones
        stay queued for the next start) and unload the models."""
        self._queue.close(self.limits.shutdown_timeout_s)
        self._pool.close()
        if self._webhooks is not None:
            self._webhooks.close(self.limits.shutdown_timeout_s)
