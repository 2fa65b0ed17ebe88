"""Benchmark: OpenVINO against torch for sd-turbo's networks on this CPU (issue 8), one network at a time.

    PYTHONPATH=/tmp/ov-site python bench/openvino_try.py [--size 512] [--rounds 3] [--networks unet vae] [--json]

OpenVINO is not a dependency of imageforge: install it beside the project, e.g.
`python -m pip install --target /tmp/ov-site openvino`, and put that folder on PYTHONPATH.

It builds each network from `bench/configs/sd-turbo` with random weights (compute does not depend on weight
values) and times one call, alternating, medians of `--rounds` after a warm-up, in four variants:
torch fp32 (plain diffusers), torch bf16 + channels_last (what imageforge chooses on a bf16 CPU, see
`engine/backends/speed.py`), and the same network converted with `openvino.convert_model` and compiled for the
CPU with `INFERENCE_PRECISION_HINT` f32 and bf16. The calls: the UNet one step (latents 1x4xS/8xS/8, text states
1x77x1024), the VAE decode of those latents, and the text encoder (77 tokens). It also reports the conversion
and compile times, what loading the saved model (`openvino.save_model`, then `read_model`) costs instead, and a
compile answered from OpenVINO's `CACHE_DIR`; and each variant's largest difference from torch fp32, relative
to the largest value of torch fp32's output. With `--json` the last line is one JSON object.

Not a test: timings depend on the machine and what else runs on it.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffusers
import openvino as ov
import torch
from transformers import CLIPTextConfig, CLIPTextModel

CONFIGS = Path(__file__).resolve().parent / "configs" / "sd-turbo"
NETWORKS = ("unet", "vae", "text_encoder")
VARIANTS = ("torch_fp32", "torch_bf16", "ov_fp32", "ov_bf16")
NAMES = {
    "torch_fp32": "torch fp32",
    "torch_bf16": "torch bf16+CL",
    "ov_fp32": "OpenVINO f32",
    "ov_bf16": "OpenVINO bf16",
}


def config(part: str) -> dict[str, Any]:
    return dict(json.loads((CONFIGS / part / "config.json").read_text()))


class Call(torch.nn.Module):
    """One plain-tensor call of a diffusers or transformers network, which convert_model can trace."""

    def __init__(self, inner: Any, call: Callable[..., Any]) -> None:
        super().__init__()
        self.inner = inner
        self.call = call

    def forward(self, *inputs: Any) -> Any:
        return self.call(self.inner, *inputs)


def network(name: str, size: int) -> tuple[Any, tuple[Any, ...]]:
    """The network as a module whose forward is the call the pipeline makes, and an example input for it."""
    torch.manual_seed(0)
    latents = torch.randn(1, 4, size // 8, size // 8)
    if name == "unet":
        unet = diffusers.UNet2DConditionModel.from_config(config("unet"))
        states = torch.randn(1, 77, unet.config.cross_attention_dim)
        return Call(unet, lambda m, *a: m(*a, return_dict=False)[0]), (latents, torch.tensor(999), states)
    if name == "vae":
        vae = diffusers.AutoencoderKL.from_config(config("vae"))
        return Call(vae, lambda m, z: m.decode(z, return_dict=False)[0]), (latents,)
    text = CLIPTextModel(CLIPTextConfig(**config("text_encoder")))
    ids = torch.randint(0, text.config.vocab_size, (1, 77))
    return Call(text, lambda m, i: m(i, return_dict=False)[0]), (ids,)


# -- the variants ----------------------------------------------------------------------------------------


def torch_runner(module: Any, inputs: tuple[Any, ...], bf16: bool) -> Callable[[], Any]:
    """A torch call of `module`; with `bf16`, a bf16 channels_last copy, as imageforge's engine prepares it."""
    if bf16:
        module = copy.deepcopy(module).to(torch.bfloat16, memory_format=torch.channels_last)
        inputs = tuple(x.to(torch.bfloat16) if x.is_floating_point() else x for x in inputs)

    def run() -> Any:
        with torch.inference_mode():
            return module(*inputs).float()

    return run


def ov_runner(compiled: Any, inputs: tuple[Any, ...]) -> Callable[[], Any]:
    request = compiled.create_infer_request()
    arrays = [x.numpy() for x in inputs]

    def run() -> Any:
        request.infer(arrays)
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    return run


