#!/usr/bin/env python3
"""Check the GPU engine path in one command, on a machine with an NVIDIA GPU.

    .venv/bin/python scripts/check_gpu_engines.py                   # tiny model, then full size (ViT-g + AC predictor)
    .venv/bin/python scripts/check_gpu_engines.py --sizes tiny      # tiny model only (a few minutes)
    .venv/bin/python scripts/check_gpu_engines.py --sizes full --skip-tests --report gpu_check.json

What it does, top to bottom, with random weights (no checkpoint needed):
  1. environment: torch / CUDA / GPU, tensorrt, onnxruntime providers;
  2. the GPU tests (test/test_engines_gpu.py) with pytest;
  3. per model size and precision: export ONNX, build TensorRT engines, then parity of every GPU
     runtime (TensorRT, ONNX Runtime CUDA, torch CUDA graphs) against torch eager in the same
     precision (relative L2 error and max abs error), then `bench engines` timings vs torch eager.
Files go to --workdir and are reused when their manifest is there, so a run cut off (the full-size
TensorRT builds take minutes) continues where it stopped: under a 10-minute command limit, run
`--sizes tiny` first, then `--sizes full --skip-tests` (again, if it was cut off). Building the
random ViT-g on the CPU takes about a minute each time a torch runtime is opened.
Exit status 0 iff every check passed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vjepa2_ros.engines.bench import BenchConfig, open_bench_runtime, run, table  # noqa: E402
from vjepa2_ros.errors import Vjepa2RosError  # noqa: E402

# Relative L2 error allowed between a runtime and torch eager in the same precision.
TOLERANCE = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 5e-2}


@dataclass
class Args:
    workdir: Path = Path("/tmp/vjepa2_gpu_check")
    sizes: tuple[str, ...] = ("tiny", "full")
    skip_tests: bool = False
    tiny_precisions: tuple[str, ...] = ("float32", "float16", "bfloat16")
    full_precisions: tuple[str, ...] = ("bfloat16",)
    full_samples: tuple[int, ...] = (1, 64, 800)
    report: Path | None = None
    device: str = "cuda"          # "cpu" dry-runs the script's logic on the tiny model (TensorRT skipped)


@dataclass
class Check:
    size: str
    precision: str
    runtime: str
    call: str
    rel_l2: float | None
    max_abs: float | None
    passed: bool
    note: str = ""


@dataclass
class Report:
    environment: dict = field(default_factory=dict)
    tests_passed: bool | None = None
    checks: list[Check] = field(default_factory=list)
    timings: dict[str, list[dict]] = field(default_factory=dict)
    seconds: float = 0.0


def parse() -> Args:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Args()
    p.add_argument("--workdir", type=Path, default=d.workdir)
    p.add_argument("--sizes", nargs="+", choices=("tiny", "full"), default=list(d.sizes),
                   help="tiny: vit_tiny + ac_tiny; full: vit_giant + ac_vit_giant (random weights)")
    p.add_argument("--skip-tests", action="store_true", help="do not run test/test_engines_gpu.py")
    p.add_argument("--tiny-precisions", nargs="+", default=list(d.tiny_precisions))
    p.add_argument("--full-precisions", nargs="+", default=list(d.full_precisions))
    p.add_argument("--full-samples", type=int, nargs="+", default=list(d.full_samples))
    p.add_argument("--report", type=Path)
    p.add_argument("--device", default=d.device, help="cpu: dry run of this script on the tiny model")
    a = p.parse_args()
    return Args(a.workdir, tuple(a.sizes), a.skip_tests, tuple(a.tiny_precisions), tuple(a.full_precisions),
                tuple(a.full_samples), a.report, a.device)


def environment() -> dict:
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    try:
        import tensorrt
        env["tensorrt"] = tensorrt.__version__
    except ImportError:
        env["tensorrt"] = None
    try:
        import onnxruntime
        env["onnxruntime"] = onnxruntime.__version__
        env["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        env["onnxruntime"] = None
    return env


def compare(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-12)), float((a - b).abs().max())


def parity(size: str, cfg: BenchConfig, workdir: Path) -> list[Check]:
    """Every GPU runtime vs torch eager (same precision, same weights) on one frame and S=7 samples."""
    checks = []
    g = torch.Generator().manual_seed(1)
    reference = open_bench_runtime("torch", cfg, workdir)
    ec, pc = reference.encoder_cfg, reference.predictor_cfg
    gh, gw = ec.grid()
    dev = dict(device=cfg.device, dtype=reference.dtype)
    image = torch.randn(1, 3, gh * ec.patch_size, gw * ec.patch_size, generator=g).to(**dev)
    n, T = pc.tokens_per_frame, cfg.steps
    with torch.no_grad():
        z = torch.nn.functional.layer_norm(reference.encode(image).float(), (pc.embed_dim,)).to(reference.dtype)
    z = z.repeat(7, T, 1) + 0.1 * torch.randn(7, T * n, pc.embed_dim, generator=g).to(**dev)
    actions = (0.05 * torch.randn(7, T, 7, generator=g)).to(**dev)
    states = torch.randn(7, T, 7, generator=g).to(**dev)
    want = {"encode B=1": reference.encode(image), f"predict S=7 T={T}": reference.predict(z, actions, states)}
    reference.release()
    for name in ("tensorrt", "onnxruntime", "torch-cudagraph"):
        started = time.monotonic()
        try:
            runtime = open_bench_runtime(name, cfg, workdir)
            got = {"encode B=1": runtime.encode(image), f"predict S=7 T={T}": runtime.predict(z, actions, states)}
            runtime.release()
        except (Vjepa2RosError, ImportError) as e:
            checks.append(Check(size, cfg.precision, name, "-", None, None, name != "tensorrt" or cfg.device == "cpu",
                                f"not run: {str(e).splitlines()[0]}"))
            print(f"  {name:<16} not run: {str(e).splitlines()[0]}", flush=True)
            continue
        for call, out in got.items():
            rel, mx = compare(out, want[call])
            ok = rel <= TOLERANCE[cfg.precision] and bool(torch.isfinite(out).all())
            checks.append(Check(size, cfg.precision, name, call, rel, mx, ok))
            print(f"  {name:<16} {call:<16} rel L2 {rel:.2e}  max abs {mx:.2e}  {'ok' if ok else 'FAILED'} "
                  f"(made, opened and run in {time.monotonic() - started:.0f} s)", flush=True)
    return checks


def main() -> int:
    args = parse()
    started = time.monotonic()
    report = Report(environment=environment())
    print(json.dumps(report.environment, indent=2))
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA GPU visible to torch: nothing to check here (--device cpu dry-runs the script)")
        return 1

    if not args.skip_tests:
        print("\n== pytest test/test_engines_gpu.py", flush=True)
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "test/test_engines_gpu.py"], cwd=REPO)
        report.tests_passed = result.returncode == 0

    sizes = {"tiny": ("vit_tiny", "ac_tiny", args.tiny_precisions, (1, 64, 800)),
             "full": ("vit_giant", "ac_vit_giant", args.full_precisions, args.full_samples)}
    for size in args.sizes:
        encoder, predictor, precisions, samples = sizes[size]
        for precision in precisions:
            cfg = BenchConfig(encoder=encoder, predictor=predictor, device=args.device, precision=precision,
                              samples=tuple(samples), steps=1, repeats=20, warmup=3,
                              runtimes=("torch", "torch-cudagraph", "onnxruntime", "tensorrt"))
            workdir = args.workdir / f"{size}-{precision}"
            workdir.mkdir(parents=True, exist_ok=True)
            print(f"\n== {size} ({encoder} + {predictor}), {precision}: export, build, parity", flush=True)
            report.checks += parity(size, cfg, workdir)
            print(f"\n== {size}, {precision}: timings", flush=True)
            rows = run(cfg, progress=lambda m: print("  " + m, flush=True), workdir=workdir)
            print(table(rows, cfg), flush=True)
            report.timings[f"{size}-{precision}"] = [asdict(r) for r in rows]

    report.seconds = time.monotonic() - started
    passed = all(c.passed for c in report.checks) and report.tests_passed is not False
    print(f"\n{'ALL CHECKS PASSED' if passed else 'SOME CHECKS FAILED'} in {report.seconds:.0f} s")
    for c in report.checks:
        if not c.passed:
            print(f"  FAILED {c.size} {c.precision} {c.runtime} {c.call}: rel L2 {c.rel_l2} {c.note}")
    if args.report:
        args.report.write_text(json.dumps(asdict(report), indent=2, default=str))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
