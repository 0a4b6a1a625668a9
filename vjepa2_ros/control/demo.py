"""`vjepa2-ros demo`: the closed loop on the simulated arm, no robot needed.

Renders a goal image from a target end-effector pose, resets the arm, plans and moves with the
control loop in simulated time, then writes to the output folder:
    demo.mp4 (or demo.gif)   the camera view beside the goal image
    demo.png                 end-effector distance to the goal, and the planner's energy, over time
    summary.json             the numbers of the summary line
    recording/               with --record: every planning step and command (control.recorder)

The model: config/default.yaml's (official weights, engines) when its files are present,
otherwise config/sim_demo.yaml's: the small world model trained in the simulator and shipped in
models/sim_reach/; or the model of --config. A model without a checkpoint is randomly
initialised and will not reach the goal; the demo says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vjepa2_ros.control.config import ModelConfig, StackConfig, load_config
from vjepa2_ros.control.goal_view import goal_view
from vjepa2_ros.control.stack import build_backend, build_loop, build_planner, sim_camera_px
from vjepa2_ros.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
LAB_CONFIG = CONFIG_DIR / "default.yaml"
DEMO_CONFIG = CONFIG_DIR / "sim_demo.yaml"
VIDEO_PX = 256                  # video frames are scaled up (nearest) to at least this height
UNTRAINED_WARNING = ("WARNING: the model has no checkpoint (random weights): it is untrained and will not reach "
                     "the goal. This run shows the control loop, not the model; set model.checkpoint to trained "
                     "weights for a real reach.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="stack YAML whose model and planner to use (default: config/default.yaml when its "
                             "weights are present, else config/sim_demo.yaml); the demo always runs the sim")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs/demo-<UTC time>)")
    parser.add_argument("--seconds", type=float, default=8.0, help="simulated seconds to run (default 8)")
    parser.add_argument("--goal-offset", type=float, nargs=3, default=(0.12, 0.10, -0.12), metavar=("DX", "DY", "DZ"),
                        help="goal end-effector position relative to the start, base frame, m")
    parser.add_argument("--seed", type=int, default=0, help="planner sampling seed")
    parser.add_argument("--video", choices=("mp4", "gif"), default="mp4")
    parser.add_argument("--fps", type=float, default=10.0, help="video frames per simulated second")
    parser.add_argument("--record", action="store_true", help="also write every planning step and command")


def weights_present(model: ModelConfig) -> bool:
    """True when the files the model config names exist (checkpoint; engines for non-torch runtimes)."""
    if model.checkpoint is None or not Path(model.checkpoint).is_file():
        return False
    return model.runtime == "torch" or (model.engine_dir is not None and Path(model.engine_dir).is_dir())


def choose_config(path: Path | None) -> tuple[StackConfig, str]:
    """The demo's config and where its model came from: the sim demo's control and safety
    settings with the chosen model and planner."""
    demo = load_config(DEMO_CONFIG)
    if path is not None:
        chosen, source = load_config(path), str(path)
    else:
        lab = load_config(LAB_CONFIG)
        chosen, source = (lab, str(LAB_CONFIG)) if weights_present(lab.model) else (demo, str(DEMO_CONFIG))
    if chosen.model.checkpoint is not None and not weights_present(chosen.model):
        fix = ("run from the repository root (the paths are relative to it), or rebuild the sim model with "
               "`vjepa2-ros pipeline config/train_sim_reach.yaml`") if path is None else \
            "omit --config to use the shipped sim model"
        raise ConfigError(f"{source}: model.checkpoint {chosen.model.checkpoint} (or engine_dir "
                          f"{chosen.model.engine_dir}) not found; {fix}")
    control = dataclasses.replace(demo.control, record_dir=None)
    return dataclasses.replace(demo, model=chosen.model, planning=chosen.planning, control=control), source


@dataclass
class DemoResult:
    start_distance_m: float
    final_distance_m: float
    min_distance_m: float
    plans: int
    state: str
    reason: str
    seconds: float
    wall_s: float
    trained: bool
    out: Path


def run_demo(cfg: StackConfig, out: Path, seconds: float = 8.0, goal_offset_m=(0.12, 0.10, -0.12), seed: int = 0,
             video: str = "mp4", fps: float = 10.0, record: bool = False, progress: bool = True) -> DemoResult:
    """Goal image from a target pose, reset, closed loop for `seconds` of sim time, outputs to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    if record:
        cfg = dataclasses.replace(cfg, control=dataclasses.replace(cfg.control, record_dir=str(out / "recording")))
    t_wall = time.monotonic()
    planner = build_planner(cfg, seed=seed)               # in its own process (control.planner_process)
    px = sim_camera_px(cfg.model)                          # what the model takes in (64 px for the sim model)
    backend = build_backend(cfg, camera_width=px, camera_height=px)
    backend.connect()
    try:
        # Goal: the view with the end effector moved by goal_offset_m (orientation kept).
        frame_name = cfg.control.ee_frame
        q0 = backend.read_state().q
        T_goal = backend.kinematics.fk(q0, frame_name)
        T_goal[:3, 3] += np.asarray(goal_offset_m, dtype=np.float64)
        ik = backend.kinematics.ik(T_goal, q0, frame_name)
        if not ik.success:
            raise ConfigError(f"goal offset {list(goal_offset_m)} m is not reachable from the start pose "
                              f"(IK residual {ik.position_error_m:.3f} m); choose a smaller offset")
        goal = goal_view(backend, ik.q)
        backend.reset(q0)
        camera = backend.camera()                          # a fresh camera: nothing cached from the goal view
        loop = build_loop(cfg, planner, backend, camera)
        loop.set_goal_image(goal)

        period = cfg.control.period_s
        steps = int(round(seconds / period))
        every = max(1, int(round(1.0 / (fps * period))))
        t, dist, plan_t, energies, frames = [], [], [], [], []
        plans_seen = 0
        for k in tqdm(range(steps), desc="demo", unit="tick", disable=not progress):
            loop.step()
            state = backend.read_state()
            p = backend.kinematics.fk(state.q, frame_name)[:3, 3]
            t.append(state.stamp_s)
            dist.append(float(np.linalg.norm(p - T_goal[:3, 3])))
            if loop.plan_count != plans_seen:
                plans_seen = loop.plan_count
                if loop.last_plan.get("ok"):
                    plan_t.append(loop.last_plan["stamp_s"])
                    energies.append(loop.last_plan["energy"])
            if k % every == 0:
                frames.append(_video_frame(camera.read_latest().image, goal, state.stamp_s, dist[-1], loop.state.value))
        loop.close()
        _write_video(out / f"demo.{video}", frames, fps)
        events = [(e.stamp_s, f"{e.state.value}: {e.reason}") for e in loop.sm.events[1:]]
        _plot(out / "demo.png", t, dist, plan_t, energies, events, cfg.model.checkpoint is not None)
        result = DemoResult(dist[0], dist[-1], min(dist), loop.plan_count, loop.state.value, loop.reason, seconds,
                            time.monotonic() - t_wall, cfg.model.checkpoint is not None, out)
        (out / "summary.json").write_text(json.dumps({**dataclasses.asdict(result), "out": str(out),
                                                      "goal_offset_m": list(goal_offset_m)}, indent=1))
        return result
    finally:
        backend.disconnect()
        planner.close()


