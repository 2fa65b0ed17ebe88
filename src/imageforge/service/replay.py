"""Manifests and replays: every image says how to make it again, and a replay makes it again and says whether the
pixels match.

A manifest holds what changes the pixels (the model and a digest of its weights, the scheduler and its config,
the seed and the generator that drew the first noise, the numbers, the prompts exactly as the model received them
after the policy, the input images by digest), what the pixels were made on (library versions, device, runtime),
how far the same pixels can be expected again (`determinism`) and a digest of the pixels themselves.

The first noise is drawn by a CPU generator on every device, so a seed starts from the same latents on a CPU and
on a GPU; the arithmetic after that differs by device, so only the same device type gives the same image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from imageforge.domain import GenerationParams, GenerationRequest, LoraWeight, ModelSpec, Task
from imageforge.engine.protocol import DeviceInfo, Generated
from imageforge.errors import InvalidRequest

MANIFEST_VERSION = 1
#: The same request on this machine (same libraries, device, threads and weights) gives the same bytes.
BIT_EXACT = "bit_exact_on_this_machine"
#: The same device type gives the same image within rounding: GPU kernels may choose other algorithms run to run.
SAME_DEVICE_TYPE = "same_device_type"
#: What made the image cannot be named (its weights), so nothing promises it again.
NOT_REPRODUCIBLE = "not_reproducible"
#: How the first noise is drawn: torch's CPU generator seeded with the request's seed, on every device.
RNG = {"library": "torch", "generator": "cpu", "seeded_with": "seed"}
#: The request fields a manifest must hold for a replay.
_REQUIRED = ("model", "task", "prompt", "negative_prompt", "seed", "steps", "guidance", "width", "height")


def pixels_digest(image: Image.Image) -> str:
    """A digest of an image's RGB pixels and size (not of its file: metadata and compression do not count)."""
    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}\n".encode())
    digest.update(rgb.tobytes())
    return f"sha256:{digest.hexdigest()}"


def determinism(device: str, runtime: Mapping[str, Any], weights: str | None) -> dict[str, str]:
    """How far the same pixels can be expected again, and why."""
    if weights is None:
        return {"class": NOT_REPRODUCIBLE, "reason": "the weights that made it cannot be named on this machine"}
    if runtime.get("compile"):
        return {
            "class": SAME_DEVICE_TYPE,
            "reason": "torch.compile may fuse kernels differently from one compile to the next",
        }
    if device == "cpu":
        return {
            "class": BIT_EXACT,
            "reason": "on a CPU, the same libraries, threads and weights give the same bytes",
        }
    return {
        "class": SAME_DEVICE_TYPE,
        "reason": f"on {device}, kernels may choose other algorithms from run to run: the same image within rounding",
    }


def manifest(
    *,
    spec: ModelSpec,
    sent: GenerationRequest,
    generated: Generated,
    weights: str | None,
    device: DeviceInfo,
    policy_version: str,
    inputs: Mapping[str, str | None],
    lora_digests: Mapping[str, str],
) -> dict[str, Any]:
    """The manifest of one image: `sent` is the request as the model received it (after assist and policy);
    `lora_digests` are the SHA-256s of its LoRAs' files by name."""
    values = sent.values()
    loras = [{**lora, "sha256": lora_digests.get(lora["name"])} for lora in values["loras"]]
    return {
        "version": MANIFEST_VERSION,
        "model": {"key": spec.key, "source": spec.source, "revision": spec.revision, "weights": weights},
        **values,
        "loras": loras,
        "seed": sent.seed,
        "rng": RNG,
        "scheduler": generated.scheduler,
        "inputs": dict(inputs),
        "policy_version": policy_version,
        "libraries": device.versions,
        "device": device.device,
        "runtime": generated.runtime,
        "determinism": determinism(device.device, generated.runtime, weights),
        "pixels": pixels_digest(generated.image),
    }


