"""The planner node under rclpy: lifecycle, services, command rate, dry run, bad messages.

rclpy is ROS 2 Jazzy's (scripts/bootstrap.sh installs it as wheels, or a sourced ROS install).
The node runs in-process with a tiny random model on the CPU; a tester node plays the arm (joint
states tracking the commands perfectly) and the camera, and listens to the outputs. Timing bounds
are loose on purpose (a busy 2-core machine): the tests gate on behaviour.
"""

from __future__ import annotations

import array
import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 Jazzy) is not installed: scripts/bootstrap.sh installs it")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from vjepa2_ros.nodes.planner_node import PlannerNode  # noqa: E402
from vjepa2_ros.planning.planner import make_example_frame  # noqa: E402
from vjepa2_ros.robot.kinematics import arm_spec  # noqa: E402

SUCCESS = TransitionCallbackReturn.SUCCESS
RATE_HZ = 50.0
Q_HOME = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]
PANDA = list(arm_spec("panda").joint_names)
FR3 = list(arm_spec("fr3").joint_names)
TINY_CONFIG = f"""
model: {{encoder: vit_tiny, predictor: ac_tiny, runtime: torch, device: cpu}}
planning: {{samples: 16, topk: 4, iterations: 2}}
safety: {{max_frame_age_s: 2.0, max_state_age_s: 1.0}}
control: {{robot: panda, rate_hz: {RATE_HZ}, model_step_s: 0.1}}
"""
_namespaces = (f"/vjepa2_test_{i}" for i in itertools.count())


