"""ImageJob: what the queue runs for an image job: prompt assist, cache, inputs, model, policy, storing."""

from __future__ import annotations

import base64
import io
import logging
import secrets
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from imageforge import __version__, tracing
from imageforge.domain import (
    MAX_SEED,
    AssistResult,
    Fallback,
    GenerationRequest,
    ModelSpec,
    Policy,
    Progress,
    ProgressCallback,
    QueuedRequest,
    ResultImage,
)
from imageforge.engine.catalog import Catalog
from imageforge.engine.loras import LoraFolder
from imageforge.engine.pool import ModelPool
from imageforge.engine.protocol import Generated, ImageBackend, LoadedModel
from imageforge.errors import Cancelled, GenerationFailed, ImageforgeError, InvalidRequest, OutOfMemory
from imageforge.jobs.queue import JobContext
from imageforge.metrics import Metrics
from imageforge.prompting.assist import PromptAssistant
from imageforge.prompting.policy import AppliedPolicy, apply_policy
from imageforge.service import replay
from imageforge.service.faults import StorageFaults
from imageforge.service.memory import MemoryPlanner, describe_downgrade, resized
from imageforge.storage.cache import ArtifactCache, cache_key
from imageforge.storage.inputs import InputStore
from imageforge.storage.outputs import OutputStore, encode_png

log = logging.getLogger(__name__)

#: Longest side of a live preview: enough to see the composition, small enough to send every step.
PREVIEW_PX = 256


@dataclass
class _Run:
    """One job's images in the making: its request and context, and what the images made so far leave."""

    queued: QueuedRequest
    context: JobContext
    #: the init image and the mask, read from the input store for the first image the cache does not answer
    inputs: tuple[Image.Image | None, Image.Image | None] | None = None
    load_s: float = 0.0
    #: the outputs this job wrote, to remove when it fails or is cancelled (a cache hit's are another job's)
    written: list[Path] = field(default_factory=list)
    #: once an image ran out of memory and its retry worked: what the result says of it, and what the retry
    #: changed (its memory savers, its size), which the job's later images start with
    downgraded: dict[str, Any] | None = None
    savers: frozenset[Fallback] = frozenset()
    size: tuple[int, int] | None = None


