"""`vjepa2-ros bench engines`: median latency per call of every available runtime vs torch eager.

Same random weights for every runtime, measured in one process: the encoder on one frame and the
predictor on S candidate sequences of T steps (the planner's call). ONNX graphs and TensorRT
engines are made in a temporary directory first (TensorRT builds take minutes on big models).

    vjepa2-ros bench engines                                   # tiny model on the CPU
    vjepa2-ros bench engines --encoder vit_giant --predictor ac_vit_giant --device cuda --precision bfloat16
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from vjepa2_ros.engines.factory import RuntimeConfig, open_runtime
from vjepa2_ros.engines.manifest import PRECISIONS
from vjepa2_ros.engines.runtime import Runtime
from vjepa2_ros.errors import ConfigError, Vjepa2RosError
from vjepa2_ros.model.config import EncoderConfig, PredictorConfig

RUNTIMES = ("torch", "torch-compile", "torch-cudagraph", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class BenchConfig:
    encoder: str = "vit_tiny"                   # encoder preset
    predictor: str = "ac_tiny"                  # predictor preset
    device: str = "cpu"
    precision: str = "float32"
    samples: tuple[int, ...] = (1, 64, 800)     # predictor calls: S candidate sequences each
    steps: int = 1                              # predictor time steps T per call
    repeats: int = 10                           # timed calls per measurement (the median is reported)
    warmup: int = 2                             # untimed calls first
    # those not available here are skipped with the reason; torch eager always runs (the baseline)
    runtimes: tuple[str, ...] = ("torch", "torch-cudagraph", "onnxruntime", "tensorrt")

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not self.samples or min(self.samples) < 1:
            raise ConfigError(f"samples must be positive ints, got {self.samples}")
        if self.repeats < 1 or self.warmup < 0:
            raise ConfigError(f"repeats must be >= 1 and warmup >= 0, got {self.repeats}, {self.warmup}")
        unknown = sorted(set(self.runtimes) - set(RUNTIMES))
        if unknown:
            raise ConfigError(f"unknown runtimes {unknown}; expected some of {RUNTIMES}")


@dataclass(frozen=True)
class Row:
    runtime: str
    call: str                                   # "encode B=1", "predict S=64 T=1"
    median_ms: float
    speedup: float | None                       # torch eager median / this median, same call


def median_ms(fn: Callable[[], object], repeats: int, warmup: int, cuda: bool) -> float:
    """Median wall time of `fn()` in milliseconds (CUDA synchronised around each call)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def open_bench_runtime(name: str, cfg: BenchConfig, workdir: Path) -> Runtime:
    """Open one runtime on the seeded random weights, exporting / building into `workdir` first.

    Files whose manifest is already there are reused, so an interrupted run continues where it stopped.
    """
    encoder_cfg, predictor_cfg = EncoderConfig.from_preset(cfg.encoder), PredictorConfig.from_preset(cfg.predictor)
    base = dict(device=cfg.device, precision=cfg.precision)
    if name.startswith("torch"):
        return open_runtime(RuntimeConfig(kind="torch", encoder_cfg=encoder_cfg, predictor_cfg=predictor_cfg,
                                          compile=name == "torch-compile", cuda_graphs=name == "torch-cudagraph",
                                          allow_random=True, **base))
    from vjepa2_ros.engines.manifest import artifact_name, manifest_path
    from vjepa2_ros.engines.onnx_export import ExportConfig, export_onnx
    from vjepa2_ros.model.factory import build_model
    names = [artifact_name("encoder", cfg.precision, None, "onnx"),
             artifact_name("predictor", cfg.precision, cfg.steps, "onnx")]
    if not all(manifest_path(workdir / n).is_file() for n in names):
        export_onnx(*build_model(encoder_cfg, predictor_cfg), workdir,
                    ExportConfig(precision=cfg.precision, steps=(cfg.steps,)), "random:seed=0")
    if name == "tensorrt":
        from vjepa2_ros.engines.trt_build import BuildConfig, build_engine, import_tensorrt
        import_tensorrt()
        s = sorted(cfg.samples)
        build = BuildConfig(samples=(s[0], s[len(s) // 2], s[-1]), batch=(1, 1, 1))
        for n in names:
            if not manifest_path(workdir / n.replace(".onnx", ".engine")).is_file():
                build_engine(workdir / n, build, cfg.device)
    return open_runtime(RuntimeConfig(kind=name, engine_dir=str(workdir), **base))


def run(cfg: BenchConfig, progress: Callable[[str], None] = print, workdir: Path | None = None) -> list[Row]:
    """Measure every runtime of `cfg`; ONNX / TensorRT files go to `workdir` (default: a temporary one)."""
    encoder_cfg, predictor_cfg = EncoderConfig.from_preset(cfg.encoder), PredictorConfig.from_preset(cfg.predictor)
    if cfg.steps > predictor_cfg.max_steps:
        raise ConfigError(f"steps {cfg.steps} exceeds the predictor's {predictor_cfg.max_steps}")
    cuda = cfg.device.startswith("cuda")
    dtype = RuntimeConfig(precision=cfg.precision).dtype
    gh, gw = encoder_cfg.grid()
    g = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, gh * encoder_cfg.patch_size, gw * encoder_cfg.patch_size, generator=g)
    n, D, T = predictor_cfg.tokens_per_frame, predictor_cfg.embed_dim, cfg.steps
    calls: dict[str, tuple[torch.Tensor, ...]] = {"encode B=1": (image,)}
    for S in cfg.samples:
        calls[f"predict S={S} T={T}"] = (torch.randn(S, T * n, D, generator=g),
                                         0.05 * torch.randn(S, T, 7, generator=g), torch.randn(S, T, 7, generator=g))
    calls = {k: tuple(t.to(cfg.device, dtype) for t in v) for k, v in calls.items()}
    rows: list[Row] = []
    eager: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("torch",) + tuple(r for r in cfg.runtimes if r != "torch"):
            try:
                progress(f"opening    {name}")
                runtime = open_bench_runtime(name, cfg, Path(workdir or tmp))
            except (Vjepa2RosError, ImportError) as e:
                progress(f"skipped    {name}: {str(e).splitlines()[0]}")
                continue
            for call, inputs in calls.items():
                fn = (lambda r=runtime, x=inputs: r.encode(*x)) if call.startswith("encode") else \
                     (lambda r=runtime, x=inputs: r.predict(*x))
                ms = median_ms(fn, cfg.repeats, cfg.warmup, cuda)
                if name == "torch":
                    eager[call] = ms
                rows.append(Row(name, call, ms, eager[call] / ms if call in eager else None))
                progress(f"measured   {name:<16} {call:<20} {ms:9.3f} ms")
            runtime.release()
    return rows


def table(rows: list[Row], cfg: BenchConfig) -> str:
    lines = [f"engines bench: {cfg.encoder} + {cfg.predictor}, {cfg.precision}, device {cfg.device}, "
             f"median of {cfg.repeats} calls",
             f"{'runtime':<16} {'call':<20} {'median ms':>10} {'vs torch eager':>15}"]
    for r in rows:
        ratio = ("-" if r.speedup is None else "baseline" if r.runtime == "torch" else
                 f"{r.speedup:.2f}x faster" if r.speedup >= 1 else f"{1 / r.speedup:.2f}x slower")
        lines.append(f"{r.runtime:<16} {r.call:<20} {r.median_ms:>10.3f} {ratio:>15}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = BenchConfig()
    parser.add_argument("--encoder", default=d.encoder, help="encoder preset")
    parser.add_argument("--predictor", default=d.predictor, help="predictor preset")
    parser.add_argument("--device", default=d.device)
    parser.add_argument("--precision", choices=PRECISIONS, default=d.precision)
    parser.add_argument("--samples", type=int, nargs="+", default=list(d.samples))
    parser.add_argument("--steps", type=int, default=d.steps, help="predictor time steps T per call")
    parser.add_argument("--repeats", type=int, default=d.repeats)
    parser.add_argument("--warmup", type=int, default=d.warmup)
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(d.runtimes),
                        help="torch eager is always measured (the baseline)")
    parser.add_argument("--json", type=Path, help="also write the rows and the configuration here")


def main(args: argparse.Namespace) -> int:
    cfg = BenchConfig(encoder=args.encoder, predictor=args.predictor, device=args.device, precision=args.precision,
                      samples=tuple(args.samples), steps=args.steps, repeats=args.repeats, warmup=args.warmup,
                      runtimes=tuple(args.runtimes))
    print(f"bench engines: {cfg.encoder} + {cfg.predictor} with seeded RANDOM weights (latency only; no checkpoint "
          f"is read)", flush=True)
    rows = run(cfg)
    print(table(rows, cfg))
    if args.json:
        args.json.write_text(json.dumps({"config": asdict(cfg), "rows": [asdict(r) for r in rows]}, indent=2))
    return 0
