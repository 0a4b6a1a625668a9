"""`vjepa2-ros demo` end to end on the simulated arm (short run): files, numbers, the honest warning."""

import json

import av
import numpy as np
from PIL import Image

from vjepa2_ros.cli import main as cli_main
from vjepa2_ros.control.demo import UNTRAINED_WARNING, choose_config


def test_demo_writes_video_plot_summary_and_warns(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--seconds", "1.0", "--out", str(out), "--fps", "10", "--record"]) == 0
    printed = capsys.readouterr().out
    assert UNTRAINED_WARNING in printed
    assert "end-effector distance to goal" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trained"] is False and summary["plans"] >= 3
    # the goal was rendered at the requested offset: the start is that far from it
    assert abs(summary["start_distance_m"] - np.linalg.norm([0.12, 0.10, -0.12])) < 0.005
    with av.open(str(out / "demo.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 10 and frames[0].shape == (256 + 24, 512, 3)
    assert Image.open(out / "demo.png").size[0] > 300
    assert (out / "recording" / "plans.jsonl").read_text().count("\n") == summary["plans"]


def test_demo_gif_and_goal_offset(tmp_path):
    out = tmp_path / "gif"
    assert cli_main(["demo", "--seconds", "0.5", "--out", str(out), "--video", "gif", "--goal-offset",
                     "0.0", "0.0", "-0.05"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert abs(summary["start_distance_m"] - 0.05) < 0.005
    with Image.open(out / "demo.gif") as gif:
        assert gif.n_frames == 5


def test_demo_uses_the_tiny_model_without_official_weights():
    cfg, source = choose_config(None)
    assert source.endswith("sim_demo.yaml")
    assert cfg.control.backend == "sim" and cfg.model.encoder == "vit_tiny"


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
