"""A simulated robot station: the MuJoCo Panda driven the way ros2_control drives an arm. No ROS here.

The `sim_station` node (vjepa2_ros/nodes/sim_station.py) is a thin shell over `SimStation`: it
publishes `state()` as sensor_msgs/JointState and `render()` as sensor_msgs/Image, and hands the
commands it receives to `command_trajectory` (a JointTrajectoryController), `command_positions`
(a forward position controller) and `command_gripper`.

    TrajectoryFollower  a joint trajectory sampled in time, as a JointTrajectoryController does:
                        a new trajectory replaces the old one and starts from the position last
                        commanded; positions are interpolated linearly (cubic Hermite where every
                        point has velocities); the last point is held.
    SimStation          PandaSim in real time: a physics thread keeps simulated time on `clock`
                        and sets the actuators from the follower at every physics step.
    CommandStats        receipt times of the commands: rate and period percentiles.

Times are seconds of `clock` (the node passes the ROS clock), arrays [7] float64 radians.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from vjepa2_ros.errors import DataError
from vjepa2_ros.robot.kinematics import PANDA, ArmSpec

CATCH_UP_MAX_S = 0.05             # physics advanced per chunk at most (the lock is held meanwhile)


class TrajectoryFollower:
    """Position targets in time from joint trajectories (JointTrajectoryController semantics).

    Args:
        q: the position to hold at first [7] rad.
    """

    def __init__(self, q: np.ndarray) -> None:
        q = np.asarray(q, dtype=np.float64)
        self._times = np.zeros(1)                   # [K] absolute times, s
        self._q = q[None].copy()                    # [K, 7]
        self._dq: np.ndarray | None = None          # [K, 7] or None: linear segments
        self.last = q.copy()                        # the last sampled (commanded) position

    def hold(self, q: np.ndarray) -> None:
        """Hold q [7] from now on (a forward position command)."""
        q = np.asarray(q, dtype=np.float64)
        self._times, self._q, self._dq = np.zeros(1), q[None].copy(), None
        self.last = q.copy()

    def set(self, times_from_start_s: np.ndarray, positions: np.ndarray, velocities: np.ndarray | None,
            start_s: float) -> None:
        """A new trajectory: K points at start_s + times_from_start_s [K] (strictly increasing,
        >= 0), positions [K, 7], optional velocities [K, 7]. It starts from the last commanded
        position at start_s (a first point at 0 s jumps there, as in ros2_control)."""
        t = start_s + np.asarray(times_from_start_s, dtype=np.float64)
        q = np.asarray(positions, dtype=np.float64)
        anchor_t = np.array([start_s])
        if t[0] <= start_s:                         # the first point replaces the anchor
            self._times, self._q = t, q.copy()
            self._dq = None if velocities is None else np.asarray(velocities, dtype=np.float64).copy()
            return
        self._times = np.concatenate([anchor_t, t])
        self._q = np.concatenate([self.last[None], q])
        self._dq = None if velocities is None else np.concatenate([np.zeros((1, 7)), velocities])

    @property
    def end_s(self) -> float:
        return float(self._times[-1])

    def sample(self, t_s: float) -> np.ndarray:
        """The position target [7] at time t_s (clock seconds)."""
        times, q = self._times, self._q
        if t_s <= times[0]:
            out = q[0]
        elif t_s >= times[-1]:
            out = q[-1]
        else:
            k = int(np.searchsorted(times, t_s, side="right")) - 1      # times[k] <= t_s < times[k + 1]
            h = times[k + 1] - times[k]
            s = (t_s - times[k]) / h
            if self._dq is None:
                out = q[k] + s * (q[k + 1] - q[k])
            else:                                                       # cubic Hermite
                h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
                h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
                out = h00 * q[k] + h10 * h * self._dq[k] + h01 * q[k + 1] + h11 * h * self._dq[k + 1]
        self.last = np.array(out, dtype=np.float64)
        return self.last.copy()


def check_trajectory(joint_names: Sequence[str], arm_joints: Sequence[str], times_from_start_s: Sequence[float],
                     positions: Sequence[Sequence[float]], velocities: Sequence[Sequence[float]] | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A trajectory message's fields -> (times [K], positions [K, 7], velocities [K, 7] | None), in
    `arm_joints` order. Raises DataError naming what is wrong: unknown or missing joints, no points,
    a point of the wrong length, times not increasing, non-finite values."""
    names = [str(n) for n in joint_names]
    missing = [n for n in arm_joints if n not in names]
    if missing or len(set(names)) != len(names):
        raise DataError(f"trajectory joint_names {names} must name each of {list(arm_joints)} once; missing {missing}")
    order = [names.index(n) for n in arm_joints]
    t = np.asarray(times_from_start_s, dtype=np.float64)
    if t.size == 0:
        raise DataError("trajectory has no points")
    rows = [np.asarray(p, dtype=np.float64) for p in positions]
    bad = [i for i, p in enumerate(rows) if p.shape != (len(names),)]
    if bad:
        raise DataError(f"trajectory point {bad[0]} has {rows[bad[0]].size} positions for {len(names)} joint names")
    q = np.stack(rows)[:, order]
    dq = None
    if velocities is not None and all(len(v) for v in velocities):
        vrows = [np.asarray(v, dtype=np.float64) for v in velocities]
        if any(v.shape != (len(names),) for v in vrows):
            raise DataError(f"trajectory velocities must have {len(names)} values per point")
        dq = np.stack(vrows)[:, order]
    if np.any(t < 0) or np.any(np.diff(t) <= 0):
        raise DataError(f"trajectory time_from_start must be >= 0 and strictly increasing, got {t.tolist()}")
    if not (np.all(np.isfinite(q)) and (dq is None or np.all(np.isfinite(dq)))):
        raise DataError("trajectory has non-finite positions or velocities")
    return t, q, dq


