"""The `vjepa2-ros` command.

Each subcommand lives in the package it belongs to, as a module with
`add_arguments(parser)` and `main(args) -> int`; it is imported only when chosen, so
`vjepa2-ros --help` stays fast and a CPU host never imports GPU-only code.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from vjepa2_ros.errors import Vjepa2RosError

# command words -> (module, one-line help). Commands whose module is not installed are hidden.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("vjepa2_ros.control.demo", "closed loop on the simulated arm: goal image in, motion, video and plots out"),
    "calibrate": ("vjepa2_ros.control.calibrate", "the rotation between the robot's and the world model's action frames"),
    "selfcheck": ("vjepa2_ros.model.selfcheck", "load a checkpoint (or a random tiny model) and report what was found"),
    "export": ("vjepa2_ros.engines.export", "checkpoint -> ONNX encoder and predictor, with manifests"),
    "build-engines": ("vjepa2_ros.engines.build", "ONNX -> TensorRT engines, with manifests (GPU hosts)"),
    "convert droid": ("vjepa2_ros.data.convert", "DROID raw episodes -> rosbag2 bags"),
    "replay": ("vjepa2_ros.replay.run", "offline planner validation on a bag or DROID episode, with a report"),
    "train": ("vjepa2_ros.training.train", "AC post-training of the predictor"),
    "pipeline": ("vjepa2_ros.training.pipeline", "train -> export -> build-engines, skipping up-to-date stages"),
    "sim record": ("vjepa2_ros.data.generate", "record DROID-layout episodes from the simulated arm"),
    "bench model": ("vjepa2_ros.model.bench", "parameters, FLOPs and CPU time of the released model sizes"),
    "bench plan": ("vjepa2_ros.planning.bench", "planning step time vs the notebook-style reference planner"),
    "bench engines": ("vjepa2_ros.engines.bench", "latency of each available runtime vs torch eager"),
    "bench control": ("vjepa2_ros.control.bench", "command-stream period and jitter while the planner runs"),
    "bench data": ("vjepa2_ros.replay.bench", "video decode rate and replay steps/s"),
    "bench train": ("vjepa2_ros.training.bench", "training steps/s, online encoding vs cached latents"),
    "bench sim-reach": ("vjepa2_ros.control.bench_reach", "closed-loop reach success on the simulated arm"),
    "bench goal-energy": ("vjepa2_ros.control.bench_goal_energy", "the observation's energy to a goal by distance: "
                          "where the stop rule's threshold goes"),
    "bench ros": ("vjepa2_ros.nodes.bench_ros", "sim_station + planner_node over DDS: command stream, ages, reach"),
    "soak": ("vjepa2_ros.nodes.soak", "closed loop over DDS with a fault every ~30 s: holds, recoveries, RSS"),
}


def _available() -> dict[str, tuple[str, str]]:
    out = {}
    for words, (module, help_) in COMMANDS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            out[words] = (module, help_)
    return out


def _usage(commands: dict[str, tuple[str, str]]) -> str:
    width = max((len(w) for w in commands), default=0)
    lines = ["usage: vjepa2-ros COMMAND [options]   (vjepa2-ros COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {w:<{width}}  {h}" for w, (_, h) in commands.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _available()
    words = None
    for n in (2, 1):                                   # longest match first: "bench plan" before "bench"
        if len(argv) >= n and " ".join(argv[:n]) in commands:
            words = " ".join(argv[:n])
            break
    if words is None:
        print(_usage(commands), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module_name, help_ = commands[words]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"vjepa2-ros {words}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(argv[len(words.split()):])
    try:
        return int(module.main(args) or 0)
    except Vjepa2RosError as e:                        # our errors carry a full explanation
        print(f"vjepa2-ros {words}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"vjepa2-ros {words}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
