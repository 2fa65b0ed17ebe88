"""Benchmark: plain diffusers against imageforge's engine on a full-size model with random weights.

    python bench/engine.py --model sd-turbo --size 512 --steps 1 [--device cuda] [--rounds 3] [--compile] [--json]
    python bench/engine.py --model sdxl-turbo --size 512 --steps 1 --one-at-a-time --json

It builds the model's architecture from `bench/configs/` with random weights (compute does not depend on
weight values), saves it as a diffusers folder (safetensors) with its tiny autoencoder, and loads that folder
twice: plain `StableDiffusion[XL]Pipeline.from_pretrained(folder)` with diffusers' defaults, and imageforge's
backend through a models-file entry, generating through the code the service runs. Runs alternate (plain,
imageforge, imageforge with `decoder: "fast"`) after one warm-up each; the table shows medians per stage.
Each run gets a new prompt of the same length, so imageforge's prompt-embedding cache never answers for the
text encoder. `--compile` runs imageforge with `IMAGEFORGE_COMPILE` on (a fresh compile cache): its warm-up
run, reported as `first_run_s`, is then the compile.
`--one-at-a-time` loads, times and frees plain diffusers before imageforge, instead of alternating with both
loaded: for SDXL on a 24 GiB machine, where the fp32 baseline (~14 GB) and imageforge's copy do not fit together.
Peak memory is measured in separate subprocesses (one load and one generation each), so peaks don't mix.
With `--json` the last line is one JSON object.

Not a test: timings depend on the machine and what else runs on it.
"""

from __future__ import annotations

import argparse
import gc
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

#: model -> (configs folder, pipeline family, its tiny autoencoder's name); TAESD and TAESDXL share one architecture
MODELS = {"sd-turbo": ("sd-turbo", "sd", "taesd"), "sdxl-turbo": ("sdxl-turbo", "sdxl", "taesdxl")}
#: What the issue asks of the engine on a CPU, against plain diffusers in the same run.
TARGETS = {"speedup": 4.0, "speedup_fast_decode": 12.0}
PROMPT = "a lighthouse on a cliff at dusk, oil painting"
SEED = 1234
STAGES = ("text_encoder", "unet", "vae_decode", "fast_decode")
#: Each stage's networks in a pipeline: (stage, component, method); SDXL's two text encoders are one stage.
NETWORKS = (
    ("text_encoder", "text_encoder", "forward"),
    ("text_encoder", "text_encoder_2", "forward"),
    ("unet", "unet", "forward"),
    ("vae_decode", "vae", "decode"),
)
Networks = list[tuple[str, Any, str]]


def pipeline_networks(pipe: Any) -> Networks:
    return [(stage, getattr(pipe, name), method) for stage, name, method in NETWORKS if getattr(pipe, name, None)]


VARIANTS = ("baseline", "imageforge", "imageforge_fast")


