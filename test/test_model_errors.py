"""Bad input to the model core gets a clear error, never a deep traceback or silent slicing."""

import os
import shutil

import pytest
import torch

from conftest import FIXTURES
from vjepa2_ros.errors import CheckpointError, ConfigError
from vjepa2_ros.model import (ACPredictor, EncoderConfig, PredictorConfig, PreprocessConfig, VJEPA2Encoder,
                              load_official_checkpoint, preprocess_frames, read_state_dict)


@pytest.fixture(scope="module")
def encoder():
    return VJEPA2Encoder(EncoderConfig.tiny()).eval()


@pytest.fixture(scope="module")
def predictor():
    return ACPredictor(PredictorConfig.tiny()).eval()


@pytest.mark.parametrize("x, needle", [
    (torch.zeros(1, 3, 2, 64, 64, dtype=torch.uint8), "floating-point"),
    (torch.zeros(1, 4, 2, 64, 64), "4 channels"),
    (torch.zeros(1, 3, 3, 64, 64), "3 frames"),
    (torch.zeros(1, 3, 2, 60, 64), "multiples of the patch size"),
    (torch.zeros(3, 64, 64), "shape (3, 64, 64)"),
])
def test_encoder_rejects_bad_input(encoder, x, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        encoder(x)


def test_predictor_rejects_bad_input(predictor):
    n, d = 16, 64
    z = torch.zeros(2, 2 * n, d)
    good_a, good_s = torch.zeros(2, 2, 7), torch.zeros(2, 2, 7)
    with pytest.raises(ConfigError, match=r"actions must be \[B=2, T=2, 7\]"):
        predictor(z, torch.zeros(2, 2, 6), good_s)
    with pytest.raises(ConfigError, match=r"states must be \[B=2, T=2, 7\]"):
        predictor(z, good_a, torch.zeros(2, 3, 7))
    with pytest.raises(ConfigError, match="16 tokens per frame"):
        predictor(torch.zeros(2, 20, d), good_a, good_s)
    with pytest.raises(ConfigError, match=r"\[B, T\*16, 64\]"):
        predictor(torch.zeros(2, 2 * n, 32), good_a, good_s)
    steps = PredictorConfig.tiny().max_steps + 1
    with pytest.raises(ConfigError, match=f"got {steps} time steps, the model supports at most {steps - 1}"):
        predictor(torch.zeros(1, steps * n, d), torch.zeros(1, steps, 7), torch.zeros(1, steps, 7))


def test_incremental_rollout_stops_at_the_mask_size(predictor):
    cache = None
    z, a, s = torch.zeros(1, 16, 64), torch.zeros(1, 7), torch.zeros(1, 7)
    with torch.no_grad():
        for _ in range(predictor.cfg.max_steps):
            _, cache = predictor.forward_step(z, a, s, cache)
        with pytest.raises(ConfigError, match="at most"):
            predictor.forward_step(z, a, s, cache)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(num_heads=5), "divisible by num_heads"),
    (dict(img_size=70), "multiple of patch_size"),
    (dict(attn="flash"), "attn must be one of"),
    (dict(depth=0), "depth must be a positive int"),
])
def test_bad_configs(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        EncoderConfig.tiny(**kwargs)


def test_preprocessing_rejects_bad_frames():
    with pytest.raises(ConfigError, match="uint8"):
        preprocess_frames(torch.zeros(32, 32, 3))
    with pytest.raises(ConfigError, match=r"\[H, W, 3\]"):
        preprocess_frames(torch.zeros(32, 32, 4, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="exceeds"):
        preprocess_frames(torch.zeros(32, 32, 3, dtype=torch.uint8), PreprocessConfig(roi=(20, 0, 20, 20)))
    with pytest.raises(ConfigError, match="mode"):
        PreprocessConfig(mode="random")


def save_tiny_pt(path, key="encoder"):
    sd = read_state_dict(FIXTURES / "encoder_tiny_weights.safetensors")
    torch.save({key: {f"module.backbone.{k}": v for k, v in sd.items()}, "epoch": 3}, path)


def tiny_fixture_encoder():
    return VJEPA2Encoder(EncoderConfig(img_size=64, num_frames=4, embed_dim=64, depth=2, num_heads=4))


def test_official_pt_layout_loads_with_prefixes_stripped(tmp_path):
    path = tmp_path / "vitg.pt"
    save_tiny_pt(path, key="target_encoder")
    enc = load_official_checkpoint(path, tiny_fixture_encoder())
    ref = read_state_dict(FIXTURES / "encoder_tiny_weights.safetensors")
    assert torch.equal(enc.state_dict()["blocks.1.mlp.fc2.bias"], ref["blocks.1.mlp.fc2.bias"])


def test_truncated_files_are_clear_errors(tmp_path):
    pt = tmp_path / "enc.pt"
    save_tiny_pt(pt)
    pt.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_official_checkpoint(pt, tiny_fixture_encoder())
    st = tmp_path / "enc.safetensors"
    shutil.copy(FIXTURES / "encoder_tiny_weights.safetensors", st)
    st.write_bytes(st.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_official_checkpoint(st, tiny_fixture_encoder())
    with pytest.raises(CheckpointError, match="does not exist"):
        load_official_checkpoint(tmp_path / "missing.pt", tiny_fixture_encoder())


def test_checkpoint_of_another_size_names_the_problem():
    wider = VJEPA2Encoder(EncoderConfig(img_size=64, embed_dim=128, depth=3, num_heads=4))
    with pytest.raises(CheckpointError) as err:
        load_official_checkpoint(FIXTURES / "encoder_tiny_weights.safetensors", wider)
    msg = str(err.value)
    assert "width 128, depth 3" in msg and "width 64, depth 2" in msg
    assert "missing, first: blocks.2." in msg and "shape mismatch" in msg
    with pytest.raises(CheckpointError, match=r"expected an AC predictor .* the file holds the encoder"):
        load_official_checkpoint(FIXTURES / "encoder_tiny_weights.safetensors", ACPredictor(PredictorConfig.tiny()))


class _WritesAFile:
    """Unpickling this object would create a file (a stand-in for arbitrary code execution)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('owned')",))


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    victim = tmp_path / "written_by_pickle.txt"
    bad = tmp_path / "evil.pt"
    torch.save({"encoder": {"patch_embed.proj.weight": torch.zeros(1)}, "payload": _WritesAFile(str(victim))}, bad)
    assert not victim.exists()
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_official_checkpoint(bad, tiny_fixture_encoder())
    assert not victim.exists()
    assert not os.path.exists("written_by_pickle.txt")


def test_read_only_frames_are_accepted_without_warnings():
    import warnings

    import numpy as np
    frame = np.zeros((48, 64, 3), np.uint8)
    frame.flags.writeable = False                          # e.g. a ROS message's buffer
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = preprocess_frames(frame, PreprocessConfig(crop_size=32))
    assert out.shape == (3, 1, 32, 32)


def test_config_from_dict_reads_presets_overrides_and_to_dict_output():
    import json

    from vjepa2_ros.model.config import config_from_dict
    assert config_from_dict("encoder", "vit_giant") == EncoderConfig.vit_giant()
    assert config_from_dict("encoder", {"preset": "vit_tiny", "depth": 3}) == EncoderConfig.tiny(depth=3)
    cfg = PredictorConfig.tiny(img_size=(64, 48))
    assert config_from_dict("predictor", json.loads(json.dumps(cfg.to_dict()))) == cfg   # lists back to tuples
    with pytest.raises(ConfigError, match=r"unknown encoder fields \['depht'\]"):
        config_from_dict("encoder", {"preset": "vit_tiny", "depht": 3})
    with pytest.raises(ConfigError, match="unknown encoder preset 'vit_small'"):
        config_from_dict("encoder", "vit_small")
