"""Goal images on the simulated arm: the camera's view with the arm at a given posture.

Shared by `vjepa2-ros demo` and `vjepa2-ros bench sim-reach`: both render the goal image from a
target end-effector pose (solved to joints by IK), then reset the arm to its start posture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:                                   # the sim (and mujoco) only where it runs
    from vjepa2_ros.robot.sim import SimBackend


def goal_view(backend: "SimBackend", q: np.ndarray) -> np.ndarray:
    """Reset the arm to q [7] rad (at rest, gripper open) and return the camera's view, uint8 [H, W, 3].

    The arm stays at q. Read the run's frames from a camera made after the next reset: a sim
    camera caches its last frame by stamp, and reset keeps the simulated clock."""
    backend.reset(q)
    return backend.camera().read_latest().image.copy()