def build(model: str, folder: Path) -> tuple[Path, Path]:
    """Save the random-weight pipeline and its tiny autoencoder under `folder`; returns both paths."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    name, family, taesd_name = MODELS[model]
    configs = HERE / "configs" / name

    def config(part: str) -> dict[str, Any]:
        return dict(json.loads((configs / part / "config.json").read_text()))

    torch.manual_seed(0)
    scheduler_config = json.loads((configs / "scheduler" / "scheduler_config.json").read_text())
    components: dict[str, Any] = {
        "unet": UNet2DConditionModel.from_config(config("unet")),
        "vae": AutoencoderKL.from_config(config("vae")),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**config("text_encoder"))),
        "tokenizer": clip_tokenizer(),
        "scheduler": getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config),
        "feature_extractor": None,
    }
    if family == "sdxl":
        encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**config("text_encoder_2")))
        components |= {"text_encoder_2": encoder_2, "tokenizer_2": clip_tokenizer(), "image_encoder": None}
    else:
        components |= {"safety_checker": None, "requires_safety_checker": False}
    # Like the Hub repositories of sd-turbo and sdxl-turbo, the folder holds fp16 copies beside the fp32 files:
    # imageforge pulls and loads those where it runs in half precision (bf16 here); plain diffusers' default
    # loads the fp32 files. The fp32 files are saved last, so the configs they share say float32 (they hold the
    # fp16-rounded random values, which costs the timings nothing).
    pipe = pipeline_class(family)(**components)
    pipe.to(torch.float16).save_pretrained(folder / model, safe_serialization=True, variant="fp16")
    pipe.to(torch.float32).save_pretrained(folder / model, safe_serialization=True)
    del components, pipe
    taesd_config = json.loads((HERE / "configs" / "taesd" / "config.json").read_text())
    taesd_config.pop("block_out_channels", None)  # an old key AutoencoderTiny no longer takes
    AutoencoderTiny.from_config(taesd_config).save_pretrained(folder / taesd_name, safe_serialization=True)
    return folder / model, folder / taesd_name


def pipeline_class(family: str) -> Any:
    import diffusers

    return diffusers.StableDiffusionXLPipeline if family == "sdxl" else diffusers.StableDiffusionPipeline


# -- the two contenders --------------------------------------------------------------------------------


class Baseline:
    """Plain diffusers: `from_pretrained(folder)` with its defaults, moved to the device."""

    def __init__(self, folder: Path, family: str, device: str) -> None:
        self.pipe = pipeline_class(family).from_pretrained(folder).to(device)
        self.pipe.set_progress_bar_config(disable=True)

    def networks(self) -> Networks:
        return pipeline_networks(self.pipe)

    def __call__(self, prompt: str, size: int, steps: int) -> Any:
        import torch

        generator = torch.Generator("cpu").manual_seed(SEED)
        return self.pipe(
            prompt, num_inference_steps=steps, guidance_scale=0.0, width=size, height=size, generator=generator
        ).images[0]


class Imageforge:
    """imageforge's diffusers backend, loading the folder as a models-file entry, as the service does."""

    def __init__(
        self, folder: Path, family: str, taesd: Path, workdir: Path, device: str, options: EngineOptions
    ) -> None:
        models_file = workdir / "models.toml"
        models_file.write_text(
            f'[models.bench]\nsource = "{folder}"\nfamily = "{family}"\nsteps = 1\nguidance = 0.0\nsize = 512\n'
            f'fast_decoder = "{taesd}"\n'
        )
        [self.spec] = load_models_file(models_file)
        self.backend = DiffusersBackend(device=device, models_path=workdir / "models", options=options)
        self.model = self.backend.load(self.spec)

    def networks(self) -> Networks:
        return [*pipeline_networks(self.model.pipeline), ("fast_decode", self.model.fast_decoder, "decode")]

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
def stage_timer(networks: Networks, device: str) -> Iterator[dict[str, float]]:
    """Seconds spent inside each stage's networks during the block (wrapping the instances' methods)."""
    import torch

    spent = {stage: 0.0 for stage, _module, _method in networks}
    originals = []
    for stage, module, method in networks:
        original = getattr(module, method)
        # The instance's own attribute, if any (the OpenVINO runtime replaces a UNet's `forward` on the instance),
        # is put back afterwards rather than deleted.
        own = vars(module).get(method)

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
        originals.append((module, method, own))
    try:
        yield spent
    finally:
        for module, method, own in reversed(originals):
            if own is None:
                delattr(module, method)  # back to the class's method
            else:
                setattr(module, method, own)


