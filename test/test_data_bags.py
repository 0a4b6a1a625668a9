"""rosbag2 bags: episode round trips in both storages and distros, joint reordering, clear errors."""

from dataclasses import replace

import numpy as np
import pytest

from vjepa2_ros.data.bags import (BagReader, BagTopics, BagWriter, array_to_joint_state, read_bag_episode,
                                  rgb_to_image_msg, write_episode_bag)
from vjepa2_ros.data.episode import make_example_episode
from vjepa2_ros.errors import DataError
from vjepa2_ros.planning.pose import pose7_from_matrix
from vjepa2_ros.robot.kinematics import PANDA, Kinematics

Q_HOME = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.8])


@pytest.fixture(scope="module")
def episode():
    """Example frames with kinematically consistent joints and flange states."""
    ep = make_example_episode(steps=10, height=32, width=48, seed=5)
    t = np.arange(10)[:, None] * 0.25
    q = Q_HOME + 0.2 * np.sin(t * np.linspace(0.5, 1.5, 7))
    states = pose7_from_matrix(Kinematics(PANDA).fk_batch(q, "flange"), ep.states[:, 6]).numpy()
    return replace(ep, joint_positions=q, states=states)


@pytest.mark.parametrize("storage,distro", [("mcap", "jazzy"), ("sqlite3", "humble")])
def test_raw_round_trip_is_exact(tmp_path, episode, storage, distro):
    bag = write_episode_bag(tmp_path / "bag", episode, storage=storage, distro=distro)
    with BagReader(bag) as reader:
        assert reader.topics == {"/camera/camera/color/image_raw": "sensor_msgs/msg/Image",
                                 "/joint_states": "sensor_msgs/msg/JointState",
                                 "/vjepa2_planner/flange_pose": "geometry_msgs/msg/PoseStamped"}
    back = read_bag_episode(bag, distro=distro)
    np.testing.assert_array_equal(back.frames, episode.frames)
    np.testing.assert_array_equal(back.stamps_s, episode.stamps_s)
    np.testing.assert_array_equal(back.joint_positions, episode.joint_positions)
    np.testing.assert_allclose(back.states, episode.states, rtol=0, atol=1e-12)
    assert back.meta["states_from"] == back.meta["gripper_from"] == "/joint_states"


def test_compressed_round_trip_within_jpeg_tolerance(tmp_path, episode):
    bag = write_episode_bag(tmp_path / "bag", episode, compressed=True)
    back = read_bag_episode(bag)                           # finds <camera topic>/compressed
    assert back.meta["camera_topic"] == "/camera/camera/color/image_raw/compressed"
    err = np.abs(back.frames.astype(int) - episode.frames)
    assert err.mean() < 6.0 and np.percentile(err, 90) < 16
    np.testing.assert_allclose(back.states, episode.states, rtol=0, atol=1e-12)


def test_states_from_the_flange_pose_without_joints(tmp_path):
    ep = make_example_episode(steps=6, height=16, width=16)
    back = read_bag_episode(write_episode_bag(tmp_path / "bag", ep))
    assert back.joint_positions is None and back.meta["states_from"] == "/vjepa2_planner/flange_pose"
    assert back.meta["gripper_from"] == "/franka_gripper/joint_states"
    np.testing.assert_allclose(back.states, ep.states, rtol=0, atol=1e-12)


def test_resampled_read_and_unordered_joint_names(tmp_path, episode):
    path = tmp_path / "bag"
    names = list(PANDA.joint_names)
    with BagWriter(path) as bag:
        for k in range(len(episode)):
            t_ns = int(round((episode.stamps_s[k] - 1.7e9) * 1e9))
            bag.write("/cam", rgb_to_image_msg(episode.frames[k], t_ns, encoding="bgr8", types=bag.types))
            # joint states twice as fast, names in reverse order, plus the fingers on the same topic
            for dt in (0, 125_000_000):
                q = episode.joint_positions[k] if dt == 0 else np.full(7, np.nan)
                msg = array_to_joint_state(np.r_[q[::-1], 0.01, 0.01],
                                           names[::-1] + ["panda_finger_joint1", "panda_finger_joint2"],
                                           t_ns + dt, types=bag.types)
                bag.write("/joint_states", msg)
    back = read_bag_episode(path, camera_topic="/cam", joint_states_topic="/joint_states", step_s=0.5)
    assert back.meta["rows"] == [0, 2, 4, 6, 8]
    np.testing.assert_array_equal(back.frames, episode.frames[::2])
    np.testing.assert_array_equal(back.joint_positions, episode.joint_positions[::2])
    np.testing.assert_allclose(back.states[:, 6], 0.75)                   # 2 cm of 8 cm open
    assert back.meta["gripper_from"] == "/joint_states"


