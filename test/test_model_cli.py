"""`vjepa2-ros selfcheck` and `vjepa2-ros bench model` run end to end."""

import torch

from vjepa2_ros import cli
from vjepa2_ros.model import EncoderConfig, PredictorConfig, build_model


def test_selfcheck_loads_an_official_layout_checkpoint(tmp_path, capsys):
    enc, pred = build_model(EncoderConfig.tiny(), PredictorConfig.tiny(), seed=1)
    path = tmp_path / "ac.pt"
    torch.save({"encoder": {f"module.backbone.{k}": v for k, v in enc.state_dict().items()},
                "predictor": {f"module.{k}": v for k, v in pred.state_dict().items()}, "epoch": 1}, path)
    rc = cli.main(["selfcheck", "--checkpoint", str(path), "--encoder", "vit_tiny", "--predictor", "ac_tiny"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "[encoder] 28 tensors" in out and "[predictor] 36 tensors" in out and "selfcheck passed" in out


def test_selfcheck_reports_a_size_mismatch_as_an_error(tmp_path, capsys):
    enc, pred = build_model(EncoderConfig.tiny(), PredictorConfig.tiny())
    path = tmp_path / "ac.pt"
    torch.save({"encoder": enc.state_dict(), "predictor": pred.state_dict()}, path)
    assert cli.main(["selfcheck", "--checkpoint", str(path)]) == 1        # default presets: ViT-g
    assert "expected vit_giant (width 1408, depth 40)" in capsys.readouterr().err


def test_bench_model_prints_every_released_size(capsys):
    assert cli.main(["bench", "model", "--repeats", "1", "--samples", "1,3"]) == 0
    out = capsys.readouterr().out
    for name in ("vit_large", "vit_huge", "vit_giant ", "vit_giant_384", "ac_vit_giant", "predictor step, S=3"):
        assert name in out
    assert "1,012,173,952" in out and "532.6" in out          # ViT-g: params and GFLOP per 256-px frame


def test_unknown_command_prints_usage(capsys):
    assert cli.main(["no-such-command"]) == 2
    assert "usage: vjepa2-ros" in capsys.readouterr().err


def test_selfcheck_without_a_checkpoint_says_so_first_and_refuses_large_random_networks(capsys):
    assert cli.main(["selfcheck"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("no checkpoint given: randomly initialised networks") and "M parameters" in first
    assert cli.main(["selfcheck", "--encoder", "vit_giant", "--predictor", "ac_vit_giant"]) == 1
    assert "1,317 M randomly initialised parameters" in capsys.readouterr().err
