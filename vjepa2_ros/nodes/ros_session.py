"""The simulated station and the planner as two ROS 2 processes, and a monitor node that watches them.

Used by `vjepa2-ros bench ros` and by test/test_ros_e2e.py: start `sim_station` and `planner_node`
as their console scripts (as `ros2 run` does) on a private ROS_DOMAIN_ID on the loopback interface,
drive the planner's lifecycle through its `change_state` service, publish a goal image, and record
what the station and the planner publish.
"""

from __future__ import annotations

import array
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

REPO = Path(__file__).resolve().parents[2]
SIM_CONFIG = REPO / "config" / "sim_demo.yaml"
PLANNER = "/vjepa2_planner"
STATION_TOPICS = {"camera/image": "/camera/image",
                  "joint_states": "/joint_states",
                  "joint_trajectory": "/joint_trajectory_controller/joint_trajectory",
                  "commands": "/forward_position_controller/commands",
                  "gripper_command": "/gripper_command"}
RELIABLE = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def wait_for(condition: Callable[[], bool], timeout_s: float, period_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(period_s)
    return bool(condition())


def private_domain_id() -> int:
    """A ROS_DOMAIN_ID for this run (from the pid), so parallel runs do not cross-talk."""
    return 1 + os.getpid() % 100


def ros_env(domain_id: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


def normal_priority() -> None:
    """Run this thread (and what it starts) at normal priority, whatever its parent's: a process
    that drove a real-time arm (franky sets its calling thread to SCHED_FIFO 99) would otherwise
    hand that to the station and the planner, whose busy threads then starve a 2-core machine."""
    if hasattr(os, "sched_setscheduler"):
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass


def console_script(name: str) -> str:
    """The installed console script (beside this Python, as pip installs it; or on PATH)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    import shutil
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"console script {name} not found beside {sys.executable} or on PATH; "
                                "install the package (scripts/bootstrap.sh or colcon build)")
    return found


# The simulated station shares this machine's CPU with the planner (a real station's arm and camera
# do not): the planner thread is not niced below the station, and joint states and frames that
# crossed DDS on a busy 2-core machine may be older than on a lab's network. launch/sim.launch.py
# passes the same values (test_nodes_static checks).
SIM_OVER_DDS = {"safety.max_state_age_s": 0.5, "safety.max_frame_age_s": 1.0, "control.planner_nice": 0}


def sim_model_parameters(config: Path = SIM_CONFIG) -> dict[str, Any]:
    """The planner parameters of the shipped sim world model, with absolute weight paths."""
    return {"config_file": str(config),
            "model.checkpoint": str(REPO / "models" / "sim_reach" / "predictor.safetensors"),
            "model.encoder_checkpoint": str(REPO / "models" / "sim_reach" / "encoder.safetensors"),
            **SIM_OVER_DDS}


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def wait(self, timeout_s: float) -> int | None:
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGINT, then SIGKILL if it does not exit within timeout_s; the exit code."""
        self.signal(signal.SIGINT)
        code = self.wait(timeout_s)
        if code is None:
            self.popen.kill()
            code = self.popen.wait()
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start(name: str, parameters: dict[str, Any], remaps: dict[str, str], env: dict[str, str],
          log_dir: Path) -> Process:
    """A console script with --ros-args: -p name:=value for each parameter, -r from:=to for each remap."""
    args = [console_script(name), "--ros-args"]
    for key, value in parameters.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["-p", f"{key}:={text}"]
    for src, dst in remaps.items():
        args += ["-r", f"{src}:={dst}"]
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}-{time.strftime('%H%M%S')}-{len(list(log_dir.iterdir()))}.log"
    out = open(log, "w")
    popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(REPO),
                             preexec_fn=normal_priority)
    out.close()
    return Process(name, popen, log)


def start_station(env: dict[str, str], log_dir: Path, **parameters: Any) -> Process:
    return start("sim_station", {"config_file": str(SIM_CONFIG), **parameters}, {}, env, log_dir)


def start_planner(env: dict[str, str], log_dir: Path, **parameters: Any) -> Process:
    """planner_node on the station's topics (trajectory interface, gripper on the topic)."""
    params = {**sim_model_parameters(), "command_interface": "trajectory", "gripper": "topic", **parameters}
    return start("planner_node", params, STATION_TOPICS, env, log_dir)


