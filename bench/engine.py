"""Benchmark: plain diffusers against imageforge's engine on a full-size model with random weights.

    python bench/engine.py --model sd-turbo --size 512 --steps 1 [--device cuda] [--rounds 3] [--json]

It builds the model's architecture from `bench/configs/` with random weights (compute does not depend on
weight values), saves it as a diffusers folder (safetensors) with its tiny autoencoder, and loads that folder
twice: plain `StableDiffusionPipeline.from_pretrained(folder)` with diffusers' defaults, and imageforge's
backend through a models-file entry, generating through the code the service runs. Runs alternate (plain,
imageforge, imageforge with `decoder: "fast"`) after one warm-up each; the table shows medians per stage.
Each run gets a new prompt of the same length, so imageforge's prompt-embedding cache never answers for the
text encoder.
Peak memory is measured in separate subprocesses (one load and one generation each), so peaks don't mix.
With `--json` the last line is one JSON object.

Not a test: timings depend on the machine and what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from imageforge.domain import GenerationRequest, Progress, Task  # noqa: E402
from imageforge.engine.backends.diffusers import DiffusersBackend  # noqa: E402
from imageforge.engine.backends.tiny import clip_tokenizer  # noqa: E402
from imageforge.engine.catalog import load_models_file  # noqa: E402
from imageforge.engine.protocol import EngineOptions  # noqa: E402

MODELS = {"sd-turbo": ("sd-turbo", "taesd")}
#: What the issue asks of the engine on a CPU, against plain diffusers in the same run.
TARGETS = {"speedup": 4.0, "speedup_fast_decode": 12.0}
PROMPT = "a lighthouse on a cliff at dusk, oil painting"
SEED = 1234
STAGES = ("text_encoder", "unet", "vae_decode", "fast_decode")
VARIANTS = ("baseline", "imageforge", "imageforge_fast")


def build(model: str, folder: Path) -> tuple[Path, Path]:
    """Save the random-weight pipeline and its tiny autoencoder under `folder`; returns both paths."""
    import torch
    from diffusers import (
        AutoencoderKL,
        AutoencoderTiny,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    configs, taesd_name = HERE / "configs" / MODELS[model][0], MODELS[model][1]

    def config(part: str) -> dict[str, Any]:
        return dict(json.loads((configs / part / "config.json").read_text()))

    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        unet=UNet2DConditionModel.from_config(config("unet")),
        vae=AutoencoderKL.from_config(config("vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig(**config("text_encoder"))),
        tokenizer=clip_tokenizer(),
        scheduler=EulerDiscreteScheduler.from_config(
            json.loads((configs / "scheduler" / "scheduler_config.json").read_text())
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder / model, safe_serialization=True)
    taesd_config = json.loads((HERE / "configs" / taesd_name / "config.json").read_text())
    taesd_config.pop("block_out_channels", None)  # an old key AutoencoderTiny no longer takes
    AutoencoderTiny.from_config(taesd_config).save_pretrained(folder / taesd_name, safe_serialization=True)
    return folder / model, folder / taesd_name


# -- the two contenders --------------------------------------------------------------------------------


class Baseline:
    """Plain diffusers: `from_pretrained(folder)` with its defaults, moved to the device."""

    def __init__(self, folder: Path, device: str) -> None:
        from diffusers import StableDiffusionPipeline

        self.pipe = StableDiffusionPipeline.from_pretrained(folder).to(device)
        self.pipe.set_progress_bar_config(disable=True)

    def networks(self) -> dict[str, tuple[Any, str]]:
        return {
            "text_encoder": (self.pipe.text_encoder, "forward"),
            "unet": (self.pipe.unet, "forward"),
            "vae_decode": (self.pipe.vae, "decode"),
        }

    def __call__(self, prompt: str, size: int, steps: int) -> Any:
        import torch

        generator = torch.Generator("cpu").manual_seed(SEED)
        return self.pipe(
            prompt, num_inference_steps=steps, guidance_scale=0.0, width=size, height=size, generator=generator
        ).images[0]


class Imageforge:
    """imageforge's diffusers backend, loading the folder as a models-file entry, as the service does."""

    def __init__(self, folder: Path, taesd: Path, workdir: Path, device: str, options: EngineOptions) -> None:
        models_file = workdir / "models.toml"
        models_file.write_text(
            f'[models.bench]\nsource = "{folder}"\nfamily = "sd"\nsteps = 1\nguidance = 0.0\nsize = 512\n'
            f'fast_decoder = "{taesd}"\n'
        )
        [self.spec] = load_models_file(models_file)
        self.backend = DiffusersBackend(device=device, models_path=workdir / "models", options=options)
        self.model = self.backend.load(self.spec)

    def networks(self) -> dict[str, tuple[Any, str]]:
        pipe = self.model.pipeline
        return {
            "text_encoder": (pipe.text_encoder, "forward"),
            "unet": (pipe.unet, "forward"),
            "vae_decode": (pipe.vae, "decode"),
            "fast_decode": (self.model.fast_decoder, "decode"),
        }

    def __call__(self, prompt: str, size: int, steps: int, decoder: str = "full") -> Any:
        from imageforge.domain import Decoder

        request = GenerationRequest(
            task=Task.TEXT2IMG,
            model=self.spec.key,
            prompt=prompt,
            negative_prompt="",
            steps=steps,
            guidance=0.0,
            width=size,
            height=size,
            seed=SEED,
            decoder=Decoder(decoder),
        )
        return self.model.generate(request, _ignore, _never).image


