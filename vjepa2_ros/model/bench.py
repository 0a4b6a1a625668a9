"""`vjepa2-ros bench model`: parameters and FLOPs of the released sizes, and a measured CPU time
for the tiny config."""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vjepa2_ros.model.config import EncoderConfig, PredictorConfig
from vjepa2_ros.model.encoder import VJEPA2Encoder
from vjepa2_ros.model.flops import encoder_flops, predictor_step_flops
from vjepa2_ros.model.predictor import ACPredictor

RELEASED = ("vit_large", "vit_huge", "vit_giant", "vit_giant_384")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per measurement (median reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--samples", default="1,64,800", help="comma-separated sample counts for the predictor step")


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def median_time_s(fn, repeats: int) -> float:
    fn()                                                    # warm-up (allocations, kernel selection)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    print("Released sizes (built on the meta device; FLOPs = 2 per multiply-add)\n")
    print(f"{'model':<16}{'params':>16}{'img':>6}{'tokens':>8}{'GFLOP/frame':>14}")
    for name in RELEASED:
        cfg = EncoderConfig.from_preset(name)
        with torch.device("meta"):
            params = count_params(VJEPA2Encoder(cfg))
        gh, gw = cfg.grid()
        print(f"{name:<16}{params:>16,}{cfg.img_size:>6}{gh * gw:>8}{encoder_flops(cfg) / 1e9:>14.1f}")
    pcfg = PredictorConfig.ac_vit_giant()
    with torch.device("meta"):
        params = count_params(ACPredictor(pcfg))
    print(f"\n{'predictor':<16}{'params':>16}{'tokens/step':>13}{'GFLOP/step/sample':>19}")
    print(f"{'ac_vit_giant':<16}{params:>16,}{pcfg.tokens_per_frame + 2:>13}"
          f"{predictor_step_flops(pcfg) / 1e9:>19.1f}")

    enc_cfg, pred_cfg = EncoderConfig.tiny(), PredictorConfig.tiny()
    enc, pred = VJEPA2Encoder(enc_cfg).eval(), ACPredictor(pred_cfg).eval()
    n = pred_cfg.tokens_per_frame
    print(f"\nMeasured on this CPU ({torch.get_num_threads()} threads), tiny config "
          f"(encoder {count_params(enc):,} params, predictor {count_params(pred):,}), float32, median of {args.repeats}:")
    print(f"{'call':<34}{'ms':>10}{'GFLOP/s':>10}")
    with torch.inference_mode():
        image = torch.randn(1, 3, enc_cfg.img_size, enc_cfg.img_size)
        t = median_time_s(lambda: enc(image), args.repeats)
        print(f"{'encoder, 1 frame':<34}{t * 1e3:>10.2f}{encoder_flops(enc_cfg) / t / 1e9:>10.2f}")
        for samples in (int(v) for v in args.samples.split(",")):
            z = torch.randn(samples, n, enc_cfg.embed_dim)
            a = torch.zeros(samples, 1, 7)
            t = median_time_s(lambda: pred(z, a, a), max(3, args.repeats // (1 + samples // 64)))
            flops = samples * predictor_step_flops(pred_cfg)
            print(f"{f'predictor step, S={samples}':<34}{t * 1e3:>10.2f}{flops / t / 1e9:>10.2f}")
    return 0