@dataclass
class Received:
    """What the monitor saw: (receipt time monotonic s, message) lists, guarded by `lock`."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    joint_states: list = field(default_factory=list)
    commands: list = field(default_factory=list)
    joint_targets: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    diagnostics: list = field(default_factory=list)


class Monitor(Node):
    """Watches the station and the planner; calls the planner's services; publishes goals and bad inputs."""

    def __init__(self, context: Any) -> None:
        super().__init__("vjepa2_monitor", context=context)
        self.got = Received()
        self.create_subscription(JointState, STATION_TOPICS["joint_states"], self._keep("joint_states"), RELIABLE)
        self.create_subscription(JointTrajectory, STATION_TOPICS["joint_trajectory"], self._keep("commands"), RELIABLE)
        self.create_subscription(JointState, f"{PLANNER}/joint_targets", self._keep("joint_targets"), RELIABLE)
        self.create_subscription(Float64MultiArray, f"{PLANNER}/planned_action", self._keep("actions"), RELIABLE)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, RELIABLE)
        self.goal_pub = self.create_publisher(Image, f"{PLANNER}/goal_image", LATCHED)
        self.image_pub = self.create_publisher(Image, STATION_TOPICS["camera/image"], RELIABLE)
        self.joint_pub = self.create_publisher(JointState, STATION_TOPICS["joint_states"], RELIABLE)
        self._service_clients: dict[str, Any] = {}

    def _keep(self, name: str):
        def keep(msg: Any) -> None:
            with self.got.lock:
                getattr(self.got, name).append((time.monotonic(), msg))
        return keep

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self.got.lock:
            self.got.diagnostics += [(time.monotonic(), s) for s in msg.status if s.name.startswith(PLANNER)]

    def since(self, name: str, t0: float) -> list:
        with self.got.lock:
            return [m for t, m in getattr(self.got, name) if t >= t0]

    def latest(self, name: str) -> Any:
        with self.got.lock:
            items = getattr(self.got, name)
            return items[-1][1] if items else None

    # --- services -----------------------------------------------------------------------------------------
    def call(self, srv_type: Any, name: str, request: Any, timeout_s: float = 30.0) -> Any:
        if name not in self._service_clients:
            self._service_clients[name] = self.create_client(srv_type, f"{PLANNER}/{name}")
        client = self._service_clients[name]
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise TimeoutError(f"service {PLANNER}/{name} not available after {timeout_s} s")
        future = client.call_async(request)
        if not wait_for(future.done, timeout_s):
            raise TimeoutError(f"service {PLANNER}/{name} did not answer within {timeout_s} s")
        return future.result()

    def change_state(self, transition: str, timeout_s: float = 120.0) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState
        ids = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP}
        request = ChangeState.Request()
        request.transition.id = ids[transition]
        return bool(self.call(ChangeState, "change_state", request, timeout_s).success)

    def lifecycle_state(self) -> str:
        from lifecycle_msgs.srv import GetState
        return self.call(GetState, "get_state", GetState.Request()).current_state.label

    def set_parameter(self, name: str, value: Any) -> tuple[bool, str]:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        result = self.call(SetParameters, "set_parameters", request).results[0]
        return bool(result.successful), result.reason

    def enable(self, on: bool = True) -> tuple[bool, str]:
        from std_srvs.srv import SetBool
        answer = self.call(SetBool, "enable", SetBool.Request(data=on))
        return bool(answer.success), answer.message

    # --- inputs -------------------------------------------------------------------------------------------
    def publish_goal(self, rgb: np.ndarray) -> None:
        self.goal_pub.publish(rgb_image(rgb, self.get_clock().now().to_msg()))

    def loop_state(self) -> tuple[int, str, dict[str, str]]:
        """(level, message, values) of the planner's newest diagnostic (or (-1, "", {}))."""
        status = self.latest("diagnostics")
        if status is None:
            return -1, "", {}
        return status.level, status.message, {kv.key: kv.value for kv in status.values}

    def saw_error(self, text: str, t0: float) -> bool:
        return any(s.level == DiagnosticStatus.ERROR and text in s.message for s in self.since("diagnostics", t0))


def rgb_image(rgb: np.ndarray, stamp: Any, encoding: str = "rgb8") -> Image:
    h, w, _ = rgb.shape
    msg = Image(height=h, width=w, encoding=encoding, step=w * 3, data=array.array("B", rgb.tobytes()))
    msg.header.stamp = stamp
    return msg


class RosSession:
    """rclpy in its own context on `domain_id`, with a Monitor spinning in a background executor."""

    def __init__(self, domain_id: int) -> None:
        os.environ.update(ros_env(domain_id))
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.monitor = Monitor(self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.monitor)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        normal_priority()                           # the executor's worker threads inherit it
        self.executor.spin()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self._thread.join(timeout=5.0)
        self.monitor.destroy_node()
        rclpy.try_shutdown(context=self.context)


def goal_image_for_offset(offset_m=(0.12, 0.10, -0.12), camera_px: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(goal image uint8 [H, W, 3], goal flange position [3] m): the sim camera's view with the
    flange moved by offset_m from the station's start posture, as `vjepa2-ros demo` renders it."""
    from vjepa2_ros.control.goal_view import goal_view
    from vjepa2_ros.robot.sim import SimBackend, SimConfig
    backend = SimBackend(SimConfig(camera_width=camera_px, camera_height=camera_px))
    backend.connect()
    try:
        q0 = backend.read_state().q
        T = backend.kinematics.fk(q0, "flange")
        T[:3, 3] += np.asarray(offset_m, dtype=np.float64)
        ik = backend.kinematics.ik(T, q0, "flange")
        if not ik.success:
            raise ValueError(f"goal offset {list(offset_m)} m has no IK solution")
        return goal_view(backend, ik.q), T[:3, 3].copy()
    finally:
        backend.disconnect()


def flange_position(q: np.ndarray) -> np.ndarray:
    from vjepa2_ros.robot.kinematics import PANDA, Kinematics
    return Kinematics(PANDA).fk(np.asarray(q, dtype=np.float64), "flange")[:3, 3]