def _video_frame(view: np.ndarray, goal: np.ndarray, t_s: float, dist_m: float, state: str) -> np.ndarray:
    """[current | goal], scaled up by an integer factor to >= VIDEO_PX, with a caption line:
    uint8 [H' + 24, 2W', 3]."""
    import cv2
    scale = max(1, -(-VIDEO_PX // view.shape[0]))
    if scale > 1:
        view = cv2.resize(view, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    h, w = view.shape[:2]
    goal = cv2.resize(goal, (w, h), interpolation=cv2.INTER_NEAREST) if goal.shape[:2] != (h, w) else goal
    canvas = np.zeros((h + 24, 2 * w, 3), dtype=np.uint8)
    canvas[24:, :w], canvas[24:, w:] = view, goal
    text = f"t {t_s:4.1f} s   distance {100 * dist_m:4.1f} cm   {state}"
    cv2.putText(canvas, text, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(canvas, "goal", (w + 6, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
    return canvas


def _write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    if path.suffix == ".gif":
        from PIL import Image
        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
        return
    import av
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _plot(path: Path, t: list[float], dist: list[float], plan_t: list[float], energies: list[float],
          events: list[tuple[float, str]], trained: bool) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    ax1.plot(t, 100 * np.asarray(dist))
    ax1.set_ylabel("EE distance to goal [cm]")
    ax1.set_title("closed loop on the simulated Panda" + ("" if trained else " (untrained model)"))
    ax1.grid(alpha=0.3)
    ax2.plot(plan_t, energies, ".-")
    ax2.set_ylabel("planner energy")
    ax2.set_xlabel("simulated time [s]")
    ax2.grid(alpha=0.3)
    for stamp, label in events:                            # state changes after the start (hold, fault)
        for ax in (ax1, ax2):
            ax.axvline(stamp, color="tab:red", linestyle="--", linewidth=1)
        ax1.annotate(label[:60], (stamp, 0.02), xycoords=("data", "axes fraction"), fontsize=7, color="tab:red",
                     rotation=90, ha="right", va="bottom")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _describe(network: str | dict) -> str:
    """A preset name, or "preset (field value, ...)" for a dict of overrides."""
    if isinstance(network, str):
        return network
    extra = ", ".join(f"{k} {v}" for k, v in network.items() if k != "preset")
    return f"{network.get('preset', 'custom')} ({extra})" if extra else network.get("preset", "custom")


def main(args: argparse.Namespace) -> int:
    cfg, source = choose_config(args.config)
    out = args.out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S", time.gmtime())
    if cfg.model.checkpoint is None:                 # the first line says so
        print(UNTRAINED_WARNING)
    print(f"demo: model {_describe(cfg.model.encoder)} + {_describe(cfg.model.predictor)} "
          f"({cfg.model.runtime}, {cfg.model.device}) from {source}; checkpoint {cfg.model.checkpoint}")
    r = run_demo(cfg, out, args.seconds, tuple(args.goal_offset), args.seed, args.video, args.fps, args.record)
    print(f"demo: end-effector distance to goal {100 * r.start_distance_m:.1f} cm -> {100 * r.final_distance_m:.1f} cm "
          f"(closest {100 * r.min_distance_m:.1f} cm) after {r.seconds:.1f} s simulated, {r.plans} plans, "
          f"state {r.state} ({r.reason}), {r.wall_s:.1f} s wall; video, plot and summary in {r.out}")
    if not r.trained:
        print(UNTRAINED_WARNING)
    return 0
