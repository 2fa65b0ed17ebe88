"""OpenVINO as the runtime of a loaded pipeline's networks on the CPU (ADR 0025).

The loaded torch modules stay where the pipeline has them; only their `forward` is replaced by a call of an
OpenVINO model converted from them (`openvino.convert_model`) for the input shapes of the call, so diffusers'
denoising loop, progress, previews, cancelling, img2img and inpaint run unchanged around them. Converted models
are kept on disk, keyed by model, weights digest, network, shapes, precision and OpenVINO version, so only the
first use of a shape pays the conversion; an entry that no longer reads or compiles is converted again. A call
OpenVINO cannot take (a tiled decode, arguments the converted call lacks) or a network whose conversion failed
runs in torch, with the reason logged once; so does the UNet while a request's LoRAs are applied to it as torch
adapters, which its converted model does not have. Under `IMAGEFORGE_RUNTIME=auto` nothing is converted: a
network runs on OpenVINO at the sizes an earlier run converted, and in torch at the others (ADR 0028).

While OpenVINO runs the UNet, the torch UNet's weights are rarely used (another shape's conversion, a job with
LoRAs), yet they were as large as the compiled model. They are parked: written once beside the converted models
and mapped back from that file, so they take memory only while something reads them, and the kernel can drop
those pages again (ADR 0025). A record beside that file says which of the model's files and dtype the weights
came from, so a later load that would read the same files builds the UNet from the mapped file instead (no
reading, casting or digesting of the UNet's own files: most of a cached start's load). With int8 the UNet is
quantized by NNCF (post-training, weights and activations), calibrated on the UNet's inputs for a few fixed
prompts.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imageforge.engine.backends import speed
from imageforge.engine.backends.diffusers.device import import_torch
from imageforge.engine.backends.memory import trim_heap

log = logging.getLogger(__name__)

#: The prompts whose embeddings calibrate int8 (with seeded noise at timesteps across the schedule): varied
#: subjects and styles, so that the activation ranges cover more than one kind of picture.
CALIBRATION_PROMPTS = (
    "a lighthouse on a cliff at dusk, oil painting",
    "portrait photo of an old fisherman, 85mm, soft light",
    "a bowl of fruit on a wooden table, still life",
    "isometric pixel art of a tiny city at night",
)
#: Calibration calls of the UNet per int8 conversion: the prompts above at two timesteps each.
_CALIBRATION_TIMESTEPS = (999.0, 499.0)
#: Why a network runs in torch under `IMAGEFORGE_RUNTIME=auto` at a size it has no OpenVINO model of.
NOT_CONVERTED = "not converted for this size: IMAGEFORGE_RUNTIME=openvino converts it on first use"
#: Memory a conversion takes beyond the loaded model, per byte of the network's weights in float32, with some
#: margin: converting holds them in float32 and OpenVINO copies them (measured 1.3x on sd-turbo's UNet and 1.2x on
#: SDXL's), and int8's quantization holds more (3.0x on sd-turbo's UNet; docs/benchmarks.md).
_CONVERT_MEMORY = {"float": 1.5, "int8": 3.2}
#: The extra inputs SDXL's UNet takes through `added_cond_kwargs`, in the order the converted call takes them.
_ADDED = ("text_embeds", "time_ids")


def _ov() -> Any:
    import openvino

    return openvino


def weights_digest(module: Any) -> str:
    """A digest of a module's weights that changes when any of them does (a LoRA fused in, another revision):
    names, shapes, dtypes and an evenly spread sample of each tensor's values. Hashing every byte of a UNet
    would take seconds per load; a fused LoRA or another checkpoint changes most sampled values. The values are
    sampled in memory order, through a view: flattening a channels-last weight in logical order copies it, which
    took most of a second over a UNet."""
    torch = import_torch()
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            flat = tensor.permute(sorted(range(tensor.dim()), key=lambda dim: -tensor.stride(dim))).reshape(-1)
            step = max(1, flat.numel() // 256)
            digest.update(flat[::step].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:24]


@dataclass
class ParkedUNet:
    """What the OpenVINO runtime knows of a model's torch UNet before the model loads (ADR 0028)."""

    #: A key of what the UNet loads from: its files' names, sizes and times, the dtype and the model
    source: str
    #: The UNet's folder in the model (its config.json)
    folder: Path
    #: The weights digest an earlier load of the same source recorded; None when none did
    digest: str | None = None
    #: Those weights, mapped from the file they were parked in; None when there is none to map
    weights: dict[str, Any] | None = None


