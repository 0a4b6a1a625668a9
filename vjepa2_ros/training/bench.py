"""`vjepa2-ros bench train`: training steps/s with online encoding vs cached latents.

Writes small DROID-layout episodes (16:9 camera frames, as recorded), then trains the same tiny
model on them twice in this process: once encoding every clip's frames in each step (reading
and decoding the episode, preprocessing, the frozen encoder), once on latents cached on disk
(encoded once, memory-mapped). A third run keeps the decoded episodes in memory, to separate
reading from encoding. The encoder is deeper than the predictor by the released ratio
(ViT-g 1.01 B vs AC predictor 0.31 B parameters ~ 3.3 : 1), so the encoder's share of a step
resembles the real one. Memory per sample is what one clip costs in a batch and on disk.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import torch

from vjepa2_ros.training.config import TrainConfig
from vjepa2_ros.training.dataset import memory_loaders
from vjepa2_ros.training.train import train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps per mode")
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--episode-steps", type=int, default=24, help="model steps per episode")
    parser.add_argument("--camera", type=int, nargs=2, default=[180, 320], metavar=("H", "W"),
                        help="recorded frame size in pixels")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--encoder-depth", type=int, default=7, help="tiny encoder depth (predictor depth 2)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: stable timings on a shared machine; spinning threads collapse)")
    parser.add_argument("--workdir", help="keep episodes and runs here (default: a temporary directory)")


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return ""


def main(args: argparse.Namespace) -> int:
    from vjepa2_ros.data.droid import read_droid_episode, write_droid_episode
    from vjepa2_ros.data.episode import make_example_episode

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        root = work / "episodes"
        for i in range(args.episodes):
            if not (root / f"ep{i:03d}" / "trajectory.h5").is_file():
                write_droid_episode(root / f"ep{i:03d}", make_example_episode(
                    steps=args.episode_steps, height=args.camera[0], width=args.camera[1], seed=i))
        base = TrainConfig(droid=(str(root),), encoder={"preset": "vit_tiny", "depth": args.encoder_depth},
                           predictor={"preset": "ac_tiny"}, steps=args.steps, batch_size=args.batch_size,
                           lr=1e-3, lr_start=1e-4, warmup_steps=2, anneal_steps=2, log_every=args.steps,
                           ckpt_every=10 * args.steps, tensorboard=False, device=args.device, seed=0,
                           cache_dtype="float16")
        online = train(dataclasses.replace(base, out_dir=str(work / "online")), progress=False)
        # the same without reading files: episodes decoded once and held in memory (the encoder's share)
        in_memory = [read_droid_episode(p, step_s=base.step_s) for p in sorted(root.iterdir())]
        resident = train(dataclasses.replace(base, out_dir=str(work / "resident")), memory_loaders(in_memory),
                         progress=False)
        cached_cfg = dataclasses.replace(base, out_dir=str(work / "cached"), cache_latents=True,
                                         cache_dir=str(work / "latents"))
        cached = train(cached_cfg, progress=False)

        enc, pred = base.encoder_config(), base.predictor_config()
        F, c, n, D = base.clip_frames, base.crop_size, pred.tokens_per_frame, enc.embed_dim
        cache_files = sorted((work / "latents").glob("*.latents.npy"))
        disk = sum(p.stat().st_size for p in cache_files)
        total_frames = args.episodes * args.episode_steps
        rows = [
            ("online encoding", online.steps_per_s, 3 * F * c * c * 4, "-", online.peak_cuda_bytes),
            ("online, in RAM", resident.steps_per_s, 3 * F * c * c * 4, "-", resident.peak_cuda_bytes),
            ("cached latents", cached.steps_per_s, F * n * D * 4, _bytes(disk / total_frames), cached.peak_cuda_bytes),
        ]
    device = "cuda: " + torch.cuda.get_device_name() if (args.device != "cpu" and torch.cuda.is_available()) else "cpu"
    print(f"bench train: tiny encoder depth {args.encoder_depth} + predictor depth 2, width {D}, {c} px, clips of {F} "
          f"frames, batch {args.batch_size}, {args.steps} steps per mode, {args.episodes} episodes of "
          f"{args.episode_steps} steps at {args.camera[1]}x{args.camera[0]} px, device {device}, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"{'mode':<18}{'steps/s':>10}{'speed-up':>10}{'batch input/sample':>20}{'cache/frame':>13}"
          f"{'peak GPU/sample':>17}")
    for name, sps, sample_bytes, per_frame, peak in rows:
        gpu = _bytes(peak / args.batch_size) if peak else "-"
        print(f"{name:<18}{sps:>10.2f}{sps / rows[0][1]:>9.1f}x{_bytes(sample_bytes):>20}{per_frame:>13}{gpu:>17}")
    print(f"cache build (encode {total_frames} frames once): {cached.cache_build_s:.2f} s "
          f"= {cached.cache_build_s * cached.steps_per_s:.0f} cached steps")
    for name, e in (("ViT-g 256 px", 1408),):
        print(f"at the released size ({name}, 256 tokens x {e}): batch input per sample "
              f"{_bytes(3 * F * 256 * 256 * 4)} online vs {_bytes(F * 256 * e * 4)} cached (float32 in the batch); "
              f"cache on disk {_bytes(256 * e * 2)} per frame (float16)")
    return 0