def _ignore(progress: Progress) -> None:
    return None


def _never() -> bool:
    return False


# -- timing ----------------------------------------------------------------------------------------------


@contextmanager
def stage_timer(networks: dict[str, tuple[Any, str]], device: str) -> Iterator[dict[str, float]]:
    """Seconds spent inside each network's method during the block (wrapping the instances' methods)."""
    import torch

    spent = dict.fromkeys(networks, 0.0)
    originals = []
    for stage, (module, method) in networks.items():
        original = getattr(module, method)

        def timed(*args: Any, _original: Callable[..., Any] = original, _stage: str = stage, **kw: Any) -> Any:
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            result = _original(*args, **kw)
            if device == "cuda":
                torch.cuda.synchronize()
            spent[_stage] += time.perf_counter() - started
            return result

        setattr(module, method, timed)
        originals.append((module, method))
    try:
        yield spent
    finally:
        for module, method in originals:
            delattr(module, method)  # back to the class's method


def timed_run(run: Callable[[], Any], networks: dict[str, tuple[Any, str]], device: str) -> dict[str, float]:
    import torch

    with stage_timer(networks, device) as spent:
        started = time.perf_counter()
        image = run()
        if device == "cuda":
            torch.cuda.synchronize()
        total = time.perf_counter() - started
    assert image.size[0] > 0
    return {"total": total, **spent}


