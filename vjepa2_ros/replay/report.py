"""A replay's report folder: report.md with PNG plots, metrics.csv (one row per step), summary.json,
landscapes.json (the energy grids behind the landscape plots)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")                     # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vjepa2_ros.replay.metrics import AXES  # noqa: E402
from vjepa2_ros.replay.run import ReplayResult  # noqa: E402


def write_report(out_dir: str | Path, result: ReplayResult) -> Path:
    """Write everything into out_dir (created); returns the path of report.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(result.rows[0]))
        writer.writeheader()
        writer.writerows(result.rows)
    (out / "summary.json").write_text(json.dumps(_finite_or_none(result.summary), indent=1))
    if result.landscapes:
        grids = {str(step): {k: np.asarray(v).tolist() if k == "energy" else v for k, v in land.items()}
                 for step, land in sorted(result.landscapes.items())}
        (out / "landscapes.json").write_text(json.dumps(_finite_or_none(grids)))
    plots = [_plot_prediction(out, result), _plot_actions(out, result), _plot_energy(out, result)]
    plots += [_plot_landscape(out, step, land) for step, land in sorted(result.landscapes.items())]
    page = out / "report.md"
    page.write_text(_markdown(result, [p.name for p in plots]))
    return page


def _plot_prediction(out: Path, result: ReplayResult) -> Path:
    s = result.summary
    H = len(s["prediction_error"])
    h = np.arange(1, H + 1)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label in (("prediction_error", "model (recorded actions)"), ("copy_error", "copy baseline (no change)")):
        mean = [s[key][f"h{i}"]["mean"] for i in h]
        std = [s[key][f"h{i}"]["std"] for i in h]
        ax.errorbar(h, mean, yerr=std, marker="o", capsize=3, label=label)
    ax.set_xlabel(f"horizon (model steps of {s['step_s']} s)")
    ax.set_ylabel("mean |ẑ − z| (latent L1)")
    ax.set_xticks(h)
    ax.legend()
    ax.set_title("latent prediction error")
    return _save(fig, out / "prediction_error.png")


def _plot_actions(out: Path, result: ReplayResult) -> Path:
    steps = [r["step"] for r in result.rows]
    fig, axes = plt.subplots(3, 1, figsize=(7, 6), sharex=True)
    for ax, axis in zip(axes, AXES):
        ax.plot(steps, [100 * r[f"recorded_d{axis}"] for r in result.rows], "o-", label="recorded")
        ax.plot(steps, [100 * r[f"planned_d{axis}"] for r in result.rows], "s--", label="planned")
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.set_ylabel(f"Δ{axis} (cm)")
    axes[0].legend(loc="upper right")
    axes[0].set_title("planned vs recorded action per step")
    axes[-1].set_xlabel("step")
    return _save(fig, out / "actions.png")


def _plot_energy(out: Path, result: ReplayResult) -> Path:
    steps = [r["step"] for r in result.rows]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for key, label, style in (("energy_recorded", "recorded action", "o-"), ("energy_planned", "planned action", "s--"),
                              ("energy_zero", "zero action", ":")):
        ax.plot(steps, [r[key] for r in result.rows], style, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("energy to goal")
    ax.legend()
    ax.set_title("energy of the recorded vs the planned action")
    return _save(fig, out / "energy.png")


def _plot_landscape(out: Path, step: int, land: dict[str, Any]) -> Path:
    off = 100 * np.asarray(land["offsets_m"])
    e = np.asarray(land["energy"])
    a, b = land["axes"]
    fig, ax = plt.subplots(figsize=(5, 4.2))
    mesh = ax.pcolormesh(off, off, e.T, shading="nearest", cmap="viridis")          # rows: first axis -> x
    fig.colorbar(mesh, ax=ax, label="energy")
    ax.plot(*(100 * np.asarray(land["recorded_m"])), "w*", ms=14, mec="k", label="recorded")
    ax.plot(*(100 * np.asarray(land["planned_m"])), "rX", ms=11, mec="k", label="planned")
    ax.plot(*(100 * np.asarray(land["best_offset_m"])), "o", mfc="none", mec="orange", ms=12, mew=2, label="grid minimum")
    ax.set_xlabel(f"Δ{a} (cm)")
    ax.set_ylabel(f"Δ{b} (cm)")
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title(f"energy landscape at step {step}")
    return _save(fig, out / f"landscape_step_{step:04d}.png")


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _markdown(result: ReplayResult, plots: list[str]) -> str:
    s = result.summary
    f = _fmt
    lines = [
        "# Planner replay", "",
        f"Source: `{s['source']}` — {s['episode_steps']} model steps of {s['step_s']} s, "
        f"{s['steps']} planned; goal: {s['goal']}.",
        f"Model: {s['model'].get('runtime', '?')} on {s['model'].get('device', '?')}; CEM horizon {s['cem']['horizon']}, "
        f"{s['cem']['samples']} samples, {s['cem']['iterations']} iterations, maxnorm {s['cem']['maxnorm']} m.",
        "", "Files: [metrics.csv](metrics.csv) (one row per step), [summary.json](summary.json)"
        + (", [landscapes.json](landscapes.json)." if result.landscapes else "."), "",
        "## Latent prediction error (recorded actions)", "",
        "| horizon | model mean | copy baseline | model / copy |", "|---|---|---|---|",
    ]
    for key, v in s["prediction_error"].items():
        c = s["copy_error"][key]["mean"]
        lines.append(f"| {key[1:]} | {f(v['mean'])} ± {f(v['std'])} | {f(c)} | {f(v['mean'] / c if c else math.nan)} |")
    a, e, t = s["action"], s["energy"], s["timing"]
    lines += [
        "", "## Planned vs recorded action", "",
        "| metric | value |", "|---|---|",
        f"| Δxyz angle (deg), mean / median | {f(a['angle_deg']['mean'])} / {f(a['angle_deg']['median'])} "
        f"({a['angle_deg']['count']} steps with both moving) |",
        f"| Δxyz error (cm), mean / median | {f(a['error_cm']['mean'])} / {f(a['error_cm']['median'])} |",
        "| sign agreement x / y / z | " + " / ".join(f(a["sign_agreement"][k]) for k in AXES) + " |",
        f"| energy: recorded / planned / zero action (mean) | {f(e['recorded']['mean'])} / {f(e['planned']['mean'])}"
        f" / {f(e['zero_action']['mean'])} |",
        f"| steps where the planned energy is below the recorded one | {_percent(e['planned_below_recorded'])} |",
        f"| time per planning step (s), mean / median | {f(t['plan_s']['mean'])} / {f(t['plan_s']['median'])} |",
        f"| camera yaw vs the model's frame (deg, from {s['camera_yaw']['moves']} moves) | "
        f"{f(s['camera_yaw']['yaw_deg'])} {s['camera_yaw'].get('reason', '')} |",
    ]
    if s.get("step_comparison"):
        lines += ["", "## Which step duration does the model predict best?", "",
                  "| step (s) | steps | 1-step error | copy baseline | ratio |", "|---|---|---|---|---|"]
        lines += [f"| {c['step_s']} | {c['steps']} | {f(c['pred_err_h1'])} | {f(c['copy_err_h1'])} | "
                  f"{f(c.get('ratio_to_copy', math.nan))} |" for c in s["step_comparison"]]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def _percent(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{100 * v:.0f} %"


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4g}"


def _finite_or_none(v: Any) -> Any:
    """JSON has no NaN: non-finite numbers become null."""
    if isinstance(v, dict):
        return {k: _finite_or_none(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite_or_none(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
