"""ImageJob: what the queue runs for an image job: prompt assist, cache, inputs, model, policy, storing."""

from __future__ import annotations

import base64
import io
import logging
import secrets
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from imageforge import __version__
from imageforge.domain import MAX_SEED, AssistResult, GenerationRequest, ModelSpec, Policy, Progress, QueuedRequest
from imageforge.engine.catalog import Catalog
from imageforge.engine.pool import ModelPool
from imageforge.engine.protocol import Generated, ImageBackend, LoadedModel
from imageforge.errors import GenerationFailed, ImageforgeError, InvalidRequest, StorageUnavailable
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


@dataclass(frozen=True)
class ImageJob:
    """The image job function: called by the queue's worker with a job's payload, returns the job's result record.

    The payload was validated at submit; its images are read from the input store by digest only when the cache
    does not answer.
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
        seed = secrets.randbelow(MAX_SEED + 1) if queued.seed is None else queued.seed
        request = queued.request(seed=seed)
        assist = self.assistant.expand(request.prompt) if queued.assist_prompt else None
        if assist is not None:
            request = replace(request, prompt=assist.prompt)
        record = self._record(request, spec, assist, queued.style)

        key = (
            cache_key(self._cache_parameters(request, spec, queued))
            if queued.use_cache and queued.seed is not None
            else None
        )
        hit = self.cache.get(key) if key is not None else None
        if hit is not None:
            return self._from_cache(hit, record)

        request = replace(
            request,
            init_image=None if queued.init_image is None else self.inputs.get(queued.init_image),
            mask_image=None if queued.mask_image is None else self.inputs.get(queued.mask_image),
        )
        started = time.perf_counter()
        with self.pool.use(spec, on_load=lambda: context.stage("loading", {"model": spec.key})) as (model, load_s):
            context.timing("load_ms", load_s * 1000)
            applied = self._apply_policy(model, spec, request)
            record["policy_applied"] = applied.report
            model_request = replace(request, prompt=applied.prompt, negative_prompt=applied.negative_prompt)
            generated = self._run(model, spec, model_request, context)
        record["runtime"] = generated.runtime
        record["elapsed_s"] = round(time.perf_counter() - started, 3)
        png = encode_png(generated.image, record)
        output = self.faults.stored(self.outputs, lambda: self.outputs.save(png, record))
        record["output_path"] = str(output)
        if key is not None:
            try:
                self.faults.stored(self.cache, lambda: self.cache.put(key, png, record))
            except StorageUnavailable:
                self.outputs.delete(output)  # a failed job leaves no files behind
                raise
        return {**record, "cached": False}

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

    def _from_cache(self, hit: tuple[bytes, dict[str, Any]], record: dict[str, Any]) -> dict[str, Any]:
        png, stored = hit
        output = stored.get("output_path")
        if not output or not Path(output).is_file():
            output = str(self.faults.stored(self.outputs, lambda: self.outputs.save(png, stored)))
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
            "engine": self.backend.fingerprint(),
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
            "engine": self.backend.fingerprint(),
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
