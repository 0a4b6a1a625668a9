"""What replay measures, as functions of latents and actions (no I/O).

* latent prediction error: mean |ẑ_{t+h} − z_{t+h}| of the autoregressive rollout from step t
  with the recorded actions, h = 1..H (the energy's own metric), beside the "copy" baseline
  mean |z_t − z_{t+h}| (a model that predicts no change);
* action agreement: angle between planned and recorded Δxyz, their distance in cm, and per-axis
  sign agreement (components within ±deadband count as 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vjepa2_ros.planning.cem import energy
from vjepa2_ros.planning.world_model import WorldModel

AXES = ("x", "y", "z")


def prediction_errors(world_model: WorldModel, latents: torch.Tensor, states: np.ndarray, actions: np.ndarray,
                      t: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Rollouts from step t with the recorded actions.

    latents [T, N, D] (normalised), states [T, 7], actions [T-1, 7] ->
    (model error [horizon], copy-baseline error [horizon]); NaN where t + h is past the end.
    """
    T = latents.shape[0]
    model, copy = np.full(horizon, np.nan), np.full(horizon, np.nan)
    z_t = latents[t]
    s_t = torch.as_tensor(states[t], dtype=torch.float64, device=z_t.device)
    for h in range(1, horizon + 1):
        if t + h >= T:
            break
        a = torch.as_tensor(actions[t:t + h], dtype=torch.float32, device=z_t.device)[None]     # 1, h, 7
        z_pred, _ = world_model.rollout(z_t, s_t, a)                                           # 1, N, D
        model[h - 1] = float(energy(z_pred.float(), latents[t + h].float())[0])
        copy[h - 1] = float(energy(z_t[None].float(), latents[t + h].float())[0])
    return model, copy


def action_agreement(planned: np.ndarray, recorded: np.ndarray, deadband_m: float = 0.001) -> dict[str, float]:
    """Planned vs recorded action [7] -> angle_deg (NaN when a Δxyz is within the deadband),
    error_cm, and sign_x/y/z (1.0 agree, 0.0 disagree)."""
    p, r = np.asarray(planned[:3], dtype=np.float64), np.asarray(recorded[:3], dtype=np.float64)
    pn, rn = float(np.linalg.norm(p)), float(np.linalg.norm(r))
    angle = math.degrees(math.acos(float(np.clip(p @ r / (pn * rn), -1.0, 1.0)))) \
        if pn > deadband_m and rn > deadband_m else math.nan
    out = {"angle_deg": angle, "error_cm": 100.0 * float(np.linalg.norm(p - r))}
    for i, axis in enumerate(AXES):
        out[f"sign_{axis}"] = float(_sign(p[i], deadband_m) == _sign(r[i], deadband_m))
    return out


def _sign(v: float, deadband: float) -> int:
    return 0 if abs(v) <= deadband else (1 if v > 0 else -1)


def summarise(rows: Sequence[dict[str, Any]], horizon: int) -> dict[str, Any]:
    """Per-step rows -> the summary numbers of the report (means over steps; NaNs skipped and counted)."""
    def col(name: str) -> np.ndarray:
        return np.array([r[name] for r in rows], dtype=np.float64)

    def stats(name: str) -> dict[str, float | int]:
        v = col(name)
        ok = v[np.isfinite(v)]
        return {"mean": float(ok.mean()) if ok.size else math.nan, "median": float(np.median(ok)) if ok.size else math.nan,
                "std": float(ok.std()) if ok.size else math.nan, "count": int(ok.size)}

    e_plan, e_rec = col("energy_planned"), col("energy_recorded")
    ok = np.isfinite(e_plan) & np.isfinite(e_rec)
    plan_s = col("plan_time_s")
    return {
        "steps": len(rows),
        "prediction_error": {f"h{h}": stats(f"pred_err_h{h}") for h in range(1, horizon + 1)},
        "copy_error": {f"h{h}": stats(f"copy_err_h{h}") for h in range(1, horizon + 1)},
        "action": {"angle_deg": stats("angle_deg"), "error_cm": stats("error_cm"),
                   "sign_agreement": {axis: float(col(f"sign_{axis}").mean()) for axis in AXES}},
        "energy": {"planned": stats("energy_planned"), "recorded": stats("energy_recorded"),
                   "zero_action": stats("energy_zero"),
                   "planned_below_recorded": float((e_plan[ok] < e_rec[ok]).mean()) if ok.any() else math.nan},
        "timing": {"plan_s": stats("plan_time_s"), "plan_steps_per_s": float(len(plan_s) / plan_s.sum())
                   if plan_s.sum() > 0 else math.nan},
    }
