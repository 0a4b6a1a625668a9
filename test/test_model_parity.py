"""The model core reproduces the official implementation's tensors (test/fixtures/official)."""

import pytest
import torch

from conftest import FIXTURES, load_fixture
from vjepa2_ros.model import (ACPredictor, EncoderConfig, PredictorConfig, PreprocessConfig, VJEPA2Encoder,
                              block_causal_mask, load_official_checkpoint, normalize_latents, preprocess_frames)
from vjepa2_ros.model.rope import apply_rope, axis_angles, grid_positions, rope_angles, rope_tables

ATOL = 1e-5


def tiny_encoder(heads: int) -> VJEPA2Encoder:
    cfg = EncoderConfig(img_size=64, num_frames=4, embed_dim=64, depth=2, num_heads=heads)
    return load_official_checkpoint(FIXTURES / "encoder_tiny_weights.safetensors", VJEPA2Encoder(cfg)).eval()


def tiny_predictor(heads: int) -> ACPredictor:
    cfg = PredictorConfig(img_size=64, num_frames=8, embed_dim=64, predictor_embed_dim=64, depth=2, num_heads=heads)
    return load_official_checkpoint(FIXTURES / "ac_predictor_tiny_weights.safetensors", ACPredictor(cfg)).eval()


def test_rope_chunk_and_3d_layout():
    f = load_fixture("rope_hd64.safetensors")
    cos, sin = rope_tables(axis_angles(f["pos"], 20, torch.float32))
    torch.testing.assert_close(apply_rope(f["x_d20"], cos, sin), f["x_d20_rotated"], atol=ATOL, rtol=ATOL)
    t, h, w = grid_positions(2, 3, 4)
    for ours, theirs in ((t, "frame_pos"), (h, "height_pos"), (w, "width_pos")):
        assert torch.equal(ours, f[theirs].to(ours.dtype))
    cos, sin = rope_tables(rope_angles(64, torch.float32, t, h, w))
    rotated = apply_rope(f["q_hd64"], cos, sin)
    torch.testing.assert_close(rotated, f["q_hd64_rotated_T2_H3_W4"], atol=ATOL, rtol=ATOL)
    assert torch.equal(rotated[..., 60:], f["q_hd64"][..., 60:])          # leftover dims untouched


