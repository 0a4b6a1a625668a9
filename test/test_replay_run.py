"""Replay end to end on a simulated DROID episode and on its bag, with a tiny random model and with
the shipped sim model."""

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from vjepa2_ros import cli
from vjepa2_ros.data.bags import write_episode_bag
from vjepa2_ros.data.droid import read_droid_episode
from vjepa2_ros.data.generate import generate_episodes
from vjepa2_ros.errors import ConfigError, DataError
from vjepa2_ros.planning.cem import CEMConfig
from vjepa2_ros.planning.world_model import WorldModel
from vjepa2_ros.replay.run import ReplayConfig, replay_episode

SMALL_CEM = ["--samples", "16", "--topk", "4", "--iterations", "2"]


@pytest.fixture(scope="module")
def episode_dir(tmp_path_factory):
    return generate_episodes(tmp_path_factory.mktemp("sim"), count=1, steps=12, seed=11)[0]


def _numbers(v):
    if isinstance(v, dict):
        return [x for k, y in v.items() if k not in ("config", "cem", "model", "episode_meta") for x in _numbers(y)]
    if isinstance(v, list):
        return [x for y in v for x in _numbers(y)]
    return [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else []


def test_replay_droid_episode_writes_a_complete_report(episode_dir, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["replay", str(episode_dir), "--tiny", "--out", str(out), "--landscape-steps", "0", "2",
            "--landscape-axes", "x", "z", "--landscape-points", "5",
            "--compare-step-s", "0.5", "1.0"] + SMALL_CEM
    assert cli.main(argv) == 0
    estimate = re.search(r"replay: the first step took [\d.]+ s: (\d+) steps will take about [\d.]+ min \(CEM 16 "
                         r"samples x 2 iterations.*shorter: --max-steps", capsys.readouterr().err)
    assert estimate and int(estimate.group(1)) == len(list(csv.DictReader(open(out / "metrics.csv"))))
    assert {p.name for p in out.iterdir()} == {"report.md", "metrics.csv", "summary.json", "landscapes.json",
                                                 "prediction_error.png",
                                                 "actions.png", "energy.png", "landscape_step_0000.png",
                                                 "landscape_step_0002.png"}
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 12 - 4 and [int(r["step"]) for r in rows] == list(range(8))    # goal 4 steps ahead
    for r in rows:
        for key in ("pred_err_h1", "pred_err_h3", "copy_err_h3", "error_cm", "energy_planned", "energy_recorded",
                    "energy_zero", "plan_time_s", "sign_x"):
            assert math.isfinite(float(r[key])), key
        assert abs(float(r["planned_dx"])) <= 0.075 + 1e-9
    summary = json.loads((out / "summary.json").read_text())
    numbers = _numbers(summary)
    assert len(numbers) > 40 and all(x is not None and math.isfinite(x) for x in numbers)
    assert summary["steps"] == 8 and summary["step_s"] == 0.25
    assert [c["step_s"] for c in summary["step_comparison"]] == [0.25, 0.5, 1.0]
    grids = json.loads((out / "landscapes.json").read_text())
    assert sorted(grids) == ["0", "2"] and grids["2"]["axes"] == ["x", "z"]
    assert np.asarray(grids["2"]["energy"]).shape == (5, 5) and np.isfinite(grids["2"]["energy"]).all()
    page = (out / "report.md").read_text()
    assert "![landscape_step_0002.png](landscape_step_0002.png)" in page and "n/a" not in page.split("## Plots")[0]


def test_replay_matches_recorded_actions_and_states(episode_dir):
    episode = read_droid_episode(episode_dir, step_s=0.5)
    cfg = ReplayConfig(step_s=0.5, goal_offset=2, horizon=1, landscape_steps=())
    result = replay_episode(episode, WorldModel.tiny(seed=1), CEMConfig(samples=8, topk=2, iterations=1), cfg)
    actions = episode.actions()
    assert len(result.rows) == len(episode) - 2
    for r in result.rows:
        np.testing.assert_allclose([r["recorded_dx"], r["recorded_dy"], r["recorded_dz"]], actions[r["step"], :3])
        assert r["goal_step"] == r["step"] + 2 and r["stamp_s"] == episode.stamps_s[r["step"]]
    assert result.landscapes == {}


def test_replay_bag_and_its_errors(episode_dir, tmp_path, capsys):
    bag = write_episode_bag(tmp_path / "bag", read_droid_episode(episode_dir, step_s=None))
    out = tmp_path / "report"
    assert cli.main(["replay", str(bag), "--tiny", "--out", str(out), "--max-steps", "2", "--landscape-steps"]
                    + SMALL_CEM) == 0
    assert len(list(csv.DictReader(open(out / "metrics.csv")))) == 2
    assert cli.main(["replay", str(bag), "--tiny", "--camera-topic", "/wrist/image"] + SMALL_CEM) == 1
    assert "no topic '/wrist/image'" in capsys.readouterr().err
    assert cli.main(["replay", str(tmp_path), "--tiny"]) == 1
    assert "neither a DROID episode folder" in capsys.readouterr().err
    assert cli.main(["replay", str(bag), "--out", str(tmp_path / "never")]) == 1       # no model: refused at once
    err = capsys.readouterr().err
    assert "replay needs a model" in err and all(w in err for w in ("--checkpoint", "--model-card", "--engine-dir"))
    assert not (tmp_path / "never").exists()
    short = read_droid_episode(episode_dir, step_s=1.0)
    with pytest.raises(DataError, match="too few to look 4 steps ahead"):
        replay_episode(short, WorldModel.tiny(), CEMConfig(samples=8, topk=2, iterations=1), ReplayConfig(step_s=1.0))
    with pytest.raises(ConfigError, match=r"resampled every 1.0 s but the replay is configured for step_s=0.25"):
        replay_episode(short, WorldModel.tiny(), CEMConfig(samples=8, topk=2, iterations=1))


def test_replay_towards_a_goal_image_with_station_options(episode_dir, tmp_path):
    import cv2
    last = read_droid_episode(episode_dir, step_s=None).frames[-1]
    goal = tmp_path / "goal.png"
    cv2.imwrite(str(goal), last[..., ::-1])
    out = tmp_path / "report"
    argv = ["replay", str(episode_dir), "--tiny", "--out", str(out), "--goal-image", str(goal), "--horizon", "2",
            "--roi", "8", "0", "48", "64", "--hold-rule", "--bound", "box", "--landscape-steps"] + SMALL_CEM
    assert cli.main(argv) == 0
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 12 - 2 and {r["goal_step"] for r in rows} == {"-1"}       # only the horizon limits the steps
    summary = json.loads((out / "summary.json").read_text())
    assert summary["goal"] == "image" and summary["cem"]["bound"] == "box"
    energies = [float(r["energy_observation"]) for r in rows]
    assert all(math.isfinite(e) for e in energies)
    assert cli.main(["replay", str(episode_dir), "--tiny", "--goal-image", str(tmp_path / "none.png")]) == 1


def test_replay_with_the_shipped_model_card_predicts_better_than_copying(episode_dir, tmp_path):
    """The shipped sim model (models/sim_reach) on a held-out episode (recording seed 11; it was
    trained on seeds 1 and 2): its 1-step latent prediction beats copying the current frame."""
    card = Path(__file__).resolve().parents[1] / "models" / "sim_reach" / "model.json"
    out = tmp_path / "card"
    assert cli.main(["replay", str(episode_dir), "--model-card", str(card), "--out", str(out),
                     "--landscape-steps"] + SMALL_CEM) == 0
    summary = json.loads((out / "summary.json").read_text())
    model, copy = summary["prediction_error"]["h1"]["mean"], summary["copy_error"]["h1"]["mean"]
    assert math.isfinite(model) and model < 0.9 * copy, (model, copy)
    yaw = summary["camera_yaw"]              # recorded with the camera the model was trained with
    assert yaw["moves"] >= 3 and abs(yaw["yaw_deg"]) <= 20, yaw
    assert "camera yaw vs the model's frame" in (out / "report.md").read_text()
    assert cli.main(["replay", str(episode_dir), "--model-card", str(tmp_path / "none.json")]) == 1
