"""Our parameter names and shapes equal the official ones; parameter counts equal the spec's.

Built on the `meta` device: no test allocates a billion parameters.
"""

from pathlib import Path

import pytest
import torch

from conftest import FIXTURES
from vjepa2_ros.model import ACPredictor, EncoderConfig, PredictorConfig, VJEPA2Encoder

PARAMS = {"vit_large": 303_885_312, "vit_huge": 631_648_000, "vit_giant": 1_012_173_952,
          "vit_giant_384": 1_012_173_952}


def read_keys(path: Path) -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape = line.split("\t")
        keys[name] = tuple(int(v) for v in shape.strip("[]").split(","))
    return keys


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_vit_giant_state_dict_equals_the_official_keys():
    with torch.device("meta"):
        enc = VJEPA2Encoder(EncoderConfig.vit_giant())
    expected = read_keys(FIXTURES / "keys_encoder_vitg.txt")
    assert len(expected) == 484
    assert shapes(enc) == expected
    assert list(enc.state_dict()) == list(expected)


def test_ac_predictor_state_dict_equals_the_official_keys():
    with torch.device("meta"):
        pred = ACPredictor(PredictorConfig.ac_vit_giant())
    expected = read_keys(FIXTURES / "keys_ac_predictor.txt")
    assert len(expected) == 300
    assert shapes(pred) == expected
    assert sum(p.numel() for p in pred.parameters()) == 305_220_992
    assert sum(p.numel() for n, p in pred.named_parameters() if not n.startswith("extrinsics")) == 305_213_824


@pytest.mark.parametrize("preset", sorted(PARAMS))
def test_released_encoder_parameter_counts(preset):
    with torch.device("meta"):
        enc = VJEPA2Encoder(EncoderConfig.from_preset(preset))
    assert sum(p.numel() for p in enc.parameters()) == PARAMS[preset]


def test_presets_have_the_published_geometry():
    g = EncoderConfig.vit_giant()
    assert (g.embed_dim, g.depth, g.num_heads, g.head_dim, g.mlp_hidden) == (1408, 40, 22, 64, 6144)
    h = EncoderConfig.vit_huge()
    assert (h.head_dim, h.mlp_hidden) == (80, 5120)
    assert EncoderConfig.vit_giant_384().grid() == (24, 24)
    p = PredictorConfig.ac_vit_giant()
    assert (p.tokens_per_frame, p.max_steps, p.head_dim) == (256, 32, 64)