@pytest.mark.parametrize("heads", [4, 1])
def test_encoder_video_and_frames(heads):
    io = load_fixture("encoder_tiny_io.safetensors")
    enc = tiny_encoder(heads)
    with torch.no_grad():
        torch.testing.assert_close(enc(io["video_in"]), io[f"out_video_heads{heads}"], atol=ATOL, rtol=ATOL)
        raw = enc.encode_frames(io["frames_in"])
        torch.testing.assert_close(raw, io[f"frames_out_raw_heads{heads}"], atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(normalize_latents(raw), io[f"frames_out_ln_heads{heads}"], atol=ATOL, rtol=ATOL)
        # a 4-D image batch is the same as each frame repeated to a tubelet
        image = io["frames_in"][:, :, 0]
        torch.testing.assert_close(enc(image), raw[:, :16], atol=ATOL, rtol=ATOL)


def test_encoder_positions_follow_the_actual_grid():
    io = load_fixture("encoder_tiny_io.safetensors")
    with torch.no_grad():
        out = tiny_encoder(4)(io["video_nonsquare_in"])
    torch.testing.assert_close(out, io["out_video_nonsquare_heads4"], atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("heads", [4, 1])
def test_predictor_outputs(heads):
    io = load_fixture("ac_predictor_tiny_io.safetensors")
    with torch.no_grad():
        out = tiny_predictor(heads)(io["z_in"], io["actions_in"], io["states_in"])
    torch.testing.assert_close(out, io[f"out_heads{heads}"], atol=ATOL, rtol=ATOL)


def test_predictor_prefix_property_and_incremental_steps():
    io = load_fixture("ac_predictor_tiny_io.safetensors")
    pred = tiny_predictor(4)
    z, a, s = io["z_in"], io["actions_in"], io["states_in"]
    with torch.no_grad():
        torch.testing.assert_close(pred(z[:, :16], a[:, :1], s[:, :1]), io["out_heads4_T1"], atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(pred(z[:, :32], a[:, :2], s[:, :2]), io["out_heads4_T2"], atol=ATOL, rtol=ATOL)
        cache, outs = None, []
        for t in range(3):
            out, cache = pred.forward_step(z[:, 16 * t:16 * (t + 1)], a[:, t], s[:, t], cache)
            outs.append(out)
    torch.testing.assert_close(torch.cat(outs, 1), io["out_heads4"], atol=ATOL, rtol=ATOL)


def test_incremental_steps_broadcast_a_shared_context():
    """A batch-1 cache (one context) serves S samples exactly like S copies of it."""
    io = load_fixture("ac_predictor_tiny_io.safetensors")
    pred = tiny_predictor(4)
    z0, a, s = io["z_in"][:1, :16], io["actions_in"][:1], io["states_in"][:1]
    S = 5
    a_next = torch.randn(S, 7, generator=torch.Generator().manual_seed(0))
    z1 = torch.randn(S, 16, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, shared = pred.forward_step(z0, a[:, 0], s[:, 0])
        out_shared, _ = pred.forward_step(z1, a_next, s[:, 1].expand(S, -1), shared)
        full = pred(torch.cat([z0.expand(S, -1, -1), z1], 1), torch.stack([a[:, 0].expand(S, -1), a_next], 1),
                    s[:, :2].expand(S, -1, -1))
    torch.testing.assert_close(out_shared, full[:, 16:], atol=ATOL, rtol=ATOL)


def test_block_causal_masks():
    io = load_fixture("ac_predictor_tiny_io.safetensors")
    assert torch.equal(block_causal_mask(3, 18), io["attn_mask_T3_H4_W4_add2"].bool())
    assert torch.equal(block_causal_mask(4, 18), io["attn_mask_full_module"].bool())


def test_math_and_sdpa_kernels_agree():
    io = load_fixture("ac_predictor_tiny_io.safetensors")
    cfg = PredictorConfig(img_size=64, num_frames=8, embed_dim=64, predictor_embed_dim=64, depth=2, num_heads=4,
                          attn="math")
    pred = load_official_checkpoint(FIXTURES / "ac_predictor_tiny_weights.safetensors", ACPredictor(cfg)).eval()
    with torch.no_grad():
        out = pred(io["z_in"], io["actions_in"], io["states_in"])
    torch.testing.assert_close(out, io["out_heads4"], atol=ATOL, rtol=ATOL)


def test_preprocessing_inference_and_droid_training_crops():
    f = load_fixture("preprocess.safetensors")
    out = preprocess_frames(f["img_uint8_T1_H48_W64"], PreprocessConfig(crop_size=32))
    torch.testing.assert_close(out, f["out_inference_crop32"], atol=ATOL, rtol=ATOL)
    out = preprocess_frames(f["vid_uint8_T2_H36_W64"].numpy(), PreprocessConfig(crop_size=32, mode="droid_train"))
    torch.testing.assert_close(out, f["out_droid_train_crop32"], atol=ATOL, rtol=ATOL)


def test_roi_is_applied_before_the_crop():
    f = load_fixture("preprocess.safetensors")
    img = f["img_uint8_T1_H48_W64"]
    # the ROI equal to the centre square gives the plain inference result
    out = preprocess_frames(img, PreprocessConfig(crop_size=32, roi=(8, 0, 48, 48)))
    torch.testing.assert_close(out, f["out_inference_crop32"], atol=ATOL, rtol=ATOL)
    other = preprocess_frames(img, PreprocessConfig(crop_size=32, roi=(0, 0, 24, 24)))
    assert not torch.allclose(other, out)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_runs_close_to_float32(dtype):
    io = load_fixture("ac_predictor_tiny_io.safetensors")
    pred = tiny_predictor(4)
    with torch.no_grad():
        ref = pred(io["z_in"], io["actions_in"], io["states_in"])
        out = pred.to(dtype)(io["z_in"].to(dtype), io["actions_in"].to(dtype), io["states_in"].to(dtype))
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()
