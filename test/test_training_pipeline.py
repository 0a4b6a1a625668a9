"""`vjepa2-ros pipeline`: record -> train -> export -> build-engines -> ship, with up-to-date stages skipped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import yaml

from vjepa2_ros.cli import main
from vjepa2_ros.model.checkpoint import sha256_file
from vjepa2_ros.data.droid import write_droid_episode
from vjepa2_ros.data.episode import make_example_episode
from vjepa2_ros.model import ACPredictor, PredictorConfig, load_official_checkpoint


def write_config(path: Path, root: Path, out_dir: Path, **changes) -> Path:
    cfg = dict(droid=[str(root)], encoder={"preset": "vit_tiny"}, predictor={"preset": "ac_tiny"}, steps=3,
               batch_size=4, lr=1e-3, warmup_steps=1, anneal_steps=1, log_every=1, tensorboard=False,
               out_dir=str(out_dir), seed=0)
    path.write_text(yaml.safe_dump({**cfg, **changes}))
    return path


def run(capsys, cfg: Path) -> str:
    assert main(["pipeline", str(cfg), "--no-progress"]) == 0
    return capsys.readouterr().out


def test_pipeline_runs_then_skips_then_redoes_what_changed(tmp_path, capsys):
    root = tmp_path / "droid"
    for i in range(2):
        write_droid_episode(root / f"ep{i}", make_example_episode(steps=12, seed=i))
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "train.yaml", root, out)

    first = run(capsys, cfg)
    assert "train: trained 3 steps" in first and "export: wrote 3 graphs" in first
    assert "build-engines: skipped" in first or "build-engines: built" in first
    engines = out / "engines"
    graphs = sorted(p.name for p in engines.glob("*.onnx"))
    assert graphs == ["encoder-float32.onnx", "predictor-T1-float32.onnx", "predictor-T2-float32.onnx"]
    mtimes = {p: p.stat().st_mtime_ns for p in engines.iterdir()}

    second = run(capsys, cfg)
    assert "train: up to date" in second and "export: up to date" in second
    assert {p: p.stat().st_mtime_ns for p in engines.iterdir()} == mtimes

    # newer data -> retrain -> new weights -> re-export
    h5 = root / "ep1" / "trajectory.h5"
    # 1 ms after the checkpoint: newer, yet older than anything the next runs write (a later
    # stamp would make the resumed checkpoint below look stale, depending on how fast runs are)
    later = (out / "checkpoint.safetensors").stat().st_mtime_ns + 1_000_000
    os.utime(h5, ns=(later, later))
    third = run(capsys, cfg)
    assert "newer" in third and "train: trained 3 steps" in third and "export: wrote 3 graphs" in third

    # a changed config retrains as well
    write_config(cfg, root, out, lr=5e-4)
    fourth = run(capsys, cfg)
    assert "the config changed" in fourth and "export: wrote" in fourth

    # a run that stopped early (its checkpoint at step 2 of 3) is resumed, not restarted
    from vjepa2_ros.training.config import TrainConfig
    from vjepa2_ros.training.train import load_checkpoint, param_groups, save_checkpoint
    pred = ACPredictor(PredictorConfig.tiny())
    pred.extrinsics_encoder.requires_grad_(False)
    opt = torch.optim.AdamW(param_groups(pred, 0.04))
    _, saved = load_checkpoint(out / "checkpoint.safetensors", pred, opt)
    save_checkpoint(out / "checkpoint.safetensors", pred, opt, 2, TrainConfig.from_dict(saved))
    fifth = run(capsys, cfg)
    assert "train: resumed from step 2 to 3" in fifth and "export: wrote" in fifth, fifth

    # the exported predictor computes the trained weights (onnxruntime vs torch)
    import onnxruntime as ort
    pred = load_official_checkpoint(out / "predictor.safetensors", ACPredictor(PredictorConfig.tiny())).eval()
    g = torch.Generator().manual_seed(0)
    z, a, s = torch.randn(2, 32, 64, generator=g), torch.randn(2, 2, 7, generator=g), torch.randn(2, 2, 7, generator=g)
    sess = ort.InferenceSession(str(engines / "predictor-T2-float32.onnx"), providers=["CPUExecutionProvider"])
    (onnx_out,) = sess.run(None, {"z": z.numpy(), "actions": a.numpy(), "states": s.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(onnx_out, pred(z, a, s).numpy(), atol=1e-4)


def test_pipeline_records_sim_data_trains_exports_and_ships_a_loadable_model(tmp_path, capsys):
    """Issue 9's one command on a tiny config: record -> train -> export -> ship, then all skipped."""
    from vjepa2_ros.control.config import load_config
    from vjepa2_ros.control.stack import build_world_model
    from vjepa2_ros.engines.manifest import read_manifest, weights_id
    data, out, ship = tmp_path / "sim", tmp_path / "run", tmp_path / "models" / "sim"
    cfg = write_config(tmp_path / "train.yaml", data, out, ship_dir=str(ship), clip_frames=4,
                       sim_record={"seeds": [3], "episodes": 2, "steps": 6, "size": "64x64"})

    first = run(capsys, cfg)
    assert "record: recorded 2 episodes" in first and "train: trained 3 steps" in first, first
    assert "export: wrote 3 graphs" in first and "ship: copied" in first, first
    assert sorted(p.name for p in data.glob("episode_*")) == ["episode_000", "episode_001"]
    card = json.loads((ship / "model.json").read_text())
    assert card["sha256"]["predictor.safetensors"] == sha256_file(out / "predictor.safetensors")
    assert card["training"]["steps"] == 3 and np.isfinite(card["training"]["loss"])
    assert (ship / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the exported graphs' manifests name the shipped weights
    manifest = read_manifest(out / "engines" / "predictor-T1-float32.onnx")
    assert manifest.weights == weights_id(ship / "predictor.safetensors")

    second = run(capsys, cfg)
    for stage in ("record", "train", "export", "ship"):
        assert f"{stage}: up to date" in second, second

    # the shipped files plan: a stack config made of the card's model section loads and encodes
    wm = build_world_model(load_config({"model": card["model"]}).model)
    z = wm.encode(np.zeros((64, 64, 3), dtype=np.uint8))
    assert z.shape[-2:] == wm.latent_shape and torch.isfinite(z).all()

    # a folder the recorder did not write is never overwritten
    foreign = tmp_path / "mine"
    (foreign / "x").mkdir(parents=True)
    write_config(cfg, foreign, out, clip_frames=4, sim_record={"seeds": [3], "episodes": 2, "steps": 6, "size": "64x64"})
    assert main(["pipeline", str(cfg), "--no-progress"]) != 0
    assert "is not empty and has no sim_record.json" in capsys.readouterr().err
    assert (foreign / "x").is_dir()
