"""`vjepa2-ros bench control`: is the command stream on time while the planner works flat out?

Runs the control loop in real time on the simulated arm (physics in its own thread tracking the
wall clock): a baseline with no goal (the command thread alone, holding), then one run per
planner placement with a goal and `plan_period_s = 0` (plans back to back): "inline" (a thread
of the control process, sharing its GIL) and "process" (control.planner_process: a child
process). Reports the command period p50/p99/max, the jitter |period - 1/rate|, the achieved
rate and the plan time for each, measured node-side (the tick start times of the loop).
Targets (issue 15): p99 jitter <= 2 ms with the process planner, its plans within 1.5x of inline.
`--wide` swaps in a ViT-L-width predictor (random weights) to load the CPU with a larger model.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import threading
import time
from pathlib import Path

import numpy as np

from vjepa2_ros.control.config import StackConfig, load_config
from vjepa2_ros.control.stack import build_backend, build_loop, build_planner
from vjepa2_ros.robot.backend import Camera, CameraFrame

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "sim_demo.yaml"
TARGET_RATE_HZ = 100.0
TARGET_P99_JITTER_MS = 2.0
TARGET_PLAN_RATIO = 1.5
PLACEMENTS = ("inline", "process")
# --wide: the largest predictor width of the released family that plans at all on 2 CPU cores
# (ViT-L: 1024 wide, 16 heads; 2 blocks, 64 tokens: ~3 GFLOP per sample), random weights.
WIDE_MODEL = {"encoder": {"preset": "vit_tiny", "patch_size": 8, "embed_dim": 1024, "num_heads": 16, "depth": 1},
              "predictor": {"preset": "ac_tiny", "patch_size": 8, "embed_dim": 1024, "predictor_embed_dim": 1024,
                            "num_heads": 16, "depth": 2},
              "checkpoint": None, "encoder_checkpoint": None}
WIDE_CEM = {"samples": 32, "topk": 4, "iterations": 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG, help="stack YAML (default: config/sim_demo.yaml)")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each run (default 5 s)")
    parser.add_argument("--rate-hz", type=float, default=None, help="override control.rate_hz")
    parser.add_argument("--planner", choices=PLACEMENTS + ("both",), default="both",
                        help="where the planner runs: a thread of the control process, a child process, or both runs")
    parser.add_argument("--wide", action="store_true",
                        help="a ViT-L-width predictor (1024 wide, 2 blocks, random weights; CEM 32 x 2) instead of "
                             "the config's model")


def period_stats(stamps: np.ndarray, rate_hz: float) -> dict[str, float]:
    """Command tick start times [N] (s) -> period and jitter percentiles (ms) and achieved rate (Hz)."""
    periods = np.diff(np.asarray(stamps, dtype=np.float64)) * 1e3
    jitter = np.abs(periods - 1e3 / rate_hz)
    return {"ticks": float(len(stamps)), "rate_hz": 1e3 / float(np.mean(periods)),
            "period_p50_ms": float(np.percentile(periods, 50)), "period_p99_ms": float(np.percentile(periods, 99)),
            "period_max_ms": float(np.max(periods)), "jitter_p50_ms": float(np.percentile(jitter, 50)),
            "jitter_p99_ms": float(np.percentile(jitter, 99)), "jitter_max_ms": float(np.max(jitter))}


class CameraThread(Camera):
    """Frames arrive at `fps` from a driver thread and `read_latest` returns the newest at once,
    like a ROS camera subscription (the sim camera itself renders on demand, 13-35 ms here, which
    would put rendering time inside the planner's step)."""

    def __init__(self, source: Camera, fps: float = 15.0) -> None:
        self._source, self._period_s = source, 1.0 / fps
        self._latest: CameraFrame | None = None
        self._running = threading.Event()
        self._running.set()
        self._grab()
        self._thread = threading.Thread(target=self._run, name="bench-camera", daemon=True)
        self._thread.start()

    def _grab(self) -> None:
        self._latest = self._source.read_latest()

    def _run(self) -> None:
        next_s = time.monotonic()
        while self._running.is_set():
            self._grab()
            next_s += self._period_s
            time.sleep(max(0.0, next_s - time.monotonic()))

    def read_latest(self) -> CameraFrame | None:
        return self._latest

    def close(self) -> None:
        self._running.clear()
        self._thread.join()


def run_once(cfg: StackConfig, planner, seconds: float, with_goal: bool) -> dict[str, float]:
    """One real-time run; returns period stats plus plans/s."""
    backend = build_backend(cfg, real_time=True, camera_width=64, camera_height=64)
    backend.connect()
    camera = CameraThread(backend.camera())
    try:
        loop = build_loop(cfg, planner, backend, camera)
        if with_goal:                                      # "stay here": small random moves, never far
            loop.set_goal_image(camera.read_latest().image)
        else:
            planner.clear_goal()
        loop.start()
        time.sleep(0.5)                                    # settle: threads started, caches warm
        skip, plans0 = len(loop.tick_stamps), loop.plan_count
        time.sleep(seconds)
        stamps = np.array(list(loop.tick_stamps)[skip:])
        plans = loop.plan_count - plans0
        state, reason = loop.state, loop.reason
        loop.stop()
        stats = period_stats(stamps, cfg.control.rate_hz)
        stats["plans_per_s"] = plans / seconds
        stats["plan_ms"] = 1e3 * seconds / plans if plans else float("nan")
        stats["state"] = f"{state.value} ({reason})" if state.value == "fault" else state.value
        stats["fifo"] = loop.realtime_priority
        return stats
    finally:
        camera.close()
        backend.disconnect()


def bench_config(args: argparse.Namespace) -> StackConfig:
    """The config's model and planner (or --wide's), planning flat out on the real-time sim."""
    cfg = load_config(args.config)
    if args.wide:
        model = dataclasses.replace(cfg.model, **WIDE_MODEL)
        cfg = dataclasses.replace(cfg, model=model, planning=dataclasses.replace(cfg.planning, **WIDE_CEM))
    control = dataclasses.replace(cfg.control, plan_period_s=0.0, backend="sim", dry_run=False, record_dir=None,
                                  rate_hz=args.rate_hz or cfg.control.rate_hz)
    # Small steps: a random model must not walk the arm out of the workspace mid-run.
    return dataclasses.replace(cfg, control=control, planning=dataclasses.replace(cfg.planning, maxnorm=0.01))


def main(args: argparse.Namespace) -> int:
    cfg = bench_config(args)
    placements = PLACEMENTS if args.planner == "both" else (args.planner,)
    load = os.getloadavg()
    runs: dict[str, dict] = {}
    for placement in placements:
        cfg_p = dataclasses.replace(cfg, control=dataclasses.replace(cfg.control,
                                                                     planner_process=placement == "process"))
        planner = build_planner(cfg_p)
        try:
            if not runs:
                runs["baseline (no planning)"] = run_once(cfg_p, planner, args.seconds, with_goal=False)
            runs[f"{placement}: planner flat out"] = run_once(cfg_p, planner, args.seconds, with_goal=True)
        finally:
            planner.close()
    base = runs["baseline (no planning)"]
    fifo = any(r["fifo"] for r in runs.values())
    print(f"bench control: {cfg.control.rate_hz:.0f} Hz command stream, {args.seconds:.1f} s per run, "
          f"model {cfg.model.encoder}/{cfg.model.predictor} ({cfg.model.runtime}, {cfg.model.device}), "
          f"CEM {cfg.planning.samples} samples x {cfg.planning.iterations} iterations; command thread "
          f"{'SCHED_FIFO ' + str(cfg.control.command_priority) if fifo else 'normal priority'}, planner "
          f"nice {cfg.control.planner_nice}, planner process threads {cfg.control.planner_threads or 'default'}, "
          f"GIL switch interval {cfg.control.gil_switch_interval_s} s")
    cols = ["rate_hz", "period_p50_ms", "period_p99_ms", "period_max_ms", "jitter_p50_ms", "jitter_p99_ms",
            "jitter_max_ms", "plans_per_s", "plan_ms"]
    print(f"load average before/after: {load[0]:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
          f"(other processes share these cores)")
    print(f"{'run':<28}" + "".join(f"{c:>14}" for c in cols))
    for name, s in runs.items():
        print(f"{name:<28}" + "".join(f"{s[c]:>14.2f}" for c in cols) + f"   end state: {s['state']}")
    for placement in placements:
        loaded = runs[f"{placement}: planner flat out"]
        ok = loaded["rate_hz"] >= TARGET_RATE_HZ * 0.99 and loaded["jitter_p99_ms"] <= TARGET_P99_JITTER_MS
        print(f"{placement}: p99 jitter loaded / baseline {loaded['jitter_p99_ms'] / max(base['jitter_p99_ms'], 1e-6):.2f}x;"
              f" target >= {TARGET_RATE_HZ:.0f} Hz and p99 jitter <= {TARGET_P99_JITTER_MS:.1f} ms: "
              f"{'met' if ok else 'NOT met'}")
    if len(placements) == 2:
        ratio = runs["process: planner flat out"]["plan_ms"] / runs["inline: planner flat out"]["plan_ms"]
        print(f"plan time process / inline: {ratio:.2f}x; target <= {TARGET_PLAN_RATIO}: "
              f"{'met' if ratio <= TARGET_PLAN_RATIO else 'NOT met'}")
    return 0