def peak_of(variant: str, args: argparse.Namespace, folder: Path, taesd: Path) -> dict[str, float]:
    """Peak memory of one load plus one generation of `variant`, in a fresh interpreter."""
    command = [sys.executable, __file__, "--peak-of", variant, "--folder", str(folder), "--taesd", str(taesd)]
    command += ["--size", str(args.size), "--steps", str(args.steps), "--device", args.device]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def high_water_mb() -> float:
    """This process's peak resident memory. Not getrusage's ru_maxrss: Linux carries that over from the
    parent through fork and exec, so a child started by a large parent reports the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: close enough


def measure_peak(variant: str, args: argparse.Namespace) -> None:
    import torch

    folder, taesd = Path(args.folder), Path(args.taesd)
    with tempfile.TemporaryDirectory() as workdir:
        if variant == "baseline":
            Baseline(folder, args.device)(PROMPT, args.size, args.steps)
        else:
            Imageforge(folder, taesd, Path(workdir), args.device, EngineOptions())(
                PROMPT, args.size, args.steps, "fast" if variant == "imageforge_fast" else "full"
            )
    peak = {"peak_rss_mb": high_water_mb()}
    if args.device == "cuda":
        peak["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(peak))


# -- report ----------------------------------------------------------------------------------------------


def machine(device: str) -> dict[str, Any]:
    import diffusers
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "device": device,
        "threads": torch.get_num_threads(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    else:
        cpu = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        info["cpu"] = cpu[0].split(":", 1)[1].strip() if cpu else platform.processor()
    return info


def table(medians: dict[str, dict[str, float]], steps: int) -> str:
    names = {"baseline": "plain diffusers", "imageforge": "imageforge", "imageforge_fast": 'imageforge "fast"'}
    rows = [f"{'stage (median s)':<22}" + "".join(f"{names[v]:>20}" for v in VARIANTS)]
    for stage in (*STAGES, "other", "total"):
        cells = []
        for variant in VARIANTS:
            value = medians[variant].get(stage, 0.0)
            if stage == "unet":
                value /= steps
            cells.append(f"{value:>20.3f}" if value else f"{'-':>20}")
        label = "unet (one step)" if stage == "unet" else stage
        rows.append(f"{label:<22}" + "".join(cells))
    base = medians["baseline"]["total"]
    rows.append(f"{'speedup':<22}" + "".join(f"{base / medians[v]['total']:>19.1f}x" for v in VARIANTS))
    return "\n".join(rows)


def time_variants(
    args: argparse.Namespace, folder: Path, taesd: Path, workdir: Path
) -> tuple[dict[str, list[dict[str, float]]], dict[str, Any]]:
    """Every timed run of each variant, alternating, and what imageforge chose; the models are freed on return."""
    baseline = Baseline(folder, args.device)
    imageforge = Imageforge(folder, taesd, workdir, args.device, EngineOptions())
    runners: dict[str, tuple[Callable[[str], Any], dict[str, tuple[Any, str]]]] = {
        "baseline": (lambda p: baseline(p, args.size, args.steps), baseline.networks()),
        "imageforge": (lambda p: imageforge(p, args.size, args.steps), imageforge.networks()),
        "imageforge_fast": (lambda p: imageforge(p, args.size, args.steps, "fast"), imageforge.networks()),
    }
    runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    for round_ in range(args.rounds + 1):  # round 0 is the warm-up
        for index, (variant, (run, networks)) in enumerate(runners.items()):
            # A new prompt of the same length per run: the text encoder always runs, at the same cost.
            prompt = f"{PROMPT}, study {round_}{'abc'[index]}"
            timing = timed_run(lambda run=run, prompt=prompt: run(prompt), networks, args.device)
            print(f"round {round_} {variant}: {timing['total']:.2f}s", file=sys.stderr)
            if round_:
                runs[variant].append(timing)
    return runs, imageforge.backend.device_info().runtime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="sd-turbo")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up (median)")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON")
    parser.add_argument("--peak-of", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--taesd", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_of:
        measure_peak(args.peak_of, args)
        return 0

    with tempfile.TemporaryDirectory(prefix="imageforge-bench-") as temp:
        workdir = Path(temp)
        print(f"building {args.model} with random weights in {workdir} ...", file=sys.stderr)
        folder, taesd = build(args.model, workdir)
        runs, runtime = time_variants(args, folder, taesd, workdir)
        peaks = {variant: peak_of(variant, args, folder, taesd) for variant in ("baseline", "imageforge")}

    medians = {}
    for variant, timings in runs.items():
        median = {key: statistics.median(t[key] for t in timings) for key in timings[0]}
        median["other"] = median["total"] - sum(median.get(stage, 0.0) for stage in STAGES)
        medians[variant] = median
    base = medians["baseline"]["total"]
    result = {
        "model": args.model,
        "size": args.size,
        "steps": args.steps,
        "rounds": args.rounds,
        "baseline_s": round(base, 3),
        "imageforge_s": round(medians["imageforge"]["total"], 3),
        "speedup": round(base / medians["imageforge"]["total"], 2),
        "imageforge_fast_decode_s": round(medians["imageforge_fast"]["total"], 3),
        "speedup_fast_decode": round(base / medians["imageforge_fast"]["total"], 2),
        "peak_rss_mb": round(peaks["imageforge"]["peak_rss_mb"]),
        "baseline_peak_rss_mb": round(peaks["baseline"]["peak_rss_mb"]),
        "peaks": peaks,
        "stages_s": {v: {k: round(x, 3) for k, x in medians[v].items()} for v in VARIANTS},
        "imageforge_runtime": runtime,
        "machine": machine(args.device),
    }
    print(f"\n{args.model} {args.size}x{args.size}, {args.steps} step(s), {args.device}; {result['machine']}")
    print(table(medians, args.steps))
    print(f"peak RSS: plain diffusers {result['baseline_peak_rss_mb']} MB, imageforge {result['peak_rss_mb']} MB")
    print(f"imageforge chose: {runtime}")
    if args.device == "cpu":
        for key, target in TARGETS.items():
            verdict = "met" if result[key] >= target else "NOT met"
            print(f"target {key} >= {target:g}x: {result[key]:.1f}x, {verdict}")
        memory = "met" if result["peak_rss_mb"] <= result["baseline_peak_rss_mb"] else "NOT met"
        print(f"target peak memory <= plain diffusers': {memory}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
