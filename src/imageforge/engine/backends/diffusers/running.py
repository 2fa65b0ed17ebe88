"""Running a loaded model: text2img, and img2img and inpaint with pipelines made by `from_pipe`, so that they
share the text2img pipeline's weights instead of loading them twice; progress, previews and cancelling at each
step, the fast decoder, a cache of prompt embeddings, and running out of memory reported as `out_of_memory`.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any

from PIL import Image

from imageforge.domain import (
    CancelCheck,
    Decoder,
    Fallback,
    Family,
    GenerationRequest,
    ModelSpec,
    Progress,
    ProgressCallback,
    Sampler,
    Schedule,
    Task,
)
from imageforge.engine.backends import speed
from imageforge.engine.backends.diffusers import sampling
from imageforge.engine.backends.diffusers.adapters import RequestLoras
from imageforge.engine.backends.diffusers.device import import_torch, is_out_of_memory, out_of_memory, release_memory
from imageforge.engine.backends.diffusers.openvino import OpenVINONetworks
from imageforge.engine.protocol import Generated
from imageforge.errors import Cancelled

log = logging.getLogger(__name__)

#: How each latent channel of the Stable Diffusion VAEs (SD 1.x/2.x; close enough for SDXL's) tints the
#: image: a linear map from 4 latent channels to RGB that approximates the decoder at 1/8 resolution for a
#: preview, at no cost. Coefficients published by Birchlabs on the Hugging Face forum ("Decoding latents to
#: RGB without upscaling"). FLUX latents have 16 packed channels and no preview until the tiny autoencoder.
_LATENT_RGB = {
    Family.SD: ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473)),
    Family.SDXL: ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473)),
}


def _latent_preview(latents: Any, factors: tuple[tuple[float, ...], ...]) -> Image.Image:
    """The RGB approximation of the first image's latents, at latent resolution."""
    torch = import_torch()
    weights = torch.tensor(factors, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latents[0].detach().float().cpu(), weights)
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels, "RGB")


def _tiny_decode(decoder: Any, latents: Any) -> Image.Image:
    """The first image's latents decoded by the tiny autoencoder, at full resolution: the result of
    `decoder: "fast"`, and the live preview of the image so far."""
    pixels = decoder.decode(latents[:1].to(decoder.dtype)).sample
    array = ((pixels[0].float().clamp(-1, 1) + 1) * 127.5).round().to(import_torch().uint8).permute(1, 2, 0)
    return Image.fromarray(array.cpu().numpy(), "RGB")


class _Interrupted(Exception):
    """Raised from the step callback to leave the denoising loop at once, skipping the VAE decode."""


#: Prompt embeddings kept per model: a person iterating on seeds or sizes repeats the same prompt.
_EMBEDDINGS_CACHED = 32
#: The families whose pipelines take precomputed prompt embeddings in the same shape from `encode_prompt`.
_EMBEDDING_KEYS = {
    Family.SD: ("prompt_embeds", "negative_prompt_embeds"),
    Family.SDXL: ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"),
}


