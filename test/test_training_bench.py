"""`vjepa2-ros bench train` runs end to end and prints its table (timings are not asserted)."""

from __future__ import annotations

from vjepa2_ros.cli import main


def test_bench_train_prints_a_table(tmp_path, capsys):
    argv = ["bench", "train", "--steps", "3", "--episodes", "2", "--episode-steps", "9", "--camera", "36", "64",
            "--batch-size", "2", "--encoder-depth", "2", "--device", "cpu", "--workdir", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for row in ("online encoding", "online, in RAM", "cached latents", "cache build"):
        assert row in out, out
    assert len(list((tmp_path / "latents").glob("*.latents.npy"))) == 2
