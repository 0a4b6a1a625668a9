"""The V-JEPA 2-AC planner as a ROS 2 lifecycle node: a thin shell over `control.ControlLoop`.

    configure   parameters -> StackConfig; load the model (checkpoint or engines) and check it;
                connect the arm (franky) or the topics; subscriptions and publishers
    activate    start the control loop (joint targets at control.rate_hz; the arm moves once a
                goal is set and ~/enable is not false)
    deactivate  safe stop: brake and hold, then stop the loop; commands stop
    cleanup     release the GPU and the arm

Inputs: camera/image (sensor_msgs/Image, or CompressedImage on camera/image/compressed),
joint_states (sensor_msgs/JointState, ordered by the arm's joint names), ~/goal_image (Image).
Services: ~/capture_goal, ~/clear_goal, ~/calibrate (std_srvs/Trigger), ~/enable (std_srvs/SetBool).
Outputs: joint_trajectory (trajectory_msgs/JointTrajectory) or commands (Float64MultiArray),
gripper_action (control_msgs/GripperCommand) or gripper_command (Float64), ~/joint_targets,
~/planned_action, ~/energy, /diagnostics; with franky also joint_states and ~/flange_pose.
Topic names below are relative: remap them (launch/lab.launch.py does). See docs/ros2.md.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
import numpy as np
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
from rclpy.lifecycle import Node, State, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64, Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from vjepa2_ros.errors import ConfigError, EngineError, Vjepa2RosError
from vjepa2_ros.nodes.parameters import (CALIBRATION, CAMERA_TRANSPORTS, COMMAND_INTERFACES, GRIPPER_INTERFACES,
                                         NODE_PARAMETERS, SECTIONS, ParameterSpec, calibration_config,
                                         check_choice, schema_parameters, stack_config)
from vjepa2_ros.nodes.process import run_node

NODE_NAME = "vjepa2_planner"

# Inputs
CAMERA_TOPIC = "camera/image"                       # + "/compressed" with camera_transport compressed
JOINT_STATES_TOPIC = "joint_states"                 # subscribed; published instead with franky
GOAL_IMAGE_TOPIC = "~/goal_image"
# Commands
TRAJECTORY_TOPIC = "joint_trajectory"               # remap to /<controller>/joint_trajectory
POSITION_TOPIC = "commands"                         # remap to /<controller>/commands
GRIPPER_ACTION = "gripper_action"                   # remap to /franka_gripper/gripper_action
GRIPPER_TOPIC = "gripper_command"
# What the node saw and decided
JOINT_TARGETS_TOPIC = "~/joint_targets"             # every tick, commanded or not (dry run, hold)
PLANNED_ACTION_TOPIC = "~/planned_action"           # [dx dy dz droll dpitch dyaw dgripper] per plan
ENERGY_TOPIC = "~/energy"
FLANGE_POSE_TOPIC = "~/flange_pose"                 # franky: measured flange pose
DIAGNOSTICS_TOPIC = "/diagnostics"

# Joint targets: reliable, only the newest matters, and the controller may expect one at least
# every few periods (a missed deadline is an event on both sides).
COMMAND_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         deadline=Duration(seconds=0.1))
# A goal image published once is still received by a node started (or configured) later.
GOAL_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
OUTPUT_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)

DIAGNOSTICS_PERIOD_S = 1.0
ARM_INPUTS = ("joint_states", "camera")              # a rejected message from these holds the arm
INPUT_ERROR_WINDOW_S = 2.0       # a rejected message keeps the diagnostic at ERROR this long


def import_gripper_command():
    """control_msgs' GripperCommand action type, or None where control_msgs is not installed."""
    try:
        from control_msgs.action import GripperCommand
    except ImportError:
        return None
    return GripperCommand


