"""bench goal-energy on the shipped sim model: real sim views, real encoder, the planner's energy."""

import numpy as np
import pytest

from vjepa2_ros.control.bench_goal_energy import measure, table
from vjepa2_ros.control.bench_reach import DEMO_CONFIG, bench_config
from vjepa2_ros.errors import ConfigError


def test_the_energy_to_a_goal_grows_with_the_distance_from_it():
    rows = measure(bench_config(DEMO_CONFIG), goals=2, seed=1, distances_m=[0.01, 0.10], per_distance=2,
                   progress=False)
    d, e = rows[:, 1], rows[:, 2]
    assert np.all(e[d == 0] == 0.0) and np.sum(d == 0) == 2            # the goal view itself
    assert np.sum(d == 0.01) >= 3 and np.sum(d == 0.10) >= 3            # IK found most views
    assert np.max(e[d == 0.01]) < np.min(e[d == 0.10])                 # 1 cm views all closer than 10 cm views
    text = table(rows, [float(np.median(e[d == 0.01])) + 1e-6], success_m=0.05)
    assert "0.00 of" in text                                           # below a 1 cm view's energy: none at 10 cm


def test_bad_arguments_are_named():
    with pytest.raises(ConfigError, match="distances must be > 0"):
        measure(bench_config(DEMO_CONFIG), goals=1, seed=1, distances_m=[0.0], per_distance=1)
