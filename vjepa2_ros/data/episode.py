"""One recorded episode in the model's conventions, whatever file it came from.

Frames are RGB uint8, states are the DROID / V-JEPA 2-AC convention (flange xyz in metres,
extrinsic-xyz Euler angles in radians, gripper closedness 0 open .. 1 closed, robot base frame),
and every row carries its own timestamp. The model step duration is a parameter of `resample`,
never a constant: recordings are indexed by time, not by a frame rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vjepa2_ros.errors import ConfigError, DataError
from vjepa2_ros.planning.pose import poses_to_actions

DEFAULT_STEP_S = 0.25          # the paper's 4 Hz; the released checkpoint's true step is uncertain (spec i)


@dataclass(frozen=True, eq=False)
class Episode:
    frames: np.ndarray                   # [T, H, W, 3] uint8 RGB
    states: np.ndarray                   # [T, 7] float64: flange xyz (m), Euler xyz (rad), gripper 0..1
    joint_positions: np.ndarray | None   # [T, 7] float64 rad, or None when not recorded
    stamps_s: np.ndarray                 # [T] float64 seconds (any epoch), non-decreasing
    source: str = "<memory>"             # file or folder it came from, for error messages
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        f, s, t = self.frames, self.states, self.stamps_s
        where = f"episode {self.source}"
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
            raise DataError(f"{where}: frames must be uint8 [T, H, W, 3], got "
                            f"{getattr(f, 'dtype', type(f))} {getattr(f, 'shape', '')}")
        T = f.shape[0]
        if T < 1:
            raise DataError(f"{where}: has no frames")
        if not isinstance(s, np.ndarray) or s.shape != (T, 7):
            raise DataError(f"{where}: states must be [T={T}, 7], got {getattr(s, 'shape', type(s))}")
        if not isinstance(t, np.ndarray) or t.shape != (T,):
            raise DataError(f"{where}: stamps_s must be [T={T}], got {getattr(t, 'shape', type(t))}")
        if self.joint_positions is not None and self.joint_positions.shape != (T, 7):
            raise DataError(f"{where}: joint_positions must be [T={T}, 7], got {self.joint_positions.shape}")
        if not np.all(np.isfinite(s)):
            raise DataError(f"{where}: states contain non-finite values (rows "
                            f"{np.flatnonzero(~np.isfinite(s).all(axis=1))[:5].tolist()})")
        if not np.all(np.isfinite(t)) or np.any(np.diff(t) < 0):
            raise DataError(f"{where}: stamps_s must be finite and non-decreasing")

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration_s(self) -> float:
        return float(self.stamps_s[-1] - self.stamps_s[0])

    def actions(self) -> np.ndarray:
        """DROID deltas between consecutive rows: [T-1, 7] (Δxyz, Euler(R_{t+1} R_tᵀ), Δgripper)."""
        return np.asarray(poses_to_actions(self.states), dtype=np.float64)

    def select(self, rows: np.ndarray) -> Episode:
        """The rows `rows` (indices into this episode), in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        jp = None if self.joint_positions is None else self.joint_positions[rows]
        return replace(self, frames=self.frames[rows], states=self.states[rows], joint_positions=jp,
                       stamps_s=self.stamps_s[rows], meta={**self.meta, "rows": rows.tolist()})

    def resample(self, step_s: float = DEFAULT_STEP_S) -> Episode:
        """One row per model step of `step_s` seconds: for each tick t0 + k·step_s, the last
        recorded row at or before it (a recording never shows the future)."""
        out = self.select(resample_rows(self.stamps_s, step_s))
        return replace(out, meta={**out.meta, "step_s": float(step_s)})


def resample_rows(stamps_s: np.ndarray, step_s: float) -> np.ndarray:
    """Row indices [K] for ticks stamps_s[0] + k·step_s up to the last stamp: nearest at or before."""
    if not (np.isfinite(step_s) and step_s > 0):
        raise ConfigError(f"step_s must be a positive number of seconds, got {step_s!r}")
    stamps_s = np.asarray(stamps_s, dtype=np.float64)
    span = stamps_s[-1] - stamps_s[0]
    ticks = stamps_s[0] + step_s * np.arange(int(np.floor(span / step_s + 1e-9)) + 1)
    # tolerance of 1 µs: a stamp a rounding error after its tick still counts as "at" the tick
    return np.searchsorted(stamps_s, ticks + 1e-6, side="right") - 1


def make_example_episode(steps: int = 12, height: int = 64, width: int = 64, step_s: float = DEFAULT_STEP_S,
                         seed: int = 0, start_s: float = 1_700_000_000.0) -> Episode:
    """A small synthetic episode: a disc that moves with the end-effector over a gradient,
    smooth states, no joint positions. For tests of code that needs no kinematics."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps) * step_s
    phase = rng.uniform(0, 2 * np.pi, size=4)
    xyz = np.stack([0.5 + 0.1 * np.sin(0.8 * t + phase[0]), 0.1 * np.sin(0.6 * t + phase[1]),
                    0.35 + 0.08 * np.sin(0.7 * t + phase[2])], axis=1)
    euler = np.stack([np.pi - 0.2 + 0.05 * np.sin(0.5 * t), 0.05 * np.cos(0.4 * t), 0.1 * np.sin(0.3 * t)], axis=1)
    gripper = 0.5 + 0.5 * np.sin(0.9 * t + phase[3])
    states = np.concatenate([xyz, euler, gripper[:, None]], axis=1)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.empty((steps, height, width, 3), dtype=np.uint8)
    for k, (x, y, z, *_rest, g) in enumerate(states):
        cx, cy = (0.5 + (y / 0.25)) * width, (0.5 + (0.5 - x) / 0.25) * height
        r = (0.08 + 0.3 * (z - 0.27)) * min(height, width)
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
        frames[k, ..., 0] = (255 * xx / max(width - 1, 1)).astype(np.uint8)
        frames[k, ..., 1] = (255 * yy / max(height - 1, 1)).astype(np.uint8)
        frames[k, ..., 2] = 96
        frames[k][disc] = (255, int(255 * (1 - g)), 0)
    return Episode(frames=frames, states=states, joint_positions=None, stamps_s=start_s + t,
                   source=f"<example seed={seed}>", meta={"step_s": step_s})
