"""`vjepa2-ros build-engines`: ONNX graphs of one precision -> TensorRT engines, with manifests (GPU hosts).

    vjepa2-ros build-engines --engine-dir models/engines --precision bfloat16 --samples 1 256 800
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from vjepa2_ros.engines.manifest import PRECISIONS
from vjepa2_ros.engines.trt_build import BuildConfig, build_engine, import_tensorrt
from vjepa2_ros.errors import EngineError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine-dir", type=Path, default=Path("models/engines"),
                        help="directory with the ONNX graphs from `vjepa2-ros export`; engines are written beside them")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32", help="which exported graphs to build")
    parser.add_argument("--samples", type=int, nargs=3, default=[1, 256, 800], metavar=("MIN", "OPT", "MAX"),
                        help="predictor profile: candidate action sequences per call")
    parser.add_argument("--batch", type=int, nargs=3, default=[1, 1, 8], metavar=("MIN", "OPT", "MAX"),
                        help="encoder profile: images per call")
    parser.add_argument("--workspace-gib", type=float, default=8.0)
    parser.add_argument("--timing-cache", type=Path, help="default: <engine-dir>/timing.cache")
    parser.add_argument("--device", default="cuda")


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    cfg = BuildConfig(samples=tuple(args.samples), batch=tuple(args.batch), workspace_gib=args.workspace_gib,
                      timing_cache=None if args.timing_cache is None else str(args.timing_cache))
    trt = import_tensorrt()
    graphs = sorted(p for p in args.engine_dir.glob(f"*-{args.precision}.onnx")
                    if not p.name.startswith("predictor-step-"))          # step graphs are for ONNX Runtime
    if not graphs:
        raise EngineError(f"{args.engine_dir} has no *-{args.precision}.onnx graphs; make them with "
                          f"`vjepa2-ros export --out {args.engine_dir} --precision {args.precision}`")
    rebuild = shlex.join(["vjepa2-ros", "build-engines", "--engine-dir", str(args.engine_dir), "--precision",
                          args.precision, "--samples", *map(str, args.samples), "--batch", *map(str, args.batch),
                          "--workspace-gib", str(args.workspace_gib), "--device", args.device])
    print(f"TensorRT {trt.__version__}: building {len(graphs)} engines from {args.engine_dir} "
          f"(samples {cfg.samples}, batch {cfg.batch}); this takes minutes per engine", flush=True)
    for graph in tqdm(graphs, desc="build engines", unit="engine"):
        started = time.monotonic()
        out = build_engine(graph, cfg, args.device, rebuild)
        tqdm.write(f"built      {out}  ({out.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - started:.0f} s")
    return 0
