"""Raw DROID layout: write, read back, resample by timestamps, and fail clearly on damaged files."""

import json
from dataclasses import replace

import h5py
import numpy as np
import pytest

from vjepa2_ros.data.droid import CARTESIAN, find_droid_episodes, read_droid_episode, write_droid_episode
from vjepa2_ros.data.episode import make_example_episode, resample_rows
from vjepa2_ros.data.video import read_frames, write_frames
from vjepa2_ros.errors import DataError

RATE_S = 1 / 15                                      # DROID rows


@pytest.fixture(scope="module")
def episode():
    ep = make_example_episode(steps=20, height=48, width=64, step_s=RATE_S, seed=3)
    return replace(ep, stamps_s=np.round(ep.stamps_s * 1000) / 1000)      # DROID stores ms


@pytest.fixture
def folder(tmp_path, episode):
    return write_droid_episode(tmp_path / "ep", episode, stereo=True, task="pick the cube")


def test_every_row_round_trips(folder, episode):
    ep = read_droid_episode(folder, step_s=None)
    assert len(ep) == 20 and ep.meta["task"] == "pick the cube"
    np.testing.assert_array_equal(ep.states, episode.states)
    np.testing.assert_array_equal(ep.stamps_s, episode.stamps_s)
    assert np.abs(ep.frames.astype(int) - episode.frames).mean() < 4.0       # H.264, yuv420p
    meta = json.loads(next(folder.glob("metadata_*.json")).read_text())
    assert meta["trajectory_length"] == 20 and meta["left_mp4_path"].endswith("20000001.mp4")


def test_resampling_takes_the_last_row_at_or_before_each_tick(folder, episode):
    ep = read_droid_episode(folder, step_s=0.25)
    t = episode.stamps_s - episode.stamps_s[0]
    expected = [max(i for i in range(20) if t[i] <= k * 0.25 + 1e-9) for k in range(int(t[-1] / 0.25) + 1)]
    assert ep.meta["rows"] == expected == [0, 3, 7, 11, 15, 18]
    np.testing.assert_array_equal(ep.states, episode.states[expected])
    assert ep.meta["step_s"] == 0.25
    assert len(read_droid_episode(folder, step_s=1.0)) == 2                 # the ~1 s time base of issue #183


def test_resample_rows_is_parametrised_by_step():
    stamps = np.arange(31) * 0.1
    assert resample_rows(stamps, 1.0).tolist() == [0, 10, 20, 30]
    assert resample_rows(stamps, 0.25).tolist()[:4] == [0, 2, 5, 7]


def test_stereo_left_half_matches_the_mono_file(folder):
    mono = read_droid_episode(folder, step_s=None, stereo=False).frames
    left = read_droid_episode(folder, step_s=None, stereo=True).frames
    assert left.shape == mono.shape
    assert np.abs(left.astype(int) - mono).mean() < 4.0
    (folder / "recordings/MP4/20000001.mp4").unlink()                        # auto: falls back to stereo
    assert read_droid_episode(folder, step_s=None).meta["video"].endswith("-stereo.mp4")


def test_mp4_one_frame_short_drops_the_last_row(folder, episode):
    write_frames(folder / "recordings/MP4/20000001.mp4", episode.frames[:-1])
    ep = read_droid_episode(folder, step_s=None, stereo=False)
    assert len(ep) == 19 and ep.meta["dropped_rows"] == 1


def test_frame_step_count_mismatch_names_both_files(folder, episode):
    write_frames(folder / "recordings/MP4/20000001.mp4", episode.frames[:-3])
    with pytest.raises(DataError, match=r"20000001.mp4: 17 video frames for 20 trajectory rows in .*trajectory.h5"):
        read_droid_episode(folder, stereo=False)


def test_truncated_h5_is_named(folder):
    h5 = folder / "trajectory.h5"
    h5.write_bytes(h5.read_bytes()[:2000])
    with pytest.raises(DataError, match=r"trajectory.h5: not a readable HDF5 file"):
        read_droid_episode(folder)


def test_missing_and_damaged_mp4(folder):
    mono = folder / "recordings/MP4/20000001.mp4"
    mono.write_bytes(mono.read_bytes()[:300])
    with pytest.raises(DataError, match=r"20000001.mp4: not a readable video file"):
        read_droid_episode(folder, stereo=False)
    mono.unlink()
    (folder / "recordings/MP4/20000001-stereo.mp4").unlink()
    with pytest.raises(DataError, match=r"no recording of camera 'left' \(serial 20000001\)"):
        read_droid_episode(folder)


def test_missing_fields_are_named(folder):
    with pytest.raises(DataError, match=r"metadata_.*json: field 'wrist_mp4_path'"):
        read_droid_episode(folder, camera="wrist")
    with h5py.File(folder / "trajectory.h5", "a") as f:
        del f[CARTESIAN]
    with pytest.raises(DataError, match=r"trajectory.h5: missing dataset 'observation/robot_state/cartesian_position'"):
        read_droid_episode(folder)


def test_read_frames_rejects_asking_past_the_end(folder):
    with pytest.raises(DataError, match="holds 20 video frames, but frame 25"):
        read_frames(folder / "recordings/MP4/20000001.mp4", rows=np.array([1, 25]))


def test_find_episodes_in_tree_and_list_file(tmp_path, episode):
    a = write_droid_episode(tmp_path / "lab/success/a", episode)
    b = write_droid_episode(tmp_path / "lab/failure/b", episode)
    assert find_droid_episodes(tmp_path) == sorted([a, b])
    listing = tmp_path / "episodes.csv"
    listing.write_text(f"{a} 0\nlab/failure/b 1\n")
    assert find_droid_episodes(listing) == [a, b]
    listing.write_text("lab/nowhere\n")
    with pytest.raises(DataError, match=r"episodes.csv:1: .*nowhere is not a DROID episode folder"):
        find_droid_episodes(listing)


def test_container_rate_is_ignored_and_bad_camera_stamps_fall_back(folder, episode):
    import av
    with av.open(str(folder / "recordings/MP4/20000001.mp4")) as c:
        assert float(c.streams.video[0].average_rate) == 60.0                # like DROID: 60 fps for 15 Hz content
    with h5py.File(folder / "trajectory.h5", "a") as f:
        f["observation/timestamp/cameras/20000001_estimated_capture"][3] = 0  # a dropped camera stamp
        f["observation/timestamp/control/step_start"][...] += 7
    ep = read_droid_episode(folder, step_s=None)
    assert ep.meta["stamps"] == "observation/timestamp/control/step_start"
    np.testing.assert_allclose(ep.stamps_s, episode.stamps_s + 0.007)
    with h5py.File(folder / "trajectory.h5", "a") as f:
        f["observation/timestamp/control/step_start"][5] = 1
    with pytest.raises(DataError, match=r"trajectory.h5: datasets .* must hold 20 positive, non-decreasing times"):
        read_droid_episode(folder)


def test_read_frames_counts_every_frame(folder):
    with pytest.raises(DataError, match="holds 20 video frames, expected 18"):
        read_frames(folder / "recordings/MP4/20000001.mp4", expected_count=18)
    assert read_frames(folder / "recordings/MP4/20000001.mp4", rows=np.array([2, 2, 19])).shape == (3, 48, 64, 3)
