"""Benchmark: stable-diffusion.cpp (sd-server, as imageforge runs it) against imageforge's diffusers engine.

    python bench/sdcpp.py [--size 512] [--steps 1] [--rounds 2] [--json]

The sd-turbo architecture (bench/configs/sd-turbo) with random weights, built once by bench/engine.py's builder;
sd.cpp reads the same folder through a copy whose text encoder keys carry the `text_model.` prefix it expects
(transformers 5 no longer writes it). Three contenders, loaded once each and timed in alternation after one
warm-up run each, with the same prompt and seed: imageforge's diffusers engine (its own dtype choice), and sd.cpp
converting the weights to f16 and to q8_0 at load (`--type`). Each sd.cpp run goes through imageforge's sd.cpp
backend: HTTP to the child, its job API, the PNG back. Load time is the engine's load (a child's start up to its
first answer). Peak memory: the child's VmHWM for sd.cpp; a fresh interpreter's for diffusers (one load and one
generation), so the peaks don't mix.

Needs the `sd-server` build (`./start.sh sdcpp-build`). Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from engine import PROMPT, SEED, Imageforge, build, high_water_mb  # noqa: E402  (bench/engine.py)

from imageforge.domain import Backend, Family, GenerationRequest, ModelSpec, SdcppFiles, Task  # noqa: E402
from imageforge.engine.backends.sdcpp import SdcppBackend, SdcppModel  # noqa: E402
from imageforge.engine.protocol import EngineOptions  # noqa: E402

VARIANTS = ("diffusers", "sdcpp_f16", "sdcpp_q8_0")


def sdcpp_folder(folder: Path) -> Path:
    """A sibling of the diffusers folder that sd.cpp loads: the same UNet and VAE files (linked), the text encoder
    re-saved with `text_model.`-prefixed keys."""
    from safetensors.torch import load_file, save_file

    target = folder.with_name(folder.name + "-sdcpp")
    if (target / "model_index.json").is_file():
        return target
    for part in ("unet", "vae", "text_encoder"):
        (target / part).mkdir(parents=True, exist_ok=True)
    for part in ("unet", "vae"):
        for file in (folder / part).iterdir():
            (target / part / file.name).symlink_to(file)
    encoder = load_file(str(folder / "text_encoder" / "model.safetensors"))
    prefixed = {name if name.startswith("text_model.") else f"text_model.{name}": t for name, t in encoder.items()}
    save_file(prefixed, str(target / "text_encoder" / "model.safetensors"))
    (target / "model_index.json").symlink_to(folder / "model_index.json")
    return target


def sdcpp_spec(folder: Path, weight_type: str, size: int, steps: int) -> ModelSpec:
    return ModelSpec(
        key=f"bench-sdcpp-{weight_type}",
        source=str(folder),
        family=Family.SD,
        description="bench",
        default_steps=steps,
        default_guidance=0.0,
        default_size=size,
        backend=Backend.SDCPP,
        sdcpp=SdcppFiles(model=str(folder), weight_type=weight_type),
    )


def request(model: str, size: int, steps: int) -> GenerationRequest:
    return GenerationRequest(
        task=Task.TEXT2IMG,
        model=model,
        prompt=PROMPT,
        negative_prompt="",
        steps=steps,
        # sd-turbo runs without guidance; for sd.cpp 1.0 is "no guidance" (0 would still run the unconditional pass)
        guidance=1.0 if model.startswith("bench-sdcpp") else 0.0,
        width=size,
        height=size,
        seed=SEED,
    )


def child_peak_mb(model: SdcppModel) -> float:
    """The sd-server child's peak resident memory so far."""
    for line in Path(f"/proc/{model.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def diffusers_peak(folder: Path, taesd: Path, size: int, steps: int) -> float:
    command = [sys.executable, __file__, "--peak-of-diffusers", str(folder), "--taesd", str(taesd)]
    command += ["--size", str(size), "--steps", str(steps)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return float(json.loads(output.strip().splitlines()[-1])["peak_rss_mb"])


def _ignore(*_: Any) -> None:
    return None


def _never() -> bool:
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--peak-of-diffusers", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--taesd", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.peak_of_diffusers:
        with tempfile.TemporaryDirectory() as workdir:
            runner = Imageforge(args.peak_of_diffusers, "sd", args.taesd, Path(workdir), "cpu", EngineOptions())
            runner(PROMPT, args.size, args.steps)
        print(json.dumps({"peak_rss_mb": high_water_mb()}))
        return 0

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imageforge" / "bench"
    folder, taesd = cache / "sd-turbo", cache / "taesd"
    if not (folder / "model_index.json").is_file():
        print("building the random-weight sd-turbo (once)", file=sys.stderr)
        build("sd-turbo", cache)
    sd_folder = sdcpp_folder(folder)

    loads: dict[str, float] = {}
    runs: dict[str, Callable[[], Any]] = {}
    peaks: dict[str, float] = {}
    closers: list[Callable[[], None]] = []
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        diffusers = Imageforge(folder, "sd", taesd, Path(workdir), "cpu", EngineOptions())
        loads["diffusers"] = time.perf_counter() - started
        runs["diffusers"] = lambda: diffusers(PROMPT, args.size, args.steps)
        backend = SdcppBackend()
        models: dict[str, SdcppModel] = {}
        for variant, weight_type in (("sdcpp_f16", "f16"), ("sdcpp_q8_0", "q8_0")):
            spec = sdcpp_spec(sd_folder, weight_type, args.size, args.steps)
            started = time.perf_counter()
            model = backend.load(spec)
            loads[variant] = time.perf_counter() - started
            models[variant] = model
            closers.append(model.close)
            runs[variant] = lambda model=model, spec=spec: model.generate(
                request(spec.key, args.size, args.steps), _ignore, _never
            )
        try:
            for variant in VARIANTS:
                print(f"warm-up {variant}", file=sys.stderr)
                runs[variant]()
            times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
            for round_ in range(args.rounds):
                for variant in VARIANTS:
                    started = time.perf_counter()
                    runs[variant]()
                    times[variant].append(time.perf_counter() - started)
                    print(f"round {round_ + 1} {variant}: {times[variant][-1]:.2f}s", file=sys.stderr)
            for variant, model in models.items():
                peaks[variant] = child_peak_mb(model)
        finally:
            for close in closers:
                close()
    peaks["diffusers"] = diffusers_peak(folder, taesd, args.size, args.steps)

    medians = {variant: statistics.median(times[variant]) for variant in VARIANTS}
    result = {
        "machine": {
            "cpu": next(
                (
                    line.split(":", 1)[1].strip()
                    for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")
                ),
                platform.processor(),
            ),
            "cores": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "sd_cpp": backend.version(),
        },
        "size": args.size,
        "steps": args.steps,
        "runs_s": times,
        "median_s": medians,
        "load_s": loads,
        "peak_rss_mb": peaks,
    }
    rows = [f"{'':<26}" + "".join(f"{v:>14}" for v in VARIANTS)]
    rows.append(f"{'generation (median s)':<26}" + "".join(f"{medians[v]:>14.2f}" for v in VARIANTS))
    rows.append(f"{'load (s)':<26}" + "".join(f"{loads[v]:>14.2f}" for v in VARIANTS))
    rows.append(f"{'peak memory (MB)':<26}" + "".join(f"{peaks[v]:>14.0f}" for v in VARIANTS))
    print("\n".join(rows))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
