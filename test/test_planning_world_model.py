"""WorldModel: the official rollout fixture, incremental == full recompute, chunking, encoding."""

import pytest
import torch

from conftest import FIXTURES, load_fixture
from vjepa2_ros.engines.torch_runtime import TorchRuntime
from vjepa2_ros.errors import ConfigError, PlanningError
from vjepa2_ros.model import (ACPredictor, EncoderConfig, PredictorConfig, VJEPA2Encoder, build_model,
                              load_official_checkpoint)
from vjepa2_ros.planning import CEMConfig, WorldModel, energy, make_example_frame, run_cem
from vjepa2_ros.planning.world_model import DEFAULT_CHUNK_BUDGET_BYTES, DEFAULT_MIN_CHUNK, rollout_bytes_per_sample


def official_tiny_world_model(**kwargs) -> WorldModel:
    """The fixtures' tiny official encoder and predictor (heads 4)."""
    pc = PredictorConfig(img_size=64, patch_size=16, num_frames=8, tubelet_size=2, embed_dim=64,
                         predictor_embed_dim=64, depth=2, num_heads=4, mlp_ratio=4.0)
    ec = EncoderConfig(img_size=64, patch_size=16, num_frames=4, tubelet_size=2, embed_dim=64, depth=2,
                       num_heads=4, mlp_ratio=4.0)
    enc, pred = VJEPA2Encoder(ec, init=False), ACPredictor(pc, init=False)
    load_official_checkpoint(FIXTURES / "encoder_tiny_weights.safetensors", enc)
    load_official_checkpoint(FIXTURES / "ac_predictor_tiny_weights.safetensors", pred)
    return WorldModel(TorchRuntime(enc, pred), **kwargs)


class NoCacheRuntime(TorchRuntime):
    """The same networks behind a runtime without incremental steps (as an engine without a KV cache)."""
    supports_cache = False


@pytest.fixture(scope="module")
def wm():
    return official_tiny_world_model()


