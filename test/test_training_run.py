"""Training runs on small real recordings: episodes from the MuJoCo arm and synthetic ones written
as DROID folders and rosbag2 bags, read back by the real readers; a tiny model, a few steps."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vjepa2_ros.data.bags import write_episode_bag
from vjepa2_ros.data.droid import read_droid_episode, write_droid_episode
from vjepa2_ros.data.episode import make_example_episode
from vjepa2_ros.data.generate import generate_episodes
from vjepa2_ros.errors import ConfigError, DataError
from vjepa2_ros.model import ACPredictor, load_official_checkpoint
from vjepa2_ros.training.config import TrainConfig, make_example_config
from vjepa2_ros.training.dataset import GlobalBatchSampler
from vjepa2_ros.training.schedule import wsd_lr
from vjepa2_ros.training.train import train


def write_droid(root: Path, count: int, steps: int = 16) -> Path:
    for i in range(count):
        write_droid_episode(root / f"ep{i:02d}", make_example_episode(steps=steps, seed=i))
    return root


def tiny_config(out_dir: Path, droid: Path | None = None, **changes) -> TrainConfig:
    return make_example_config(out_dir, (droid,) if droid else (), **changes)


def losses(result) -> np.ndarray:
    return np.array([r["loss"] for r in result.rows])


@pytest.fixture(scope="module")
def droid_root(tmp_path_factory) -> Path:
    """4 episodes of 16 model steps recorded from the MuJoCo arm, in the DROID layout."""
    root = tmp_path_factory.mktemp("sim")
    generate_episodes(root, count=4, steps=16, seed=0, camera_size=(64, 64))
    return root


def test_loss_falls_by_30_percent(droid_root, tmp_path):
    cfg = tiny_config(tmp_path, droid_root, steps=30, warmup_steps=3, anneal_steps=3, tensorboard=True)
    result = train(cfg, progress=False)
    loss = losses(result)
    assert len(loss) == 30 and np.all(np.isfinite(loss))
    assert loss[-5:].mean() <= 0.7 * loss[:3].mean(), loss
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 31))
    assert float(rows[-1]["loss"]) == pytest.approx(loss[-1])
    if importlib.util.find_spec("tensorboard") is not None:              # optional dependency
        assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    report = json.loads((tmp_path / "data_report.json").read_text())
    assert len(report["used"]) == 4 and report["skipped"] == [] and report["clips"] == 4 * (16 - 8 + 1)


def test_cached_latents_train_like_online(droid_root, tmp_path):
    online = train(tiny_config(tmp_path / "online", droid_root, steps=5), progress=False)
    cfg = tiny_config(tmp_path / "cached", droid_root, steps=5, cache_latents=True, cache_dtype="float32")
    cached = train(cfg, progress=False)
    np.testing.assert_allclose(losses(cached), losses(online), atol=1e-4)
    cache = cfg.cache_path()
    latents = np.load(cache / "000000.latents.npy", mmap_mode="r")
    assert isinstance(latents, np.memmap) and latents.shape == (16, 16, 64)
    index_mtime = (cache / "index.json").stat().st_mtime_ns
    again = train(dataclasses.replace(cfg, out_dir=str(tmp_path / "again")), progress=False)
    assert (cache / "index.json").stat().st_mtime_ns == index_mtime          # reused, not rebuilt
    np.testing.assert_allclose(losses(again), losses(cached), atol=1e-6)


def test_resume_continues_with_identical_losses(droid_root, tmp_path):
    full = train(tiny_config(tmp_path / "full", droid_root, steps=6), progress=False)
    first = train(tiny_config(tmp_path / "split", droid_root, steps=3), progress=False)
    rest = train(tiny_config(tmp_path / "split", droid_root, steps=6, init_from="resume"), progress=False)
    assert rest.start_step == 3
    np.testing.assert_array_equal(np.concatenate([losses(first), losses(rest)]), losses(full))
    with open(tmp_path / "split" / "log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5, 6]
    # the weights file loads into a predictor with the official loader (what export uses)
    pred = load_official_checkpoint(tmp_path / "split" / "predictor.safetensors", ACPredictor(
        tiny_config(tmp_path).predictor_config()))
    assert pred.predictor_embed.weight.shape == (64, 64)


def test_bad_episode_and_bag_are_skipped_and_named(droid_root, tmp_path):
    root = write_droid(tmp_path / "droid", 3)
    (root / "ep01" / "trajectory.h5").write_bytes(b"not hdf5 at all")
    bags = tmp_path / "bags"
    # bag0: a simulated 15 Hz recording with joint states (states come from forward kinematics), 16 steps
    write_episode_bag(bags / "bag0", read_droid_episode(droid_root / "episode_000", step_s=None))
    write_episode_bag(bags / "bag1", make_example_episode(steps=12, seed=11))
    mcap = next((bags / "bag1").glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[:300])                              # truncated recording
    cfg = tiny_config(tmp_path / "run", root, steps=2, bags=(str(bags),))
    train(cfg, progress=False)
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    skipped = {Path(s["file"]).name: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {"ep01", "bag1"}, report
    assert "trajectory.h5" in skipped["ep01"] and "bag" in skipped["bag1"]
    assert len(report["used"]) == 3 and report["clips"] == 3 * (16 - 8 + 1)


def test_all_bad_data_stops_with_a_clear_error(tmp_path, capsys):
    root = write_droid(tmp_path / "droid", 2)
    for ep in ("ep00", "ep01"):
        (root / ep / "trajectory.h5").write_bytes(b"\0" * 64)
    cfg_path = tmp_path / "train.yaml"
    cfg_path.write_text(yaml.safe_dump({**{k: v for k, v in dataclasses.asdict(tiny_config(tmp_path / "run", root)).items()
                                           if k in ("encoder", "predictor", "steps", "warmup_steps", "anneal_steps",
                                                    "out_dir", "tensorboard")}, "droid": [str(root)]}))
    from vjepa2_ros.cli import main
    assert main(["train", str(cfg_path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no usable training clips" in err and "2 of 2 episodes skipped" in err and "ep00" in err


def test_too_short_episodes_are_counted(tmp_path):
    root = write_droid(tmp_path / "droid", 1, steps=5)                      # 5 steps < 8 clip frames
    with pytest.raises(DataError, match="too short: 5 model steps"):
        train(tiny_config(tmp_path / "run", root), progress=False)


def test_global_batches_split_exactly_across_ranks():
    one = list(GlobalBatchSampler(50, 8, 1, 0, seed=3, start_step=0, steps=9))
    r0 = list(GlobalBatchSampler(50, 4, 2, 0, seed=3, start_step=0, steps=9))
    r1 = list(GlobalBatchSampler(50, 4, 2, 1, seed=3, start_step=0, steps=9))
    assert [a + b for a, b in zip(r0, r1)] == one
    assert list(GlobalBatchSampler(50, 8, 1, 0, seed=3, start_step=4, steps=9)) == one[4:]
    assert sorted(sum(one[:6], [])) == sorted(set(sum(one[:6], [])))      # 6 batches of 8 = one epoch, no repeats
    with pytest.raises(DataError, match="fewer than one global batch"):
        GlobalBatchSampler(7, 4, 2, 0, 0, 0, 1)


def test_wsd_schedule():
    kw = dict(steps=100, lr=1.0, lr_start=0.1, lr_final=0.0, warmup_steps=10, anneal_steps=20)
    assert wsd_lr(0, **kw) == pytest.approx(0.1)
    assert wsd_lr(5, **kw) == pytest.approx(0.55)
    assert wsd_lr(10, **kw) == wsd_lr(79, **kw) == 1.0
    assert wsd_lr(90, **kw) == pytest.approx(0.5)
    assert wsd_lr(100, **kw) == pytest.approx(0.0)


def test_official_defaults_and_validation(tmp_path):
    cfg = TrainConfig()
    assert (cfg.lr, cfg.lr_start, cfg.warmup_steps, cfg.anneal_steps, cfg.steps) == (4.25e-4, 7.5e-5, 4500, 4500, 94500)
    assert (cfg.weight_decay, cfg.betas, cfg.batch_size, cfg.clip_frames, cfg.auto_steps) == (0.04, (0.9, 0.999), 8, 8, 2)
    assert cfg.crop_size == 256 and cfg.crop == "inference"
    with pytest.raises(ConfigError, match="unknown fields"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="crop must be one of"):
        TrainConfig(crop="random")
    with pytest.raises(ConfigError, match="warmup_steps"):
        TrainConfig(steps=10)
    with pytest.raises(ConfigError, match="init_from"):
        TrainConfig(init_from=str(tmp_path / "missing.safetensors"))
    with pytest.raises(ConfigError, match="does not fit the encoder"):
        TrainConfig(encoder={"preset": "vit_tiny"})
    with pytest.raises(ConfigError, match="randomly initialised 1,012 M-parameter ViT; set encoder_checkpoint"):
        cfg.check_encoder_weights()                  # train() checks this first: the default needs the ViT-g file
    TrainConfig(encoder={"preset": "vit_tiny"}, predictor={"preset": "ac_tiny"}).check_encoder_weights()  # small: fine


def test_weight_decay_only_on_matrices():
    from vjepa2_ros.training.train import param_groups
    pred = ACPredictor(tiny_config(Path(".")).predictor_config())
    decay, no_decay = param_groups(pred, 0.04)
    assert decay["weight_decay"] == 0.04 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    n_decay = sum(1 for n, p in pred.named_parameters() if p.ndim >= 2)
    assert len(decay["params"]) == n_decay


def test_activation_checkpointing_gives_the_same_gradients(droid_root, tmp_path):
    plain = train(tiny_config(tmp_path / "a", droid_root, steps=3), progress=False)
    ckpt = train(tiny_config(tmp_path / "b", droid_root, steps=3, activation_checkpointing=True), progress=False)
    np.testing.assert_allclose(losses(ckpt), losses(plain), atol=1e-6)
    a = load_official_checkpoint(tmp_path / "a" / "predictor.safetensors", ACPredictor(
        tiny_config(tmp_path).predictor_config()))
    b = load_official_checkpoint(tmp_path / "b" / "predictor.safetensors", ACPredictor(
        tiny_config(tmp_path).predictor_config()))
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5, msg=name)


def test_fine_tuning_starts_from_the_given_checkpoint(droid_root, tmp_path):
    """init_from an official-layout predictor file; with lr 0 at step 0 the saved weights equal it."""
    from conftest import FIXTURES, load_fixture
    cfg = tiny_config(tmp_path, droid_root, steps=1, warmup_steps=1, lr_start=0.0,
                      init_from=str(FIXTURES / "ac_predictor_tiny_weights.safetensors"))
    train(cfg, progress=False)
    from safetensors.torch import load_file
    saved, official = load_file(str(tmp_path / "predictor.safetensors")), load_fixture("ac_predictor_tiny_weights.safetensors")
    assert saved.keys() == official.keys()
    for k, v in official.items():
        torch.testing.assert_close(saved[k], v, atol=0, rtol=0, msg=k)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on hosts without CUDA")
def test_cuda_device_without_cuda_is_a_config_error(droid_root, tmp_path):
    with pytest.raises(ConfigError, match="no CUDA device"):
        train(tiny_config(tmp_path, droid_root, device="cuda"), progress=False)


def test_a_trained_tiny_model_plugs_into_the_stack(droid_root, tmp_path):
    """A run with a seeded random encoder writes it beside the predictor, and a stack config that
    names both files plans with exactly the networks of the run."""
    from vjepa2_ros.control.config import load_config
    from vjepa2_ros.control.stack import build_world_model
    from vjepa2_ros.model import VJEPA2Encoder
    from vjepa2_ros.planning.planner import make_example_frame

    cfg = tiny_config(tmp_path / "run", droid_root, steps=2)
    train(cfg)
    out = Path(cfg.out_dir)
    stack = load_config({"model": {"encoder": "vit_tiny", "predictor": "ac_tiny",
                                   "checkpoint": str(out / "predictor.safetensors"),
                                   "encoder_checkpoint": str(out / "encoder.safetensors")}})
    wm = build_world_model(stack.model)
    torch.manual_seed(cfg.seed)                                    # the run's encoder, rebuilt as train() builds it
    expected = VJEPA2Encoder(cfg.encoder_config()).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in wm.runtime.encoder.state_dict().items())
    trained = ACPredictor(cfg.predictor_config())
    load_official_checkpoint(out / "predictor.safetensors", trained)
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in wm.runtime.predictor.state_dict().items())
    assert torch.isfinite(wm.encode(make_example_frame(64, 64))).all()
