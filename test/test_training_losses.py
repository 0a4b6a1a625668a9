"""The AC training objective against the official fixture (spec c, fixtures README section 6)."""

from __future__ import annotations

import pytest
import torch

from conftest import FIXTURES, load_fixture
from vjepa2_ros.errors import ConfigError
from vjepa2_ros.model import EncoderConfig, PredictorConfig, VJEPA2Encoder, ACPredictor, normalize_latents
from vjepa2_ros.model import load_official_checkpoint
from vjepa2_ros.training.losses import ac_losses

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def models() -> tuple[VJEPA2Encoder, ACPredictor]:
    enc = VJEPA2Encoder(EncoderConfig.tiny(num_heads=4, num_frames=4))
    pred = ACPredictor(PredictorConfig.tiny(num_heads=4, num_frames=8))
    load_official_checkpoint(FIXTURES / "encoder_tiny_weights.safetensors", enc)
    load_official_checkpoint(FIXTURES / "ac_predictor_tiny_weights.safetensors", pred)
    return enc.eval(), pred.eval()


def test_targets_match_official(models):
    enc, _ = models
    f = load_fixture("train_losses_tiny.safetensors")
    with torch.no_grad():
        h = normalize_latents(enc.encode_frames(f["clip_in"]))
    torch.testing.assert_close(h, f["h_targets_ln"], **TOL)


def test_losses_match_official(models):
    _, pred = models
    f = load_fixture("train_losses_tiny.safetensors")
    with torch.no_grad():
        out = ac_losses(pred, f["h_targets_ln"], f["actions_in"], f["states_in"], auto_steps=2)
    torch.testing.assert_close(out["z_tf"], f["z_teacher_forcing"], **TOL)
    torch.testing.assert_close(out["z_rollout"], f["z_rollout"], **TOL)
    for name, key in (("tf", "loss_tf"), ("rollout", "loss_rollout"), ("total", "loss_total")):
        torch.testing.assert_close(out[name].reshape(1), f[key], **TOL)


def test_rollout_gradient_flows_through_first_prediction(models):
    """The official rollout does not detach ẑ_1: its gradient differs from a detached rollout's."""
    _, pred = models
    f = load_fixture("train_losses_tiny.safetensors")
    h, a, s = f["h_targets_ln"], f["actions_in"], f["states_in"]
    pred.zero_grad()
    ac_losses(pred, h, a, s)["rollout"].backward()
    g_full = pred.predictor_embed.weight.grad.clone()

    from vjepa2_ros.training.losses import latent_l1, predict_normalized
    n = pred.cfg.tokens_per_frame
    pred.zero_grad()
    z1 = predict_normalized(pred, h[:, :n], a[:, :1], s[:, :1]).detach()
    z2 = predict_normalized(pred, torch.cat([h[:, :n], z1], 1), a, s[:, :2])[:, -n:]
    latent_l1(torch.cat([z1, z2], 1), h, n).backward()
    g_detached = pred.predictor_embed.weight.grad.clone()
    pred.zero_grad()
    assert not torch.allclose(g_full, g_detached, atol=1e-6)


def test_bad_clip_shapes_raise(models):
    _, pred = models
    h = torch.zeros(1, 48, 64)
    with pytest.raises(ConfigError, match="auto_steps"):
        ac_losses(pred, h, torch.zeros(1, 2, 7), torch.zeros(1, 3, 7), auto_steps=3)
    with pytest.raises(ConfigError, match="actions"):
        ac_losses(pred, h, torch.zeros(1, 3, 7), torch.zeros(1, 3, 7))