def wait_for(condition, timeout_s: float = 10.0, period_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(period_s)
    return condition()


class Station(Node):
    """The arm and the camera as the node sees them, plus everything it publishes."""

    def __init__(self, namespace: str) -> None:
        super().__init__("station", namespace=namespace)
        self.lock = threading.Lock()
        self.commands: list[tuple[float, JointTrajectory]] = []
        self.actions: list[Float64MultiArray] = []
        self.diagnostics: list[DiagnosticStatus] = []
        self.q = list(Q_HOME)                    # perfect tracking: the last command is the state
        self.joint_names = PANDA
        self.joint_value: float | None = None    # e.g. NaN: every position is this
        self.encoding = "rgb8"
        self.publish_inputs = True
        self.clients_: dict = {}
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.joint_pub = self.create_publisher(JointState, "joint_states", reliable)
        self.image_pub = self.create_publisher(Image, "camera/image", reliable)
        self.create_subscription(JointTrajectory, "joint_trajectory", self.on_command, reliable)
        self.create_subscription(Float64MultiArray, "vjepa2_planner/planned_action", self.on_action, reliable)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, reliable)
        self.create_timer(0.01, self.publish_joint_state)
        self.create_timer(0.05, self.publish_image)

    def on_command(self, msg: JointTrajectory) -> None:
        with self.lock:
            self.commands.append((time.monotonic(), msg))
            self.q = list(msg.points[0].positions)

    def on_action(self, msg: Float64MultiArray) -> None:
        with self.lock:
            self.actions.append(msg)

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self.lock:
            self.diagnostics += [s for s in msg.status if s.name.startswith(self.get_namespace())]

    def publish_joint_state(self) -> None:
        if not self.publish_inputs:
            return
        msg = JointState(name=list(self.joint_names))
        with self.lock:
            msg.position = [self.joint_value if self.joint_value is not None else v for v in self.q]
        msg.header.stamp = self.get_clock().now().to_msg()
        self.joint_pub.publish(msg)

    def publish_image(self) -> None:
        if not self.publish_inputs:
            return
        rgb = make_example_frame(64, 64, seed=0)
        msg = Image(height=64, width=64, encoding=self.encoding, step=64 * 3)
        msg.data = array.array("B", rgb.tobytes())
        msg.header.stamp = self.get_clock().now().to_msg()
        self.image_pub.publish(msg)

    def commands_since(self, t0: float) -> list[JointTrajectory]:
        with self.lock:
            return [m for t, m in self.commands if t >= t0]

    def call(self, srv_type, name: str, request, timeout_s: float = 10.0):
        if name not in self.clients_:
            self.clients_[name] = self.create_client(srv_type, f"vjepa2_planner/{name}")
        client = self.clients_[name]
        assert client.wait_for_service(timeout_sec=timeout_s), f"service {name} not available"
        future = client.call_async(request)
        assert wait_for(future.done, timeout_s), f"service {name} did not answer"
        return future.result()


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture
def setup(ros, tmp_path: Path):
    """(planner node, station node) spinning in a background executor."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    namespace = next(_namespaces)
    created = []

    def make(**parameters):
        overrides = [Parameter("config_file", value=str(config))]
        overrides += [Parameter(k, value=v) for k, v in parameters.items()]
        node = PlannerNode(namespace=namespace, parameter_overrides=overrides)
        station = Station(namespace)
        executor = MultiThreadedExecutor(num_threads=8)
        executor.add_node(node)
        executor.add_node(station)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        created.append((node, station, executor, thread))
        return node, station

    yield make
    for node, station, executor, thread in created:
        executor.shutdown()
        thread.join(timeout=5.0)
        node.destroy_node()
        station.destroy_node()


def test_lifecycle_services_command_rate_and_deactivate(setup):
    node, station = setup()
    answer = station.call(Trigger, "capture_goal", Trigger.Request())
    assert not answer.success and "not configured" in answer.message

    assert node.trigger_configure() == SUCCESS
    assert node.trigger_activate() == SUCCESS
    assert wait_for(lambda: len(station.commands) > 10), "no commands after activate"

    # No goal: a hold stream at the control rate, for the panda's joints, at the measured position.
    t0 = time.monotonic()
    time.sleep(1.0)
    held = station.commands_since(t0)
    assert 5 <= len(held) <= 1.3 * RATE_HZ, len(held)                # a stream, never above the rate
    assert all(list(m.joint_names) == PANDA for m in held)
    assert np.allclose([m.points[0].positions for m in held], Q_HOME, atol=1e-6)
    assert held[0].points[0].time_from_start.nanosec == pytest.approx(1e9 / RATE_HZ, rel=1e-3)

    # A goal by service call: plans arrive and the arm moves.
    answer = station.call(Trigger, "capture_goal", Trigger.Request())
    assert answer.success, answer.message
    assert "active" in answer.message
    assert wait_for(lambda: len(station.actions) >= 2 and np.abs(np.subtract(station.q, Q_HOME)).max() > 1e-4)
    assert len(station.actions[-1].data) == 7

    # Hold is one call away; enable resumes; clear_goal leaves the loop idle.
    answer = station.call(SetBool, "enable", SetBool.Request(data=False))
    assert answer.success and "holding" in answer.message, answer.message
    time.sleep(0.5)
    t1 = time.monotonic()
    time.sleep(0.3)
    still = [m.points[0].positions for m in station.commands_since(t1)]
    assert still and np.allclose(still, still[0], atol=1e-9)
    answer = station.call(SetBool, "enable", SetBool.Request(data=True))
    assert answer.success and "active" in answer.message, answer.message
    answer = station.call(Trigger, "clear_goal", Trigger.Request())
    assert answer.success and "idle" in answer.message, answer.message
    answer = station.call(SetBool, "enable", SetBool.Request(data=True))
    if answer.success:              # a stale-state fault on a starved machine came first: enable resumed it, idle
        assert "idle" in answer.message and "without a goal" in answer.message, answer.message
        answer = station.call(SetBool, "enable", SetBool.Request(data=True))
    assert not answer.success and "goal" in answer.message          # nothing to go to

    # Deactivate: brake, hold, and no command after it. Commands sent before deactivate returned
    # may still be in delivery on a busy machine (the station's callbacks share this process):
    # they drain first; then nothing more arrives and the loop ticks no more.
    assert node.trigger_deactivate() == SUCCESS
    ticks = node._loop.tick_count
    assert wait_for(lambda: not station.commands_since(time.monotonic() - 0.3)), "commands keep arriving"
    t2 = time.monotonic()
    time.sleep(1.0)
    assert station.commands_since(t2) == []
    assert node._loop.tick_count == ticks, "the loop ticked after deactivate"

    assert node.trigger_cleanup() == SUCCESS
    answer = station.call(Trigger, "capture_goal", Trigger.Request())
    assert not answer.success and "not configured" in answer.message


def test_goal_image_parameter_is_checked_when_set(setup, tmp_path: Path):
    import cv2
    node, station = setup()
    assert node.trigger_configure() == SUCCESS
    result = node.set_parameters([Parameter("goal_image_path", value=str(tmp_path / "missing.png"))])[0]
    assert not result.successful and "missing.png" in result.reason
    goal = tmp_path / "goal.png"
    cv2.imwrite(str(goal), make_example_frame(64, 64, seed=5)[:, :, ::-1])
    assert node.set_parameters([Parameter("goal_image_path", value=str(goal))])[0].successful
    assert node._loop.planner.has_goal
    result = node.set_parameters([Parameter("control.rate_hz", value=-5.0)])[0]
    assert not result.successful and "rate_hz" in result.reason
    node.trigger_cleanup()


def test_dry_run_plans_and_never_commands(setup):
    node, station = setup(**{"control.dry_run": True})
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    time.sleep(0.5)
    assert station.call(Trigger, "capture_goal", Trigger.Request()).success
    assert wait_for(lambda: len(station.actions) >= 2), "no plans in dry run"
    assert station.commands == []
    node.trigger_deactivate()
    node.trigger_cleanup()


@pytest.mark.parametrize("bad, expected", [("encoding", "16UC1"), ("joint_names", "lacks joints"),
                                           ("nan", "non-finite")])
def test_bad_messages_give_a_diagnostic_and_no_command(setup, bad, expected):
    node, station = setup()
    if bad == "encoding":
        station.encoding = "16UC1"                # a depth image on the colour topic
    elif bad == "joint_names":
        station.joint_names = FR3                 # an FR3's joint states for a panda
    else:
        station.joint_value = float("nan")
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS

    def reported() -> bool:
        with station.lock:
            return any(s.level == DiagnosticStatus.ERROR and expected in s.message for s in station.diagnostics)
    assert wait_for(reported, 5.0), [s.message for s in station.diagnostics]
    answer = station.call(Trigger, "capture_goal", Trigger.Request())
    time.sleep(1.0)
    assert station.commands == [], answer.message
    node.trigger_deactivate()
    node.trigger_cleanup()


def test_calibrate_is_refused_unless_active_and_not_in_dry_run(setup, tmp_path: Path):
    node, station = setup(**{"control.dry_run": True, "calibration.out_dir": str(tmp_path / "cal")})
    answer = station.call(Trigger, "calibrate", Trigger.Request())
    assert not answer.success and "not configured" in answer.message, answer.message
    assert node.trigger_configure() == SUCCESS
    answer = station.call(Trigger, "calibrate", Trigger.Request())
    assert not answer.success and "needs the node active (lifecycle state inactive)" in answer.message, answer.message
    assert node.trigger_activate() == SUCCESS
    answer = station.call(Trigger, "calibrate", Trigger.Request())
    assert not answer.success and "control.dry_run is true" in answer.message, answer.message
    result = node.set_parameters([Parameter("calibration.moves", value=2)])[0]
    assert not result.successful and "at least 3 moves" in result.reason
    result = node.set_parameters([Parameter("calibration.fit", value="best")])[0]
    assert not result.successful and "fit must be one of" in result.reason
    assert station.commands == [] and not (tmp_path / "cal").exists()
    node.trigger_deactivate()
    node.trigger_cleanup()


def test_enable_false_stops_a_calibration_at_once_and_the_arm_holds_its_goal_kept(setup, tmp_path: Path):
    node, station = setup(**{"calibration.moves": 30, "calibration.out_dir": str(tmp_path / "cal")})
    assert node.trigger_configure() == SUCCESS and node.trigger_activate() == SUCCESS
    assert wait_for(lambda: len(station.commands) > 10), "no commands after activate"
    assert station.call(Trigger, "capture_goal", Trigger.Request()).success
    assert station.call(SetBool, "enable", SetBool.Request(data=False)).success
    client = station.create_client(Trigger, "vjepa2_planner/calibrate")
    assert client.wait_for_service(timeout_sec=10.0)
    future = client.call_async(Trigger.Request())

    def progress(text: str) -> bool:
        with station.lock:
            return any(text in s.message for s in station.diagnostics)
    assert wait_for(lambda: progress("calibrating: move 2/30"), 30.0), [s.message for s in station.diagnostics[-3:]]
    q_moving = list(station.q)
    answer = station.call(Trigger, "capture_goal", Trigger.Request())       # no goal change meanwhile
    assert not answer.success and "calibration (~/calibrate) is running" in answer.message, answer.message
    answer = station.call(SetBool, "enable", SetBool.Request(data=False))
    t_stop = time.monotonic()
    assert answer.success and "holding" in answer.message, answer.message
    assert wait_for(future.done, 10.0), "~/calibrate did not answer after ~/enable false"
    answer = future.result()
    assert not answer.success and "calibration failed" in answer.message and "disabled by ~/enable" in answer.message
    assert time.monotonic() - t_stop < 5.0
    assert node._loop.running and node._loop.state.value == "holding" and node._loop.planner.has_goal
    assert not progress("calibrating: move 30/30") and np.abs(np.subtract(station.q, q_moving)).max() < 0.1
    time.sleep(0.5)
    t1 = time.monotonic()
    time.sleep(0.5)
    held = [m.points[0].positions for m in station.commands_since(t1)]
    assert held and np.allclose(held, held[0], atol=1e-9)                    # the node's loop holds the arm
    assert not (tmp_path / "cal").exists()
    node.trigger_deactivate()
    node.trigger_cleanup()


def test_gripper_action_without_control_msgs_falls_back_to_the_topic(setup):
    from vjepa2_ros.nodes.planner_node import import_gripper_command
    if import_gripper_command() is not None:
        pytest.skip("control_msgs is installed: the action path is tested below")
    node, station = setup(gripper="action")
    assert node.trigger_configure() == SUCCESS
    assert node._gripper_interface == "topic" and node._gripper_client is None
    assert "gripper" in node._publishers_                      # std_msgs/Float64 on gripper_command
    topics = dict(node.get_publisher_names_and_types_by_node(node.get_name(), node.get_namespace()))
    assert topics.get(f"{node.get_namespace()}/gripper_command") == ["std_msgs/msg/Float64"], topics
    node.trigger_cleanup()


def test_gripper_action_uses_the_gripper_command_client_with_control_msgs(setup):
    pytest.importorskip("control_msgs", reason="control_msgs is not installed (no wheel; a ROS 2 install has it)")
    node, station = setup(gripper="action")
    assert node.trigger_configure() == SUCCESS
    assert node._gripper_interface == "action" and node._gripper_client is not None
    node.trigger_cleanup()



def _console(name: str, *args: str, cwd: Path, domain_id: int):
    import subprocess
    from vjepa2_ros.nodes import ros_session as rs
    return subprocess.Popen([rs.console_script(name), "--ros-args", *args], env=rs.ros_env(domain_id), cwd=str(cwd),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=rs.normal_priority)


def test_console_script_exits_1_with_the_reason_for_a_bad_config_file(tmp_path: Path):
    proc = _console("planner_node", "-p", f"config_file:={tmp_path / 'missing.yaml'}", cwd=tmp_path, domain_id=0)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "missing.yaml" in out, out


def test_console_script_exits_0_on_sigterm(tmp_path: Path):
    import signal
    from vjepa2_ros.nodes import ros_session as rs
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    domain = rs.private_domain_id()
    session = rs.RosSession(domain)
    proc = _console("planner_node", "-p", f"config_file:={config}", cwd=tmp_path, domain_id=domain)
    try:
        def up() -> bool:
            try:
                return session.monitor.lifecycle_state() == "unconfigured"
            except TimeoutError:
                return False
        assert wait_for(up, 120), "planner_node did not come up"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        session.close()
    assert proc.returncode == 0 and "SIGTERM: braking, holding, shutting down" in out, out
