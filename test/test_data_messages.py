"""Message <-> numpy conversions: every supported encoding, reordering by name, clear errors."""

from types import SimpleNamespace

import numpy as np
import pytest

from vjepa2_ros.data.messages import (RAW_ENCODINGS, array_to_joint_state, image_msg_to_rgb, joint_state_to_array,
                                      matrix_to_pose_msg, matrix_to_quaternion, ns_to_seconds, pose_msg_to_matrix,
                                      quaternion_to_matrix, rgb_to_compressed_msg, rgb_to_image_msg, seconds_to_ns)
from vjepa2_ros.errors import DataError


def _rgb(h=6, w=10, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_raw_colour_encodings_round_trip_exactly(encoding):
    rgb = _rgb()
    msg = rgb_to_image_msg(rgb, 5, encoding=encoding)
    assert msg.encoding == encoding and msg.step == 10 * RAW_ENCODINGS[encoding]
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


def test_bgr8_bytes_are_in_bgr_order():
    rgb = np.zeros((1, 1, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    assert rgb_to_image_msg(rgb, 0, encoding="bgr8").data.tolist() == [30, 20, 10]


def test_mono8_gives_grey_rgb():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    msg = SimpleNamespace(encoding="mono8", height=3, width=4, step=4, data=grey.reshape(-1).tobytes())
    out = image_msg_to_rgb(msg)
    assert out.shape == (3, 4, 3)
    np.testing.assert_array_equal(out[..., 0], grey)
    np.testing.assert_array_equal(out[..., 2], grey)


def test_row_padding_is_skipped():
    rgb = _rgb(2, 3)
    padded = np.zeros((2, 16), np.uint8)
    padded[:, :9] = rgb.reshape(2, 9)
    msg = SimpleNamespace(encoding="rgb8", height=2, width=3, step=16, data=padded.reshape(-1))
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_images(fmt):
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[..., 0] = np.linspace(0, 255, 48, dtype=np.uint8)
    rgb[8:24, 8:24] = (20, 200, 90)
    msg = rgb_to_compressed_msg(rgb, 0, fmt=fmt)
    assert fmt in msg.format
    out = image_msg_to_rgb(msg)
    if fmt == "png":
        np.testing.assert_array_equal(out, rgb)
    else:
        assert np.abs(out.astype(int) - rgb).mean() < 4.0


def test_unknown_encoding_and_bad_data_are_named():
    with pytest.raises(DataError, match="'encoding' is '16UC1'"):
        image_msg_to_rgb(SimpleNamespace(encoding="16UC1", height=1, width=1, step=2, data=b"\0\0"))
    with pytest.raises(DataError, match="'data' has 5 bytes"):
        image_msg_to_rgb(SimpleNamespace(encoding="rgb8", height=2, width=1, step=3, data=b"\0" * 5))
    with pytest.raises(DataError, match="'format' is 'tiff'"):
        image_msg_to_rgb(SimpleNamespace(format="tiff", data=b"\0"))
    with pytest.raises(DataError, match="compressedDepth png"):
        image_msg_to_rgb(SimpleNamespace(format="16UC1; compressedDepth png", data=b"\0"))
    with pytest.raises(DataError, match="does not decode"):
        image_msg_to_rgb(SimpleNamespace(format="jpeg", data=b"not a jpeg"))


def test_joint_state_reordered_by_name_and_missing_joints_named():
    names = [f"panda_joint{i}" for i in range(1, 8)]
    msg = array_to_joint_state(np.arange(7.0), names, 1_500_000_000)
    msg.name = list(reversed(msg.name))                       # a driver may publish any order
    msg.position = msg.position[::-1].copy()
    q, stamp = joint_state_to_array(msg, names)
    np.testing.assert_array_equal(q, np.arange(7.0))
    assert stamp == 1.5
    with pytest.raises(DataError, match=r"lacks joints \['fr3_joint1'"):
        joint_state_to_array(msg, [f"fr3_joint{i}" for i in range(1, 8)])


def test_pose_message_round_trip_and_quaternions():
    rng = np.random.default_rng(1)
    for _ in range(20):
        q = rng.normal(size=4)
        R = quaternion_to_matrix(q)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(quaternion_to_matrix(matrix_to_quaternion(R)), R, atol=1e-12)
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, rng.normal(size=3)
        np.testing.assert_allclose(pose_msg_to_matrix(matrix_to_pose_msg(T, 0)), T, atol=1e-12)
    with pytest.raises(DataError, match="not a rotation"):
        quaternion_to_matrix(np.zeros(4))


def test_stamps_convert_exactly_at_epoch_scale():
    s = 1_700_000_000.0 + np.arange(40) * 0.25 + 1 / 3
    ns = np.array([seconds_to_ns(v) for v in s])
    np.testing.assert_array_equal(ns_to_seconds(ns), s)