@dataclass(frozen=True)
class ImageJob:
    """The image job function: called by the queue's worker with a job's payload, returns the job's result record.

    The payload was validated at submit; its images are read from the input store by digest only when the cache
    does not answer. A request for `count` images makes them one after the other with consecutive seeds, each
    cached and stored as a request for that seed alone would be; the result is the first image's record with
    every image (seed, output_path, cached, elapsed_s) under `images`. Each image made (not a cache hit) is timed
    in `metrics` by model, task and runtime.
    """

    catalog: Catalog
    loras: LoraFolder
    backend: ImageBackend
    pool: ModelPool
    outputs: OutputStore
    cache: ArtifactCache
    inputs: InputStore
    assistant: PromptAssistant
    policy: Policy
    faults: StorageFaults
    metrics: Metrics
    memory: MemoryPlanner

    def __call__(self, payload: dict[str, Any], context: JobContext) -> dict[str, Any]:
        try:
            queued = QueuedRequest.from_payload(payload)
        except ValueError:
            raise InvalidRequest(
                "This job was queued by an older version of imageforge, whose jobs carry their images.",
                hint="Submit the request again.",
            ) from None
        spec = self.catalog.require(queued.model)
        # The images take the seeds from the first on, so a drawn first seed leaves room for the others.
        seed = secrets.randbelow(MAX_SEED + 2 - queued.count) if queued.seed is None else queued.seed
        request = queued.request(seed=seed)
        assist = self.assistant.expand(request.prompt) if queued.assist_prompt else None
        if assist is not None:
            request = replace(request, prompt=assist.prompt)
        run = _Run(queued, context)
        try:
            records = [
                self._image(replace(request, seed=seed + index), index, spec, assist, run)
                for index in range(queued.count)
            ]
        except BaseException:
            for path in run.written:
                self.outputs.delete(path)  # a failed or cancelled job leaves no files behind; the cache keeps its own
            raise
        images = [ResultImage.model_validate(record).model_dump() for record in records]
        result = {**records[0], "images": images}
        expected = payload.get("replay")
        if isinstance(expected, dict):
            result["replay"] = replay.compare(records[0]["manifest"], expected)
        return result

    def _image(
        self, request: GenerationRequest, index: int, spec: ModelSpec, assist: AssistResult | None, run: _Run
    ) -> dict[str, Any]:
        """One image of the job: from the cache when a seeded request made it before, else made and stored; the
        job stops here once cancelled, before an image begins."""
        if run.context.should_stop():
            raise Cancelled("The job was stopped before its next image.")
        queued = run.queued
        record = self._record(request, spec, assist, queued.style)
        key = (
            cache_key(self._cache_parameters(request, spec, queued))
            if queued.use_cache and queued.seed is not None
            else None
        )
        hit = self.cache.get(key) if key is not None else None
        if hit is not None:
            return self._from_cache(hit, record, run)

        if run.inputs is None:
            run.inputs = (
                None if queued.init_image is None else self.inputs.get(queued.init_image),
                None if queued.mask_image is None else self.inputs.get(queued.mask_image),
            )
        request = replace(request, init_image=run.inputs[0], mask_image=run.inputs[1], memory_savers=run.savers)
        if run.size is not None:
            request = resized(request, run.size)
        started = time.perf_counter()

        def loading() -> None:
            run.context.stage("loading", {"model": spec.key})

        # An entry that only adds LoRAs to another's weights (sdxl-portrait) runs on that entry's resident copy.
        with self.pool.use(self.catalog.loaded_as(spec), on_load=loading) as (model, load_s):
            if load_s:
                loaded_ns = time.time_ns()
                tracing.record("load", loaded_ns - int(load_s * 1e9), loaded_ns, **{"imageforge.model": spec.key})
            run.load_s += load_s
            run.context.timing("load_ms", run.load_s * 1000)
            applied = self._apply_policy(model, spec, request) if queued.policy else self._as_sent(request)
            record["policy_applied"] = applied.report
            model_request = replace(request, prompt=applied.prompt, negative_prompt=applied.negative_prompt)
            generating = time.perf_counter()
            generated, ran = self._run(model, spec, model_request, index, run)
            runtime = _runtime_label(self.backend.device_info().device, generated.runtime)
            self.metrics.generation_seconds.labels(spec.key, request.task.value, runtime).observe(
                time.perf_counter() - generating
            )
        if run.downgraded is not None:
            record.update(width=ran.width, height=ran.height, downgraded=run.downgraded)
            key = None  # not what the request asked for: never its cached answer
        record["runtime"] = generated.runtime
        record["manifest"] = replay.manifest(
            spec=spec,
            sent=ran,
            generated=generated,
            weights=self.backend.weights_digest(spec),
            device=self.backend.device_info(),
            policy_version=self.policy.version,
            inputs={"init_image": queued.init_image, "mask_image": queued.mask_image},
            lora_digests={lora.name: self.loras.find(lora.name).sha256 for lora in request.loras},
        )
        # A request without a sampler ran the model's own: the result names it when the engine can.
        for name, used in (("sampler", generated.sampler), ("schedule", generated.schedule)):
            if used is not None:
                record[name] = used.value
        record["elapsed_s"] = round(time.perf_counter() - started, 3)
        with tracing.span("store"):
            png = encode_png(generated.image, record)
            output = self.faults.stored(self.outputs, lambda: self.outputs.save(png, record))
            run.written.append(output)
            record["output_path"] = str(output)
            if key is not None:
                self.faults.stored(self.cache, lambda: self.cache.put(key, png, record))
        return {**record, "cached": False}

    def _run(
        self, model: LoadedModel, spec: ModelSpec, request: GenerationRequest, index: int, run: _Run
    ) -> tuple[Generated, GenerationRequest]:
        """The image of `request` and the request that made it: the same, or its retry after running out of
        memory (`run.downgraded` then says what the retry changed)."""
        context = run.context
        started_ns = last_step_ns = time.time_ns()

        def on_progress(progress: Progress) -> None:
            nonlocal last_step_ns
            last_step_ns = time.time_ns()
            # The job's steps count over all its images: an image's steps follow those of the images before it.
            step, total = index * progress.total + progress.step, run.queued.count * progress.total
            context.progress(step, total)
            if progress.preview is not None and context.wants_preview():
                context.preview({"step": step, "total": total, **_preview_data(progress.preview())})

        try:
            try:
                with self.memory.running(spec, request, run.queued.count):
                    generated = model.generate(request, on_progress, context.should_stop)
            except OutOfMemory as exc:
                failure = exc.with_traceback(None)  # the traceback would hold the failed step's frames
            else:
                # The steps are the denoising; what follows the last one, until the image is back, is its decode.
                attributes = {"imageforge.model": spec.key, "imageforge.steps": request.steps}
                tracing.record("denoise", started_ns, last_step_ns, **attributes)
                decoded = {"imageforge.decoder": request.decoder.value}
                tracing.record("decode", last_step_ns, time.time_ns(), **decoded)
                return generated, request
            return self._retry(model, spec, request, failure, on_progress, run)
        except ImageforgeError:
            raise
        except Exception as exc:
            log.exception("generation failed for %s", spec.key)
            raise GenerationFailed(
                f"The model failed on this request: {type(exc).__name__}: {exc}",
                hint="Try a smaller size or other parameters; the server keeps running.",
            ) from exc

    def _as_sent(self, request: GenerationRequest) -> AppliedPolicy:
        """The prompts of a replay, which its manifest recorded as the model received them: the policy adds
        nothing."""
        report = {
            "version": self.policy.version,
            "replay": "the prompts went to the model as the manifest recorded them",
            "model_prompt": request.prompt,
            "model_negative_prompt": request.negative_prompt,
        }
        return AppliedPolicy(prompt=request.prompt, negative_prompt=request.negative_prompt, report=report)

    def _retry(
        self,
        model: LoadedModel,
        spec: ModelSpec,
        request: GenerationRequest,
        failure: OutOfMemory,
        on_progress: ProgressCallback,
        run: _Run,
    ) -> tuple[Generated, GenerationRequest]:
        """The one retry of `request` after `failure`, along the fallback policy; `failure` itself when the policy
        leaves nothing to change, and `OutOfMemory` naming what was tried when the retry runs out too."""
        retry = self.memory.retry(failure, spec, request, downsize=run.queued.allow_downsize)
        if retry is None:
            raise self._unrecovered(failure, downsize=run.queued.allow_downsize)
        self.pool.release_idle(keep=spec.key)
        run.downgraded = describe_downgrade(request, retry, failure)
        run.savers = retry.request.memory_savers
        if Fallback.SMALLER_SIZE in retry.applied:
            run.size = (retry.request.width, retry.request.height)
        tried = ", ".join(run.downgraded["applied"])
        log.warning("%s; retrying with %s", run.downgraded["reason"], tried)
        run.context.stage("retrying", {"downgraded": run.downgraded})
        try:
            generated = model.generate(retry.request, on_progress, run.context.should_stop)
        except OutOfMemory as again:
            raise OutOfMemory(
                f"{again.message} (a retry with {tried} ran out too)", hint=again.hint, savers=again.savers
            ) from None
        switched_on = generated.runtime.get("savers")
        if switched_on is not None:  # the engine says which savers it could switch on: report only those
            kept = {*switched_on, Fallback.SMALLER_SIZE.value}
            run.downgraded["applied"] = [step for step in run.downgraded["applied"] if step in kept]
        return generated, retry.request

    def _unrecovered(self, failure: OutOfMemory, *, downsize: bool) -> OutOfMemory:
        """`failure`, its hint saying that the request could allow a smaller size, where the policy has one."""
        if downsize or Fallback.SMALLER_SIZE not in self.memory.policy.fallback:
            return failure
        return OutOfMemory(
            failure.message,
            hint=f"{failure.hint} A request with allow_downsize is retried at a smaller size instead of failing.",
            savers=failure.savers,
        )

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

    def _from_cache(self, hit: tuple[bytes, dict[str, Any]], record: dict[str, Any], run: _Run) -> dict[str, Any]:
        png, stored = hit
        output = stored.get("output_path")
        if not output or not Path(output).is_file():
            saved = self.faults.stored(self.outputs, lambda: self.outputs.save(png, stored))
            run.written.append(saved)
            output = str(saved)
        # What the policy added and how the engine ran made the stored image: report those, not today's.
        made_by = ("policy_applied", "runtime", "sampler", "schedule", "manifest")
        kept: dict[str, Any] = {name: stored[name] for name in made_by if name in stored}
        return {**record, **kept, "output_path": output, "elapsed_s": 0.0, "cached": True}

    def _cache_parameters(self, request: GenerationRequest, spec: ModelSpec, queued: QueuedRequest) -> dict[str, Any]:
        """Everything that changes the pixels: the model and its revision, the prompts after assist, the
        numbers, the request's LoRAs (by content digest: a file replaced under its name makes other pixels), the
        input images (by digest), and the engine (library versions, device, dtype)."""
        return {
            "model": spec.key,
            "source": spec.source,
            "revision": spec.revision,
            "lora": spec.lora,
            "scheduler": spec.scheduler,
            **request.values(),
            "loras": [{"sha256": self.loras.find(lora.name).sha256, "weight": lora.weight} for lora in request.loras],
            "seed": request.seed,
            "init_image": queued.init_image,
            "mask_image": queued.mask_image,
            "engine": self.backend.fingerprint(spec),
            "policy": self.policy.version,
        }

    def _record(
        self, request: GenerationRequest, spec: ModelSpec, assist: AssistResult | None, style: str | None
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            **request.values(),
            "model": spec.key,
            "model_source": spec.source,
            "seed": request.seed,
            "original_prompt": assist.original_prompt if assist else request.prompt,
            "assisted": bool(assist and assist.assisted),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "imageforge_version": __version__,
            "engine": self.backend.fingerprint(spec),
            "style": style,
        }
        if assist is not None:
            record["assist"] = {"source": assist.source, "reason": assist.reason, "tags": assist.tags}
        if spec.notice:
            record["notice"] = spec.notice
        return record


def _runtime_label(device: str, runtime: dict[str, Any]) -> str:
    """The runtime as a metric label: the device, the dtype, and whether torch.compile ran (a bounded set)."""
    label = f"{device}/{runtime.get('dtype', 'unknown')}"
    return f"{label}/compiled" if runtime.get("compile") else label


def _preview_data(image: Image.Image) -> dict[str, Any]:
    """A preview image as event data: a PNG data URL of at most PREVIEW_PX on its longest side."""
    image = image.copy()
    image.thumbnail((PREVIEW_PX, PREVIEW_PX))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return {"width": image.width, "height": image.height, "image": f"data:image/png;base64,{encoded}"}
