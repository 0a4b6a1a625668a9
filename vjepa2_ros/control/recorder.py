"""What a run saw and decided, written for later replay.

A recording is a folder:
    plans.jsonl         one line per planning step: stamps, state machine, goal index, energy,
                        action, IK result, diagnostics
    plan_000012.npz     per planning step: frame uint8 [H,W,3], pose [7], q [7], plan [H,7], action [7]
    commands.npz        t_s [N], q_cmd [N,7], gripper_cmd [N], sent [N] (False in dry run / hold)
    events.jsonl        state machine transitions (stamp, state, reason)
    config.json         the StackConfig as a flat dict (when given)
Commands are buffered in memory and written on `close()`; a 100 Hz stream is 6 kB per second.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from vjepa2_ros.errors import DataError


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if hasattr(x, "tolist"):                           # torch tensors
        return x.tolist()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return repr(x)


class Recorder:
    """Writes one recording folder; thread-safe (planner and command threads both write)."""

    def __init__(self, folder: str | Path, config: dict[str, Any] | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._plans = open(self.folder / "plans.jsonl", "a", encoding="utf-8")
        self._events = open(self.folder / "events.jsonl", "a", encoding="utf-8")
        self._t: list[float] = []
        self._q: list[np.ndarray] = []
        self._grip: list[float] = []
        self._sent: list[bool] = []
        self.plan_count = 0
        if config is not None:
            (self.folder / "config.json").write_text(json.dumps(_jsonable(config), indent=1))

    def plan_step(self, frame: np.ndarray, pose: np.ndarray, q: np.ndarray, plan: np.ndarray | None,
                  action: np.ndarray | None, info: dict[str, Any]) -> None:
        """One planning step: the frame and state it saw, what it decided, and why (info)."""
        with self._lock:
            i = self.plan_count
            arrays = dict(frame=np.asarray(frame, dtype=np.uint8), pose=np.asarray(pose, dtype=np.float64),
                          q=np.asarray(q, dtype=np.float64))
            if plan is not None:
                arrays["plan"] = np.asarray(plan, dtype=np.float64)
            if action is not None:
                arrays["action"] = np.asarray(action, dtype=np.float64)
            np.savez_compressed(self.folder / f"plan_{i:06d}.npz", **arrays)
            self._plans.write(json.dumps(_jsonable({"index": i, **info})) + "\n")
            self._plans.flush()
            self.plan_count += 1

    def command(self, t_s: float, q_cmd: np.ndarray, gripper_cmd: float, sent: bool) -> None:
        with self._lock:
            self._t.append(t_s)
            self._q.append(np.array(q_cmd, dtype=np.float64))
            self._grip.append(float(gripper_cmd))
            self._sent.append(bool(sent))

    def event(self, stamp_s: float, state: str, reason: str) -> None:
        with self._lock:
            self._events.write(json.dumps({"stamp_s": stamp_s, "state": state, "reason": reason}) + "\n")
            self._events.flush()

    def close(self) -> None:
        with self._lock:
            if self._plans.closed:
                return
            np.savez_compressed(self.folder / "commands.npz", t_s=np.asarray(self._t, dtype=np.float64),
                                q_cmd=np.asarray(self._q, dtype=np.float64).reshape(-1, 7),
                                gripper_cmd=np.asarray(self._grip, dtype=np.float64),
                                sent=np.asarray(self._sent, dtype=bool))
            self._plans.close()
            self._events.close()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_recording(folder: str | Path) -> dict[str, Any]:
    """Load a recording: {"plans": [info dicts with their arrays], "commands": {...}, "events": [...]}."""
    folder = Path(folder)
    if not (folder / "plans.jsonl").is_file():
        raise DataError(f"{folder} is not a recording: plans.jsonl is missing")
    plans = []
    for line in (folder / "plans.jsonl").read_text(encoding="utf-8").splitlines():
        info = json.loads(line)
        with np.load(folder / f"plan_{info['index']:06d}.npz", allow_pickle=False) as z:
            info.update({k: z[k] for k in z.files})
        plans.append(info)
    commands = {}
    if (folder / "commands.npz").is_file():
        with np.load(folder / "commands.npz", allow_pickle=False) as z:
            commands = {k: z[k] for k in z.files}
    events = [json.loads(x) for x in (folder / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    return {"plans": plans, "commands": commands, "events": events}