def timed(step: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = step()
    return result, time.perf_counter() - started


def heavy_ops_in_bf16(compiled: Any) -> str:
    """How many of the compiled model's convolutions and matrix products run in bf16, as "n/total"."""
    heavy = [
        op.get_rt_info()["runtimePrecision"].astype(str)
        for op in compiled.get_runtime_model().get_ops()
        if op.get_rt_info()["layerType"].astype(str) in ("Convolution", "FullyConnected", "MatMul")
    ]
    return f"{heavy.count('bf16')}/{len(heavy)}"


def openvino_costs(name: str, module: Any, inputs: tuple[Any, ...], workdir: Path) -> tuple[dict[str, Any], dict]:
    """Convert and compile `module` both ways; the costs (seconds) and the two compiled models.

    Then what a later start would pay instead of converting: reading the saved model and compiling it, and
    compiling it again through `CACHE_DIR`, where OpenVINO keeps the compiled blob (bf16 only, the one an
    engine would use).
    """
    core = ov.Core()
    costs: dict[str, Any] = {}
    model, costs["convert_s"] = timed(lambda: ov.convert_model(module, example_input=inputs))
    compiled = {}
    for variant, precision in (("ov_fp32", "f32"), ("ov_bf16", "bf16")):
        settings = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        compiled[variant], costs[f"compile_{precision}_s"] = timed(
            lambda s=settings: core.compile_model(model, "CPU", s)
        )
    costs["ov_bf16_heavy_ops_in_bf16"] = heavy_ops_in_bf16(compiled["ov_bf16"])
    saved = workdir / f"{name}.xml"
    _, costs["save_s"] = timed(lambda: ov.save_model(model, saved, compress_to_fp16=False))
    costs["saved_mb"] = round((saved.stat().st_size + saved.with_suffix(".bin").stat().st_size) / 2**20)
    settings = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"}
    _, costs["read_s"] = timed(lambda: core.read_model(saved))
    _, costs["read_compile_bf16_s"] = timed(lambda: core.compile_model(core.read_model(saved), "CPU", settings))
    cached = ov.Core()
    cached.set_property({"CACHE_DIR": str(workdir / "cache")})
    _, costs["compile_bf16_cache_miss_s"] = timed(lambda: cached.compile_model(saved, "CPU", settings))
    _, costs["compile_bf16_cache_hit_s"] = timed(lambda: cached.compile_model(saved, "CPU", settings))
    return costs, compiled


def measure(name: str, size: int, rounds: int, workdir: Path) -> dict[str, Any]:
    """One network's call in every variant, alternating after a warm-up, and OpenVINO's costs."""
    module, inputs = network(name, size)
    module.eval()
    costs, compiled = openvino_costs(name, module, inputs, workdir)
    runners = {
        "torch_fp32": torch_runner(module, inputs, bf16=False),
        "torch_bf16": torch_runner(module, inputs, bf16=True),
        **{variant: ov_runner(model, inputs) for variant, model in compiled.items()},
    }
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    outputs: dict[str, Any] = {}
    for round_ in range(rounds + 1):  # round 0 is the warm-up
        for variant in VARIANTS:
            output, seconds = timed(runners[variant])
            print(f"{name} round {round_} {variant}: {seconds:.2f}s", file=sys.stderr)
            if round_:
                times[variant].append(seconds)
            else:
                outputs[variant] = output
    reference = outputs["torch_fp32"]
    scale = float(reference.abs().max())
    return {
        "median_s": {variant: round(statistics.median(times[variant]), 3) for variant in VARIANTS},
        "runs_s": {variant: [round(t, 3) for t in times[variant]] for variant in VARIANTS},
        "relative_error": {
            variant: float(f"{float((outputs[variant] - reference).abs().max()) / scale:.2g}") for variant in VARIANTS
        },
        **{key: round(value, 2) if isinstance(value, float) else value for key, value in costs.items()},
    }


# -- report ----------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "openvino": ov.get_version(),
        "threads": torch.get_num_threads(),
        "cpu": cpu[0].split(":", 1)[1].strip() if cpu else platform.processor(),
        "openvino_cpu": ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"),
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    header = f"{'network (median s)':<20}" + "".join(f"{NAMES[v]:>16}" for v in VARIANTS)
    rows = [header + f"{'OV bf16 vs torch bf16':>24}"]
    for name, result in results.items():
        median = result["median_s"]
        cells = "".join(f"{median[v]:>16.3f}" for v in VARIANTS)
        rows.append(f"{name:<20}{cells}{median['torch_bf16'] / median['ov_bf16']:>23.2f}x")
    rows.append("")
    rows.append(f"{'OpenVINO costs (s)':<20}{'convert':>10}{'compile f32':>13}{'compile bf16':>14}{'save':>8}")
    for name, r in results.items():
        rows.append(f"{name:<20}{r['convert_s']:>10.1f}{r['compile_f32_s']:>13.1f}{r['compile_bf16_s']:>14.1f}")
        rows[-1] += f"{r['save_s']:>8.1f}"
    rows.append("")
    rows.append(f"{'from disk, bf16 (s)':<20}{'read':>10}{'read+compile':>14}{'cache miss':>12}{'cache hit':>11}")
    for name, r in results.items():
        rows.append(
            f"{name:<20}{r['read_s']:>10.1f}{r['read_compile_bf16_s']:>14.1f}"
            f"{r['compile_bf16_cache_miss_s']:>12.1f}{r['compile_bf16_cache_hit_s']:>11.1f}"
        )
    rows.append("")
    rows.append("OpenVINO bf16: convolutions and matrix products in bf16: ")
    rows[-1] += ", ".join(f"{name} {r['ov_bf16_heavy_ops_in_bf16']}" for name, r in results.items())
    rows.append(f"{'rel. error vs fp32':<20}" + "".join(f"{NAMES[v]:>16}" for v in VARIANTS))
    for name, r in results.items():
        rows.append(f"{name:<20}" + "".join(f"{r['relative_error'][v]:>16.2g}" for v in VARIANTS))
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (latents are size/8)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up (median)")
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    parser.add_argument("--json", action="store_true", help="end with one line of JSON")
    args = parser.parse_args()

    results = {}
    with tempfile.TemporaryDirectory(prefix="imageforge-ov-") as temp:
        for name in args.networks:  # one at a time, so only one network's copies are in memory
            print(f"{name}: building, converting, compiling ...", file=sys.stderr)
            results[name] = measure(name, args.size, args.rounds, Path(temp))
    info = machine()
    print(f"\nsd-turbo networks, {args.size}x{args.size}, medians of {args.rounds}; {info}")
    print(table(results))
    if args.json:
        print(json.dumps({"size": args.size, "rounds": args.rounds, "networks": results, "machine": info}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
