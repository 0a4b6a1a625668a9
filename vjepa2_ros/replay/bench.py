"""`vjepa2-ros bench data`: video decode rate, bag throughput and replay steps/s, as a table.

Decoding is compared with a baseline measured in the same process: PyAV decoding every frame
single-threaded and converting each to RGB (the straightforward loop). Inputs are generated
here (H.264 MP4 of synthetic frames, a simulated episode when MuJoCo is available, else
synthetic frames), so the numbers need no dataset.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from vjepa2_ros.data.bags import read_bag_episode, write_episode_bag
from vjepa2_ros.data.episode import make_example_episode
from vjepa2_ros.data.video import parse_size, read_frames, write_frames


def _best_of(repeats: int, fn) -> float:
    """Shortest wall time of `repeats` runs (s): the least disturbed by other processes."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _baseline_decode(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for frame in container.decode(video=0) if frame.to_ndarray(format="rgb24") is not None)


def bench_decode(tmp: Path, frames: int, size: tuple[int, int], repeats: int) -> list[tuple[str, float, str]]:
    h, w = size
    video = tmp / "bench.mp4"
    write_frames(video, make_example_episode(steps=frames, height=h, width=w, step_s=1 / 15).frames, fps=60.0)
    base = _best_of(repeats, lambda: _baseline_decode(video))
    every = _best_of(repeats, lambda: read_frames(video, expected_count=frames))
    sparse_rows = np.arange(0, frames, 4)                         # ~4 Hz out of 15 Hz
    sparse = _best_of(repeats, lambda: read_frames(video, sparse_rows))
    small = _best_of(repeats, lambda: read_frames(video, sparse_rows, size=(h // 2, w // 2)))
    return [
        (f"decode {w}x{h}: baseline (PyAV, 1 thread, RGB every frame)", frames / base, "1.00x"),
        (f"decode {w}x{h}: read_frames, every frame", frames / every, f"{base / every:.2f}x"),
        (f"decode {w}x{h}: read_frames, every 4th frame (4 Hz of 15 Hz)", frames / sparse, f"{base / sparse:.2f}x"),
        (f"decode {w}x{h}: read_frames, every 4th, resized to {w // 2}x{h // 2}", frames / small, f"{base / small:.2f}x"),
    ]


def bench_bags(tmp: Path, frames: int, size: tuple[int, int]) -> list[tuple[str, float, str]]:
    h, w = size
    episode = make_example_episode(steps=frames, height=h, width=w, step_s=1 / 15)
    rows = []
    for compressed in (False, True):
        kind = "jpeg" if compressed else "raw rgb8"
        bag = tmp / f"bag_{kind.replace(' ', '_')}"
        t0 = time.perf_counter()
        write_episode_bag(bag, episode, compressed=compressed)
        t1 = time.perf_counter()
        read_bag_episode(bag)
        t2 = time.perf_counter()
        rows.append((f"bag write, mcap {kind} {w}x{h}", frames / (t1 - t0), ""))
        rows.append((f"bag read, mcap {kind} {w}x{h}", frames / (t2 - t1), ""))
    return rows


def bench_replay(tmp: Path, steps: int) -> list[tuple[str, float, str]]:
    from vjepa2_ros.planning.cem import CEMConfig
    from vjepa2_ros.planning.world_model import WorldModel
    from vjepa2_ros.replay.run import ReplayConfig, replay_episode
    try:
        from vjepa2_ros.data.droid import read_droid_episode
        from vjepa2_ros.data.generate import generate_episodes
        episode = read_droid_episode(generate_episodes(tmp / "sim", count=1, steps=steps, seed=0)[0])
        what = "sim episode"
    except ImportError:                                            # no MuJoCo: synthetic frames
        episode, what = make_example_episode(steps=steps), "synthetic episode"
    world_model = WorldModel.tiny(seed=0)
    rows = []
    for label, cem in (("CEM 16 samples x 2 iterations", CEMConfig(samples=16, topk=4, iterations=2)),
                       ("CEM paper setting (800 x 10)", CEMConfig())):
        cfg = ReplayConfig(goal_offset=2, horizon=2, landscape_steps=())
        t0 = time.perf_counter()
        result = replay_episode(episode, world_model, cem, cfg)
        wall = time.perf_counter() - t0
        plan = sum(r["plan_time_s"] for r in result.rows)
        rows.append((f"replay, tiny model, {label}, {what}", len(result.rows) / wall,
                     f"planning {100 * plan / wall:.0f} % of the time"))
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=300, help="frames in the decode benchmark video")
    parser.add_argument("--size", default="180x320", help="frame HEIGHTxWIDTH")
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs per decode measurement")
    parser.add_argument("--replay-steps", type=int, default=12, help="model steps of the replayed episode")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for replay (default: torch's)")


def main(args: argparse.Namespace) -> int:
    size = parse_size(args.size)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"host: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
          f"PyAV {av.__version__}")
    with tempfile.TemporaryDirectory(prefix="vjepa2-bench-data-") as tmp:
        rows = bench_decode(Path(tmp), args.frames, size, args.repeats)
        rows += bench_bags(Path(tmp), min(args.frames, 150), size)
        rows += bench_replay(Path(tmp), args.replay_steps)
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'per second':>12}  vs baseline")
    for name, rate, note in rows:
        unit = "steps/s" if name.startswith("replay") else "frames/s"
        print(f"{name:<{width}}  {rate:8.1f} {unit:<8} {note}")
    return 0
