"""Building a model's diffusers pipeline from its weights, on the device and in the dtype of the runtime.

Every model loads through `from_pretrained` (a Hub repo id or a local diffusers folder) or `from_single_file`
(one local `.safetensors`), always with safetensors only; a FLUX transformer may come from one GGUF file, a LoRA is
fused in, and the scheduler may be swapped for the one the catalog names.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from imageforge.domain import Family, ModelSpec
from imageforge.engine.backends import speed
from imageforge.engine.backends.diffusers.device import import_torch, is_out_of_memory, out_of_memory, release_memory
from imageforge.engine.backends.diffusers.weights import (
    Weights,
    diffusers_folder,
    has_file,
    is_fetch_failure,
    is_local,
    offline,
    single_file,
    unavailable,
    variant,
    why_unavailable,
)
from imageforge.errors import ModelUnsupported, WeightsUnavailable
from imageforge.extras import install_line, missing

if TYPE_CHECKING:
    from imageforge.engine.backends.diffusers.openvino import OpenVINONetworks, ParkedUNet

log = logging.getLogger(__name__)

#: Held while diffusers or transformers build a model. They build under process-wide state (torch's default
#: dtype, torch functions patched to initialise on the meta device), so two builds at once in one process (two
#: services, or a fast decoder loading beside another model) corrupt each other, and every later load fails.
BUILDING = threading.RLock()

_PIPELINES = {
    Family.SD: "StableDiffusionPipeline",
    Family.SDXL: "StableDiffusionXLPipeline",
    Family.FLUX: "FluxPipeline",
    Family.FLUX2_KLEIN: "Flux2KleinPipeline",
}


def load(
    spec: ModelSpec, runtime: speed.Runtime, weights: Weights, parked: ParkedUNet | None = None
) -> tuple[Any, Any]:
    """The text2img pipeline of `spec`, ready on the runtime's device, and its fast decoder when that is on disk
    (None otherwise: the first request for it loads it, see `load_fast_decoder`). `parked`: the UNet's weights
    as the OpenVINO runtime parked them in an earlier load, which the UNet is built from where they are given."""
    with BUILDING:
        return _load(spec, runtime, weights, parked)


def _load(spec: ModelSpec, runtime: speed.Runtime, weights: Weights, parked: ParkedUNet | None) -> tuple[Any, Any]:
    dtype = getattr(import_torch(), runtime.dtype)
    pipeline_class = _pipeline_class(spec)
    failure = None
    try:
        unet = _unet_from_parked(parked) if parked is not None and parked.weights is not None else None
        pipe = _pipeline_from_weights(spec, pipeline_class, dtype, weights, unet)
        pipe.set_progress_bar_config(disable=True)
        if speed.offload_to_cpu(runtime, spec.est_memory_gb):
            log.info(
                "%s (~%.1f GB) does not fit the free GPU memory: offloading to the CPU",
                spec.key,
                spec.est_memory_gb,
            )
            pipe.enable_model_cpu_offload(device=runtime.device)
        else:
            pipe = pipe.to(runtime.device)
        speed.prepare(pipe, runtime)
        fast_decoder = load_fast_decoder(spec, runtime, weights) if _fast_decoder_present(spec) else None
    except Exception as exc:
        if not is_out_of_memory(exc):
            error = _load_error(spec, exc)
            if error is exc:
                raise
            raise error from exc
        failure = str(exc).splitlines()[0]
    if failure is not None:
        # Outside the handler, so that the traceback no longer holds the half-loaded weights.
        release_memory(runtime.device)
        raise out_of_memory(runtime.device, f"loading '{spec.key}'", failure)
    return pipe, fast_decoder


def unet_source(spec: ModelSpec, runtime: speed.Runtime, weights: Weights) -> tuple[str, Path] | None:
    """A key of what `spec`'s UNet loads from (the model, the dtype, and the names, sizes and times of the files in
    its `unet` folder) and that folder; None where the UNet does not come from a diffusers folder on this machine
    as it is (a single file, a fused LoRA, a pipeline without a UNet)."""
    if spec.family not in (Family.SD, Family.SDXL) or spec.lora or spec.transformer_file:
        return None
    source = _source(spec, weights)
    folder = None if source.endswith(".safetensors") else diffusers_folder(source, spec.revision)
    if folder is None or not (folder / "unet" / "config.json").is_file():
        return None
    key = hashlib.sha256(f"{spec.key}|{runtime.dtype}|{variant(folder, runtime.dtype)}".encode())
    for path in sorted((folder / "unet").iterdir()):
        found = path.stat()  # through the Hub cache's links to their blobs
        key.update(f"|{path.name}|{path.resolve()}|{found.st_size}|{found.st_mtime_ns}".encode())
    return key.hexdigest()[:24], folder / "unet"


def _unet_from_parked(parked: ParkedUNet) -> Any:
    """The UNet built from its config with the parked weights mapped in (no copy); None, with the reason logged
    and `parked` cleared, where they do not fit it."""
    from diffusers import UNet2DConditionModel

    torch = import_torch()
    try:
        with torch.device("meta"):  # no memory for weights that are replaced right away
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(parked.folder))
        unet.load_state_dict(parked.weights, assign=True)
    except Exception as exc:
        log.warning("the parked UNet weights do not fit %s (%s): loading the model's own", parked.folder, exc)
        parked.digest = parked.weights = None
        return None
    return unet.eval()


def openvino_networks(
    spec: ModelSpec, pipe: Any, runtime: speed.Runtime, cache: Path, parked: ParkedUNet | None
) -> OpenVINONetworks | None:
    """The pipeline's UNet and VAE switched to OpenVINO models (converted per shape on first use, ADR 0025);
    None, with the reason logged, for a pipeline without a UNet (FLUX), which keeps torch."""
    from imageforge.engine.backends.diffusers.openvino import CALIBRATION_PROMPTS, OpenVINONetworks

    if getattr(pipe, "unet", None) is None:
        log.warning("%s has no UNet: OpenVINO runs UNet pipelines only here, so it runs in torch", spec.key)
        return None

    def calibration_states() -> list[dict[str, Any]]:
        states = []
        for prompt in CALIBRATION_PROMPTS:
            encoded = pipe.encode_prompt(
                prompt=prompt, device=runtime.device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
            # SDXL also gives the pooled embedding, which its UNet takes as `text_embeds`
            states.append(
                {"encoder_hidden_states": encoded[0], **({"text_embeds": encoded[2]} if len(encoded) > 2 else {})}
            )
        return states

    networks = OpenVINONetworks(
        spec.key,
        cache,
        inference_precision="bf16" if runtime.dtype == "bfloat16" else "f32",
        threads=runtime.threads,
        int8=runtime.precision == "int8",
        convert=runtime.convert,
        channels_last=runtime.channels_last,
        calibration_states=calibration_states,
    )
    networks.attach_unet(pipe.unet, parked)
    networks.attach("vae_decoder", pipe.vae.decoder, owner=pipe.vae)
    networks.attach("vae_encoder", pipe.vae.encoder, owner=pipe.vae)
    return networks


def load_fast_decoder(spec: ModelSpec, runtime: speed.Runtime, weights: Weights) -> Any:
    """The tiny autoencoder of `spec`, through the same offline and safetensors rules as every model."""
    with BUILDING:
        return _load_fast_decoder(spec, runtime, weights)


def _load_fast_decoder(spec: ModelSpec, runtime: speed.Runtime, weights: Weights) -> Any:
    from diffusers import AutoencoderTiny

    assert spec.fast_decoder is not None
    torch = import_torch()
    source = str(weights.builtin_fast_decoder()) if spec.builtin else spec.fast_decoder
    try:
        if is_local(source) and not Path(source).is_dir():
            raise FileNotFoundError(source)
        if not is_local(source) and offline() and not has_file(source, "config.json"):
            raise FileNotFoundError(f"{source} is not in the Hugging Face cache and HF_HUB_OFFLINE is set")
        decoder = AutoencoderTiny.from_pretrained(source, dtype=getattr(torch, runtime.dtype), use_safetensors=True)
    except Exception as exc:
        if not is_fetch_failure(exc):
            raise
        raise WeightsUnavailable(
            f"The fast decoder of '{spec.key}' ({source}) is not on this machine and could not be fetched: "
            + why_unavailable(spec, exc),
            hint=(
                f'Use decoder "full", or on a machine with internet access run `imageforge models pull '
                f"{spec.key}` (it fetches the fast decoder too)."
            ),
        ) from exc
    decoder = decoder.to(runtime.device)
    if runtime.channels_last:
        decoder.to(memory_format=torch.channels_last)
    return decoder


def _diffusers_attr(name: str) -> Any:
    import diffusers

    return getattr(diffusers, name, None)


def _pipeline_class(spec: ModelSpec) -> Any:
    pipeline_name = _PIPELINES[spec.family]
    pipeline_class = _diffusers_attr(pipeline_name)
    if pipeline_class is None:
        import diffusers

        raise ModelUnsupported(
            f"Model '{spec.key}' needs diffusers' {pipeline_name}, which diffusers {diffusers.__version__} lacks.",
            hint="Upgrade diffusers (pip install -U diffusers) and restart.",
        )
    return pipeline_class


def _fast_decoder_present(spec: ModelSpec) -> bool:
    if spec.fast_decoder is None:
        return False
    if spec.builtin:
        return True
    return has_file(spec.fast_decoder, "config.json")


def _load_error(spec: ModelSpec, exc: Exception) -> Exception:
    """What a failed load tells the client: missing weights, a missing package, an unreadable file."""
    if isinstance(exc, ImportError):
        return ModelUnsupported(
            f"Model '{spec.key}' needs a package that is not installed: {exc}",
            hint="Install the package the message names into imageforge's environment and restart.",
        )
    if is_fetch_failure(exc):
        return unavailable(spec, exc)
    if isinstance(exc, SafetensorError):
        return WeightsUnavailable(
            f"A weights file of '{spec.key}' is not a readable safetensors file: {exc}",
            hint="Fetch the file again; imageforge loads safetensors only, never pickled weights under any name.",
        )
    return exc


def _source(spec: ModelSpec, weights: Weights) -> str:
    """Where `spec` loads from: its catalog source, or the built-in model's folder (built under BUILDING on first
    use, as building runs diffusers)."""
    if not spec.builtin:
        return spec.source
    with BUILDING:
        return str(weights.builtin_model(spec))


def _pipeline_from_weights(spec: ModelSpec, pipeline_class: Any, dtype: Any, weights: Weights, unet: Any) -> Any:
    source = _source(spec, weights)
    extra: dict[str, Any] = {} if unet is None else {"unet": unet}
    if spec.transformer_file:
        extra["transformer"] = _quantized_transformer(
            spec.transformer_file, dtype, config=source, revision=spec.revision
        )
    if source.endswith(".safetensors"):
        if not Path(source).is_file():
            raise FileNotFoundError(source)
        pipe = pipeline_class.from_single_file(source, dtype=dtype, **extra)
    else:
        if is_local(source) and not Path(source).is_dir():
            raise FileNotFoundError(source)
        folder = diffusers_folder(source, spec.revision)
        if folder is None and not offline():  # a first use fetches what `models pull` does, then reads it
            folder = Path(weights.pull(spec))
            source = str(folder)
        pipe = pipeline_class.from_pretrained(
            source,
            dtype=dtype,
            use_safetensors=True,
            revision=spec.revision,
            variant=variant(folder, str(dtype).removeprefix("torch.")),
            **extra,
        )
    if spec.scheduler:
        scheduler_class = _diffusers_attr(spec.scheduler)
        if scheduler_class is None:
            raise ModelUnsupported(f"Unknown scheduler '{spec.scheduler}' for model '{spec.key}'.")
        pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    if spec.lora:
        _fuse_lora(pipe, spec.lora)
    return pipe


def _quantized_transformer(reference: str, dtype: Any, *, config: str, revision: str | None) -> Any:
    """The FLUX transformer from one `.gguf` file, configured from the `transformer` folder of `config`.

    Naming the config source keeps the load offline once the source is on disk; without it diffusers
    guesses a Hub repo from the checkpoint's keys and fetches that repo's config.
    """
    if missing("gguf"):
        # Said before the file is fetched: ~7 GB downloaded only to fail on a package would be a poor answer.
        raise ModelUnsupported(
            f"The transformer file {reference} is GGUF-quantised, and reading it needs the gguf package, which this "
            "installation lacks.",
            hint=f"Install it with {install_line('gguf')} (or pip install gguf into imageforge's environment) and "
            "restart.",
        )
    from diffusers import FluxTransformer2DModel, GGUFQuantizationConfig

    if not reference.lower().endswith(".gguf"):
        raise ModelUnsupported(f"The transformer file {reference} is not a .gguf file; only GGUF files load here.")
    return FluxTransformer2DModel.from_single_file(
        single_file(reference),
        quantization_config=GGUFQuantizationConfig(compute_dtype=dtype),
        dtype=dtype,
        config=config,
        subfolder="transformer",
        config_revision=revision,
    )


def _fuse_lora(pipe: Any, reference: str) -> None:
    """Load LoRA weights (a local `.safetensors` file or folder, or a Hub repo id) and fuse them into the pipeline.

    `use_safetensors=True` also turns off diffusers' fallback to pickled `.bin` LoRA weights, and a local
    file must be `.safetensors`: diffusers would unpickle a file of any other name it is given.
    """
    if is_local(reference):
        path = Path(reference)
        if not path.exists():
            raise FileNotFoundError(reference)
        if path.is_file():
            if path.suffix.lower() != ".safetensors":
                raise WeightsUnavailable(
                    f"The LoRA file {reference} is not a .safetensors file.",
                    hint="imageforge loads safetensors weights only; pickled LoRA files can run code when loaded.",
                )
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, use_safetensors=True)
        else:
            pipe.load_lora_weights(str(path), use_safetensors=True)
    else:
        pipe.load_lora_weights(reference, use_safetensors=True)
    pipe.fuse_lora()
    # The fused weights stay in the base layers; the adapter layers go, so that a request's own LoRAs
    # (adapters.py) start from a pipeline without any and leave it so.
    pipe.unload_lora_weights()
