"""`vjepa2-ros pipeline`: train -> export -> build-engines, with up-to-date stages skipped."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import yaml

from vjepa2_ros.cli import main
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
