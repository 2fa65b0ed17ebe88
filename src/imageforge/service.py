"""ImageService: the one façade every transport calls.

It validates a request against the catalog and limits, applies prompt assist, looks up the cache, runs the
model through the pool, and stores the result. Transports parse their wire format, call one method here
and format what comes back; they never call each other.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import io
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from imageforge import __version__
from imageforge.domain import (
    LOCAL_CALLER,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    AssistResult,
    Caller,
    GenerationParams,
    GenerationRequest,
    Health,
    ImageResult,
    Job,
    JobEvent,
    JobStatus,
    ModelCatalog,
    ModelDefaults,
    ModelGuard,
    ModelInfo,
    ModelSpec,
    Policy,
    Progress,
    ProgressCallback,
    QueuedRequest,
    RenderedTemplate,
    StyleTemplate,
)
from imageforge.engine.catalog import GUARD_REASONS, Catalog
from imageforge.engine.pool import ModelPool
from imageforge.engine.protocol import Generated, ImageBackend, LoadedModel
from imageforge.errors import (
    AssistBusy,
    GenerationFailed,
    ImageforgeError,
    ImageNotFound,
    InvalidRequest,
    JobExpired,
    JobNotFound,
    StorageUnavailable,
    from_code,
)
from imageforge.inputs import InputPaths, require_text
from imageforge.jobs.queue import JobContext, JobQueue
from imageforge.prompting.assist import PromptAssistant
from imageforge.prompting.policy import AppliedPolicy, apply_policy
from imageforge.prompting.templates import TemplateCatalog
from imageforge.storage.audit import AuditLog
from imageforge.storage.cache import ArtifactCache, cache_key
from imageforge.storage.files import Probed
from imageforge.storage.inputs import InputStore, image_digest
from imageforge.storage.outputs import OutputStore, encode_png
from imageforge.validation import RequestLimits, RequestValidator, require_texts

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: The kind under which image jobs are registered with the queue.
IMAGE_JOB = "image"
#: The payload fields that name input images by digest in the input store.
INPUT_FIELDS = ("init_image", "mask_image")
#: When a caller refused with `assist_busy` should try again: a local LLM expands a prompt in seconds.
ASSIST_RETRY_AFTER_S = 2


@dataclass(frozen=True)
class ServiceLimits(RequestLimits):
    """Request bounds enforced before any work is queued, and the service's own."""

    #: how many `assist` calls may wait on the local LLM at once; more are refused with `assist_busy`
    assist_concurrency: int = 2
    #: how long `close` waits for the running job to stop at its next step
    shutdown_timeout_s: float = 5.0


def _ignore_progress(progress: Progress) -> None:
    return None


