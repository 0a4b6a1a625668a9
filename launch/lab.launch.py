"""Lab station: the V-JEPA 2-AC planner on a Franka arm with a camera and a GPU.

    ros2 launch vjepa2_ros lab.launch.py robot_model:=fr3 command_interface:=trajectory \
        camera_topic:=/camera/camera/color/image_raw checkpoint:=/path/to/vjepa2-ac-vitg.pt
    ros2 service call /vjepa2_planner/capture_goal std_srvs/srv/Trigger      # the arm moves

The node's parameters come from `params_file` (the same YAML schema as the `vjepa2-ros` CLI,
default: this package's config/lab.yaml); a launch argument left empty keeps the file's value.
With autostart the node is configured (model loaded and checked) and activated (control loop
running, no goal yet: the arm holds) as soon as it is up, once: a later `ros2 lifecycle set
/vjepa2_planner deactivate` stays deactivated. If the node dies, the launch shuts down with an
error (exit code 1). See docs/ros2.md.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

PACKAGE = "vjepa2_ros"
NODE_NAME = "vjepa2_planner"

# (name, default, description). An empty default means "keep the params_file value".
ARGUMENTS = (
    ("robot_ip", "", "FCI address of the arm, for command_interface:=franky (e.g. 172.16.0.2)"),
    ("robot_model", "", "panda | fr3: kinematics, limits and joint names (panda_joint1..7 / fr3_joint1..7)"),
    ("command_interface", "trajectory",
     "trajectory: trajectory_msgs/JointTrajectory to a JointTrajectoryController; position: "
     "std_msgs/Float64MultiArray to a forward position controller; franky: drive the arm directly"),
    ("controller", "",
     "ros2_control controller receiving the commands (default: joint_trajectory_controller or "
     "forward_position_controller)"),
    ("camera_topic", "/camera/camera/color/image_raw", "camera image topic (sensor_msgs/Image)"),
    ("camera_transport", "raw", "raw: sensor_msgs/Image on camera_topic; compressed: CompressedImage on <camera_topic>/compressed"),
    ("joint_states_topic", "/joint_states", "sensor_msgs/JointState of the arm (franky: published there)"),
    ("gripper", "action",
     "action: control_msgs/GripperCommand action client; topic: std_msgs/Float64 closedness 0..1; none"),
    ("gripper_action", "/franka_gripper/gripper_action", "GripperCommand action server (gripper:=action)"),
    ("goal_image", "", "image file that becomes the goal once configured (empty: set one by service call)"),
    ("checkpoint", "", "V-JEPA 2-AC checkpoint (.pt or .safetensors)"),
    ("encoder_checkpoint", "", "separate encoder weights (.safetensors), when the checkpoint has none"),
    ("engine_dir", "", "folder of exported ONNX / TensorRT engines (runtime onnxruntime or tensorrt)"),
    ("runtime", "", "torch | onnxruntime | tensorrt"),
    ("params_file", "", "parameter YAML in the vjepa2-ros schema (default: config/lab.yaml of this package)"),
    ("use_sim_time", "false", "use /clock (bag replay, simulation)"),
    ("dry_run", "false", "plan and publish plans, never command the arm"),
    ("autostart", "true", "configure and activate the node at start (the arm holds until a goal is set)"),
)

# launch argument -> schema parameter (the `vjepa2-ros` YAML schema, flattened with dots)
SCHEMA_PARAMETERS = {
    "robot_model": "control.robot",
    "checkpoint": "model.checkpoint",
    "encoder_checkpoint": "model.encoder_checkpoint",
    "engine_dir": "model.engine_dir",
    "runtime": "model.runtime",
}
DEFAULT_CONTROLLERS = {"trajectory": "joint_trajectory_controller", "position": "forward_position_controller"}
COMMAND_TOPICS = {"trajectory": "joint_trajectory", "position": "commands"}


def _as_bool(name: str, text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(f"launch argument {name} must be true or false, got {text!r}")
    return text.lower() == "true"


def planner_actions(context):
    """The planner node (+ autostart events) from the resolved launch arguments."""
    from ament_index_python.packages import get_package_share_directory

    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS
           if name in context.launch_configurations}
    params_file = arg.get("params_file") or f"{get_package_share_directory(PACKAGE)}/config/lab.yaml"
    interface = arg.get("command_interface", "trajectory")
    if interface not in ("trajectory", "position", "franky"):
        raise ValueError(f"command_interface must be trajectory, position or franky, got {interface!r}")
    parameters = {
        "config_file": params_file,
        "command_interface": interface,
        "camera_transport": arg.get("camera_transport", "raw"),
        "gripper": arg.get("gripper", "action"),
        "robot_ip": arg.get("robot_ip", ""),
        "goal_image_path": arg.get("goal_image", ""),
        "use_sim_time": _as_bool("use_sim_time", arg.get("use_sim_time", "false")),
    }
    parameters.update({key: arg[name] for name, key in SCHEMA_PARAMETERS.items() if arg.get(name)})
    if _as_bool("dry_run", arg.get("dry_run", "false")):
        parameters["control.dry_run"] = True

    camera = arg.get("camera_topic", "/camera/camera/color/image_raw")
    remappings = [("camera/image", camera), ("camera/image/compressed", f"{camera}/compressed"),
                  ("joint_states", arg.get("joint_states_topic", "/joint_states")),
                  ("gripper_action", arg.get("gripper_action", "/franka_gripper/gripper_action"))]
    if interface in COMMAND_TOPICS:
        controller = arg.get("controller") or DEFAULT_CONTROLLERS[interface]
        remappings.append((COMMAND_TOPICS[interface], f"/{controller}/{COMMAND_TOPICS[interface]}"))

    node = LifecycleNode(package=PACKAGE, executable="planner_node", name=NODE_NAME, namespace="",
                         output="screen", parameters=[parameters], remappings=remappings)
    actions = [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=planner_exited))]
    if _as_bool("autostart", arg.get("autostart", "true")):
        actions += autostart_actions(node)
    return actions


def autostart_actions(node):
    """configure now; activate once, when that configure succeeds (start_state "configuring"):
    a requested deactivate (activating -> ... -> inactive via "deactivating") is left alone."""
    def change(transition_id):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id))
    return [
        RegisterEventHandler(OnStateTransition(target_lifecycle_node=node, start_state="configuring",
                                               goal_state="inactive",
                                               entities=[change(Transition.TRANSITION_ACTIVATE)])),
        change(Transition.TRANSITION_CONFIGURE),
    ]


def planner_exited(event, context):
    """The node is gone: nothing left to configure or activate, so end the launch, with an error
    (launch exits 1) unless the launch itself was shutting down (Ctrl-C)."""
    if context.is_shutdown:
        return None
    raise RuntimeError(f"{NODE_NAME} exited (code {event.returncode}) while the launch was running")


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=doc) for name, default, doc in ARGUMENTS]
        + [OpaqueFunction(function=planner_actions)])
