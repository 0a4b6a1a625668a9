"""A simulated robot station as a ROS 2 node: the MuJoCo Panda behind the topics a real station has.

A thin shell over `vjepa2_ros.robot.station.SimStation` (no physics here). It publishes what the
drivers of a real station publish, and takes commands the way ros2_control's controllers do:

Outputs: joint_states (sensor_msgs/JointState: panda_joint1..7 + the two finger joints, positions
and velocities, at joint_state_rate_hz, stamped with the simulated instant), camera/image
(sensor_msgs/Image rgb8 at camera_rate_hz, stamped with the capture instant), /diagnostics
(commands received: rate and periods, rejected commands).
Services: ~/publish_camera and ~/publish_joint_states (std_srvs/SetBool): false pauses that output,
as a driver that went silent would (fault injection for `vjepa2-ros soak`); true resumes it.
Inputs: joint_trajectory_controller/joint_trajectory (trajectory_msgs/JointTrajectory, interpolated
in time like a JointTrajectoryController), forward_position_controller/commands
(std_msgs/Float64MultiArray, a forward position controller), gripper_command (std_msgs/Float64
closedness, 0 open .. 1 closed).

    ros2 run vjepa2_ros sim_station --ros-args -p config_file:=config/sim_demo.yaml
    ros2 launch vjepa2_ros sim.launch.py        # the station and the planner
"""

from __future__ import annotations

import array
import json
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64, Float64MultiArray
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from vjepa2_ros.errors import Vjepa2RosError
from vjepa2_ros.nodes.process import run_node

NODE_NAME = "sim_station"
JOINT_STATES_TOPIC = "joint_states"
CAMERA_TOPIC = "camera/image"
TRAJECTORY_TOPIC = "joint_trajectory_controller/joint_trajectory"
POSITION_TOPIC = "forward_position_controller/commands"
GRIPPER_TOPIC = "gripper_command"
DIAGNOSTICS_TOPIC = "/diagnostics"

# joint_state_broadcaster publishes reliable (depth 10); camera drivers publish sensor data QoS.
STATE_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
COMMAND_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
DIAGNOSTICS_PERIOD_S = 1.0
REJECTED_WINDOW_S = 2.0

PARAMETERS = (   # (name, default, description)
    ("config_file", "", "vjepa2-ros stack YAML: the camera renders at its model's input size (as `vjepa2-ros "
     "demo` does), so a sim-trained model sees what it was trained on"),
    ("camera_size_px", 0, "square camera image size; 0: from config_file's model (256 without one)"),
    ("joint_state_rate_hz", 200.0, "JointState publishing rate"),
    ("camera_rate_hz", 20.0, "camera frame rate"),
    ("stats_file", "", "on shutdown, write the commands' receipt times here (JSON), e.g. for bench ros"),
)