class ImageService:
    """Generate, edit and inpaint images; list models; report health."""

    def __init__(
        self,
        *,
        catalog: Catalog,
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
        audit: AuditLog | None = None,
    ) -> None:
        self.catalog = catalog
        self._backend = backend
        self._pool = pool
        self._outputs = outputs
        self._cache = cache
        self._inputs = inputs
        self._assistant = assistant
        self.policy = policy
        self._templates = templates
        self._queue = queue
        self.default_model = default_model
        self.limits = limits
        self._validator = RequestValidator(limits, paths)
        #: the stores a write failed in, with the error, until a probe write there works again
        self._faults: dict[Probed, StorageUnavailable] = {}
        #: the input digests of submissions between storing their images and queueing their jobs; an input is
        #: removed only under `_inputs_lock` and when neither one of these nor a job's payload names it
        self._pinned: Counter[str] = Counter()
        self._inputs_lock = threading.Lock()
        self._assist_slots = threading.BoundedSemaphore(limits.assist_concurrency)
        self._audit = audit or AuditLog()
        queue.register(IMAGE_JOB, self._run_job, on_expire=self._expire_job)

    # -- jobs ---------------------------------------------------------------------------------------

    def submit(
        self, params: GenerationParams, *, caller: Caller = LOCAL_CALLER, idempotency_key: str | None = None
    ) -> Job:
        """Validate a request and queue it as `caller`'s job; bad input is refused here, before anything is queued.

        The caller's name (an API key's name, a peer address, or `local`) is what per-client limits count by;
        an isolated caller's idempotency key finds only its own jobs. While a folder or the job database cannot be
        written, the job is refused with that error (`StorageFull`, `StorageUnavailable`): it would only fail.
        """
        require_texts(params)
        spec = self.catalog.require(params.model or self.default_model)
        request = self._validator.validate(params, spec)
        fault = self.storage_fault()
        if fault is not None:
            raise type(fault)(fault.message, hint=fault.hint)  # a new one each time: threads may raise it at once
        with self._stored_inputs(request) as (init_digest, mask_digest):
            # The payload is the validated request (an Idempotency-Key compares it) with its images as digests;
            # an absent seed is drawn when the job runs, and the result reports it.
            payload = QueuedRequest(
                **request.shared(),
                seed=params.seed,
                init_image=init_digest,
                mask_image=mask_digest,
                assist_prompt=params.assist_prompt,
                use_cache=params.use_cache,
            ).to_payload()
            # Seeded requests with the same parameters make the same pixels: in flight together, they run once.
            dedupe_key = cache_key(payload) if params.seed is not None else None
            return self._queue.submit(
                IMAGE_JOB, payload, idempotency_key=idempotency_key, dedupe_key=dedupe_key, caller=caller
            )

    @contextlib.contextmanager
    def _stored_inputs(self, request: GenerationRequest) -> Iterator[tuple[str | None, str | None]]:
        """Store the request's images in the input store for the job about to be queued; yield their digests.

        They are pinned until the job is queued (from then on its payload names them), so that a job expiring
        meanwhile cannot remove an equal image; when the job is refused, what was stored for it goes again unless
        another job uses it.
        """
        images = {name: image for name in INPUT_FIELDS if (image := getattr(request, name)) is not None}
        digests = {name: image_digest(image) for name, image in images.items()}
        with self._inputs_lock:
            self._pinned.update(digests.values())
        queued = False
        try:
            for image in images.values():
                self._stored(self._inputs, functools.partial(self._inputs.put, image))
            yield digests.get("init_image"), digests.get("mask_image")
            queued = True
        finally:
            with self._inputs_lock:
                self._pinned -= Counter(digests.values())
                if not queued:
                    self._remove_unused_inputs(digests, job_id=None)

    def _remove_unused_inputs(self, digests: dict[str, str], *, job_id: str | None) -> None:
        """Remove each input image that no submission pins and no job besides `job_id` names in its payload
        (caller holds `_inputs_lock`). A job keeps its inputs from submit until its result expires, so that a
        restart or a retry of the sweep still finds them."""
        for name, digest in digests.items():
            # The digest covers the mode: an init image (RGB) and a mask (L) never share one.
            if self._pinned[digest] or any(other.id != job_id for other in self._queue.payloads_with(name, digest)):
                continue
            self._inputs.delete(digest)

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

    def get_job(self, job_id: str, *, caller: Caller = LOCAL_CALLER) -> Job:
        """The job as it is now; `JobNotFound` also for a job the caller may not see (`Caller`)."""
        return self._queue.get(job_id, caller=caller)

    def list_jobs(
        self, statuses: Iterable[JobStatus] = (), *, limit: int = 100, caller: Caller = LOCAL_CALLER
    ) -> list[Job]:
        """The newest jobs the caller may see: its own, or all for an admin or where there are no identities."""
        return self._queue.recent(statuses, limit=limit, caller=caller)

    def queue_position(self, job_id: str) -> int | None:
        return self._queue.position(job_id)

    def cancel_job(self, job_id: str, *, caller: Caller = LOCAL_CALLER) -> Job:
        """Cancel a job the caller may see; `JobNotFound` for any other."""
        return self._queue.cancel(job_id, caller=caller)

    def image_result(self, job: Job) -> ImageResult:
        """The image of a finished job; the job's error when it failed or was cancelled."""
        if job.error is not None:
            raise from_code(job.error["code"], job.error["message"], job.error.get("hint", ""))
        if job.result is None:
            raise JobNotFound(f"Job '{job.id}' has no result yet ({job.status.value}).", hint="Wait for it to end.")
        path = Path(job.result["output_path"])
        try:
            png = path.read_bytes()
        except OSError:
            raise JobExpired(f"The image of job '{job.id}' is no longer on disk.", hint="Submit it again.") from None
        return ImageResult.from_record(job.result, png)

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

    def _run_job(self, payload: dict[str, Any], context: JobContext) -> dict[str, Any]:
        """The image job function the queue runs: assist, cache, load inputs and model, generate, store.

        The payload was validated at submit; its images are read from the input store by digest only when the
        cache does not answer.
        """
        try:
            queued = QueuedRequest.from_payload(payload)
        except ValueError:
            raise InvalidRequest(
                "This job was queued by an older version of imageforge, whose jobs carry their images.",
                hint="Submit the request again.",
            ) from None
        spec = self.catalog.require(queued.model)
        seed = secrets.randbelow(MAX_SEED + 1) if queued.seed is None else queued.seed
        request = queued.request(seed=seed)
        assist = self._assistant.expand(request.prompt) if queued.assist_prompt else None
        if assist is not None:
            request = replace(request, prompt=assist.prompt)
        record = self._record(request, spec, assist)

        key = (
            cache_key(self._cache_parameters(request, spec, queued))
            if queued.use_cache and queued.seed is not None
            else None
        )
        hit = self._cache.get(key) if key is not None else None
        if hit is not None:
            return self._from_cache(hit, record)

        request = replace(
            request,
            init_image=None if queued.init_image is None else self._inputs.get(queued.init_image),
            mask_image=None if queued.mask_image is None else self._inputs.get(queued.mask_image),
        )
        started = time.perf_counter()
        with self._pool.use(spec) as (model, load_s):
            context.timing("load_ms", load_s * 1000)
            applied = self._apply_policy(model, spec, request)
            record["policy_applied"] = applied.report
            model_request = replace(request, prompt=applied.prompt, negative_prompt=applied.negative_prompt)
            generated = self._run(model, spec, model_request, context)
        image = generated.image
        record["runtime"] = generated.runtime
        record["elapsed_s"] = round(time.perf_counter() - started, 3)
        png = encode_png(image, record)
        output = self._stored(self._outputs, lambda: self._outputs.save(png, record))
        record["output_path"] = str(output)
        if key is not None:
            try:
                self._stored(self._cache, lambda: self._cache.put(key, png, record))
            except StorageUnavailable:
                self._outputs.delete(output)  # a failed job leaves no files behind
                raise
        return {**record, "cached": False}

    def _stored(self, store: Probed, write: Callable[[], _T]) -> _T:
        """Run a write to `store`; a failure is remembered as the store's fault (health, submissions) and raised."""
        try:
            return write()
        except StorageUnavailable as exc:
            self._faults[store] = exc
            raise

    def storage_fault(self) -> StorageUnavailable | None:
        """Why jobs cannot be stored now (a full disk, a read-only folder), or None. Each store a write failed
        in is probed again, and cleared once it takes a write; so is the job database."""
        for store, fault in list(self._faults.items()):
            try:
                store.probe()
            except OSError:
                return fault
            self._faults.pop(store, None)
        return self._queue.storage_fault()

    def _run(self, model: LoadedModel, spec: ModelSpec, request: GenerationRequest, context: JobContext) -> Generated:
        def on_progress(progress: Progress) -> None:
            context.progress(progress.step, progress.total)
            if progress.preview is not None and context.wants_preview():
                context.preview({"step": progress.step, "total": progress.total, **_preview_data(progress.preview())})

        try:
            return model.generate(request, on_progress, context.should_stop)
        except ImageforgeError:
            raise
        except Exception as exc:
            log.exception("generation failed for %s", spec.key)
            raise GenerationFailed(
                f"The model failed on this request: {type(exc).__name__}: {exc}",
                hint="Try a smaller size or other parameters; the server keeps running.",
            ) from exc

    def _apply_policy(self, model: LoadedModel, spec: ModelSpec, request: GenerationRequest) -> AppliedPolicy:
        why_not = spec.why_negative_prompt_ignored(request.guidance)
        return apply_policy(
            self.policy,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            negative_works=why_not is None,
            why_no_negative=why_not or "",
            count_tokens=model.count_tokens,
        )

    def _expire_job(self, job: Job) -> None:
        """A job's result expired: remove its image from the output store (the cache keeps its own copy) and its
        inputs from the input store.

        A cache hit answers with the image already stored, so the image goes with the last readable job that
        shares it, cache hit or not; an input goes with the last job whose payload names it.
        """
        output = job.result.get("output_path") if job.result else None
        if output and not any(other.id != job.id for other in self._queue.results_with("output_path", output)):
            self._outputs.delete(Path(output))
        digests = {name: digest for name in INPUT_FIELDS if isinstance(digest := job.payload.get(name), str)}
        with self._inputs_lock:
            self._remove_unused_inputs(digests, job_id=job.id)

    def _from_cache(self, hit: tuple[bytes, dict[str, Any]], record: dict[str, Any]) -> dict[str, Any]:
        png, stored = hit
        output = stored.get("output_path")
        if not output or not Path(output).is_file():
            output = str(self._stored(self._outputs, lambda: self._outputs.save(png, stored)))
        # What the policy added and how the engine ran made the stored image: report those, not today's.
        kept: dict[str, Any] = {name: stored[name] for name in ("policy_applied", "runtime") if name in stored}
        return {**record, **kept, "output_path": output, "elapsed_s": 0.0, "cached": True}

    def _cache_parameters(self, request: GenerationRequest, spec: ModelSpec, queued: QueuedRequest) -> dict[str, Any]:
        """Everything that changes the pixels: the model and its revision, the prompts after assist, the
        numbers, the input images (by digest), and the engine (library versions, device, dtype)."""
        return {
            "model": spec.key,
            "source": spec.source,
            "revision": spec.revision,
            "lora": spec.lora,
            "scheduler": spec.scheduler,
            **request.values(),
            "seed": request.seed,
            "init_image": queued.init_image,
            "mask_image": queued.mask_image,
            "engine": self._backend.fingerprint(),
            "policy": self.policy.version,
        }

    def _record(self, request: GenerationRequest, spec: ModelSpec, assist: AssistResult | None) -> dict[str, Any]:
        record: dict[str, Any] = {
            **request.values(),
            "model": spec.key,
            "model_source": spec.source,
            "seed": request.seed,
            "original_prompt": assist.original_prompt if assist else request.prompt,
            "assisted": bool(assist and assist.assisted),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "imageforge_version": __version__,
            "engine": self._backend.fingerprint(),
        }
        if assist is not None:
            record["assist"] = {"source": assist.source, "reason": assist.reason, "tags": assist.tags}
        if spec.notice:
            record["notice"] = spec.notice
        return record

    def assist(self, prompt: str, style: str | None = None) -> AssistResult:
        """Expand a prompt through the local LLM (optionally in a style); passes it through when unavailable.

        At most `limits.assist_concurrency` calls wait on the LLM at once (each holds its caller's thread);
        one more is refused with `AssistBusy` rather than queued behind a slow LLM.
        """
        require_text(prompt, field="prompt")
        require_text(style, field="style")
        if not prompt.strip():
            raise InvalidRequest("prompt is empty.", hint="Describe the image you want.")
        if len(prompt) > MAX_PROMPT_CHARS or len(style or "") > MAX_PROMPT_CHARS:
            raise InvalidRequest(f"A prompt or style is longer than {MAX_PROMPT_CHARS} characters.", hint="Shorten it.")
        style = (style or "").strip()
        if not self._assist_slots.acquire(blocking=False):
            raise AssistBusy(
                f"{self.limits.assist_concurrency} prompt expansions are already waiting on the local LLM.",
                hint="Retry after the time in the Retry-After header; the server's admin sets how many run at "
                "once with IMAGEFORGE_ASSIST_CONCURRENCY.",
                retry_after_s=ASSIST_RETRY_AFTER_S,
            )
        try:
            return self._assistant.expand(prompt.strip(), style=style or None)
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

    def list_models(self) -> ModelCatalog:
        """Every catalog entry with its capabilities, defaults, guard and local availability."""
        resident = set(self.resident_models())
        return ModelCatalog(
            default=self.default_model,
            max_res=self.limits.max_res,
            models=[self._describe(spec, resident) for spec in self.catalog],
        )

    def _describe(self, spec: ModelSpec, resident: set[str]) -> ModelInfo:
        allowed = self.catalog.is_allowed(spec)
        return ModelInfo(
            key=spec.key,
            description=spec.description,
            family=spec.family.value,
            source=spec.source,
            tasks=[task.value for task in spec.tasks],
            defaults=ModelDefaults(
                steps=spec.default_steps,
                guidance=spec.default_guidance,
                width=spec.default_size,
                height=spec.default_size,
            ),
            size_multiple=spec.size_multiple,
            est_memory_gb=spec.est_memory_gb,
            guard=None
            if spec.guard is None
            else ModelGuard(setting=spec.guard, allowed=allowed, reason=GUARD_REASONS.get(spec.guard, "")),
            available=allowed,
            quality_note=spec.quality_note,
            notice=spec.notice or None,
            smoke_test=spec.builtin,
            weights_present=self._backend.weights_present(spec),
            resident=spec.key in resident,
            default=spec.key == self.default_model,
        )

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
        )

    def load_model(self, key: str) -> float:
        """Make a model resident now; returns the seconds spent loading (0 when it already was)."""
        return self._pool.load(self.catalog.require(key))

    def resident_models(self) -> list[str]:
        """The keys of the resident models, least recently used first."""
        return self._pool.resident()

    def unload_model(self, key: str) -> bool:
        """Unload a resident model; returns whether it was resident. `ModelBusy` while a job uses it."""
        return self._pool.unload(self.catalog.get(key).key)

    def pull(self, key: str) -> str:
        """Download a model's weights ahead of time; returns where they are."""
        return self._backend.pull(self.catalog.get(key))

    def start(self) -> None:
        """Start running jobs (and recover those a previous run left) and the idle-unload timer."""
        self._queue.start()
        self._pool.start()

    def close(self) -> None:
        """Stop running jobs (the running one ends `interrupted` within `limits.shutdown_timeout_s`, queued ones
        stay queued for the next start) and unload the models."""
        self._queue.close(self.limits.shutdown_timeout_s)
        self._pool.close()


#: Longest side of a live preview: enough to see the composition, small enough to send every step.
PREVIEW_PX = 256


def _preview_data(image: Image.Image) -> dict[str, Any]:
    """A preview image as event data: a PNG data URL of at most PREVIEW_PX on its longest side."""
    image = image.copy()
    image.thumbnail((PREVIEW_PX, PREVIEW_PX))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return {"width": image.width, "height": image.height, "image": f"data:image/png;base64,{encoded}"}
