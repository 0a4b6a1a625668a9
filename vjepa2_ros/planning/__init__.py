"""Model-predictive planning in latent space: pose math, CEM, the world-model facade, the planner."""

from vjepa2_ros.planning.cem import CEMConfig, CEMResult, cem, energy, run_cem, warm_start_mean
from vjepa2_ros.planning.pose import (euler_xyz_to_matrix, integrate_actions, integrate_pose, matrix_from_pose7,
                                      matrix_to_euler_xyz, pose7_from_matrix, poses_to_actions)
from vjepa2_ros.planning.planner import Planner, PlanResult, make_example_frame, make_example_state
from vjepa2_ros.planning.timing import StageTimer
from vjepa2_ros.planning.world_model import WorldModel

__all__ = [
    "CEMConfig", "CEMResult", "PlanResult", "Planner", "StageTimer", "WorldModel", "cem", "energy",
    "euler_xyz_to_matrix", "integrate_actions", "integrate_pose", "make_example_frame", "make_example_state",
    "matrix_from_pose7", "matrix_to_euler_xyz", "pose7_from_matrix", "poses_to_actions", "run_cem",
    "warm_start_mean",
]