class CommandStats:
    """Receipt times (clock seconds) of the commands a station received; the newest `keep`."""

    def __init__(self, keep: int = 100_000) -> None:
        self._stamps: deque[float] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def record(self, t_s: float) -> None:
        with self._lock:
            self._stamps.append(float(t_s))

    def stamps(self) -> np.ndarray:
        with self._lock:
            return np.array(self._stamps)

    def summary(self, since_s: float = -np.inf) -> dict[str, float]:
        """count, rate_hz and period p50/p99/max (ms) of the commands received at or after since_s."""
        t = self.stamps()
        t = t[t >= since_s]
        if t.size < 2:
            return {"count": int(t.size), "rate_hz": 0.0, "period_p50_ms": float("nan"),
                    "period_p99_ms": float("nan"), "period_max_ms": float("nan")}
        periods = np.diff(t) * 1e3
        return {"count": int(t.size), "rate_hz": float((t.size - 1) / (t[-1] - t[0])),
                "period_p50_ms": float(np.percentile(periods, 50)), "period_p99_ms": float(np.percentile(periods, 99)),
                "period_max_ms": float(periods.max())}


@dataclass(frozen=True)
class StationState:
    stamp_s: float                # clock time of the simulated instant
    q: np.ndarray                 # [7] rad
    dq: np.ndarray                # [7] rad/s
    fingers_m: np.ndarray         # [2] finger positions, m (each 0 .. 0.04)
    finger_speeds: np.ndarray     # [2] m/s


