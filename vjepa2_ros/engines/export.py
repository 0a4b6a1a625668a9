"""`vjepa2-ros export`: checkpoint -> ONNX encoder and fixed-T predictor graphs, each with a manifest.

    vjepa2-ros export --checkpoint models/vjepa2-ac-vitg.pt --out models/engines --precision bfloat16 --steps 1 2
    vjepa2-ros export --random --encoder vit_tiny --predictor ac_tiny --out /tmp/engines     # no weights needed
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from vjepa2_ros.engines.manifest import PRECISIONS, weights_id
from vjepa2_ros.engines.onnx_export import ExportConfig, export_onnx
from vjepa2_ros.errors import ConfigError
from vjepa2_ros.model.config import EncoderConfig, PredictorConfig
from vjepa2_ros.model.factory import build_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, help="AC checkpoint (.pt or .safetensors)")
    parser.add_argument("--encoder-checkpoint", type=Path, help="separate encoder file (default: the AC file's own)")
    parser.add_argument("--random", action="store_true", help="export seeded random weights (benchmarks, GPU checks)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--encoder", default="vit_giant", help="encoder preset (default: vit_giant)")
    parser.add_argument("--predictor", default="ac_vit_giant", help="predictor preset (default: ac_vit_giant)")
    parser.add_argument("--img-size", type=int, help="override both presets' image size (pixels)")
    parser.add_argument("--out", type=Path, default=Path("models/engines"), help="engine directory to write")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2],
                        help="predictor graphs to write, one per number of time steps T")
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument("--step-graphs", action="store_true",
                        help="also KV-cached predictor step graphs for steps 1..max(--steps) (ONNX Runtime rollouts)")


def rebuild_command(args: argparse.Namespace) -> str:
    """The command line that writes the same files again (stored in every manifest)."""
    words = ["vjepa2-ros", "export"]
    for flag, value in (("--checkpoint", args.checkpoint), ("--encoder-checkpoint", args.encoder_checkpoint),
                        ("--encoder", args.encoder), ("--predictor", args.predictor), ("--img-size", args.img_size),
                        ("--out", args.out), ("--precision", args.precision), ("--opset", args.opset)):
        if value is not None:
            words += [flag, str(value)]
    if args.random:
        words += ["--random", "--seed", str(args.seed)]
    if args.step_graphs:
        words += ["--step-graphs"]
    words += ["--steps", *map(str, args.steps)]
    return shlex.join(words)


def main(args: argparse.Namespace) -> int:
    if (args.checkpoint is None) == (not args.random):
        raise ConfigError("give --checkpoint (the AC checkpoint to export) or --random (seeded random weights), "
                          "not both or neither")
    overrides = {} if args.img_size is None else {"img_size": args.img_size}
    enc_cfg = EncoderConfig.from_preset(args.encoder, **overrides)
    pred_cfg = PredictorConfig.from_preset(args.predictor, **overrides)
    cfg = ExportConfig(precision=args.precision, steps=tuple(args.steps), opset=args.opset,
                       step_graphs=args.step_graphs)
    for t in cfg.steps:
        if t > pred_cfg.max_steps:
            raise ConfigError(f"--steps {t} exceeds the predictor's {pred_cfg.max_steps} steps")
    started = time.monotonic()
    print(f"loading    encoder {args.encoder}, predictor {args.predictor}"
          f"{'' if args.checkpoint is None else f' from {args.checkpoint}'}", flush=True)
    encoder, predictor = build_model(enc_cfg, pred_cfg, args.checkpoint, args.encoder_checkpoint, seed=args.seed)
    print("hashing    checkpoint(s) for the manifests", flush=True)
    weights = weights_id(args.checkpoint, args.seed)
    enc_weights = weights_id(args.encoder_checkpoint) if args.encoder_checkpoint else None
    paths = export_onnx(encoder, predictor, args.out, cfg, weights, enc_weights, rebuild_command(args), progress=True)
    for path in paths:
        print(f"wrote      {path}  ({path.stat().st_size / 1e6:.1f} MB) + {path.name}.manifest.json")
    print(f"exported   {len(paths)} graphs in {time.monotonic() - started:.1f} s")
    return 0