def parked_unet(cache_dir: Path, source: str, folder: Path, *, channels_last: bool) -> ParkedUNet:
    """The UNet of `source` as an earlier load parked it: its digest and its weights mapped from their file, where
    both are still there and read back; otherwise a ParkedUNet without them, and the model loads its own files."""
    parked = ParkedUNet(source, folder)
    try:
        digest = str(json.loads(_source_record(cache_dir, source).read_text())["digest"])
        weights = import_torch().load(_parked_file(cache_dir, digest, channels_last), mmap=True, weights_only=True)
    except FileNotFoundError:
        return parked
    except Exception as exc:  # a broken record or file: the next load parks the weights again
        log.warning("the parked UNet weights of %s do not read back (%s): loading the model's own", folder, exc)
        return parked
    parked.digest, parked.weights = digest, weights
    return parked


def _check_memory(module: Any, int8: bool) -> None:
    """Raise _NotNow where converting `module` would need more memory than is free: on a machine without it the
    kernel would kill the whole server for it."""
    free = speed.free_memory_gb("cpu")
    if free is None:
        return
    weights = sum(parameter.numel() for parameter in module.parameters()) * 4 / 2**30
    need = _CONVERT_MEMORY["int8" if int8 else "float"] * weights
    if need > free:
        raise _NotNow(
            f"converting it to OpenVINO needs about {need:.1f} GB of free memory and {free:.1f} GB is free: "
            "it runs in torch, and a later request tries again"
        )


def _source_record(cache_dir: Path, source: str) -> Path:
    return cache_dir / f"torch-unet-source-{source}.json"


def _parked_file(cache_dir: Path, digest: str, channels_last: bool) -> Path:
    return cache_dir / f"torch-unet-{digest}{'-channels-last' if channels_last else ''}.pt"


@dataclass
class Report:
    """What OpenVINO did during one generation, for the result's `runtime`."""

    ran: set[str] = field(default_factory=set)
    converted: set[str] = field(default_factory=set)
    from_cache: set[str] = field(default_factory=set)
    convert_s: float = 0.0
    torch_fallback: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        report: dict[str, Any] = {"networks": sorted(self.ran)}
        if self.converted:
            report["converted"] = sorted(self.converted)
            report["first_use_s"] = round(self.convert_s, 2)
        if self.from_cache:
            report["from_cache"] = sorted(self.from_cache)
        if self.torch_fallback:
            report["torch_fallback"] = dict(self.torch_fallback)
        return report


def _traceable(module: Any, *, unet: bool) -> Any:
    """The torch call of `module` that is converted, with the class's own `forward` (not the replacement on the
    instance), plain tensors in and out."""
    torch = import_torch()
    forward = type(module).forward
    base: Any = torch.nn.Module

    class Call(base):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *inputs: Any) -> Any:
            if not unet:
                return forward(self.inner, inputs[0])
            sample, timestep, states, *added = inputs
            conditions = dict(zip(_ADDED, added, strict=False)) or None
            return forward(self.inner, sample, timestep, states, added_cond_kwargs=conditions, return_dict=False)[0]

    return Call()


@contextmanager
def _in_float32(module: Any) -> Iterator[None]:
    """`module` with float32 weights for the block, then its own dtype again (bf16 -> fp32 -> bf16 is exact).

    Converted from bf16 weights, OpenVINO's CPU plugin computed NaNs (openvino 2026.4); from float32 weights,
    compiled with the bf16 hint, it runs in bf16 all the same. In place rather than on a copy: a float32 copy
    beside the bf16 weights is what ran a 24 GB machine out of memory converting a full-size UNet.
    """
    dtype = next(module.parameters()).dtype
    module.float()
    try:
        yield
    finally:
        module.to(dtype)


class _NotNow(Exception):
    """A conversion that is not started for now (too little free memory): this call runs in torch, a later one
    tries again."""