class SimStation:
    """The simulated Panda in real time on `clock`, commanded like a ros2_control arm.

    Args:
        cfg: the scene (camera size etc.); rendering needs cfg.render (the default).
        clock: seconds; simulated time is kept equal to it (the node passes the ROS clock).
        spec: the arm whose joint names commands use (the simulated arm is a Panda).
    """

    def __init__(self, cfg=None, clock: Callable[[], float] = time.monotonic, spec: ArmSpec = PANDA) -> None:
        from vjepa2_ros.robot.sim import PandaSim, SimConfig
        self.sim = PandaSim(cfg or SimConfig())
        self.clock, self.spec = clock, spec
        self._lock = threading.RLock()
        self._offset_s = self.clock() - self.sim.time_s          # clock time = sim time + offset
        self.follower = TrajectoryFollower(self.sim.joint_positions())
        m = self.sim.model
        self._finger_qpos = np.array([m.jnt_qposadr[m.joint(f"hand/panda_finger_joint{i}").id] for i in (1, 2)])
        self._finger_dofs = np.array([m.jnt_dofadr[m.joint(f"hand/panda_finger_joint{i}").id] for i in (1, 2)])
        self.commands = CommandStats()
        self._running = threading.Event()
        self._thread: threading.Thread | None = None

    # --- time ---------------------------------------------------------------------------------------
    def now_s(self) -> float:
        """The clock time of the simulated instant."""
        return self.sim.time_s + self._offset_s

    def step_to(self, t_s: float) -> None:
        """Advance physics until simulated time reaches clock time t_s, setting the arm's actuators
        from the follower at every physics step; in chunks of CATCH_UP_MAX_S, so state reads and
        commands get the lock in between."""
        dt = self.sim.model.opt.timestep
        while True:
            with self._lock:
                n = int(min(t_s - self.now_s(), CATCH_UP_MAX_S) / dt + 1e-9)
                if n <= 0:
                    return
                for _ in range(n):
                    self.sim.set_joint_target(self.follower.sample(self.now_s() + dt))
                    self.sim.advance(dt)

    def start(self) -> None:
        """A physics thread that keeps simulated time on the clock. Stop with `stop()`."""
        if self._thread is not None:
            return
        with self._lock:
            self._offset_s = self.clock() - self.sim.time_s
        self._running.set()
        self._thread = threading.Thread(target=self._run, name="sim-station-physics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self._running.is_set():
            self.step_to(self.clock())
            time.sleep(0.001)

    def stop(self) -> None:
        self._running.clear()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self.sim.close()

    # --- what the drivers publish --------------------------------------------------------------------
    def state(self) -> StationState:
        with self._lock:
            d = self.sim.data
            return StationState(stamp_s=self.now_s(), q=self.sim.joint_positions(), dq=self.sim.joint_velocities(),
                                fingers_m=d.qpos[self._finger_qpos].copy(), finger_speeds=d.qvel[self._finger_dofs].copy())

    def render(self) -> tuple[float, np.ndarray]:
        """(capture time in clock seconds, uint8 RGB [H, W, 3]) of the exterior camera."""
        stamp, image = self.sim.render_stamped(self._lock)
        return stamp + self._offset_s, image

    # --- commands ----------------------------------------------------------------------------------------
    def command_trajectory(self, joint_names: Sequence[str], times_from_start_s: Sequence[float],
                           positions: Sequence[Sequence[float]], velocities: Sequence[Sequence[float]] | None = None,
                           start_s: float = 0.0) -> None:
        """A JointTrajectory: starts at start_s (clock s; 0: now). DataError leaves the running
        trajectory in place (a controller rejects a bad goal and keeps going)."""
        t, q, dq = check_trajectory(joint_names, self.spec.joint_names, times_from_start_s, positions, velocities)
        self.commands.record(self.clock())
        with self._lock:
            self.follower.set(t, q, dq, start_s if start_s > 0 else self.now_s())

    def command_positions(self, values: Sequence[float]) -> None:
        """A forward position controller's command: [7] joint positions in the arm's joint order."""
        q = np.asarray(values, dtype=np.float64)
        if q.shape != (7,) or not np.all(np.isfinite(q)):
            raise DataError(f"position command must be 7 finite joint positions, got {q.tolist()}")
        self.commands.record(self.clock())
        with self._lock:
            self.follower.hold(q)

    def command_gripper(self, closedness: float) -> None:
        """Gripper closedness, 0 open .. 1 closed."""
        c = float(closedness)
        if not 0.0 <= c <= 1.0:
            raise DataError(f"gripper closedness must be in [0, 1], got {c}")
        with self._lock:
            self.sim.set_gripper(c)