def timed_run(run: Callable[[], Any], networks: Networks, device: str) -> dict[str, float]:
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
    command += ["--model", args.model]
    command += ["--size", str(args.size), "--steps", str(args.steps), "--device", args.device]
    command += ["--compile"] if args.compile else []
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def high_water_mb() -> float:
    """This process's peak resident memory. Not getrusage's ru_maxrss: Linux carries that over from the
    parent through fork and exec, so a child started by a large parent reports the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: close enough


def engine_options(args: argparse.Namespace, cache: Path) -> EngineOptions:
    return EngineOptions(compile=args.compile, compile_cache=cache)


def measure_peak(variant: str, args: argparse.Namespace) -> None:
    import torch

    folder, taesd, family = Path(args.folder), Path(args.taesd), MODELS[args.model][1]
    with tempfile.TemporaryDirectory() as workdir:
        if variant == "baseline":
            Baseline(folder, family, args.device)(PROMPT, args.size, args.steps)
        else:
            options = engine_options(args, folder.parent / "compile-cache")
            Imageforge(folder, family, taesd, Path(workdir), args.device, options)(
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


Runner = tuple[Callable[[str], Any], Networks]


def time_variants(
    args: argparse.Namespace, folder: Path, taesd: Path, workdir: Path
) -> tuple[dict[str, list[dict[str, float]]], dict[str, float], dict[str, Any]]:
    """Every timed run of each variant, the warm-up run of each, and what imageforge chose. The variants
    alternate round by round, or with `--one-at-a-time` plain diffusers runs all its rounds first; the models
    are freed on return."""
    family = MODELS[args.model][1]
    chosen: dict[str, Any] = {}

    def baseline() -> dict[str, Runner]:
        plain = Baseline(folder, family, args.device)
        return {"baseline": (lambda p: plain(p, args.size, args.steps), plain.networks())}

    def imageforge() -> dict[str, Runner]:
        options = engine_options(args, workdir / "compile-cache")
        engine = Imageforge(folder, family, taesd, workdir, args.device, options)
        chosen.update(engine.backend.device_info().runtime)
        return {
            "imageforge": (lambda p: engine(p, args.size, args.steps), engine.networks()),
            "imageforge_fast": (lambda p: engine(p, args.size, args.steps, "fast"), engine.networks()),
        }

    if args.one_at_a_time:
        groups: list[Callable[[], dict[str, Runner]]] = [baseline, imageforge]
    else:
        groups = [lambda: baseline() | imageforge()]
    runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    first: dict[str, float] = {}
    for group in groups:
        runners = group()
        for round_ in range(args.rounds + 1):  # round 0 is the warm-up
            for variant, (run, networks) in runners.items():
                # A new prompt of the same length per run: the text encoder always runs, at the same cost.
                prompt = f"{PROMPT}, study {round_}{'abc'[VARIANTS.index(variant)]}"
                timing = timed_run(lambda run=run, prompt=prompt: run(prompt), networks, args.device)
                print(f"round {round_} {variant}: {timing['total']:.2f}s", file=sys.stderr)
                if round_:
                    runs[variant].append(timing)
                else:
                    first[variant] = round(timing["total"], 3)
        del runners
        gc.collect()
    return runs, first, chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="sd-turbo")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up (median)")
    parser.add_argument("--compile", action="store_true", help="imageforge with torch.compile (IMAGEFORGE_COMPILE)")
    parser.add_argument("--one-at-a-time", action="store_true", help="plain diffusers first, then imageforge")
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
        runs, first, runtime = time_variants(args, folder, taesd, workdir)
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
        "first_run_s": first,
        "stages_s": {v: {k: round(x, 3) for k, x in medians[v].items()} for v in VARIANTS},
        "imageforge_runtime": runtime,
        "machine": machine(args.device),
    }
    print(f"\n{args.model} {args.size}x{args.size}, {args.steps} step(s), {args.device}; {result['machine']}")
    print(table(medians, args.steps))
    print(f"peak RSS: plain diffusers {result['baseline_peak_rss_mb']} MB, imageforge {result['peak_rss_mb']} MB")
    print(f"imageforge chose: {runtime}")
    print("first (warm-up) run, s: " + ", ".join(f"{variant} {seconds:.2f}" for variant, seconds in first.items()))
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