def test_bag_without_needed_topics(tmp_path, episode):
    bag = write_episode_bag(tmp_path / "bag", episode)
    with pytest.raises(DataError, match=r"bag: no topic '/wrist/image'; the bag has \['/camera/camera/color/image_raw'"):
        read_bag_episode(bag, camera_topic="/wrist/image")
    with pytest.raises(DataError, match=r"needs joint states on '/js' or a flange pose on '/pose'"):
        read_bag_episode(bag, joint_states_topic="/js", flange_pose_topic="/pose")
    with pytest.raises(DataError, match=r"topic '/joint_states' carries sensor_msgs/msg/JointState"):
        read_bag_episode(bag, camera_topic="/joint_states")
    with pytest.raises(DataError, match="bag not found"):
        read_bag_episode(tmp_path / "nothing")
    assert len(read_bag_episode(bag / "bag.mcap")) == len(episode)        # Humble users name the .mcap file
    (bag / "metadata.yaml").unlink()
    with pytest.raises(DataError, match=r"bag.mcap: a bare storage file"):
        read_bag_episode(bag / "bag.mcap")


def test_wrong_joint_names_are_named(tmp_path, episode):
    bag = write_episode_bag(tmp_path / "bag", episode)
    with pytest.raises(DataError, match=r"topic '/joint_states' .*lacks joints \['fr3_joint1'"):
        read_bag_episode(bag, arm="fr3", gripper_topic="/none")


def test_unknown_image_encoding_is_named(tmp_path, episode):
    path = tmp_path / "bag"
    with BagWriter(path, storage="sqlite3") as bag:
        msg = rgb_to_image_msg(episode.frames[0], 1, types=bag.types)
        msg.encoding = "16UC1"
        bag.write(BagTopics.camera, msg)
        bag.write(BagTopics.joint_states, array_to_joint_state(episode.joint_positions[0], PANDA.joint_names, 1,
                                                               types=bag.types))
    with pytest.raises(DataError, match=r"topic '/camera/camera/color/image_raw' message 0: Image field 'encoding' is '16UC1'"):
        read_bag_episode(path)


def test_writer_refuses_to_overwrite(tmp_path, episode):
    bag = write_episode_bag(tmp_path / "bag", episode)
    with pytest.raises(DataError, match="cannot create the bag"):
        write_episode_bag(bag, episode)


def test_convert_several_droid_episodes_into_a_folder_of_bags(tmp_path, episode):
    from vjepa2_ros import cli
    from vjepa2_ros.data.droid import read_droid_episode, write_droid_episode
    for name in ("a", "b"):
        write_droid_episode(tmp_path / "droid" / name, episode)
    listing = tmp_path / "list.txt"
    listing.write_text("droid/a\ndroid/b\n")
    assert cli.main(["convert", "droid", str(listing), "--out", str(tmp_path / "bags"), "--storage", "sqlite3",
                     "--arm", "panda", "--size", "16x24"]) == 0
    assert sorted(p.name for p in (tmp_path / "bags").iterdir()) == ["a", "b"]
    back = read_bag_episode(tmp_path / "bags" / "b")
    droid = read_droid_episode(tmp_path / "droid" / "b", step_s=None, size=(16, 24))
    assert back.frames.shape == (10, 16, 24, 3)
    np.testing.assert_array_equal(back.frames, droid.frames)
    np.testing.assert_allclose(back.states, droid.states, atol=1e-12)


def test_convert_keep_going_skips_unreadable_episodes(tmp_path, episode, capsys):
    from vjepa2_ros import cli
    from vjepa2_ros.data.droid import write_droid_episode
    good = write_droid_episode(tmp_path / "droid" / "good", episode)
    bad = write_droid_episode(tmp_path / "droid" / "bad", episode)
    (bad / "recordings/MP4/20000001.mp4").unlink()                         # like DROID episodes without video
    argv = ["convert", "droid", str(tmp_path / "droid"), "--out", str(tmp_path / "bags")]
    assert cli.main(argv) == 1
    assert "no recording of camera 'left'" in capsys.readouterr().err
    assert cli.main(argv[:-1] + [str(tmp_path / "bags2"), "--keep-going"]) == 1
    assert f"skipped {bad}" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "bags2").iterdir()] == [good.name]
