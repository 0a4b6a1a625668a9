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

from vjepa2_ros.training.config import TrainConfig, make_example_config
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


@dataclasses.dataclass(frozen=True)
class Row:
    mode: str
    steps_per_s: float
    input_bytes: int            # one clip in a batch (float32)
    cache_bytes_per_frame: float | None
    peak_gpu_bytes: int


def run_modes(args: argparse.Namespace, work: Path) -> tuple[TrainConfig, list[Row], float]:
    """Train the same tiny model online, online from RAM, and on cached latents; returns the rows
    and the cache build time (s)."""
    from vjepa2_ros.data.droid import read_droid_episode, write_droid_episode
    from vjepa2_ros.data.episode import make_example_episode

    root = work / "episodes"
    for i in range(args.episodes):
        if not (root / f"ep{i:03d}" / "trajectory.h5").is_file():
            write_droid_episode(root / f"ep{i:03d}", make_example_episode(
                steps=args.episode_steps, height=args.camera[0], width=args.camera[1], seed=i))
    base = make_example_config(work, (root,), encoder={"preset": "vit_tiny", "depth": args.encoder_depth},
                               steps=args.steps, batch_size=args.batch_size, warmup_steps=args.steps // 10,
                               anneal_steps=args.steps // 10, log_every=args.steps, ckpt_every=10 * args.steps,
                               device=args.device, cache_dtype="float16")
    online = train(dataclasses.replace(base, out_dir=str(work / "online")), progress=False)
    # the same without reading files: episodes decoded once and held in memory (the encoder's share)
    episodes = [read_droid_episode(p, step_s=base.step_s) for p in sorted(root.iterdir())]
    resident = train(dataclasses.replace(base, out_dir=str(work / "resident")), memory_loaders(episodes),
                     progress=False)
    cached = train(dataclasses.replace(base, out_dir=str(work / "cached"), cache_latents=True,
                                       cache_dir=str(work / "latents")), progress=False)

    F, c = base.clip_frames, base.crop_size
    n, D = base.predictor_config().tokens_per_frame, base.encoder_config().embed_dim
    disk = sum(p.stat().st_size for p in (work / "latents").glob("*.latents.npy"))
    frames = 3 * F * c * c * 4
    rows = [Row("online encoding", online.steps_per_s, frames, None, online.peak_cuda_bytes),
            Row("online, in RAM", resident.steps_per_s, frames, None, resident.peak_cuda_bytes),
            Row("cached latents", cached.steps_per_s, F * n * D * 4, disk / (args.episodes * args.episode_steps),
                cached.peak_cuda_bytes)]
    return base, rows, cached.cache_build_s


def main(args: argparse.Namespace) -> int:
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg, rows, build_s = run_modes(args, Path(args.workdir or tmp))
    finally:
        torch.set_num_threads(threads)
    cuda = args.device != "cpu" and torch.cuda.is_available()
    enc = cfg.encoder_config()
    print(f"bench train: tiny encoder depth {enc.depth} + predictor depth {cfg.predictor_config().depth}, width "
          f"{enc.embed_dim}, {cfg.crop_size} px, clips of {cfg.clip_frames} frames, batch {args.batch_size}, "
          f"{args.steps} steps per mode, {args.episodes} episodes of {args.episode_steps} steps at "
          f"{args.camera[1]}x{args.camera[0]} px; device {torch.cuda.get_device_name() if cuda else 'cpu'}, "
          f"{args.threads} CPU threads")
    print(f"{'mode':<18}{'steps/s':>10}{'speed-up':>10}{'input/sample':>14}{'cache/frame':>13}{'peak GPU/batch':>16}")
    for r in rows:
        cache = _bytes(r.cache_bytes_per_frame) if r.cache_bytes_per_frame is not None else "-"
        gpu = _bytes(r.peak_gpu_bytes / args.batch_size) if r.peak_gpu_bytes else "-"
        print(f"{r.mode:<18}{r.steps_per_s:>10.2f}{r.steps_per_s / rows[0].steps_per_s:>9.1f}x"
              f"{_bytes(r.input_bytes):>14}{cache:>13}{gpu:>16}")
    print(f"cache build (every frame encoded once): {build_s:.2f} s = {build_s * rows[-1].steps_per_s:.0f} cached steps")
    F = cfg.clip_frames
    print(f"at the released size (ViT-g, 256 px, 256 tokens x 1408): input per sample {_bytes(3 * F * 256 * 256 * 4)} "
          f"online vs {_bytes(F * 256 * 1408 * 4)} cached (float32 in the batch); cache on disk "
          f"{_bytes(256 * 1408 * 2)} per frame (float16)")
    return 0
