"""Simulated station: the MuJoCo Panda as ROS 2 topics, and the planner with the shipped sim world model.

    ros2 launch vjepa2_ros sim.launch.py
    ros2 service call /vjepa2_planner/capture_goal std_srvs/srv/Trigger      # the current view is the goal
    ros2 topic pub --once /vjepa2_planner/goal_image sensor_msgs/msg/Image ...   # or a goal image

`sim_station` publishes /joint_states (200 Hz) and /camera/image (rgb8, 20 Hz) and takes
/joint_trajectory_controller/joint_trajectory (or /forward_position_controller/commands with
command_interface:=position) and /gripper_command, as a station with ros2_control does. The
planner node comes from lab.launch.py's code (autostart once, the launch ends with an error when
the node dies) with config/sim_demo.yaml and models/sim_reach/. See docs/ros2.md.
"""

import importlib.util
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

PACKAGE = "vjepa2_ros"
NODE_NAME = "vjepa2_planner"
HERE = Path(__file__).resolve().parent                      # launch/ of the source tree or of share/vjepa2_ros
BASE = HERE.parent                                          # holds config/ and models/ in both

ARGUMENTS = (
    ("command_interface", "trajectory",
     "trajectory: JointTrajectory to the station's joint_trajectory_controller; position: Float64MultiArray "
     "to its forward_position_controller"),
    ("dry_run", "false", "plan and publish plans, never command the arm"),
    ("autostart", "true", "configure and activate the planner at start (the arm holds until a goal is set)"),
    ("params_file", "", "parameter YAML in the vjepa2-ros schema (default: config/sim_demo.yaml, the shipped "
     "sim world model)"),
    ("camera_rate_hz", "20.0", "the simulated camera's frame rate"),
    ("joint_state_rate_hz", "200.0", "the simulated arm's JointState rate"),
)
# The station shares this machine's CPU with the planner; see vjepa2_ros/nodes/ros_session.py.
SIM_OVER_DDS = {"safety.max_state_age_s": 0.5, "safety.max_frame_age_s": 1.0, "control.planner_nice": 0}
STATION_TOPICS = {"camera/image": "/camera/image", "joint_states": "/joint_states",
                  "joint_trajectory": "/joint_trajectory_controller/joint_trajectory",
                  "commands": "/forward_position_controller/commands", "gripper_command": "/gripper_command"}


def _lab():
    """lab.launch.py beside this file, as a module (its autostart and exit handling)."""
    spec = importlib.util.spec_from_file_location("vjepa2_lab_launch", HERE / "lab.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sim_actions(context):
    lab = _lab()
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    interface = arg["command_interface"]
    if interface not in ("trajectory", "position"):
        raise ValueError(f"command_interface must be trajectory or position, got {interface!r}")
    params_file = arg["params_file"] or str(BASE / "config" / "sim_demo.yaml")
    station = Node(package=PACKAGE, executable="sim_station", name="sim_station", output="screen",
                   parameters=[{"config_file": params_file, "camera_rate_hz": float(arg["camera_rate_hz"]),
                                "joint_state_rate_hz": float(arg["joint_state_rate_hz"])}])
    parameters = {
        "config_file": params_file,
        "command_interface": interface,
        "gripper": "topic",
        "model.checkpoint": str(BASE / "models" / "sim_reach" / "predictor.safetensors"),
        "model.encoder_checkpoint": str(BASE / "models" / "sim_reach" / "encoder.safetensors"),
        **SIM_OVER_DDS,
    }
    if lab._as_bool("dry_run", arg["dry_run"]):
        parameters["control.dry_run"] = True
    planner = LifecycleNode(package=PACKAGE, executable="planner_node", name=NODE_NAME, namespace="",
                            output="screen", parameters=[parameters], remappings=list(STATION_TOPICS.items()))
    actions = [station, planner,
               RegisterEventHandler(OnProcessExit(target_action=planner, on_exit=lab.planner_exited)),
               RegisterEventHandler(OnProcessExit(target_action=station, on_exit=station_exited))]
    if lab._as_bool("autostart", arg["autostart"]):
        actions += lab.autostart_actions(planner)
    return actions


def station_exited(event, context):
    if context.is_shutdown:
        return None
    raise RuntimeError(f"sim_station exited (code {event.returncode}) while the launch was running")


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=doc) for name, default, doc in ARGUMENTS]
        + [OpaqueFunction(function=sim_actions)])
