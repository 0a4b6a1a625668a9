"""vjepa2_ros: the V-JEPA 2-AC world model as a robot stack (model, engines, planning, control, ROS 2)."""

__version__ = "0.1.0"
