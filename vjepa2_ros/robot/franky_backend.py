"""RobotBackend for a real Franka arm (or franky-sim) through franky (libfranka underneath).

Joint targets become asynchronous `JointMotion`s: each new target pre-empts the running motion
and franky re-plans a jerk-limited trajectory (Ruckig, 1 kHz) from the current state, scaled by
the relative dynamics factor. The gripper takes `move` (open/partial) or `grasp` (closing) by
closedness, width = (1 - closedness) * max_width. franky is imported when a backend is built,
never at module import. See docs/franky.md for installing franky for a Panda or an FR3.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Iterator

import numpy as np

from vjepa2_ros.errors import ConfigError, SafetyError, Vjepa2RosError
from vjepa2_ros.robot.backend import RobotBackend, RobotState
from vjepa2_ros.robot.kinematics import ARM_SPECS, ArmSpec, arm_spec
from vjepa2_ros.robot.safety import SafetyConfig

REALTIME = ("enforce", "ignore")   # franky.RealtimeConfig.Enforce / .Ignore


@dataclass(frozen=True)
class FrankyConfig:
    """Connection and motion settings of a FrankyBackend."""

    host: str = "172.16.0.2"               # FCI address of the robot (franky-sim: 127.0.0.1)
    arm: str = "fr3"                       # "fr3" or "panda": selects the joint limits
    realtime: str = "enforce"              # "ignore" without a PREEMPT_RT kernel (franky-sim, desktops)
    relative_dynamics_factor: float = 0.1  # scales franky's velocity/acceleration/jerk limits, (0, 1]
    gripper: bool = True                   # connect the Franka Hand
    gripper_speed_mps: float = 0.1
    gripper_force_n: float = 20.0          # grasp force when closing
    grasp_threshold: float = 0.5           # closedness >= this closes with grasp(), below it move()s
    gripper_deadband: float = 0.05         # ignore gripper commands closer than this to the last one sent

    def __post_init__(self) -> None:
        if self.arm not in ARM_SPECS:
            raise ConfigError(f"FrankyConfig.arm={self.arm!r}; expected one of {sorted(ARM_SPECS)}")
        if self.realtime not in REALTIME:
            raise ConfigError(f"FrankyConfig.realtime={self.realtime!r}; expected one of {REALTIME}")
        if not 0.0 < self.relative_dynamics_factor <= 1.0:
            raise ConfigError(f"FrankyConfig.relative_dynamics_factor={self.relative_dynamics_factor} "
                              "must be in (0, 1]")
        if not 0.0 < self.gripper_speed_mps <= 0.2:
            raise ConfigError(f"FrankyConfig.gripper_speed_mps={self.gripper_speed_mps} must be in (0, 0.2] m/s")
        if not 0.0 < self.gripper_force_n <= 140.0:
            raise ConfigError(f"FrankyConfig.gripper_force_n={self.gripper_force_n} must be in (0, 140] N")
        if not 0.0 <= self.grasp_threshold <= 1.0 or not 0.0 <= self.gripper_deadband < 1.0:
            raise ConfigError(f"FrankyConfig grasp_threshold={self.grasp_threshold} must be in [0, 1] and "
                              f"gripper_deadband={self.gripper_deadband} in [0, 1)")


def _import_franky() -> Any:
    try:
        import franky
    except ImportError as e:
        raise Vjepa2RosError("the franky backend needs `pip install franky-control` (see docs/franky.md)") from e
    return franky


class FrankyBackend(RobotBackend):
    """A Franka arm through franky. State stamps are time.monotonic().

    Args:
        cfg: host, arm model, realtime mode, dynamics factor, gripper settings.
        safety: limits of the envelope every target passes.
        spec: the arm's limits; when given it sets cfg.arm (PANDA -> "panda", FR3 -> "fr3").
        **overrides: FrankyConfig fields to replace in cfg (e.g. host="172.16.0.2").
    """

    name = "franky"

    def __init__(self, cfg: FrankyConfig = FrankyConfig(), safety: SafetyConfig = SafetyConfig(), *,
                 spec: ArmSpec | None = None, **overrides: Any):
        if spec is not None:
            overrides["arm"] = spec.name
        try:
            cfg = replace(cfg, **overrides)
        except TypeError as e:
            raise ConfigError(f"FrankyBackend: {e}; FrankyConfig fields are "
                              f"{list(FrankyConfig.__annotations__)}") from None
        super().__init__(arm_spec(cfg.arm), safety)
        self.cfg = cfg
        self._franky = _import_franky()
        self._robot = None
        self._gripper = None
        self._max_width_m = 0.08
        self._gripper_sent: float | None = None
        self._gripper_width_m: float | None = None      # latest width from the poller thread
        self._gripper_future: Any = None                # franky.BoolFuture of the last hand command
        self._gripper_poller: threading.Thread | None = None
        self._polling = threading.Event()
        # One franky call on the Gripper at a time: a command issued while another thread waits in
        # Gripper.width can block inside libfranka (and deadlocks against an in-process franky-sim).
        self._gripper_lock = threading.Lock()
        self._error: str | None = None

    # --- connection ---------------------------------------------------------------------------
    def connect(self) -> None:
        if self._robot is not None:
            return
        franky = self._franky
        realtime = {"enforce": franky.RealtimeConfig.Enforce, "ignore": franky.RealtimeConfig.Ignore}[self.cfg.realtime]
        try:
            robot = franky.Robot(self.cfg.host, realtime_config=realtime)
            robot.relative_dynamics_factor = self.cfg.relative_dynamics_factor
            gripper = franky.Gripper(self.cfg.host) if self.cfg.gripper else None
        except franky.IncompatibleVersionException as e:
            raise Vjepa2RosError(f"franky's libfranka does not match the robot at {self.cfg.host}: {e}. A Panda "
                                 "needs franky built for its server version (docs/franky.md)") from e
        except (franky.NetworkException, franky.RealtimeException, franky.GripperException) as e:
            raise Vjepa2RosError(f"cannot connect to the Franka arm at {self.cfg.host}: {e}") from e
        self._robot, self._gripper = robot, gripper
        if gripper is not None:
            self._max_width_m = float(gripper.max_width)
            self._gripper_width_m = float(gripper.width)
            # Gripper.width waits for the hand's next state message (its own, slower rate), so a
            # thread keeps the latest width and read_state() never waits for the hand.
            self._polling.set()
            self._gripper_poller = threading.Thread(target=self._poll_gripper, name="franky-gripper", daemon=True)
            self._gripper_poller.start()

    def _poll_gripper(self) -> None:
        gripper, franky = self._gripper, self._franky
        while self._polling.is_set():
            try:
                with self._gripper_lock:
                    width = float(gripper.width)
                self._gripper_width_m = width
            except (franky.GripperException, franky.NetworkException) as e:
                self._error = f"gripper state: {e}"
                self._polling.wait(0.1)

    def disconnect(self) -> None:
        """Brake to a stop, wait for the motion and the hand's last command to end, then close."""
        franky = self._franky
        if self._robot is not None:
            try:
                self.stop()
                self._robot.join_motion(timeout=5.0)
            except (Vjepa2RosError, franky.ControlException, franky.CommandException):
                pass
        if self._gripper_future is not None:
            self._gripper_future.wait(5.0)
            self._gripper_future = None
        self._polling.clear()
        if self._gripper_poller is not None:
            self._gripper_poller.join(timeout=1.0)
            self._gripper_poller = None
        self._robot = self._gripper = None
        self._gripper_sent = self._gripper_width_m = None

    @property
    def is_connected(self) -> bool:
        return self._robot is not None

    # --- state ------------------------------------------------------------------------------
    def read_state(self) -> RobotState:
        self._require_connected()
        s = self._robot.state                                  # one coherent libfranka RobotState
        stamp = time.monotonic()
        O_T_EE = np.asarray(s.O_T_EE.matrix, dtype=np.float64)
        F_T_EE = np.asarray(s.F_T_EE.matrix, dtype=np.float64)
        gripper = 0.0
        if self._gripper_width_m is not None:
            gripper = float(np.clip(1.0 - self._gripper_width_m / self._max_width_m, 0.0, 1.0))
        error = self._error
        if error is None and self._robot.has_errors:
            error = f"robot errors: {s.current_errors}"
        return RobotState(stamp_s=stamp, q=np.array(s.q, dtype=np.float64), dq=np.array(s.dq, dtype=np.float64),
                          gripper=gripper, flange_pose=O_T_EE @ np.linalg.inv(F_T_EE), error=error)

    # --- commands -----------------------------------------------------------------------------
    def _move(self, motion: Any) -> None:
        franky = self._franky
        try:
            self._robot.move(motion, asynchronous=True)     # pre-empts the running motion
        except (franky.ControlException, franky.CommandException, franky.InvalidMotionTypeException) as e:
            self._error = str(e)
            raise SafetyError(f"franky refused the motion: {e}; call recover() before sending again") from e

    def _send_joint_target(self, q: np.ndarray) -> None:
        if self._error is not None:
            raise SafetyError(f"robot in error ({self._error}); call recover() first")
        self._move(self._franky.JointMotion(q))

    def _set_gripper(self, closedness: float) -> None:
        if self._gripper is None:
            raise ConfigError("the gripper is disabled in FrankyConfig (gripper=False)")
        if self._gripper_sent is not None and abs(closedness - self._gripper_sent) < self.cfg.gripper_deadband:
            return
        width = (1.0 - closedness) * self._max_width_m
        try:
            with self._gripper_lock:
                self._gripper_future = self._gripper_command(closedness, width)
        except (self._franky.GripperException, self._franky.CommandException) as e:
            raise SafetyError(f"gripper refused the command: {e}") from e
        self._gripper_sent = closedness

    def _gripper_command(self, closedness: float, width: float) -> Any:
        """Start the hand command for closedness (width in m); returns its franky.BoolFuture."""
        if closedness >= self.cfg.grasp_threshold:
            # Grasp whatever is between the fingers: any width counts as success.
            return self._gripper.grasp_async(width, self.cfg.gripper_speed_mps, self.cfg.gripper_force_n,
                                             epsilon_inner=self._max_width_m, epsilon_outer=self._max_width_m)
        return self._gripper.move_async(width, self.cfg.gripper_speed_mps)

    def stop(self) -> None:
        """Decelerate to a standstill within the dynamics limits and hold there."""
        self._require_connected()
        self._move(self._franky.JointStopMotion())

    def recover(self) -> bool:
        """Clear pending motion exceptions and the robot's errors (libfranka automatic recovery)."""
        self._require_connected()
        franky = self._franky
        try:
            self._robot.poll_motion()                     # re-raises a finished motion's exception
        except (franky.ControlException, franky.CommandException):
            pass
        try:
            ok = bool(self._robot.recover_from_errors())
        except (franky.ControlException, franky.CommandException, franky.NetworkException) as e:
            self._error = f"recovery failed: {e}"
            return False
        if ok:
            self._error = None
            self._gripper_sent = None
        return ok


@contextmanager
def run_franky_sim(hostnames: tuple[str, ...] = ("127.0.0.1", "127.0.0.2", "127.0.0.3")) -> Iterator[str]:
    """franky-sim (MuJoCo FR3 speaking the libfranka network protocol) in this process, on the
    first free loopback address of `hostnames`; yields that address. For tests and demos."""
    try:
        from franky_sim import SimulationServer
        from franky_sim.mujoco_simulator import MujocoSimulator
    except ImportError as e:
        raise Vjepa2RosError("franky-sim is not installed (`pip install franky-sim`)") from e
    with MujocoSimulator(enable_visualization=False) as sim:
        robot = sim.add_robot()
        with SimulationServer(sim, hostname_candidates=list(hostnames)) as server:
            server.run_async()
            yield robot.hostname
