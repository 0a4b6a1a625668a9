"""`vjepa2-ros bench control`: the statistics, and a short real-time run of both phases."""

import numpy as np
import pytest
import yaml

from vjepa2_ros.cli import main as cli_main
from vjepa2_ros.control.bench import period_stats


def test_period_stats_on_a_known_schedule():
    stamps = np.arange(101) * 0.010                         # 100 periods of 10 ms ...
    stamps[50:] += 0.004                                  # ... one of them 14 ms, the next ones on time
    s = period_stats(stamps, rate_hz=100.0)
    assert s["ticks"] == 101
    assert s["period_p50_ms"] == pytest.approx(10.0)
    assert s["period_max_ms"] == pytest.approx(14.0)
    assert s["jitter_max_ms"] == pytest.approx(4.0)
    assert s["jitter_p50_ms"] == pytest.approx(0.0, abs=1e-9)
    assert s["rate_hz"] == pytest.approx(1000.0 / 10.04)


def test_bench_control_runs_the_baseline_and_both_planner_placements(tmp_path, capsys):
    # a small random model: this is about the command stream, not the model
    cfg = tmp_path / "small.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"encoder": "vit_tiny", "predictor": "ac_tiny"},
                                   "planning": {"samples": 64, "topk": 8, "iterations": 3, "maxnorm": 0.05},
                                   "control": {"planner_threads": 1}}))
    assert cli_main(["bench", "control", "--config", str(cfg), "--seconds", "0.6"]) == 0
    out = capsys.readouterr().out
    rows = {name: next(line for line in out.splitlines() if line.startswith(name))
            for name in ("baseline (no planning)", "inline: planner flat out", "process: planner flat out")}
    assert float(rows["baseline (no planning)"].split()[3]) > 20.0     # rate_hz: the stream ran (no timing claim)
    for name in ("inline: planner flat out", "process: planner flat out"):
        values = rows[name].split(":", 1)[1].split()
        assert float(values[7]) > 0.0, rows[name]                    # plans_per_s: the planner ran
        assert "end state: active" in rows[name]
    assert "process: p99 jitter loaded / baseline" in out and "plan time process / inline" in out
