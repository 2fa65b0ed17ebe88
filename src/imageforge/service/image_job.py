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

from imageforge import __version__
from imageforge.domain import (
    MAX_SEED,
    AssistResult,
    GenerationRequest,
    ModelSpec,
    Policy,
    Progress,
    QueuedRequest,
    ResultImage,
)
from imageforge.engine.catalog import Catalog
from imageforge.engine.pool import ModelPool
from imageforge.engine.protocol import Generated, ImageBackend, LoadedModel
from imageforge.errors import Cancelled, GenerationFailed, ImageforgeError, InvalidRequest
from imageforge.jobs.queue import JobContext
from imageforge.prompting.assist import PromptAssistant
from imageforge.prompting.policy import AppliedPolicy, apply_policy
from imageforge.service.faults import StorageFaults
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


@dataclass(frozen=True)
class ImageJob:
    """The image job function: called by the queue's worker with a job's payload, returns the job's result record.

    The payload was validated at submit; its images are read from the input store by digest only when the cache
    does not answer. A request for `count` images makes them one after the other with consecutive seeds, each
    cached and stored as a request for that seed alone would be; the result is the first image's record with
    every image (seed, output_path, cached, elapsed_s) under `images`.
    """

    catalog: Catalog
    backend: ImageBackend
    pool: ModelPool
    outputs: OutputStore
    cache: ArtifactCache
    inputs: InputStore
    assistant: PromptAssistant
    policy: Policy
    faults: StorageFaults

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
        return {**records[0], "images": images}

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
        request = replace(request, init_image=run.inputs[0], mask_image=run.inputs[1])
        started = time.perf_counter()
        with self.pool.use(spec, on_load=lambda: run.context.stage("loading", {"model": spec.key})) as (model, load_s):
            run.load_s += load_s
            run.context.timing("load_ms", run.load_s * 1000)
            applied = self._apply_policy(model, spec, request)
            record["policy_applied"] = applied.report
            model_request = replace(request, prompt=applied.prompt, negative_prompt=applied.negative_prompt)
            generated = self._run(model, spec, model_request, index, run)
        record["runtime"] = generated.runtime
        # A request without a sampler ran the model's own: the result names it when the engine can.
        for name, used in (("sampler", generated.sampler), ("schedule", generated.schedule)):
            if used is not None:
                record[name] = used.value
        record["elapsed_s"] = round(time.perf_counter() - started, 3)
        png = encode_png(generated.image, record)
        output = self.faults.stored(self.outputs, lambda: self.outputs.save(png, record))
        run.written.append(output)
        record["output_path"] = str(output)
        if key is not None:
            self.faults.stored(self.cache, lambda: self.cache.put(key, png, record))
        return {**record, "cached": False}

    def _run(self, model: LoadedModel, spec: ModelSpec, request: GenerationRequest, index: int, run: _Run) -> Generated:
        context = run.context

        def on_progress(progress: Progress) -> None:
            # The job's steps count over all its images: an image's steps follow those of the images before it.
            step, total = index * progress.total + progress.step, run.queued.count * progress.total
            context.progress(step, total)
            if progress.preview is not None and context.wants_preview():
                context.preview({"step": step, "total": total, **_preview_data(progress.preview())})

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

    def _from_cache(self, hit: tuple[bytes, dict[str, Any]], record: dict[str, Any], run: _Run) -> dict[str, Any]:
        png, stored = hit
        output = stored.get("output_path")
        if not output or not Path(output).is_file():
            saved = self.faults.stored(self.outputs, lambda: self.outputs.save(png, stored))
            run.written.append(saved)
            output = str(saved)
        # What the policy added and how the engine ran made the stored image: report those, not today's.
        made_by = ("policy_applied", "runtime", "sampler", "schedule")
        kept: dict[str, Any] = {name: stored[name] for name in made_by if name in stored}
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


def _preview_data(image: Image.Image) -> dict[str, Any]:
    """A preview image as event data: a PNG data URL of at most PREVIEW_PX on its longest side."""
    image = image.copy()
    image.thumbnail((PREVIEW_PX, PREVIEW_PX))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return {"width": image.width, "height": image.height, "image": f"data:image/png;base64,{encoded}"}
