"""Benchmark: imageforge's peak memory loading fp32 files against loading the fp16 files of the same model.

    PYTHONPATH=src .venv/bin/python bench/load_peak.py [--model sd-turbo] [--json]

It builds the model's architecture with random weights as `bench/engine.py` does (fp32 safetensors), then a
second copy of that folder that also holds the fp16 files (`save_pretrained(variant="fp16")`), as the Hub's
repositories do. Each folder is loaded by imageforge's backend in bf16 (or `--dtype`) in a fresh process that
then makes one 512x512 image; the process reports its memory high-water mark (`VmHWM`) and resident memory
after loading and after the image. With fp16 files on disk, imageforge reads them instead of the fp32 ones.

Not a test: memory depends on the machine's allocator and what else runs in the process.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from engine import MODELS, PROMPT, Imageforge, build  # noqa: E402  (bench/engine.py, beside this file)

from imageforge.engine.protocol import EngineOptions  # noqa: E402


def memory() -> dict[str, int]:
    """This process's memory from /proc/self/status, in MB."""
    wanted = ("VmHWM", "VmRSS")
    lines = Path("/proc/self/status").read_text().splitlines()
    return {line.split(":")[0]: int(line.split()[1]) // 1024 for line in lines if line.split(":")[0] in wanted}


def measure(folder: Path, taesd: Path, family: str, dtype: str) -> None:
    """Load `folder` with imageforge, make one image, print the memory at each point as one JSON line."""
    with tempfile.TemporaryDirectory() as workdir:
        engine = Imageforge(folder, family, taesd, Path(workdir), "cpu", EngineOptions(dtype=dtype))
        loaded = memory()
        engine(PROMPT, 512, 1)
        print(json.dumps({"after_load": loaded, "after_image": memory()}))


def in_fresh_process(folder: Path, taesd: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--measure", str(folder), "--taesd", str(taesd)]
    command += ["--model", args.model, "--dtype", args.dtype]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def add_half_files(source: Path, target: Path, family: str) -> Path:
    """A copy of the diffusers folder `source` at `target` that also holds fp16 files of every component."""
    import torch
    from engine import pipeline_class

    shutil.copytree(source, target)
    pipe = pipeline_class(family).from_pretrained(source, dtype=torch.float16)
    pipe.save_pretrained(target, variant="fp16", safe_serialization=True)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="sd-turbo")
    parser.add_argument("--dtype", default="bfloat16", help="imageforge's IMAGEFORGE_DTYPE for both loads")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--taesd", help=argparse.SUPPRESS)
    args = parser.parse_args()
    family = MODELS[args.model][1]
    if args.measure:
        measure(Path(args.measure), Path(args.taesd), family, args.dtype)
        return 0

    with tempfile.TemporaryDirectory(prefix="imageforge-bench-") as temp:
        folder, taesd = build(args.model, Path(temp))
        with_half = add_half_files(folder, Path(temp) / f"{args.model}-with-fp16", family)
        results = {
            "fp32_files": in_fresh_process(folder, taesd, args),
            "fp16_files": in_fresh_process(with_half, taesd, args),
        }
    print(f"{args.model}, imageforge in {args.dtype}, one 512x512 image; MB")
    print(f"{'files on disk':<16}{'peak (VmHWM)':>14}{'after loading':>15}{'after the image':>17}")
    for name, result in results.items():
        peak = result["after_image"]["VmHWM"]
        loaded, imaged = result["after_load"]["VmRSS"], result["after_image"]["VmRSS"]
        print(f"{name:<16}{peak:>14}{loaded:>15}{imaged:>17}")
    fp32, fp16 = (results[name]["after_image"]["VmHWM"] for name in ("fp32_files", "fp16_files"))
    print(f"peak with fp16 files: {100 * (fp16 - fp32) / fp32:+.0f}%")
    if args.json:
        print(json.dumps({"model": args.model, "dtype": args.dtype, **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
