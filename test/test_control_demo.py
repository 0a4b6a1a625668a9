"""`vjepa2-ros demo` end to end on the simulated arm with the shipped sim model (short runs), and the
shipped model itself: files, numbers, the honest warning for an untrained model."""

import json

from pathlib import Path

import av
import numpy as np
import torch
import yaml
from PIL import Image

from vjepa2_ros.cli import main as cli_main
from vjepa2_ros.control.demo import UNTRAINED_WARNING, choose_config
from vjepa2_ros.control.stack import build_world_model
from vjepa2_ros.model.card import read_model_card

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "sim_reach"


def test_demo_runs_the_shipped_model_and_writes_video_plot_summary(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--seconds", "1.0", "--out", str(out), "--fps", "10", "--record"]) == 0
    printed = capsys.readouterr().out
    assert UNTRAINED_WARNING not in printed and "models/sim_reach/predictor.safetensors" in printed
    assert "end-effector distance to goal" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trained"] is True and summary["plans"] >= 3 and summary["state"] == "active"
    # the goal was rendered at the requested offset: the start is that far from it
    assert abs(summary["start_distance_m"] - np.linalg.norm([0.12, 0.10, -0.12])) < 0.005
    assert np.isfinite(summary["final_distance_m"])
    # planned in the planner process (the default), deterministic in stepped time: 19.7 -> 10.3 cm in 1 s
    assert summary["final_distance_m"] < summary["start_distance_m"] - 0.05
    with av.open(str(out / "demo.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    # the sim renders the model's 64 px input; the video shows it 4x larger beside the goal
    assert len(frames) == 10 and frames[0].shape == (256 + 24, 512, 3)
    assert Image.open(out / "demo.png").size[0] > 300
    plans = [json.loads(line) for line in (out / "recording" / "plans.jsonl").read_text().splitlines()]
    assert len(plans) == summary["plans"] and all(np.isfinite(p["energy"]) for p in plans if p.get("ok"))


def test_demo_warns_about_an_untrained_model(tmp_path, capsys):
    cfg = tmp_path / "random.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"encoder": "vit_tiny", "predictor": "ac_tiny", "checkpoint": None},
                                   "planning": {"samples": 16, "topk": 4, "iterations": 1}}))
    out = tmp_path / "demo"
    assert cli_main(["demo", "--config", str(cfg), "--seconds", "0.6", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count(UNTRAINED_WARNING) == 2          # before and after the run
    assert json.loads((out / "summary.json").read_text())["trained"] is False


def test_demo_gif_and_goal_offset(tmp_path):
    out = tmp_path / "gif"
    assert cli_main(["demo", "--seconds", "0.5", "--out", str(out), "--video", "gif", "--goal-offset",
                     "0.0", "0.0", "-0.05"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert abs(summary["start_distance_m"] - 0.05) < 0.005
    with Image.open(out / "demo.gif") as gif:
        assert gif.n_frames == 5


def test_demo_uses_the_shipped_sim_model_without_official_weights():
    cfg, source = choose_config(None)
    assert source.endswith("sim_demo.yaml") and cfg.control.backend == "sim"
    card = read_model_card(SHIPPED)                         # checks the weights are the files it hashed
    # sim_demo.yaml plans with exactly the networks and files the pipeline shipped
    assert Path(cfg.model.checkpoint) == card.checkpoint.relative_to(REPO)
    assert Path(cfg.model.encoder_checkpoint) == card.encoder_checkpoint.relative_to(REPO)
    assert cfg.model.encoder_config() == card.encoder_config()
    assert cfg.model.predictor_config() == card.predictor_config()


def test_shipped_model_is_small_loads_and_predicts_finite_latents():
    files = list(SHIPPED.iterdir())
    assert sum(f.stat().st_size for f in files) <= 16 * 2**20                # issue 9: <= 16 MB in all
    cfg, _ = choose_config(None)
    wm = build_world_model(cfg.model)
    frame = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    z = wm.encode(frame)[0]
    assert tuple(z.shape) == wm.latent_shape == (64, 64) and torch.isfinite(z).all()
    actions = torch.zeros(3, 1, 7)
    actions[1, 0, 0], actions[2, 0, 2] = 0.05, -0.05
    z_next, poses = wm.rollout(z, torch.tensor([0.5, 0.0, 0.3, np.pi, 0.0, 0.0, 0.0]), actions)
    assert torch.isfinite(z_next).all() and z_next.shape == (3, 64, 64)
    # the trained predictor's next latent depends on the action
    assert (z_next[1] - z_next[0]).abs().mean() > 1e-3 and (z_next[2] - z_next[0]).abs().mean() > 1e-3


def test_weights_present_needs_the_files(tmp_path):
    from vjepa2_ros.control.config import ModelConfig
    from vjepa2_ros.control.demo import weights_present
    ckpt = tmp_path / "ac.safetensors"
    assert not weights_present(ModelConfig(checkpoint=str(ckpt)))
    ckpt.write_bytes(b"")
    assert weights_present(ModelConfig(checkpoint=str(ckpt)))
    assert not weights_present(ModelConfig(checkpoint=str(ckpt), runtime="onnxruntime", engine_dir=str(tmp_path / "no")))
    assert weights_present(ModelConfig(checkpoint=str(ckpt), runtime="onnxruntime", engine_dir=str(tmp_path)))
    assert not weights_present(ModelConfig())