class SimStationNode(Node):
    """Publishes the simulated arm's joint states and camera; commands in, ros2_control style."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for name, default, description in PARAMETERS:
            self.declare_parameter(name, default, ParameterDescriptor(description=description, read_only=True))
        p = {name: self.get_parameter(name).value for name, _, _ in PARAMETERS}
        self._stats_file = p["stats_file"]
        self._rejected: dict[str, tuple[float, str]] = {}
        self._publishing = {"camera": True, "joint_states": True}     # ~/publish_*: false = a silent driver
        self.station = _make_station(p["config_file"], int(p["camera_size_px"]), self._now_s)
        self._joint_names = list(self.station.spec.joint_names) + [f"{self.station.spec.name}_finger_joint{i}"
                                                                   for i in (1, 2)]

        self._state_group = MutuallyExclusiveCallbackGroup()
        self._camera_group = MutuallyExclusiveCallbackGroup()
        self._command_group = MutuallyExclusiveCallbackGroup()
        self._joint_pub = self.create_publisher(JointState, JOINT_STATES_TOPIC, STATE_QOS)
        self._image_pub = self.create_publisher(Image, CAMERA_TOPIC, qos_profile_sensor_data)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, STATE_QOS)
        self.create_subscription(JointTrajectory, TRAJECTORY_TOPIC, self._on_trajectory, COMMAND_QOS,
                                 callback_group=self._command_group)
        self.create_subscription(Float64MultiArray, POSITION_TOPIC, self._on_positions, COMMAND_QOS,
                                 callback_group=self._command_group)
        self.create_subscription(Float64, GRIPPER_TOPIC, self._on_gripper, COMMAND_QOS,
                                 callback_group=self._command_group)
        self.create_service(SetBool, "~/publish_camera", self._switch("camera"), callback_group=self._command_group)
        self.create_service(SetBool, "~/publish_joint_states", self._switch("joint_states"),
                            callback_group=self._command_group)
        self.station.start()
        self.create_timer(1.0 / float(p["joint_state_rate_hz"]), self._publish_joint_state,
                          callback_group=self._state_group)
        self.create_timer(1.0 / float(p["camera_rate_hz"]), self._publish_image, callback_group=self._camera_group)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics, callback_group=self._command_group)
        self.get_logger().info(
            f"simulated Panda up: joint states at {p['joint_state_rate_hz']:g} Hz on {JOINT_STATES_TOPIC}, "
            f"camera {self.station.sim.cfg.camera_width} px at {p['camera_rate_hz']:g} Hz on {CAMERA_TOPIC}; "
            f"commands on {TRAJECTORY_TOPIC}, {POSITION_TOPIC}, {GRIPPER_TOPIC}")

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    @staticmethod
    def _stamp(msg: Any, t_s: float) -> None:
        ns = int(round(t_s * 1e9))
        msg.header.stamp.sec, msg.header.stamp.nanosec = ns // 1_000_000_000, ns % 1_000_000_000

    def _switch(self, output: str):
        """A SetBool service callback: publish `output` (true) or stop publishing it (false)."""
        def switch(request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
            self._publishing[output] = bool(request.data)
            response.success = True
            response.message = f"{output} {'publishing' if request.data else 'paused'}"
            self.get_logger().info(response.message)
            return response
        return switch

    # --- outputs --------------------------------------------------------------------------------------
    def _publish_joint_state(self) -> None:
        if not self._publishing["joint_states"]:
            return
        s = self.station.state()
        msg = JointState(name=self._joint_names, position=[*s.q.tolist(), *s.fingers_m.tolist()],
                         velocity=[*s.dq.tolist(), *s.finger_speeds.tolist()])
        self._stamp(msg, s.stamp_s)
        self._joint_pub.publish(msg)

    def _publish_image(self) -> None:
        if not self._publishing["camera"]:
            return
        stamp_s, rgb = self.station.render()
        h, w, _ = rgb.shape
        msg = Image(height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3, data=array.array("B", rgb.tobytes()))
        msg.header.frame_id = "exterior_camera"
        self._stamp(msg, stamp_s)
        self._image_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        stats = self.station.commands.summary(since_s=self._now_s() - 5.0)
        values = {f"commands_5s_{k}": f"{v:.3f}" if isinstance(v, float) else str(v) for k, v in stats.items()}
        recent = {k: text for k, (t, text) in self._rejected.items() if time.monotonic() - t < REJECTED_WINDOW_S}
        level, message = DiagnosticStatus.OK, f"simulating; {stats['rate_hz']:.1f} commands/s"
        if recent:
            level = DiagnosticStatus.ERROR
            message = "; ".join(f"{k} rejected: {text}" for k, text in recent.items())
        status = DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: station",
                                  hardware_id="mujoco_panda", message=message,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)

    # --- commands ---------------------------------------------------------------------------------------
    def _on_trajectory(self, msg: JointTrajectory) -> None:
        start_s = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        p = msg.points
        self._apply("joint_trajectory", lambda: self.station.command_trajectory(
            msg.joint_names, [x.time_from_start.sec + x.time_from_start.nanosec * 1e-9 for x in p],
            [x.positions for x in p], [x.velocities for x in p], start_s))

    def _on_positions(self, msg: Float64MultiArray) -> None:
        self._apply("commands", lambda: self.station.command_positions(msg.data))

    def _on_gripper(self, msg: Float64) -> None:
        self._apply("gripper_command", lambda: self.station.command_gripper(msg.data))

    def _apply(self, source: str, command) -> None:
        try:
            command()
        except Vjepa2RosError as e:
            self._rejected[source] = (time.monotonic(), str(e))
            self.get_logger().error(f"{source}: command rejected, the arm keeps its current motion: {e}",
                                    throttle_duration_sec=2.0)

    def destroy_node(self) -> None:
        self.station.close()
        if self._stats_file:
            with open(self._stats_file, "w") as f:
                json.dump({"receipt_times_s": self.station.commands.stamps().tolist()}, f)
        super().destroy_node()


def _make_station(config_file: str, camera_px: int, clock):
    """The ROS-free station; the camera size from camera_px, else config_file's model, else 256."""
    from vjepa2_ros.robot.sim import SimConfig
    from vjepa2_ros.robot.station import SimStation
    if camera_px <= 0 and config_file:
        from vjepa2_ros.control.config import load_config
        from vjepa2_ros.control.stack import sim_camera_px
        camera_px = sim_camera_px(load_config(config_file).model)
    camera_px = camera_px if camera_px > 0 else 256
    return SimStation(SimConfig(camera_width=camera_px, camera_height=camera_px), clock=clock)


def main(args: list[str] | None = None) -> None:
    """`ros2 run vjepa2_ros sim_station`: simulate until SIGINT / SIGTERM, then exit 0."""
    run_node(SimStationNode, NODE_NAME, args, num_threads=4)


if __name__ == "__main__":
    main()
