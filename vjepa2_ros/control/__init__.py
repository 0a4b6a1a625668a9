"""The ROS-free control loop: observations in, safe joint commands out, at control rate.

`load_config` reads the stack's one YAML schema; `ControlLoop` runs planner + interpolation +
safety on any robot backend, in real time (threads) or stepped simulated time.
"""

from vjepa2_ros.control.config import ControlConfig, ModelConfig, StackConfig, load_config
from vjepa2_ros.control.loop import ControlLoop
from vjepa2_ros.control.recorder import Recorder, read_recording
from vjepa2_ros.control.state import LoopState, StateMachine

__all__ = ["ControlConfig", "ControlLoop", "LoopState", "ModelConfig", "Recorder", "StackConfig", "StateMachine",
           "load_config", "read_recording"]