@dataclass(frozen=True)
class Recipe:
    """A manifest read back for a replay: the request to run and the pixels to expect."""

    params: GenerationParams
    model: str
    #: the input images by digest in the input store (`init_image`, `mask_image`)
    inputs: Mapping[str, str | None]
    expected: str | None
    #: the digests of the weights that made it: the model's, then each LoRA's
    weights: list[str | None]


def manifest_of_png(png: bytes) -> dict[str, Any]:
    """The manifest an image of imageforge's carries; `InvalidRequest` when it carries none."""
    from imageforge.storage.outputs import read_record

    try:
        record = read_record(png)
    except Exception:
        raise InvalidRequest(
            "image is not a PNG imageforge can read.", hint="Send a PNG that imageforge made, or its manifest."
        ) from None
    found = record.get("manifest")
    if not isinstance(found, dict):
        raise InvalidRequest(
            "This image carries no manifest.",
            hint="Send a PNG imageforge made, as it was saved (an editor that re-saves it drops the manifest), or "
            "the manifest.",
        )
    return found


def recipe(manifest: Mapping[str, Any]) -> Recipe:
    """The request a manifest describes; `InvalidRequest` naming what is missing or unknown."""
    if manifest.get("version") != MANIFEST_VERSION:
        raise InvalidRequest(
            f"manifest version {manifest.get('version')!r} is not one this server reads.",
            hint=f"Send a manifest of version {MANIFEST_VERSION}, as results of this server carry it.",
        )
    missing = [name for name in _REQUIRED if name not in manifest]
    model = manifest.get("model")
    if missing or not isinstance(model, Mapping) or not isinstance(model.get("key"), str):
        raise InvalidRequest(
            f"The manifest lacks {', '.join(missing) or 'model.key'}.",
            hint="Send the manifest as a result carried it, unchanged.",
        )
    try:
        task = Task(manifest["task"])
        params = GenerationParams(
            task=task,
            prompt=str(manifest["prompt"]),
            negative_prompt=str(manifest["negative_prompt"]),
            model=model["key"],
            steps=int(manifest["steps"]),
            guidance=float(manifest["guidance"]),
            width=int(manifest["width"]),
            height=int(manifest["height"]),
            seed=int(manifest["seed"]),
            strength=None if manifest.get("strength") is None else float(manifest["strength"]),
            decoder=str(manifest.get("decoder", "full")),
            sampler=manifest.get("sampler"),
            schedule=str(manifest.get("schedule", "default")),
            assist_prompt=False,
            use_cache=False,
            loras=tuple(LoraWeight(name=lora["name"], weight=lora["weight"]) for lora in manifest.get("loras") or ()),
        )
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidRequest(
            f"The manifest holds a value this server cannot read: {exc}.",
            hint="Send the manifest as a result carried it, unchanged.",
        ) from None
    inputs = manifest.get("inputs") or {}
    digests = {name: inputs.get(name) if isinstance(inputs, Mapping) else None for name in ("init_image", "mask_image")}
    expected = manifest.get("pixels")
    return Recipe(
        params=params,
        model=model["key"],
        inputs=digests,
        expected=expected if isinstance(expected, str) else None,
        weights=weights_of(manifest),
    )


def weights_of(manifest: Mapping[str, Any]) -> list[str | None]:
    """The digests of the weights a manifest names: its model's, then each of its LoRAs'."""
    model = manifest.get("model") or {}
    loras = manifest.get("loras") or []
    return [model.get("weights"), *(lora.get("sha256") for lora in loras if isinstance(lora, Mapping))]


def compare(made: Mapping[str, Any], expected: Mapping[str, Any]) -> dict[str, Any]:
    """What a replay reports: whether its pixels are the ones the manifest recorded (`matches`), whether the
    weights are the same files, and how reproducible the manifest said the image was."""
    pixels, weights = made.get("pixels"), weights_of(made)
    return {
        "matches": pixels is not None and pixels == expected.get("pixels"),
        "pixels": pixels,
        "expected_pixels": expected.get("pixels"),
        "same_weights": None not in weights and weights == expected.get("weights"),
        "determinism": made.get("determinism", {}).get("class"),
    }