class OpenVINONetworks:
    """The OpenVINO side of one loaded model: which of its torch networks run as OpenVINO models, per shape."""

    def __init__(
        self,
        model_key: str,
        cache_dir: Path,
        *,
        inference_precision: str,
        threads: int | None,
        int8: bool,
        convert: bool = True,
        channels_last: bool = False,
        calibration_states: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        ov = _ov()
        self._model_key = model_key
        self._cache_dir = cache_dir
        self._int8 = int8
        self._convert_missing = convert
        self._channels_last = channels_last
        self._calibration_states = calibration_states
        self._core = ov.Core()
        self._config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": inference_precision,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = threads
        self.version = str(ov.get_version())
        self.report = Report()
        #: (network, shapes) -> compiled model's infer request, or None where that shape runs in torch
        self._compiled: dict[tuple[str, tuple[tuple[int, ...], ...]], Any] = {}
        #: network -> why it runs in torch for good (its conversion failed)
        self._refused: dict[str, str] = {}
        #: network -> why it runs in torch for the generation in hand (`in_torch`)
        self._held: dict[str, str] = {}
        #: network -> (its torch module, the file its weights are mapped from while OpenVINO runs it)
        self._parked: dict[str, tuple[Any, Path]] = {}

    def start_request(self) -> Report:
        """A new report for the generation that starts now; the previous one is dropped."""
        self.report = Report()
        return self.report

    @contextmanager
    def in_torch(self, name: str, reason: str) -> Iterator[None]:
        """Network `name` runs in torch inside the block: its converted model lacks what the torch module has
        for now (a request's LoRA adapters)."""
        self._held[name] = reason
        try:
            yield
        finally:
            self._held.pop(name, None)

    # -- attaching to networks ------------------------------------------------------------------------------

    def attach_unet(self, unet: Any, parked: ParkedUNet | None = None) -> None:
        """Run `unet` (a UNet2DConditionModel) through OpenVINO for the calls it can take. `parked`: what
        `parked_unet` found before the load; where `unet` was built from its mapped weights, they stay as they are,
        and otherwise this load's weights are parked and recorded for the next load of the same source."""
        original = unet.forward
        if parked is not None and parked.digest is not None and parked.weights is not None:
            digest, mapped = parked.digest, True  # built from its parked weights: already mapped
        else:
            digest, mapped = weights_digest(unet), False
        self._parked["unet"] = (unet, _parked_file(self._cache_dir, digest, self._channels_last))
        if not mapped and self._park("unet") and parked is not None:
            self._record(parked.source, digest)
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

        def forward(
            sample: Any,
            timestep: Any,
            encoder_hidden_states: Any,
            timestep_cond: Any = None,
            cross_attention_kwargs: Any = None,
            added_cond_kwargs: dict[str, Any] | None = None,
            return_dict: bool = True,
            **rest: Any,
        ) -> Any:
            torch = import_torch()
            added = added_cond_kwargs or {}
            plain = (
                timestep_cond is None and not cross_attention_kwargs and not any(v is not None for v in rest.values())
            )
            if not plain or set(added) - set(_ADDED):
                return original(
                    sample, timestep, encoder_hidden_states, timestep_cond, cross_attention_kwargs,
                    added_cond_kwargs, return_dict=return_dict, **rest,
                )  # fmt: skip
            timesteps = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(sample.shape[0])
            inputs = [sample.float(), timesteps.contiguous(), encoder_hidden_states.float()]
            inputs += [added[name].float() for name in _ADDED if name in added]
            output = self._run("unet", digest, unet, inputs)
            if output is None:
                return original(
                    sample, timestep, encoder_hidden_states, timestep_cond, cross_attention_kwargs,
                    added_cond_kwargs, return_dict=return_dict, **rest,
                )  # fmt: skip
            output = output.to(sample.dtype)
            return UNet2DConditionOutput(sample=output) if return_dict else (output,)

        unet.forward = forward

    def attach(self, name: str, module: Any, *, owner: Any) -> None:
        """Run `module`, a network of one tensor in and one out (a VAE's encoder or decoder, the tiny
        autoencoder's), through OpenVINO; in torch while `owner` (its autoencoder) decodes in tiles."""
        original = module.forward
        digest = weights_digest(module)

        def forward(sample: Any, *rest: Any, **options: Any) -> Any:
            extra = [*rest, *options.values()]
            if getattr(owner, "use_tiling", False) or any(value is not None for value in extra):
                return original(sample, *rest, **options)
            output = self._run(name, digest, module, [sample.float()])
            return original(sample, *rest, **options) if output is None else output.to(sample.dtype)

        module.forward = forward

    # -- running -------------------------------------------------------------------------------------------

    def _run(self, name: str, digest: str, module: Any, inputs: Sequence[Any]) -> Any:
        """The network's output for `inputs` from OpenVINO, or None where this call runs in torch."""
        torch = import_torch()
        if name in self._held:
            self.report.torch_fallback[name] = self._held[name]
            return None
        shapes = tuple(tuple(int(n) for n in x.shape) for x in inputs)
        key = (name, shapes)
        if key not in self._compiled:
            try:
                self._compiled[key] = self._prepare(name, digest, module, inputs)
            except _NotNow as why:
                log.warning("%s of %s: %s", name, self._model_key, why)
                self.report.torch_fallback[name] = str(why)
                return None
        request = self._compiled[key]
        if request is None:
            # no model for these shapes: its conversion failed, or it was never converted and `auto` converts none
            self.report.torch_fallback[name] = self._refused.get(name, NOT_CONVERTED)
            return None
        request.infer([x.detach().cpu().numpy() for x in inputs])
        self.report.ran.add(name)
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    def _prepare(self, name: str, digest: str, module: Any, inputs: Sequence[Any]) -> Any:
        """The infer request of `name` for these shapes: compiled from the cache, or converted (and cached)
        first; None when OpenVINO cannot run it (the reason logged), or has no model of these shapes and is not
        to convert one (`auto`)."""
        if name in self._refused:
            return None
        int8 = self._int8 and name == "unet"
        shapes = "-".join("x".join(map(str, x.shape)) for x in inputs)
        identity = f"{self._model_key}|{name}|{digest}|{shapes}|{'int8' if int8 else 'float'}|{self.version}"
        folder = self._cache_dir / f"{name}-{shapes}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
        xml = folder / "model.xml"
        if xml.is_file():
            try:
                request = self._core.compile_model(str(xml), "CPU", self._config).create_infer_request()
                self.report.from_cache.add(name)
                return request
            except Exception as exc:  # a truncated or foreign file: convert again
                log.warning("the cached OpenVINO model %s is unusable (%s): converting again", folder, exc)
                shutil.rmtree(folder, ignore_errors=True)
        if not self._convert_missing:
            return None
        _check_memory(module, int8)
        started = time.perf_counter()
        try:
            # The converted model shares the float32 weights: it is saved and dropped before they go back to
            # the module's dtype, and compiled from the file.
            with _in_float32(module):
                model = self._convert(module, name == "unet", inputs, int8)
                saved = self._save(model, folder)
                request = None if saved else self._core.compile_model(model, "CPU", self._config)
                del model
                gc.collect()
            # Back in its own dtype, the module holds fresh copies of its weights: mapped from the file again.
            self._park(name)
            compiled = request or self._core.compile_model(str(xml), "CPU", self._config)
            request = compiled.create_infer_request()
        except Exception as exc:
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("OpenVINO could not convert %s of %s, it runs in torch: %s", name, self._model_key, reason)
            self._refused[name] = reason
            return None
        seconds = time.perf_counter() - started
        log.info("converted %s of %s to OpenVINO for %s in %.1fs", name, self._model_key, shapes, seconds)
        self.report.converted.add(name)
        self.report.convert_s += seconds
        return request

    def _convert(self, module: Any, unet: bool, inputs: Sequence[Any], int8: bool) -> Any:
        torch = import_torch()
        ov = _ov()
        # Tracing records operations; inference tensors (the generation runs in inference mode) cannot be
        # traced through, so the example is copied out of inference mode.
        # The tracer warns about every Python branch on a shape in diffusers' code: expected for one fixed shape
        # per converted model, and noise in a service's log.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            example = tuple(x.clone() for x in inputs)
            model = ov.convert_model(_traceable(module, unet=unet), example_input=example)
            if int8:
                model = self._quantize(model, example)
        return model

    def _quantize(self, model: Any, example: tuple[Any, ...]) -> Any:
        """The UNet with int8 weights and activations (NNCF post-training quantization)."""
        import nncf

        torch = import_torch()
        samples = []
        generator = torch.Generator("cpu").manual_seed(0)
        sample, _timestep, states, *added = example
        conditions = self._calibration_states() if self._calibration_states else []
        conditions = conditions or [{"encoder_hidden_states": states, **dict(zip(_ADDED, added, strict=False))}]
        for condition in conditions:
            for timestep in _CALIBRATION_TIMESTEPS:
                noise = torch.randn(sample.shape, generator=generator) * float(sample.float().std())
                inputs = [noise, torch.full((sample.shape[0],), timestep)]
                inputs.append(condition["encoder_hidden_states"].float().expand(sample.shape[0], -1, -1))
                for name, value in zip(_ADDED, added, strict=False):
                    inputs.append(condition.get(name, value).float().expand(sample.shape[0], -1))
                samples.append([x.contiguous().numpy() for x in inputs])
        return nncf.quantize(
            model,
            nncf.Dataset(samples),
            subset_size=len(samples),
            model_type=nncf.ModelType.TRANSFORMER,
        )

    def _park(self, name: str) -> bool:
        """Map network `name`'s torch weights from their file in the cache (written the first time, and again
        when it does not read back), in place of the copies in memory; left in memory, with the reason logged,
        when that cannot be done. Whether they are mapped."""
        if name not in self._parked:
            return False
        module, path = self._parked[name]
        torch = import_torch()
        for attempt in (1, 2):
            try:
                if not path.is_file():
                    self._cache_dir.mkdir(parents=True, exist_ok=True)
                    staging = path.with_name(f".{path.name}.{id(self)}")
                    torch.save(self._layout(module.state_dict()), staging)
                    staging.rename(path)
                module.load_state_dict(torch.load(path, mmap=True, weights_only=True), assign=True)
            except Exception as exc:  # a full disk, a broken file: in memory, the weights cost memory only
                log.warning("could not map the torch weights of %s from %s: %s", name, path, exc)
                path.unlink(missing_ok=True)
                if attempt == 2:
                    return False
                continue
            break
        # The copies just dropped go back to the system, not to the allocator's free lists, where they would
        # still count as this process's memory.
        gc.collect()
        trim_heap()
        return True

    def _record(self, source: str, digest: str) -> None:
        """Note that the UNet loaded from `source` has weights `digest`, for `parked_unet` in a later load."""
        record = _source_record(self._cache_dir, source)
        staging = record.with_name(f".{record.name}.{id(self)}")
        try:
            staging.write_text(json.dumps({"digest": digest}))
            staging.rename(record)
        except OSError as exc:  # the next load reads the model's own files, as this one did
            log.warning("could not record where the UNet's weights are parked (%s): %s", record, exc)

    def _layout(self, weights: dict[str, Any]) -> dict[str, Any]:
        """`weights` in the memory layout the torch network runs fastest in, when it runs (a job with LoRAs):
        channels-last convolution weights where the runtime asks for it (`speed.prepare` leaves them to this)."""
        if not self._channels_last:
            return weights
        torch = import_torch()
        return {
            name: tensor.contiguous(memory_format=torch.channels_last) if tensor.dim() == 4 else tensor
            for name, tensor in weights.items()
        }

    def _save(self, model: Any, folder: Path) -> bool:
        """Write `model` under `folder` whole or not at all: into a sibling folder, then renamed; whether it was."""
        ov = _ov()
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=self._cache_dir))
        try:
            # fp16 holds the bf16 weights the model loaded with (fp16 has more mantissa bits), at half the size
            ov.save_model(model, staging / "model.xml", compress_to_fp16=True)
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)
        except OSError as exc:  # a full or read-only disk costs the next start a conversion, not this image
            log.warning("could not keep the OpenVINO model in %s: %s", folder, exc)
            shutil.rmtree(staging, ignore_errors=True)
            return False
        return True
