"""Benchmark: plain diffusers against imageforge on torch bf16, OpenVINO bf16, OpenVINO int8 and stable-diffusion.cpp.

    python bench/runtimes.py [--model sd-turbo] [--size 512] [--steps 1] [--rounds 3] [--json]
                             [--engines torch openvino int8 sdcpp]
    python bench/runtimes.py --attention [--size 512] [--rounds 5]
    python bench/runtimes.py --starts 5 [--engines torch openvino int8]

It builds the model's architecture with random weights (`bench/engine.py`'s `build`: compute does not depend on
weight values) and loads it as plain `from_pretrained` with diffusers' defaults and through imageforge's backend
with `IMAGEFORGE_RUNTIME` torch and openvino (`EngineOptions`), generating through the code the service runs,
with the full VAE and with `decoder: "fast"`. First, each OpenVINO variant's first use (the conversion, and
int8's quantization) runs in a fresh process with what it finds in the cache: time to the first image and peak
memory. Then the runs alternate round by round after a warm-up, in three groups so that the machine's memory
holds them: plain diffusers with torch bf16, with OpenVINO bf16, with OpenVINO int8 (each speedup is against
plain diffusers of the same group). Then, in fresh processes again, each variant's peak memory (one
load and one generation) and its time from start to the first image, OpenVINO's now reading the cache. Last,
how far the UNet's output on fixed latents is from fp32's in each runtime (the largest difference relative to
the largest value, and the RMS of the difference relative to the RMS of the output): with random weights this
is a numeric distance, not image quality.

The `sdcpp` group (sd-turbo only; needs `./start.sh sdcpp-build`) runs the same random weights on
stable-diffusion.cpp as the service does (bench/sdcpp.py's `sd-server` child, converting to f16 and to q8_0 at
load), alternating with plain diffusers like the others; its stages are not split, and its load time and the
children's peak memory are reported with the group.

`--sequential` runs plain diffusers' rounds first and unloads it before loading the engine, for models whose
fp32 baseline and converted engine do not fit in memory together (SDXL on 24 GB); the ratios then come from
rounds taken minutes apart, which needs a quiet machine, and the fidelity check (both UNets loaded) is left out.

`--starts N` measures only the starts: the first uses, then N cached starts of each variant (a new process from
its launch to its first image, and its peak memory), the variants in turn.

`--attention` times only the UNet's largest self-attention (sd-turbo's first block: 4096 tokens at 512 px, 5
heads of 64), torch's SDPA in bf16 against the same call converted to OpenVINO (its fused
ScaledDotProductAttention) with the bf16 hint, and reports GFLOP/s of each.

Not a test: timings depend on the machine and what else runs on it.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import engine as bench  # noqa: E402  (bench/engine.py)

from imageforge.engine.protocol import EngineOptions  # noqa: E402

VARIANTS = (
    "baseline", "torch", "torch_fast", "openvino", "openvino_fast", "int8", "int8_fast", "sdcpp_f16", "sdcpp_q8_0",
)  # fmt: skip
NAMES = {
    "baseline": "plain diffusers",
    "torch": "torch bf16",
    "torch_fast": "torch bf16 fast",
    "openvino": "OpenVINO bf16",
    "openvino_fast": "OpenVINO fast",
    "int8": "OpenVINO int8",
    "int8_fast": "OV int8 fast",
    "sdcpp_f16": "sd.cpp f16",
    "sdcpp_q8_0": "sd.cpp q8_0",
}
#: The sd-server children of the running group, stopped when it ends.
CHILDREN: list[Any] = []
#: The stable-diffusion.cpp group's variants: its weight type at load (`sd-server --type`).
SDCPP = {"sdcpp_f16": "f16", "sdcpp_q8_0": "q8_0"}
ENGINES = {"torch": ("torch", "auto"), "openvino": ("openvino", "auto"), "int8": ("openvino", "int8")}


def options(engine: str, workdir: Path) -> EngineOptions:
    runtime, precision = ENGINES[engine]
    return EngineOptions(runtime=runtime, precision=precision, openvino_cache=workdir / "openvino-cache")


def load(engine: str, args: argparse.Namespace, folder: Path, taesd: Path, workdir: Path) -> bench.Imageforge:
    family = bench.MODELS[args.model][1]
    models = workdir / f"models-{engine}"
    models.mkdir(exist_ok=True)
    return bench.Imageforge(folder, family, taesd, models, "cpu", options(engine, workdir))


def run_group(
    engines: list[str], args: argparse.Namespace, folder: Path, taesd: Path, workdir: Path
) -> tuple[dict[str, list[dict[str, float]]], dict[str, Any], dict[str, Any]]:
    """Timed runs of plain diffusers and `engines` (each with the full VAE and the fast decoder), alternating
    (with `--sequential`, plain diffusers' rounds first and then, with it unloaded, the engines'); the warm-up of
    each (with what OpenVINO reported), and the loaded models for the fidelity check."""
    plain = bench.Baseline(folder, bench.MODELS[args.model][1], "cpu")
    runners: dict[str, tuple[Callable[[str], Any], bench.Networks]] = {
        "baseline": (partial(plain, size=args.size, steps=args.steps), plain.networks())
    }
    loaded: dict[str, Any] = {"baseline": plain}
    reports: dict[str, Any] = {}
    runs: dict[str, list[dict[str, float]]] = {}
    first: dict[str, Any] = {}
    if args.sequential:
        alternate(runners, args, reports, runs, first)
        del plain
        runners, loaded = {}, {}
        gc.collect()
    for engine in engines:
        if engine == "sdcpp":
            runners |= sdcpp_runners(args, folder, reports)
            continue
        model = load(engine, args, folder, taesd, workdir)
        loaded[engine] = model
        for decoder, variant in (("full", engine), ("fast", f"{engine}_fast")):

            def run(prompt: str, model: Any = model, decoder: str = decoder, variant: str = variant) -> Any:
                request = _request(model, prompt, args, decoder)
                generated = model.model.generate(request, bench._ignore, bench._never)
                reports.setdefault(variant, generated.runtime)
                return generated.image

            runners[variant] = (run, model.networks())
    alternate(runners, args, reports, runs, first)
    for variant in SDCPP:
        if variant in reports:
            first[variant] |= reports[variant]
    return runs, first, loaded


def alternate(
    runners: dict[str, tuple[Callable[[str], Any], bench.Networks]],
    args: argparse.Namespace,
    reports: dict[str, Any],
    runs: dict[str, list[dict[str, float]]],
    first: dict[str, Any],
) -> None:
    """A warm-up round, then `args.rounds` timed ones, each running every runner once; into `runs` and `first`."""
    for variant in runners:
        runs[variant] = []
    for round_ in range(args.rounds + 1):  # round 0 is the warm-up
        for variant, (run, networks) in runners.items():
            prompt = f"{bench.PROMPT}, study {round_}{VARIANTS.index(variant)}"
            timing = bench.timed_run(lambda run=run, prompt=prompt: run(prompt), networks, "cpu")
            print(f"round {round_} {variant}: {timing['total']:.2f}s", file=sys.stderr)
            if round_:
                runs[variant].append(timing)
            else:
                first[variant] = {"total_s": round(timing["total"], 2)}
                if "openvino" in reports.get(variant, {}):
                    first[variant]["openvino"] = reports[variant]["openvino"]


def sdcpp_runners(
    args: argparse.Namespace, folder: Path, reports: dict[str, Any]
) -> dict[str, tuple[Callable[[str], Any], bench.Networks]]:
    """sd-server children for `folder` at f16 and q8_0, as runners (no stages: the child's time is one total);
    `reports` gets each one's load time and, after every run, its peak memory so far."""
    import sdcpp as sdcpp_bench  # bench/sdcpp.py
    from imageforge.engine.backends.sdcpp import SdcppBackend

    if args.model != "sd-turbo":
        raise SystemExit("the sdcpp group runs the sd-turbo architecture only")
    backend = SdcppBackend()
    runners: dict[str, tuple[Callable[[str], Any], bench.Networks]] = {}
    for variant, weight_type in SDCPP.items():
        spec = sdcpp_bench.sdcpp_spec(sdcpp_bench.sdcpp_folder(folder), weight_type, args.size, args.steps)
        started = time.perf_counter()
        model = backend.load(spec)
        reports[variant] = {"load_s": round(time.perf_counter() - started, 2)}
        CHILDREN.append(model)

        def run(prompt: str, model: Any = model, spec: Any = spec, variant: str = variant) -> Any:
            request = replace(sdcpp_bench.request(spec.key, args.size, args.steps), prompt=prompt)
            image = model.generate(request, bench._ignore, bench._never).image
            reports[variant]["peak_rss_mb"] = round(sdcpp_bench.child_peak_mb(model))
            return image

        runners[variant] = (run, [])
    return runners


def _request(model: Any, prompt: str, args: argparse.Namespace, decoder: str) -> Any:
    from imageforge.domain import Decoder, GenerationRequest, Task

    return GenerationRequest(
        task=Task.TEXT2IMG,
        model=model.spec.key,
        prompt=prompt,
        negative_prompt="",
        steps=args.steps,
        guidance=0.0,
        width=args.size,
        height=args.size,
        seed=bench.SEED,
        decoder=Decoder(decoder),
    )


def unet_outputs(loaded: dict[str, Any], size: int) -> dict[str, Any]:
    """Each loaded model's UNet output on the same fixed latents, timestep and text states (float32)."""
    import torch

    generator = torch.Generator("cpu").manual_seed(7)
    plain_unet = loaded["baseline"].pipe.unet
    latents = torch.randn(1, 4, size // 8, size // 8, generator=generator)
    states = torch.randn(1, 77, plain_unet.config.cross_attention_dim, generator=generator)
    outputs = {}
    with torch.inference_mode():
        for name, model in loaded.items():
            unet = model.pipe.unet if name == "baseline" else model.model.pipeline.unet
            dtype = next(unet.parameters()).dtype
            timestep = torch.tensor(999.0)
            outputs[name] = unet(latents.to(dtype), timestep, states.to(dtype), return_dict=False)[0].float()
    return outputs


def distance(output: Any, reference: Any) -> dict[str, float]:
    difference = output - reference
    return {
        "max_rel": float(f"{float(difference.abs().max() / reference.abs().max()):.3g}"),
        "rms_rel": float(f"{float(difference.pow(2).mean().sqrt() / reference.pow(2).mean().sqrt()):.3g}"),
    }


def fresh_process(variant: str, args: argparse.Namespace, folder: Path, taesd: Path, workdir: Path) -> dict[str, Any]:
    """Peak memory and time to the first image of `variant` in a new interpreter, with what the cache holds."""
    command = [sys.executable, __file__, "--fresh", variant, "--folder", str(folder), "--taesd", str(taesd)]
    command += ["--workdir", str(workdir), "--model", args.model, "--size", str(args.size), "--steps", str(args.steps)]
    started = time.perf_counter()
    command += ["--launched", repr(time.time())]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode:
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        killed = " (killed: out of memory?)" if done.returncode < 0 else ""
        return {"failed": f"exit {done.returncode}{killed}", "stderr": last}
    result = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    result["process_s"] = round(time.perf_counter() - started, 2)
    return result


def measure_fresh(variant: str, args: argparse.Namespace) -> None:
    """One load and one generation of `variant`; the time to its image counts from the process's launch, so it
    includes starting the interpreter and every import."""
    folder, taesd, workdir = Path(args.folder), Path(args.taesd), Path(args.workdir)
    decoder = "fast" if variant.endswith("_fast") else "full"
    engine = variant.removesuffix("_fast")
    if engine == "baseline":
        bench.Baseline(folder, bench.MODELS[args.model][1], "cpu")(bench.PROMPT, args.size, args.steps)
        report: dict[str, Any] = {}
    else:
        model = load(engine, args, folder, taesd, workdir)
        generated = model.model.generate(_request(model, bench.PROMPT, args, decoder), bench._ignore, bench._never)
        report = generated.runtime.get("openvino", {})
    first_image_s = round(time.time() - args.launched, 2)
    print(json.dumps({"peak_rss_mb": round(bench.high_water_mb()), "first_image_s": first_image_s, **report}))


def attention(args: argparse.Namespace) -> None:
    """Torch SDPA against OpenVINO's fused attention on the first UNet block's self-attention."""
    import openvino
    import torch

    tokens, heads, dim = (args.size // 8) ** 2, 5, 64
    generator = torch.Generator("cpu").manual_seed(0)
    q, k, v = (torch.randn(1, heads, tokens, dim, generator=generator) for _ in range(3))

    class Attention(torch.nn.Module):
        def forward(self, q: Any, k: Any, v: Any) -> Any:
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    model = openvino.convert_model(Attention(), example_input=(q, k, v))
    settings = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"}
    compiled = openvino.Core().compile_model(model, "CPU", settings)
    request = compiled.create_infer_request()
    arrays = [x.numpy() for x in (q, k, v)]
    q16, k16, v16 = (x.to(torch.bfloat16) for x in (q, k, v))
    reference = Attention()(q, k, v)
    runners = {
        "torch_bf16": lambda: Attention()(q16, k16, v16).float(),
        "openvino_bf16": lambda: torch.from_numpy(request.infer(arrays)[0].copy()),
    }
    times: dict[str, list[float]] = {name: [] for name in runners}
    errors = {}
    with torch.inference_mode():
        for round_ in range(args.rounds + 1):
            for name, run in runners.items():
                started = time.perf_counter()
                output = run()
                if round_:
                    times[name].append(time.perf_counter() - started)
                else:
                    errors[name] = float(f"{float((output - reference).abs().max() / reference.abs().max()):.2g}")
    flop = 4 * heads * tokens * tokens * dim  # two matrix products of tokens x tokens x dim, multiply-add
    result = {
        name: {
            "median_ms": round(statistics.median(t) * 1000, 1),
            "gflops": round(flop / statistics.median(t) / 1e9),
            "max_rel_error_vs_fp32": errors[name],
        }
        for name, t in times.items()
    }
    print(f"self-attention, {tokens} tokens, {heads} heads of {dim}: {json.dumps(result)}")


def medians(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    result = {}
    for variant, timings in runs.items():
        median = {key: statistics.median(t[key] for t in timings) for key in timings[0]}
        median["other"] = median["total"] - sum(median.get(stage, 0.0) for stage in bench.STAGES)
        result[variant] = median
    return result


def table(groups: list[dict[str, dict[str, float]]], steps: int) -> str:
    rows = [f"{'stage (median s)':<18}" + "".join(f"{NAMES[v]:>17}" for v in VARIANTS)]
    merged = {variant: group[variant] for group in groups for variant in group if variant != "baseline"}
    merged["baseline"] = groups[0]["baseline"]
    for stage in (*bench.STAGES, "other", "total"):
        cells = []
        for variant in VARIANTS:
            value = merged.get(variant, {}).get(stage, 0.0) / (steps if stage == "unet" else 1)
            cells.append(f"{value:>17.3f}" if value else f"{'-':>17}")
        rows.append(f"{'unet (one step)' if stage == 'unet' else stage:<18}" + "".join(cells))
    speedups = []
    for variant in VARIANTS:
        group = next((g for g in groups if variant in g), None)
        speedups.append(f"{group['baseline']['total'] / group[variant]['total']:>16.2f}x" if group else f"{'-':>17}")
    rows.append(f"{'vs plain diffusers':<18}" + "".join(speedups))
    return "\n".join(rows)


def starts(args: argparse.Namespace, folder: Path, taesd: Path, workdir: Path, firsts: dict[str, Any]) -> int:
    """`--starts N`: each variant's cached start (a new process from its launch to its first image, and its peak
    memory) N times, the variants in turn so that load from elsewhere falls on all of them alike."""
    engines = [engine for engine in args.engines if engine != "sdcpp" and not (args.no_int8 and engine == "int8")]
    variants = ["baseline", *(f"{engine}{fast}" for engine in engines for fast in ("", "_fast"))]
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
    for round_ in range(args.starts):
        for variant in variants:
            runs[variant].append(fresh_process(variant, args, folder, taesd, workdir))
            print(f"start {round_ + 1}: {variant}: {json.dumps(runs[variant][-1])}", file=sys.stderr)
    print(f"\n{args.model} {args.size}x{args.size}, {args.steps} step(s), CPU; {bench.machine('cpu')}")
    print("first use (fresh process, empty cache): " + json.dumps(firsts))
    print("| cached start | s to the first image (median, min-max) | peak RSS GB (min-max) |")
    print("|---|---|---|")
    for variant, results in runs.items():
        seconds = [r["first_image_s"] for r in results if "first_image_s" in r]
        peaks = [r["peak_rss_mb"] / 1024 for r in results if "peak_rss_mb" in r]
        if not seconds:
            print(f"| {NAMES[variant]} | failed: {results[-1]} | |")
            continue
        print(
            f"| {NAMES[variant]} | {statistics.median(seconds):.2f} ({min(seconds):.2f}-{max(seconds):.2f}) "
            f"| {min(peaks):.1f}-{max(peaks):.1f} |"
        )
    if args.json:
        print(json.dumps({"model": args.model, "size": args.size, "first_use": firsts, "starts": runs}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(bench.MODELS), default="sd-turbo")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up (median)")
    parser.add_argument("--no-int8", action="store_true", help="leave out the int8 group")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON")
    parser.add_argument("--attention", action="store_true", help="time the 4096-token self-attention only")
    parser.add_argument("--reuse", help="a workdir kept from an earlier run: its model and cache, no first uses")
    parser.add_argument(
        "--starts", type=int, metavar="N", help="only the starts: first uses, then N cached starts of each variant"
    )
    parser.add_argument(
        "--sequential", action="store_true", help="plain diffusers' rounds first, then the engines' (less memory)"
    )
    parser.add_argument("--engines", nargs="+", choices=[*ENGINES, "sdcpp"], default=list(ENGINES))
    parser.add_argument("--fresh", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, default=time.time(), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--taesd", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fresh:
        measure_fresh(args.fresh, args)
        return 0
    if args.attention:
        attention(args)
        return 0

    with tempfile.TemporaryDirectory(prefix="imageforge-ov-bench-") as temp:
        workdir = Path(args.reuse or temp)
        if args.reuse:
            folder, taesd = workdir / args.model, workdir / bench.MODELS[args.model][2]
        else:
            print(f"building {args.model} with random weights in {workdir} ...", file=sys.stderr)
            folder, taesd = bench.build(args.model, workdir)
        # First uses in their own processes, one at a time: converting holds a float32 copy of the network,
        # which beside the alternating models would not fit a 24 GB machine shared with others.
        firsts = {}
        converting = [engine for engine in ("openvino", "int8") if engine in args.engines]
        converting = [e for e in converting if not (args.no_int8 and e == "int8")]
        if "openvino" in converting:
            converting.insert(1, "openvino_fast")
        for variant in [] if args.reuse else converting:
            print(f"first use: {variant}", file=sys.stderr)
            firsts[variant] = fresh_process(variant, args, folder, taesd, workdir)
            print(f"first use: {variant}: {json.dumps(firsts[variant])}", file=sys.stderr)
        if args.starts:
            return starts(args, folder, taesd, workdir, firsts)
        groups, distances, warm_ups = [], {}, []
        # One engine beside plain diffusers per group: three models loaded at once did not fit the 24 GB
        # machine shared with other work
        for engines in [[engine] for engine in args.engines if not (args.no_int8 and engine == "int8")]:
            runs, first, loaded = run_group(engines, args, folder, taesd, workdir)
            groups.append(medians(runs))
            warm_ups.append(first)
            print(f"group {engines}: {json.dumps(groups[-1])}; first use: {json.dumps(first)}", file=sys.stderr)
            outputs = unet_outputs(loaded, args.size) if "baseline" in loaded and len(loaded) > 1 else {}
            distances |= {
                name: distance(out, outputs["baseline"]) for name, out in outputs.items() if name != "baseline"
            }
            print(f"UNet distance vs fp32: {json.dumps(distances)}", file=sys.stderr)
            del loaded, outputs
            while CHILDREN:
                CHILDREN.pop().close()
            gc.collect()
        fresh = {}
        fresh_variants = [engine for engine in args.engines if engine != "sdcpp"]
        for variant in ("baseline", *fresh_variants, *(["openvino_fast"] if "openvino" in args.engines else [])):
            print(f"fresh process: {variant}", file=sys.stderr)
            fresh[variant] = fresh_process(variant, args, folder, taesd, workdir)
    info = bench.machine("cpu")
    import openvino

    info["openvino"] = openvino.get_version()
    print(f"\n{args.model} {args.size}x{args.size}, {args.steps} step(s), CPU; {info}")
    print(table(groups, args.steps))
    print("first use (fresh process, empty cache: peak RSS MB, s to first image): " + json.dumps(firsts))
    print("second process (cache present: peak RSS MB, s to first image): " + json.dumps(fresh))
    print("UNet output vs plain diffusers fp32 on fixed latents: " + json.dumps(distances))
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model,
                    "size": args.size,
                    "steps": args.steps,
                    "rounds": args.rounds,
                    "groups": [{v: {k: round(x, 3) for k, x in m.items()} for v, m in g.items()} for g in groups],
                    "first_use": firsts,
                    "warm_up": warm_ups,
                    "fresh_process": fresh,
                    "unet_distance_vs_fp32": distances,
                    "machine": info,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