class PlannerNode(Node):
    """Lifecycle node: ROS messages in, ControlLoop in the middle, ROS commands out."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        # Core objects, built in on_configure and released in on_cleanup / on_shutdown.
        self._cfg = None
        self._loop = None
        self._backend = None
        self._camera = None
        self._planner = None
        self._interface = "trajectory"
        self._joint_names: tuple[str, ...] = ()
        self._finger_names: tuple[str, ...] = ()
        self._loop_clock = time.monotonic
        self._start_pending = False
        self._published_plan: dict | None = None
        self._input_errors: dict[str, tuple[float, str]] = {}
        self._last_diag_s = 0.0
        self._lifecycle = "unconfigured"                    # for diagnostics and service answers
        self._model_check = ""
        self._base_frame = ""
        self._start_lock = threading.Lock()
        self._subscriptions_: list = []
        self._publishers_: dict[str, Any] = {}
        self._gripper_client = None                         # rclpy ActionClient (gripper action)
        self._gripper_interface = "none"                    # in effect after configure: action, topic or none
        self._calibration = None                            # control.calibrate.LiveCalibration while ~/calibrate runs
        self._calibration_text = ""                         # its progress, then its result (diagnostics)
        super().__init__(node_name, automatically_declare_parameters_from_overrides=True, **kwargs)

        self._declare_parameters()
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._joint_group = MutuallyExclusiveCallbackGroup()
        self._camera_group = MutuallyExclusiveCallbackGroup()
        self._planning_group = MutuallyExclusiveCallbackGroup()    # goal encoding runs the model
        self._safety_group = MutuallyExclusiveCallbackGroup()      # ~/enable: hold is never queued behind a goal
        self._calibration_group = MutuallyExclusiveCallbackGroup()  # ~/calibrate takes a while: nothing waits on it
        self.create_service(Trigger, "~/capture_goal", self._capture_goal, callback_group=self._planning_group)
        self.create_service(Trigger, "~/clear_goal", self._clear_goal, callback_group=self._planning_group)
        self.create_service(SetBool, "~/enable", self._enable, callback_group=self._safety_group)
        self.create_service(Trigger, "~/calibrate", self._calibrate, callback_group=self._calibration_group)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, OUTPUT_QOS)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics, callback_group=self._safety_group)

    # --- parameters ---------------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        """The node's own parameters, then every schema leaf with config_file's value as default."""
        for spec in NODE_PARAMETERS:
            self._declare(spec)
        config_file = self.get_parameter("config_file").value or None
        for spec in schema_parameters(config_file):
            self._declare(spec)

    def _declare(self, spec: ParameterSpec) -> None:
        if self.has_parameter(spec.name) or self.get_parameters_by_prefix(spec.name):
            return                                           # given as an override (or a nested one)
        descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only,
                                         dynamic_typing=spec.default is None)
        self.declare_parameter(spec.name, spec.default, descriptor)

    def _schema_values(self, changed: dict[str, Any] | None = None) -> dict[str, Any]:
        values = {f"{section}.{name}": p.value for section in SECTIONS
                  for name, p in self.get_parameters_by_prefix(section).items()}
        values.update({k: v for k, v in (changed or {}).items() if k.split(".")[0] in SECTIONS})
        return values

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        """Check every change before it is accepted; goals are set here, the rest on configure."""
        changed = {p.name: p.value for p in params}
        try:
            if any(name.split(".")[0] in SECTIONS for name in changed):
                stack_config(self._schema_values(changed))
            if any(name.split(".")[0] == CALIBRATION for name in changed):
                calibration_config({**self._calibration_values(), **changed})
            for name, allowed in (("command_interface", COMMAND_INTERFACES),
                                  ("camera_transport", CAMERA_TRANSPORTS), ("gripper", GRIPPER_INTERFACES)):
                if name in changed:
                    check_choice(name, changed[name], allowed)
            if changed.get("goal_sequence"):
                self._set_goal_files(list(changed["goal_sequence"]))
            if changed.get("goal_image_path"):
                self._set_goal_files([changed["goal_image_path"]])
        except Vjepa2RosError as e:
            return SetParametersResult(successful=False, reason=str(e))
        return SetParametersResult(successful=True)

    def _calibration_values(self) -> dict[str, Any]:
        return {f"{CALIBRATION}.{name}": p.value for name, p in self.get_parameters_by_prefix(CALIBRATION).items()}

    def _set_goal_files(self, paths: list[str]) -> None:
        """Check the files; with a configured loop they become the goal(s) at once."""
        from vjepa2_ros.control.loop import read_image
        images = [read_image(p) for p in paths]              # ConfigError names a bad file
        if self._loop is not None and self._calibration is not None:
            raise ConfigError("a calibration (~/calibrate) is running: set the goal after it")
        if self._loop is not None:
            if len(images) == 1:
                self._loop.set_goal_image(images[0])
            else:
                self._loop.set_goals(images)

    # --- lifecycle ----------------------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self._build()
        except Vjepa2RosError as e:
            self.get_logger().error(f"configure failed: {e}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        except Exception as e:                               # a bug or a driver failure: say what it was
            self.get_logger().error(f"configure failed: {type(e).__name__}: {e}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"configured: {self._describe()}; model check: {self._model_check}")
        self._lifecycle = "inactive"
        return super().on_configure(state)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        try:
            self._loop.resume()                              # resync to the measured joints; active if a goal is set
        except Vjepa2RosError as e:                          # the arm did not recover from its fault
            self.get_logger().error(f"activate failed: {e}")
            return TransitionCallbackReturn.FAILURE
        ret = super().on_activate(state)                     # lifecycle publishers on before the first tick
        self._lifecycle = "active"
        with self._start_lock:
            self._start_pending = True
        if not self._start_if_ready():                       # never run on an arm or a scene not yet seen
            self.get_logger().info("active: the control loop starts with the first joint state and camera frame")
        return ret

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        with self._start_lock:
            self._start_pending = False
        self._stop_calibration("deactivating")
        self._loop.stop()                                    # hold, brake, stop the threads
        self._lifecycle = "inactive"
        self.get_logger().info("deactivated: holding, no more commands")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._release()
        self._lifecycle = "finalized"
        return super().on_shutdown(state)

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS               # back to unconfigured

    def destroy_node(self) -> None:
        self._release()
        super().destroy_node()

    # --- building and releasing the stack -----------------------------------------------------------
    def _build(self) -> None:
        from vjepa2_ros.control.stack import build_backend, build_loop, build_planner
        from vjepa2_ros.data.bags import finger_joint_names
        from vjepa2_ros.nodes.topic_backend import LatestFrameCamera, TopicBackend
        from vjepa2_ros.robot.kinematics import arm_spec

        p = {spec.name: self.get_parameter(spec.name).value for spec in NODE_PARAMETERS}
        self._interface = check_choice("command_interface", p["command_interface"], COMMAND_INTERFACES)
        transport = check_choice("camera_transport", p["camera_transport"], CAMERA_TRANSPORTS)
        gripper = check_choice("gripper", p["gripper"], GRIPPER_INTERFACES)
        values = self._schema_values()
        if self._interface == "franky":
            values["control.backend"] = "franky"
        cfg = self._cfg = stack_config(values)
        spec = arm_spec(cfg.control.robot)
        self._joint_names = spec.joint_names
        self._base_frame = p["base_frame"] or f"{spec.name}_link0"
        self._finger_names = finger_joint_names(spec.name)

        self._planner = build_planner(cfg)                   # loads the weights / engines and checks them
        self._model_check = self._check_model()
        pubs = self._publishers_
        pubs["targets"] = self.create_lifecycle_publisher(JointState, JOINT_TARGETS_TOPIC, OUTPUT_QOS)
        pubs["action"] = self.create_lifecycle_publisher(Float64MultiArray, PLANNED_ACTION_TOPIC, OUTPUT_QOS)
        pubs["energy"] = self.create_lifecycle_publisher(Float64, ENERGY_TOPIC, OUTPUT_QOS)
        if self._interface == "franky":
            if not p["robot_ip"]:
                raise Vjepa2RosError("command_interface franky needs robot_ip (the arm's FCI address)")
            self._backend = build_backend(cfg, host=p["robot_ip"])
            self._loop_clock = time.monotonic                # franky stamps its states with time.monotonic
            pubs["joint_states"] = self.create_lifecycle_publisher(JointState, JOINT_STATES_TOPIC, OUTPUT_QOS)
            pubs["flange_pose"] = self.create_lifecycle_publisher(PoseStamped, FLANGE_POSE_TOPIC, OUTPUT_QOS)
        else:
            if self._interface == "trajectory":
                pubs["command"] = self.create_lifecycle_publisher(JointTrajectory, TRAJECTORY_TOPIC, COMMAND_QOS)
            else:
                pubs["command"] = self.create_lifecycle_publisher(Float64MultiArray, POSITION_TOPIC, COMMAND_QOS)
            self._backend = TopicBackend(spec, cfg.safety, send=self._send_joint_target,
                                         gripper=self._make_gripper_sink(gripper, p))
            self._loop_clock = self._ros_now                 # header stamps; simulated under bag play --clock
            self._subscriptions_.append(self.create_subscription(
                JointState, JOINT_STATES_TOPIC, self._on_joint_state, qos_profile_sensor_data,
                callback_group=self._joint_group))
        self._backend.connect()
        self._camera = LatestFrameCamera()
        image_type, topic = (Image, CAMERA_TOPIC) if transport == "raw" else (CompressedImage, CAMERA_TOPIC + "/compressed")
        self._subscriptions_.append(self.create_subscription(
            image_type, topic, self._on_image, qos_profile_sensor_data, callback_group=self._camera_group))
        self._loop = build_loop(cfg, self._planner, self._backend, self._camera, clock=self._loop_clock,
                                publish=self._on_tick)
        self._subscriptions_.append(self.create_subscription(
            Image, GOAL_IMAGE_TOPIC, self._on_goal_image, GOAL_QOS, callback_group=self._planning_group))
        if p["goal_sequence"]:
            self._set_goal_files(list(p["goal_sequence"]))
        elif p["goal_image_path"]:
            self._set_goal_files([p["goal_image_path"]])

    def _check_model(self) -> str:
        """Encode a black frame once: the runtime works on this device and gives finite latents."""
        t0 = time.monotonic()
        z = self._planner.world_model.encode(np.zeros((256, 256, 3), np.uint8))      # [1, N, D]
        if not bool(z.isfinite().all()):
            raise EngineError("model check failed: the encoder gives non-finite latents for a black frame")
        return f"encoder output {list(z.shape)} finite, {(time.monotonic() - t0) * 1e3:.0f} ms"

    def _make_gripper_sink(self, gripper: str, p: dict[str, Any]):
        if gripper == "action":
            gripper_command = import_gripper_command()
            if gripper_command is None:
                gripper = "topic"
                self.get_logger().warning(
                    f"gripper action: control_msgs is not installed, so there is no GripperCommand client; "
                    f"the gripper falls back to std_msgs/Float64 closedness on '{GRIPPER_TOPIC}' "
                    "(install ros-jazzy-control-msgs for the action, or set gripper:=topic / none)")
            else:
                from rclpy.action import ActionClient
                self._gripper_client = ActionClient(self, gripper_command, GRIPPER_ACTION,
                                                    callback_group=self._planning_group)
                open_m, effort = float(p["gripper_open_position_m"]), float(p["gripper_max_effort_n"])
                self._gripper_interface = "action"
                return lambda closedness: self._send_gripper_goal(gripper_command, closedness, open_m, effort)
        self._gripper_interface = gripper
        if gripper == "topic":
            self._publishers_["gripper"] = self.create_lifecycle_publisher(Float64, GRIPPER_TOPIC, COMMAND_QOS)
            return lambda closedness: self._publishers_["gripper"].publish(Float64(data=float(closedness)))
        return None

    def _release(self) -> None:
        """Stop the loop (hold), disconnect the arm, free the model and the ROS entities."""
        with self._start_lock:
            self._start_pending = False
        self._lifecycle = "unconfigured"
        self._input_errors = {}
        self._stop_calibration("releasing the arm")
        loop, backend, planner = self._loop, self._backend, self._planner
        self._loop = self._backend = self._planner = self._camera = None
        if loop is not None:
            loop.stop()
        if backend is not None:
            try:
                backend.disconnect()
            except Exception as e:                           # report, keep releasing
                self.get_logger().error(f"disconnecting the arm failed: {type(e).__name__}: {e}")
        if planner is not None:
            runtime = getattr(getattr(planner, "world_model", None), "runtime", None)
            if runtime is not None:
                runtime.release()                            # frees GPU memory
        for sub in self._subscriptions_:
            self.destroy_subscription(sub)
        self._subscriptions_ = []
        for pub in self._publishers_.values():
            self.destroy_lifecycle_publisher(pub)
        self._publishers_ = {}
        if self._gripper_client is not None:
            self._gripper_client.destroy()
            self._gripper_client = None

    # --- inputs ------------------------------------------------------------------------------------------
    def _ros_now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _loop_time(self, stamp_s: float) -> float:
        """A header stamp (ROS time) in the loop's clock: same age, never in the future."""
        return self._loop_clock() - max(0.0, self._ros_now() - stamp_s)

    def _on_joint_state(self, msg: JointState) -> None:
        from vjepa2_ros.data.bags import gripper_from_joint_state, joint_state_to_array
        backend = self._backend
        if backend is None:
            return
        try:
            q, stamp_s = joint_state_to_array(msg, self._joint_names)
            dq = None
            if len(msg.velocity) == len(msg.name):           # same reordering, velocities as positions
                dq, _ = joint_state_to_array(_with_positions(msg, msg.velocity), self._joint_names)
            gripper = None
            if all(n in msg.name for n in self._finger_names):
                gripper, _ = gripper_from_joint_state(msg, self._finger_names)
            backend.put_joint_state(q, self._loop_time(stamp_s), dq, gripper)
        except Vjepa2RosError as e:
            self._input_error("joint_states", str(e))
            return
        self._start_if_ready()

    def _start_if_ready(self) -> bool:
        """Start the control loop once active with a joint state and a camera frame; True if running."""
        with self._start_lock:
            if not self._start_pending:
                return False
            if not getattr(self._backend, "has_state", True) or self._camera.read_latest() is None:
                return False
            self._start_pending = False
            self._loop.start()
        self.get_logger().info(f"control loop started ({self._status_text()})")
        return True

    def _on_image(self, msg: Image | CompressedImage) -> None:
        from vjepa2_ros.data.bags import image_msg_to_rgb
        from vjepa2_ros.data.messages import stamp_to_ns
        camera = self._camera
        if camera is None:
            return
        try:
            camera.put(image_msg_to_rgb(msg), self._loop_time(stamp_to_ns(msg.header.stamp) * 1e-9))
        except Vjepa2RosError as e:
            self._input_error("camera", str(e))
            return
        self._start_if_ready()

    def _on_goal_image(self, msg: Image) -> None:
        from vjepa2_ros.data.bags import image_msg_to_rgb
        if self._calibration is not None:
            self._input_error("goal_image", "ignored: a calibration (~/calibrate) is running; publish it after")
            return
        try:
            self._loop.set_goal_image(image_msg_to_rgb(msg))
            self.get_logger().info(f"goal image received on {GOAL_IMAGE_TOPIC}: {self._status_text()}")
        except Vjepa2RosError as e:
            self._input_error("goal_image", str(e))

    def _input_error(self, source: str, text: str) -> None:
        """A rejected message: logged (throttled) and reported on /diagnostics at once. A bad
        message from the arm or the camera also holds the arm (a driver sending garbage is not
        trusted again until ~/enable true), even while good messages keep coming."""
        self._input_errors[source] = (time.monotonic(), text)
        self.get_logger().warning(f"{source}: message rejected: {text}", throttle_duration_sec=2.0)
        loop = self._loop
        if loop is not None and source in ARM_INPUTS:
            loop.hold(f"{source} message rejected: {text}")
            calibration = self._calibration
            if calibration is not None:
                calibration.hold(f"{source} message rejected: {text}")
        if time.monotonic() - self._last_diag_s > 0.1:
            self._publish_diagnostics()

    # --- services ------------------------------------------------------------------------------------------
    def _require_loop(self) -> str | None:
        if self._loop is None:
            return (f"the node is not configured (lifecycle state {self._lifecycle}); "
                    f"run: ros2 lifecycle set {self.get_fully_qualified_name()} configure")
        return None

    def _capture_goal(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self._run(lambda: self._loop.set_goal_from_camera(),
                                                       "goal set from the current camera frame", calibrating=False)
        return response

    def _clear_goal(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self._run(lambda: self._loop.clear_goal(), "goal cleared",
                                                       calibrating=False)
        return response

    def _enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        from vjepa2_ros.control.state import LoopState

        def enable() -> None:
            if not request.data:
                self._loop.hold("disabled by ~/enable")
                self._stop_calibration("disabled by ~/enable", restart=True)
            elif self._loop.state is LoopState.FAULT:
                self._loop.resume()                          # the explicit way out of a fault
            else:
                self._loop.activate()
        response.success, response.message = self._run(enable, "enabled" if request.data else "holding",
                                                       calibrating=not request.data)
        return response

    def _stop_calibration(self, reason: str, restart: bool = False) -> None:
        """Stop a calibration's moves at once: they brake and hold. restart: the node's loop takes
        the arm back, holding (~/enable false); else it stays stopped (deactivate, cleanup), and
        this waits for the braking to end, so no command follows."""
        calibration = self._calibration
        if calibration is not None:
            calibration.hold(reason, restart=restart, wait_s=0.0 if restart else 5.0)

    def _calibrate(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """~/calibrate: the camera calibration on the arm (control.calibrate.LiveCalibration); the
        frame is applied to the planner and saved; the arm holds afterwards, its goal kept."""
        response.success, response.message = self._run(self._calibrate_now, "", calibrating=False)
        return response

    def _calibrate_now(self) -> str:
        from vjepa2_ros.control.calibrate import LiveCalibration, describe_result
        if self._lifecycle != "active":
            raise ConfigError(f"calibration needs the node active (lifecycle state {self._lifecycle}); run: "
                              f"ros2 lifecycle set {self.get_fully_qualified_name()} activate")
        if self._cfg.control.dry_run:
            raise ConfigError("calibration moves the arm, and control.dry_run is true: set control.dry_run false "
                              "(cleanup, configure, activate) to calibrate")
        cfg = calibration_config(self._calibration_values())
        out = Path(str(self.get_parameter(f"{CALIBRATION}.out_dir").value or ".")).expanduser() / \
            time.strftime("calibrate-%Y%m%d-%H%M%S", time.gmtime())
        with self._start_lock:                              # vs deactivate / cleanup
            if self._calibration is not None:
                raise ConfigError("a calibration is already running")
            if self._lifecycle != "active" or self._start_pending:
                raise ConfigError("the control loop has not started yet: it starts with the first joint state "
                                  "and camera frame")
            calibration = self._calibration = LiveCalibration(self._loop, cfg, progress=self._calibration_progress)
        try:
            self._calibration_progress(f"{cfg.moves} moves of {100 * cfg.step_m:.1f} cm")
            result = calibration.run(out)
        except Vjepa2RosError as e:
            self._calibration_text = f"failed: {e}"
            raise Vjepa2RosError(f"calibration failed: {e}; the arm holds") from e
        except Exception as e:
            self._calibration_text = f"failed: {type(e).__name__}: {e}"
            raise
        finally:
            with self._start_lock:
                self._calibration = None
            self._publish_diagnostics()
        frame, center = list(result.action_frame), [float(v) for v in result.center_m]
        self._cfg = dataclasses.replace(self._cfg, planning=dataclasses.replace(
            self._cfg.planning, action_frame=tuple(frame), action_frame_center_m=tuple(center)))
        self._apply_frame_parameters(frame, center)
        self._calibration_text = f"done: {describe_result(result, cfg)}; written to {out}"
        self._publish_diagnostics()
        return (f"calibrated: {describe_result(result, cfg)}; the planner plans in this frame now; written to "
                f"{out / 'action_frame.yaml'} (with stack.yaml, calibration.json, calibration.png); the arm "
                f"holds, ~/enable true goes on")

    def _apply_frame_parameters(self, frame: list[float], center: list[float]) -> None:
        """planning.action_frame / action_frame_center_m, so a later configure keeps the frame."""
        from rclpy.parameter import Parameter
        results = self.set_parameters([Parameter("planning.action_frame", value=frame),
                                       Parameter("planning.action_frame_center_m", value=center)])
        failed = [r.reason for r in results if not r.successful]
        if failed:                                          # applied to the planner and written, but not kept
            self.get_logger().warning(f"calibration: the planning.action_frame parameters were not set: {failed}")

    def _calibration_progress(self, text: str) -> None:
        """LiveCalibration's progress line: logged and on /diagnostics at once."""
        self._calibration_text = f"calibrating: {text}"
        self.get_logger().info(f"calibrate: {text}")
        self._publish_diagnostics()

    def _run(self, action, done: str, calibrating: bool = True) -> tuple[bool, str]:
        """Run a loop call for a service: (success, message naming the resulting state); with
        calibrating False, refused while ~/calibrate runs. `action` may return the message itself."""
        problem = self._require_loop()
        if problem:
            return False, problem
        if not calibrating and self._calibration is not None:
            return False, ("a calibration (~/calibrate) is running: try again after it; ~/enable false stops it "
                           f"({self._calibration_text})")
        try:
            done = action() or done
        except Vjepa2RosError as e:
            return False, f"{e} ({self._status_text()})"
        except Exception as e:                           # a bug: say so, never end the executor thread
            self.get_logger().error(f"service call failed: {type(e).__name__}: {e}\n{traceback.format_exc()}")
            return False, f"unexpected error: {type(e).__name__}: {e} ({self._status_text()})"
        return True, f"{done} ({self._status_text()})"

    # --- outputs ----------------------------------------------------------------------------------------------
    def _send_joint_target(self, q: np.ndarray) -> None:
        """TopicBackend's sink: one joint target [7] rad to the controller."""
        pub = self._publishers_.get("command")
        if pub is None:
            return
        if self._interface == "trajectory":
            # A zero header stamp means "start now"; reach the point in one control period.
            point = JointTrajectoryPoint(positions=q.tolist(),
                                         time_from_start=Duration(seconds=self._cfg.control.period_s).to_msg())
            pub.publish(JointTrajectory(joint_names=list(self._joint_names), points=[point]))
        else:
            pub.publish(Float64MultiArray(data=q.tolist()))

    def _send_gripper_goal(self, gripper_command, closedness: float, open_position_m: float,
                           max_effort_n: float) -> None:
        client = self._gripper_client
        if client is None or not client.server_is_ready():
            self._input_error("gripper", f"GripperCommand server '{GRIPPER_ACTION}' is not available")
            return
        goal = gripper_command.Goal()
        goal.command.position = (1.0 - closedness) * open_position_m
        goal.command.max_effort = max_effort_n
        client.send_goal_async(goal)

    def _on_tick(self, stamp_s: float, q_cmd: np.ndarray, gripper: float, sent: bool) -> None:
        """The loop's per-tick callback (its command thread): what it commanded, new plans, arm state."""
        pubs = self._publishers_
        now = self.get_clock().now().to_msg()
        if "targets" in pubs:
            msg = JointState(name=list(self._joint_names), position=q_cmd.tolist())
            msg.header.stamp = now
            pubs["targets"].publish(msg)
        plan = self._loop.last_plan if self._loop is not None else None
        if plan is not None and plan is not self._published_plan:
            self._published_plan = plan
            if plan.get("ok"):
                pubs["action"].publish(Float64MultiArray(data=np.asarray(plan["action"], dtype=float).tolist()))
                pubs["energy"].publish(Float64(data=float(plan["energy"])))
        if "joint_states" in pubs and self._backend is not None:
            self._publish_arm_state(now)

    def _publish_arm_state(self, now) -> None:
        from vjepa2_ros.data.messages import matrix_to_quaternion
        state = self._backend.read_state()
        js = JointState(name=list(self._joint_names), position=state.q.tolist(), velocity=state.dq.tolist())
        js.header.stamp = now
        self._publishers_["joint_states"].publish(js)
        pose = PoseStamped()
        pose.header.stamp = now
        pose.header.frame_id = self._base_frame
        T = state.flange_pose
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = (float(v) for v in T[:3, 3])
        o = pose.pose.orientation
        o.x, o.y, o.z, o.w = (float(v) for v in matrix_to_quaternion(T[:3, :3]))
        self._publishers_["flange_pose"].publish(pose)

    def _status_text(self) -> str:
        loop = self._loop
        if loop is None:
            return "not configured"
        return f"state {loop.state.value}: {loop.reason}"

    def _describe(self) -> str:
        m, c = self._cfg.model, self._cfg.control
        return (f"{m.runtime} runtime on {m.device} ({m.dtype}), {c.robot}, command_interface {self._interface}, "
                f"{c.rate_hz:g} Hz, dry_run {c.dry_run}")

    def _publish_diagnostics(self) -> None:
        """One DiagnosticStatus: lifecycle and loop state with its reason, latency, data ages, runtime."""
        self._last_diag_s = time.monotonic()
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: planner", hardware_id=self.get_name())
        values = {"lifecycle": self._lifecycle}
        loop = self._loop
        level, message = DiagnosticStatus.OK, "not configured"
        if loop is not None:
            from vjepa2_ros.control.state import LoopState
            now = self._loop_clock()
            values.update({k: str(v) for k, v in loop.status().items()})
            events = loop.sm.events
            if events:                                       # when the loop entered its state (loop clock, s)
                values["state_since_s"] = f"{events[-1].stamp_s:.6f}"
            pid = getattr(self._planner, "info", {}).get("pid")
            if pid is not None:                              # the planner process (control.planner_process)
                values["planner_pid"] = str(pid)
            values.update(runtime=self._describe(), model_check=self._model_check,
                          command_interface=self._interface, gripper=self._gripper_interface)
            frame = self._camera.read_latest() if self._camera is not None else None
            values["camera_age_s"] = "none yet" if frame is None else f"{now - frame.stamp_s:.3f}"
            try:
                values["joint_state_age_s"] = f"{now - self._backend.read_state().stamp_s:.3f}"
            except Exception as e:                           # no state yet, or the arm's I/O failed
                values["joint_state_age_s"] = f"unavailable: {e}"
            values["action_frame"] = json.dumps(_frame_value(self._cfg.planning.action_frame))
            plan = loop.last_plan
            if plan is not None:
                values["plan_ms"] = f"{plan.get('plan_ms', float('nan')):.1f}"
                values["energy"] = str(plan.get("energy", "none"))
                if plan.get("error"):
                    values["last_plan_error"] = plan["error"]
                cem = plan.get("diagnostics", {}).get("cem", {})
                if "action_frame" in cem:                    # the frame the planner planned in (its process's)
                    values["plan_action_frame"] = json.dumps(_frame_value(cem["action_frame"]))
            if self._calibration_text:
                values["calibration"] = self._calibration_text
            message = f"{loop.state.value}: {loop.reason}"
            if self._calibration is not None:
                message = f"{self._calibration_text} | {message}"
            if loop.state is LoopState.FAULT:
                level = DiagnosticStatus.ERROR
            elif loop.state is LoopState.HOLDING or self._cfg.control.dry_run:
                level = DiagnosticStatus.WARN
        recent = {k: t for k, (s, t) in self._input_errors.items() if time.monotonic() - s < INPUT_ERROR_WINDOW_S}
        if recent:
            level = DiagnosticStatus.ERROR
            message = "; ".join(f"{k} rejected: {t}" for k, t in recent.items()) + f" | {message}"
        values.update({f"rejected_{k}": t for k, (_, t) in self._input_errors.items()})
        status.level, status.message = level, message
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)


def _frame_value(frame: Any) -> list[float] | None:
    """An action frame (9 numbers or None) for /diagnostics, as JSON: null is the robot's frame."""
    return None if frame is None else [round(float(v), 9) for v in frame]


def _with_positions(msg: JointState, position) -> JointState:
    """msg with `position` replaced (to reorder velocities by name with the same converter)."""
    out = JointState(name=list(msg.name), position=list(position))
    out.header = msg.header
    return out


def main(args: list[str] | None = None) -> None:
    """`ros2 run vjepa2_ros planner_node`: spin until SIGINT / SIGTERM, then brake, hold and exit 0
    (nodes.process.run_node: the braking stream is published before rclpy shuts down)."""
    def said(node: PlannerNode, signum: int) -> None:
        node.get_logger().info(f"{signal.Signals(signum).name}: braking, holding, shutting down")
    run_node(PlannerNode, NODE_NAME, args, on_signal=said, cleanup=lambda node: node._release())


if __name__ == "__main__":
    main()