class DiffusersModel:
    """One loaded pipeline plus the img2img and inpaint pipelines that share its weights."""

    def __init__(
        self,
        spec: ModelSpec,
        pipe: Any,
        runtime: speed.Runtime,
        *,
        fast_decoder: Any,
        load_fast_decoder: Callable[[], Any],
        loras: RequestLoras | None = None,
        openvino: OpenVINONetworks | None = None,
    ) -> None:
        self.spec = spec
        self._runtime = runtime
        self._device = runtime.device
        self._pipelines: dict[Task, Any] = {Task.TEXT2IMG: pipe}
        self._openvino = openvino
        self._fast_decoder = self._attached(fast_decoder)
        self._load_fast_decoder = load_fast_decoder
        self._loras = loras or RequestLoras(None)
        self._embeddings: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
        self._tiling_on = False
        self._slicing_on = False
        #: the shapes already run once; with compile on, the first run of each compiles
        self._shapes: set[tuple[Task, int, int, Decoder]] = set()
        #: the scheduler the model loaded with (the catalog's, if it names one): a job without a sampler runs it
        self._own_scheduler = pipe.scheduler
        self._schedulers: dict[tuple[Sampler, Schedule], Any] = {}

    @property
    def pipeline(self) -> Any:
        """The text2img diffusers pipeline (its scheduler and weights are shared with the other tasks')."""
        return self._pipelines[Task.TEXT2IMG]

    @property
    def fast_decoder(self) -> Any:
        """The tiny autoencoder when it is loaded (it then draws the previews too), else None."""
        return self._fast_decoder

    def _attached(self, fast_decoder: Any) -> Any:
        """`fast_decoder`, decoding through OpenVINO where the model runs there."""
        if fast_decoder is not None and self._openvino is not None:
            self._openvino.attach("fast_decoder", fast_decoder.decoder, owner=fast_decoder)
        return fast_decoder

    def _pipeline(self, task: Task) -> Any:
        if task not in self._pipelines:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

            auto = AutoPipelineForImage2Image if task is Task.IMG2IMG else AutoPipelineForInpainting
            pipe = auto.from_pipe(self._pipelines[Task.TEXT2IMG])
            pipe.set_progress_bar_config(disable=True)
            self._pipelines[task] = pipe
        return self._pipelines[task]

    def _preview(self, latents: Any) -> Callable[[], Image.Image] | None:
        if latents is None or latents.ndim != 4 or latents.shape[1] != 4:
            return None
        if self._fast_decoder is not None:
            return partial(_tiny_decode, self._fast_decoder, latents)
        factors = _LATENT_RGB.get(self.spec.family)
        return None if factors is None else partial(_latent_preview, latents, factors)

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, should_cancel: CancelCheck
    ) -> Generated:
        """The image `request` asks for; each step is reported to `on_progress`, and `should_cancel` stops it."""
        torch = import_torch()
        pipe = self._pipeline(request.task)
        # Every job sets its pipeline's scheduler, so that no job runs with the sampler of the one before.
        pipe.scheduler = self._scheduler(request)
        fast = request.decoder is Decoder.FAST
        if fast and self._fast_decoder is None:
            self._fast_decoder = self._attached(self._load_fast_decoder())

        def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            preview = self._preview(tensors.get("latents"))
            on_progress(Progress(step=step + 1, total=int(pipeline.num_timesteps), preview=preview))
            if should_cancel():
                raise _Interrupted
            return tensors

        arguments: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt or None,
            "num_inference_steps": request.steps,
            "guidance_scale": request.guidance,
            "width": request.width,
            "height": request.height,
            "generator": torch.Generator("cpu").manual_seed(request.seed),
            "callback_on_step_end": on_step_end,
        }
        if fast:
            arguments["output_type"] = "latent"
        if request.task is not Task.TEXT2IMG:
            arguments["image"] = request.init_image
            arguments["strength"] = request.strength
        if request.task is Task.INPAINT:
            arguments["mask_image"] = request.mask_image
        accepted = inspect.signature(pipe.__call__).parameters
        arguments = {name: value for name, value in arguments.items() if name in accepted}
        savers = self._switch_memory_savers(pipe, request)
        report = self._openvino.start_request() if self._openvino is not None else None
        shape = (request.task, request.width, request.height, request.decoder)
        started = time.perf_counter()
        failure = None
        try:
            # Outside inference mode: the adapters' layers are made here and removed when the block ends.
            with self._loras.applied(pipe, request.loras), self._adapters_in_torch(request), torch.inference_mode():
                arguments |= self._prompt_embeddings(pipe, request)
                images = pipe(**arguments).images
                image = _tiny_decode(self._fast_decoder, images) if fast else images[0]
        except _Interrupted:
            raise Cancelled("The generation was cancelled.") from None
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            failure = str(exc).splitlines()[0]
        if failure is not None:
            # Outside the handler, so that the traceback no longer holds the step's activations.
            release_memory(self._device)
            error = out_of_memory(
                self._device, f"generating {request.width}x{request.height} with '{self.spec.key}'", failure
            )
            error.savers = frozenset(saver.value for saver in savers)
            raise error
        runtime = {
            **self._runtime.as_dict(),
            "decoder": request.decoder.value,
            "memory_savers": bool(savers & {Fallback.TILED_VAE, Fallback.ATTENTION_SLICING}),
            "savers": sorted(saver.value for saver in savers),
        }
        if report is not None:
            runtime["openvino"] = report.as_dict()
        if self._runtime.compile and shape not in self._shapes:
            # The first run of each shape compiles (or reads the on-disk cache): report what that cost.
            runtime["first_run_with_compile_s"] = round(time.perf_counter() - started, 2)
            log.info(
                "first %s run at %dx%d with torch.compile took %.1fs", *shape[:3], runtime["first_run_with_compile_s"]
            )
        self._shapes.add(shape)
        return Generated(image, runtime, *sampling.named(pipe.scheduler), scheduler=sampling.described(pipe.scheduler))

    def _scheduler(self, request: GenerationRequest) -> Any:
        """The scheduler of the request's sampler and schedule, built once per model; the model's own when the
        request names no sampler, or the model samples by flow matching (validation allows only its own there)."""
        if request.sampler is None or sampling.is_flow_matching(self._own_scheduler):
            return self._own_scheduler
        key = (request.sampler, request.schedule)
        if key not in self._schedulers:
            self._schedulers[key] = sampling.build(self._own_scheduler, *key)
        return self._schedulers[key]

    def _adapters_in_torch(self, request: GenerationRequest) -> AbstractContextManager[None]:
        """The UNet in torch for a request with LoRAs on OpenVINO: the adapters are torch layers, which the
        converted model does not have."""
        if self._openvino is None or not request.loras:
            return nullcontext()
        return self._openvino.in_torch("unet", "a request's LoRAs apply to the torch UNet")

    def _prompt_embeddings(self, pipe: Any, request: GenerationRequest) -> dict[str, Any]:
        """The prompt's embeddings from a small LRU, so a repeated prompt skips the text encoder.

        Only for the families whose pipelines take embeddings; the others encode the prompt themselves.
        """
        names = _EMBEDDING_KEYS.get(self.spec.family)
        if names is None:
            return {}
        guided = request.guidance > 1
        # A LoRA may change the text encoders too: embeddings are kept per set of LoRAs and weights.
        key = (request.prompt, request.negative_prompt if guided else "", guided, request.loras)
        cached = self._embeddings.get(key)
        if cached is None:
            encoded = pipe.encode_prompt(
                prompt=request.prompt,
                device=pipe._execution_device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=guided,
                negative_prompt=request.negative_prompt or None,
            )
            cached = dict(zip(names, encoded, strict=True))
            self._embeddings[key] = cached
            if len(self._embeddings) > _EMBEDDINGS_CACHED:
                self._embeddings.popitem(last=False)
        self._embeddings.move_to_end(key)
        return {"prompt": None, "negative_prompt": None, **cached}

    def _switch_memory_savers(self, pipe: Any, request: GenerationRequest) -> frozenset[Fallback]:
        """VAE tiling and attention slicing on when this request needs them, or asks for them (a retry after
        running out of memory), off again when not; CPU offload (CUDA only), once asked for, stays on until the
        model is unloaded. Returns the savers that are on."""
        wanted = speed.memory_savers(self._runtime, request.width, request.height)
        forced = request.memory_savers
        if hasattr(pipe, "enable_attention_slicing"):
            tiling = wanted or Fallback.TILED_VAE in forced
            slicing = wanted or Fallback.ATTENTION_SLICING in forced
            if tiling != self._tiling_on:
                switch = pipe.vae.enable_tiling if tiling else pipe.vae.disable_tiling
                switch()
                self._tiling_on = tiling
            if slicing != self._slicing_on:
                switch = pipe.enable_attention_slicing if slicing else pipe.disable_attention_slicing
                switch()
                self._slicing_on = slicing
        offloaded = getattr(pipe, "_offload_device", None) is not None
        if Fallback.CPU_OFFLOAD in forced and self._device.startswith("cuda") and not offloaded:
            pipe.enable_model_cpu_offload(device=self._device)
            offloaded = True
        on = {Fallback.TILED_VAE: self._tiling_on, Fallback.ATTENTION_SLICING: self._slicing_on}
        return frozenset(saver for saver, is_on in on.items() if is_on) | (
            {Fallback.CPU_OFFLOAD} if offloaded else frozenset()
        )

    def count_tokens(self, prompt: str) -> tuple[int, int] | None:
        """Tokens of the encoder that reads the prompt's words: CLIP's 77 for SD and SDXL (both encoders share
        the window), T5's `max_sequence_length` for FLUX.1."""
        pipe = self.pipeline
        if self.spec.family in (Family.SD, Family.SDXL):
            tokenizer, window = pipe.tokenizer, int(pipe.tokenizer.model_max_length)
        elif self.spec.family is Family.FLUX and getattr(pipe, "tokenizer_2", None) is not None:
            tokenizer, window = pipe.tokenizer_2, 512
        else:
            return None
        # BOS and EOS count: they take two of CLIP's 77 places.
        return len(tokenizer(prompt, truncation=False).input_ids), window

    def close(self) -> None:
        """Drop the pipelines, the fast decoder and the cached embeddings, and give their memory back."""
        self._pipelines.clear()
        self._embeddings.clear()
        self._schedulers.clear()
        self._fast_decoder = None
        release_memory(self._device)
