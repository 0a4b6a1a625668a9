"""Offline validation on a recorded bag: play it with --clock, plan in dry run, record the plans.

    ros2 launch vjepa2_ros replay.launch.py bag:=runs/episode_0007 goal_image:=goal.png

The planner (lab.launch.py with use_sim_time:=true and dry_run:=true: it plans and publishes,
it never commands the arm) is configured and activated first; once it is active, `ros2 bag
record` starts on its outputs and `ros2 bag play --clock` on the input bag. When the bag ends,
everything shuts down and `output_bag` holds the plans, energies, joint targets and diagnostics.
"""

import os

from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, ExecuteProcess, IncludeLaunchDescription,
                            OpaqueFunction, RegisterEventHandler)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.event_handlers import OnStateTransition

NODE_NAME = "vjepa2_planner"
OUTPUT_TOPICS = (f"/{NODE_NAME}/planned_action", f"/{NODE_NAME}/energy", f"/{NODE_NAME}/joint_targets",
                 "/diagnostics")

# (name, default, description); `bag` has no default: it must be given.
ARGUMENTS = (
    ("bag", None, "rosbag2 folder (or .mcap file) with the camera and joint-state topics"),
    ("goal_image", "", "image file that becomes the goal (empty: call ~/capture_goal during the replay)"),
    ("output_bag", "", "where to record the planner's outputs (default: <bag>_plans)"),
    ("rate", "1.0", "playback rate (planning runs on the bag's clock)"),
    ("robot_model", "", "panda | fr3 (the recording's arm)"),
    ("camera_topic", "/camera/camera/color/image_raw", "camera topic in the bag"),
    ("camera_transport", "raw", "raw | compressed (<camera_topic>/compressed)"),
    ("joint_states_topic", "/joint_states", "joint-state topic in the bag"),
    ("checkpoint", "", "V-JEPA 2-AC checkpoint (.pt or .safetensors)"),
    ("engine_dir", "", "folder of exported ONNX / TensorRT engines"),
    ("runtime", "", "torch | onnxruntime | tensorrt"),
    ("params_file", "", "parameter YAML in the vjepa2-ros schema (default: config/lab.yaml of this package)"),
)


def _declare(name, default, doc):
    if default is None:
        return DeclareLaunchArgument(name, description=doc)
    return DeclareLaunchArgument(name, default_value=default, description=doc)


def planner(context):
    """lab.launch.py in dry run on the bag's clock, goal from goal_image."""
    from ament_index_python.packages import get_package_share_directory
    lab = os.path.join(get_package_share_directory("vjepa2_ros"), "launch", "lab.launch.py")
    forwarded = ("robot_model", "camera_topic", "camera_transport", "joint_states_topic", "checkpoint",
                 "engine_dir", "runtime", "params_file")
    arguments = {name: LaunchConfiguration(name).perform(context) for name in forwarded}
    arguments.update(command_interface="trajectory", gripper="none", use_sim_time="true", dry_run="true",
                     autostart="true", goal_image=LaunchConfiguration("goal_image").perform(context))
    return [IncludeLaunchDescription(PythonLaunchDescriptionSource(lab), launch_arguments=arguments.items())]


def bag_processes(context):
    """Record the outputs, play the bag; shut down when the bag ends."""
    bag = LaunchConfiguration("bag").perform(context)
    source = bag.rstrip("/")
    for suffix in (".mcap", ".db3"):                         # a single storage file: name the folder after it
        source = source[:-len(suffix)] if source.endswith(suffix) else source
    output = LaunchConfiguration("output_bag").perform(context) or f"{source}_plans"
    record = ExecuteProcess(cmd=["ros2", "bag", "record", "-s", "mcap", "-o", output, *OUTPUT_TOPICS],
                            output="screen")
    # The bag path goes before --clock: `--clock` takes an optional frequency and would eat it.
    play = ExecuteProcess(cmd=["ros2", "bag", "play", bag, "--clock", "100",
                               "--rate", LaunchConfiguration("rate").perform(context)], output="screen")
    done = RegisterEventHandler(OnProcessExit(target_action=play,
                                              on_exit=[EmitEvent(event=Shutdown(reason="bag finished"))]))
    return [record, play, done]


def generate_launch_description():
    return LaunchDescription(
        [_declare(*a) for a in ARGUMENTS]
        + [OpaqueFunction(function=planner),
           RegisterEventHandler(OnStateTransition(goal_state="active", handle_once=True,
                                                  entities=[OpaqueFunction(function=bag_processes)]))])