@pytest.mark.parametrize("horizon", [1, 2])
def test_rollout_matches_official_step(wm, horizon):
    f = load_fixture("wm_rollout_tiny.safetensors")
    for i in range(3):   # the fixture's samples have different contexts: one rollout each
        z, poses = wm.rollout(f["rep0"][i, 0], f["pose0"][i, 0], f["action_seq"][i:i + 1, :horizon])
        torch.testing.assert_close(z[0], f[f"next_rep_step{horizon}"][i, 0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(poses[0, horizon], f[f"next_pose_step{horizon}"][i, 0], atol=1e-5, rtol=0)
        if horizon == 2:
            e = energy(z, f["goal_rep"][0, 0])
            torch.testing.assert_close(e[0], f["energy_step2"][i], atol=1e-5, rtol=1e-5)


def test_predict_next_is_the_official_full_history_step(wm):
    f = load_fixture("wm_rollout_tiny.safetensors")
    z = torch.stack([f["rep0"][:, 0], f["next_rep_step1"][:, 0]], dim=1)          # S, 2, N, D
    states = torch.cat([f["pose0"], f["next_pose_step1"]], dim=1)
    torch.testing.assert_close(wm.predict_next(z, f["action_seq"], states), f["next_rep_step2"][:, 0],
                               atol=1e-5, rtol=1e-5)


def random_world_model(g: torch.Generator, cache: bool) -> WorldModel:
    gh, gw = [int(v) for v in torch.randint(1, 4, (2,), generator=g)]
    heads = [1, 2, 4][int(torch.randint(0, 3, (1,), generator=g))]
    depth = int(torch.randint(1, 4, (1,), generator=g))
    pc = PredictorConfig(img_size=(16 * gh, 16 * gw), patch_size=16, num_frames=10, tubelet_size=2, embed_dim=24,
                         predictor_embed_dim=16 * heads, depth=depth, num_heads=heads, mlp_ratio=2.0)
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
    enc = VJEPA2Encoder(EncoderConfig.tiny(embed_dim=24, num_heads=2, depth=1))
    runtime = (TorchRuntime if cache else NoCacheRuntime)(enc, ACPredictor(pc))
    return WorldModel(runtime)


@pytest.mark.parametrize("seed", range(6))
def test_incremental_rollout_equals_full_recompute(seed):
    g = torch.Generator().manual_seed(seed)
    wm = random_world_model(g, cache=True)
    N, D = wm.latent_shape
    S, H = int(torch.randint(1, 6, (1,), generator=g)), 1 + seed % 4                # horizons 1..4
    z0 = torch.nn.functional.layer_norm(torch.randn(N, D, generator=g), (D,))
    s0 = torch.tensor([0.5, 0.1, 0.3, 3.0, 0.2, -1.0, 0.4])
    actions = torch.randn(S, H, 7, generator=g) * 0.05
    z_inc, poses = wm.rollout(z0, s0, actions)
    # Full recompute, the notebook's way: the whole history through predict_next at every step.
    hist = z0.expand(S, 1, N, D)
    for h in range(H):
        nxt = wm.predict_next(hist, actions[:, :h + 1], poses[:, :h + 1])
        hist = torch.cat([hist, nxt[:, None]], dim=1)
    torch.testing.assert_close(z_inc, hist[:, -1], atol=1e-5, rtol=1e-5)
    # And a runtime without a cache takes the recompute path inside rollout.
    wm_nc = WorldModel(NoCacheRuntime(wm.runtime.encoder, wm.runtime.predictor))
    torch.testing.assert_close(wm_nc.rollout(z0, s0, actions)[0], z_inc, atol=1e-5, rtol=1e-5)


def test_chunking_does_not_change_results(wm):
    g = torch.Generator().manual_seed(0)
    z0 = torch.nn.functional.layer_norm(torch.randn(16, 64, generator=g), (64,))
    s0 = torch.tensor([0.5, 0.0, 0.3, 3.1, 0.0, 0.0, 0.0])
    actions = torch.randn(7, 3, 7, generator=g) * 0.05
    small = official_tiny_world_model(chunk_budget_bytes=1, min_chunk=1)
    assert small.chunk_size(3) == 1 and wm.chunk_size(3) >= 7
    torch.testing.assert_close(small.rollout(z0, s0, actions)[0], wm.rollout(z0, s0, actions)[0],
                               atol=1e-6, rtol=1e-6)


def test_cpu_chunks_are_measured_sizes_never_single_samples():
    wide = PredictorConfig.tiny(img_size=128, patch_size=8, embed_dim=64, predictor_embed_dim=1024, depth=2,
                                num_heads=16)                      # 256 tokens: ~27 MiB a sample > the budget
    assert rollout_bytes_per_sample(wide, 1, 4) > DEFAULT_CHUNK_BUDGET_BYTES["cpu"]
    enc, _ = build_model(EncoderConfig.tiny(), PredictorConfig.tiny(), seed=0)
    pred = ACPredictor(wide, init=False)
    assert WorldModel(TorchRuntime(enc, pred)).chunk_size(1) == DEFAULT_MIN_CHUNK["cpu"] == 16
    tiny = WorldModel.tiny()                                       # ~0.1 MiB a sample: what fits, in 8s
    n = DEFAULT_CHUNK_BUDGET_BYTES["cpu"] // rollout_bytes_per_sample(tiny.cfg, 1, 4)
    assert tiny.chunk_size(1) == n - n % 8 and tiny.chunk_size(1) % 8 == 0
    with pytest.raises(ConfigError, match="min_chunk must be a positive int"):
        WorldModel(tiny.runtime, min_chunk=0)


def test_cem_actions_in_cpu_chunks_are_identical_to_one_unsplit_batch():
    base = WorldModel.tiny(seed=0)
    chunked = WorldModel(base.runtime, chunk_budget_bytes=1)       # the CPU floor: 4 calls of 16 samples
    unsplit = WorldModel(base.runtime, chunk_budget_bytes=2**40)   # one call of 64
    assert chunked.chunk_size(1) == 16 and unsplit.chunk_size(1) >= 64
    z, goal = base.encode(make_example_frame(seed=0))[0], base.encode(make_example_frame(seed=1))[0]
    s = torch.tensor([0.45, 0.0, 0.35, 3.14159, 0.0, 0.0, 0.0])
    cfg = CEMConfig(samples=64, topk=8, iterations=3, warm_start=True)
    plans = [run_cem(wm, z, s, goal, cfg, generator=torch.Generator().manual_seed(3)) for wm in (chunked, unsplit)]
    assert torch.equal(plans[0].plan, plans[1].plan) and plans[0].best_energy == plans[1].best_energy


def test_memory_estimate_of_the_paper_setting_fits_a_24gb_card():
    per_sample = rollout_bytes_per_sample(PredictorConfig.ac_vit_giant(), horizon=1, bytes_per_element=2)
    assert 5e6 < per_sample < 5e7                      # ~15 MB of bf16 activations per sample
    weights = 1_317_394_944 * 2                        # ViT-g encoder + AC predictor (spec b.1) in bf16
    chunk_budget = 4 * 2**30
    assert weights + chunk_budget + 800 * 256 * 1408 * 2 < 24e9 * 0.8


def test_encode_is_normalised_and_batch_independent():
    wm = WorldModel.tiny(seed=0)
    frames = torch.stack([torch.from_numpy(make_example_frame(seed=s)) for s in (0, 1)])
    z = wm.encode(frames)
    N, D = wm.latent_shape
    assert z.shape == (2, N, D)
    torch.testing.assert_close(z.mean(-1), torch.zeros(2, N), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(-1, unbiased=False), torch.ones(2, N), atol=1e-3, rtol=0)
    torch.testing.assert_close(wm.encode(make_example_frame(seed=1))[0], z[1], atol=1e-5, rtol=1e-5)


def test_bad_context_is_a_planning_error(wm):
    actions = torch.zeros(2, 1, 7)
    s0 = torch.zeros(7)
    with pytest.raises(PlanningError, match="context latent"):
        wm.rollout(torch.zeros(15, 64), s0, actions)
    with pytest.raises(PlanningError, match="NaN"):
        wm.rollout(torch.zeros(16, 64), torch.full((7,), float("nan")), actions)
    with pytest.raises(PlanningError, match="actions"):
        wm.rollout(torch.zeros(16, 64), s0, torch.zeros(2, 7))
