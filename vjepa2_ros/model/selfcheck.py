"""`vjepa2-ros selfcheck`: load a checkpoint (or build a random tiny model), report what was found,
and run one encode + one predictor step on a synthetic frame."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from vjepa2_ros.model.checkpoint import read_checkpoint, sha256_file
from vjepa2_ros.model.config import EncoderConfig, PredictorConfig
from vjepa2_ros.model.factory import build_model, check_random_weights
from vjepa2_ros.model.latents import normalize_latents
from vjepa2_ros.model.preprocess import PreprocessConfig, preprocess_frames


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, help="AC checkpoint (.pt or .safetensors); default: random tiny model")
    parser.add_argument("--encoder-checkpoint", type=Path, help="separate encoder file (default: the AC file's own)")
    parser.add_argument("--encoder", default=None, help="encoder preset (default: vit_giant with a checkpoint, else vit_tiny)")
    parser.add_argument("--predictor", default=None, help="predictor preset (default: ac_vit_giant / ac_tiny)")
    parser.add_argument("--device", default="cpu")


def main(args: argparse.Namespace) -> int:
    real = args.checkpoint is not None
    enc_cfg = EncoderConfig.from_preset(args.encoder or ("vit_giant" if real else "vit_tiny"))
    pred_cfg = PredictorConfig.from_preset(args.predictor or ("ac_vit_giant" if real else "ac_tiny"))
    if not real:                                     # the first line says so; large random networks are refused
        n = check_random_weights(enc_cfg, pred_cfg, None, args.encoder_checkpoint)
        print(f"no checkpoint given: randomly initialised networks, {n / 1e6:.2f} M parameters (pass --checkpoint "
              f"for real weights)")
    for path in filter(None, (args.checkpoint, args.encoder_checkpoint)):
        size = path.stat().st_size if path.is_file() else 0
        print(f"file       {path}  {size / 1e9:.2f} GB  sha256 {sha256_file(path) if size else '-'}")
    if real:
        raw = read_checkpoint(args.checkpoint)
        for name, value in raw.items():
            if isinstance(value, Mapping):
                tensors = [v for v in value.values() if isinstance(v, torch.Tensor)]
                print(f"  [{name}] {len(tensors)} tensors, {sum(v.numel() for v in tensors):,} values, dtypes "
                      f"{sorted({str(v.dtype).replace('torch.', '') for v in tensors})}")
    t0 = time.perf_counter()
    encoder, predictor = build_model(enc_cfg, pred_cfg, args.checkpoint, args.encoder_checkpoint)
    encoder, predictor = encoder.to(args.device), predictor.to(args.device)
    print(f"loaded     encoder {enc_cfg.embed_dim}x{enc_cfg.depth} ({sum(p.numel() for p in encoder.parameters()):,} params), "
          f"predictor {pred_cfg.predictor_embed_dim}x{pred_cfg.depth} ({sum(p.numel() for p in predictor.parameters()):,} "
          f"params), strict key and shape check passed, {time.perf_counter() - t0:.1f} s")
    # A synthetic 16:9 camera frame: a gradient with a bright square, through the planner's preprocessing.
    frame = np.zeros((180, 320, 3), np.uint8)
    frame[..., 0] = np.linspace(0, 255, 320, dtype=np.uint8)[None]
    frame[60:120, 140:200] = 255
    size = enc_cfg.img_size if isinstance(enc_cfg.img_size, int) else enc_cfg.img_size[0]
    x = preprocess_frames(frame, PreprocessConfig(crop_size=size), device=args.device)    # 3, 1, S, S
    with torch.inference_mode():
        t0 = time.perf_counter()
        z = normalize_latents(encoder(x[:, 0].unsqueeze(0)))                              # 1, N, D
        t_enc = time.perf_counter() - t0
        state = torch.tensor([[[0.36, 0.0, 0.39, 3.14, 0.0, 0.0, 0.0]]], device=args.device)
        action = torch.tensor([[[0.02, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]], device=args.device)
        t0 = time.perf_counter()
        z_next = normalize_latents(predictor(z, action, state))
        t_pred = time.perf_counter() - t0
    ok = bool(torch.isfinite(z).all() and torch.isfinite(z_next).all())
    print(f"encode     {tuple(z.shape)} in {t_enc * 1e3:.1f} ms; predict {tuple(z_next.shape)} in {t_pred * 1e3:.1f} ms; "
          f"|z_next - z| mean {float((z_next - z).abs().mean()):.4f}; finite: {ok}")
    print("selfcheck " + ("passed" if ok else "FAILED: non-finite outputs"))
    return 0 if ok else 1
