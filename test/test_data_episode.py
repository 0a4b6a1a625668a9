"""Episode: validation naming the source, timestamp resampling, DROID actions."""

from dataclasses import replace

import numpy as np
import pytest

from vjepa2_ros.data.episode import Episode, make_example_episode
from vjepa2_ros.errors import ConfigError, DataError


def test_validation_names_source_and_field():
    ep = make_example_episode(steps=4, height=8, width=8)
    with pytest.raises(DataError, match=r"episode <example seed=0>: states must be \[T=4, 7\]"):
        replace(ep, states=ep.states[:3])
    with pytest.raises(DataError, match="frames must be uint8"):
        replace(ep, frames=ep.frames.astype(np.float32))
    with pytest.raises(DataError, match="stamps_s must be finite and non-decreasing"):
        replace(ep, stamps_s=ep.stamps_s[::-1].copy())
    with pytest.raises(DataError, match="joint_positions must be"):
        replace(ep, joint_positions=np.zeros((4, 6)))
    bad = ep.states.copy()
    bad[2, 1] = np.nan
    with pytest.raises(DataError, match=r"non-finite values \(rows \[2\]\)"):
        replace(ep, states=bad)


def test_resample_picks_the_last_row_at_or_before_each_tick():
    ep = make_example_episode(steps=10, height=8, width=8, step_s=0.1)
    ep = replace(ep, joint_positions=np.arange(70.0).reshape(10, 7))
    half = ep.resample(0.25)                                  # ticks 0, .25, .5, .75 -> rows 0, 2, 5, 7
    assert half.meta["rows"] == [0, 2, 5, 7] and half.meta["step_s"] == 0.25
    np.testing.assert_array_equal(half.frames, ep.frames[[0, 2, 5, 7]])
    np.testing.assert_array_equal(half.joint_positions, ep.joint_positions[[0, 2, 5, 7]])
    assert len(ep.resample(10.0)) == 1
    with pytest.raises(ConfigError, match="step_s must be a positive"):
        ep.resample(0.0)


def test_actions_are_droid_deltas():
    ep = make_example_episode(steps=5, height=8, width=8)
    a = ep.actions()
    assert a.shape == (4, 7) and a.dtype == np.float64
    np.testing.assert_allclose(a[:, :3], np.diff(ep.states[:, :3], axis=0))
    np.testing.assert_allclose(a[:, 6], np.diff(ep.states[:, 6]))
    pure_yaw = replace(ep, states=np.tile([0.5, 0, 0.3, 0.0, 0.0, 0.1, 0.0], (5, 1)) + np.outer(np.arange(5),
                                                                                               [0, 0, 0, 0, 0, 0.05, 0]))
    np.testing.assert_allclose(pure_yaw.actions()[:, 3:6], np.tile([0, 0, 0.05], (4, 1)), atol=1e-12)
    assert isinstance(ep, Episode) and len(ep) == 5
