"""Recorded data: raw DROID episodes, rosbag2 bags, message conversions, the sim episode generator.

Everything yields or takes `Episode` (frames, states in the model's convention, timestamps);
file I/O stays in `droid`, `bags` and `video`, conversions are pure functions in `messages`.
"""

from vjepa2_ros.data.episode import DEFAULT_STEP_S, Episode, make_example_episode, resample_rows

__all__ = ["DEFAULT_STEP_S", "Episode", "make_example_episode", "resample_rows"]
