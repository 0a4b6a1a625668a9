"""Joint targets at control rate: track a ramp toward the latest IK target under limits.

A new target starts a linear ramp in joint space from the current commanded position, lasting
`duration_s` (one model step). Each period the commanded velocity follows the ramp, but never
exceeds the velocity limit, never changes by more than the acceleration limit allows, and is
always low enough to stop exactly at the target (discrete-time braking). `brake()` replaces the
target by the nearest point the joints can stop at: that is what "hold" means here.
All arrays are [7] float64, radians, rad/s, rad/s².
"""

from __future__ import annotations

import numpy as np

from vjepa2_ros.errors import ConfigError


class JointInterpolator:
    def __init__(self, dq_max: np.ndarray, ddq_max: np.ndarray, period_s: float) -> None:
        self.dq_max = np.asarray(dq_max, dtype=np.float64)
        self.ddq_max = np.asarray(ddq_max, dtype=np.float64)
        if self.dq_max.shape != (7,) or self.ddq_max.shape != (7,):
            raise ConfigError(f"dq_max and ddq_max must be [7], got {self.dq_max.shape} and {self.ddq_max.shape}")
        if not (np.all(self.dq_max > 0) and np.all(self.ddq_max > 0)):
            raise ConfigError(f"velocity and acceleration limits must be > 0, got {self.dq_max} and {self.ddq_max}")
        if not period_s > 0:
            raise ConfigError(f"period_s must be > 0, got {period_s}")
        self.period_s = float(period_s)
        self.q = np.zeros(7)          # commanded position
        self.dq = np.zeros(7)         # commanded velocity
        self._start = np.zeros(7)     # ramp start / end and progress in periods
        self._target = np.zeros(7)
        self._ramp_periods = 1.0
        self._k = 0

    def reset(self, q: np.ndarray) -> None:
        """Start at rest at q (the measured position), holding it."""
        self.q = np.array(q, dtype=np.float64)
        self.dq = np.zeros(7)
        self._start, self._target = self.q.copy(), self.q.copy()
        self._ramp_periods, self._k = 1.0, 1

    def move_to(self, q_target: np.ndarray, duration_s: float) -> None:
        """Ramp from the current command to q_target over duration_s (>= one period)."""
        self._start, self._target = self.q.copy(), np.array(q_target, dtype=np.float64)
        self._ramp_periods = max(1.0, duration_s / self.period_s)
        self._k = 0

    def brake(self) -> None:
        """Stop as fast as the acceleration limit allows, then hold that position."""
        # Discrete braking: speeds |v| - a dt, |v| - 2 a dt, ... until zero; each lasts one period.
        speed, a_dt = np.abs(self.dq), self.ddq_max * self.period_s
        n = np.floor(speed / a_dt)
        stop = self.q + np.sign(self.dq) * self.period_s * (n * speed - a_dt * n * (n + 1) / 2)
        self._start, self._target = stop, stop
        self._ramp_periods, self._k = 1.0, 1

    @property
    def target(self) -> np.ndarray:
        return self._target.copy()

    @property
    def ramp_done(self) -> bool:
        return self._k >= self._ramp_periods

    @property
    def at_rest(self) -> bool:
        """Ramp finished, at the target and not moving."""
        return self.ramp_done and bool(np.all(self.dq == 0.0)) and bool(np.allclose(self.q, self._target, atol=1e-9))

    def step(self) -> np.ndarray:
        """Advance one period; returns the new commanded position [7]."""
        dt, a = self.period_s, self.ddq_max
        self._k += 1
        ref = self._start + (self._target - self._start) * min(1.0, self._k / self._ramp_periods)
        v_want = (ref - self.q) / dt
        # Fastest speed from which the joint still stops at the target with steps of a*dt.
        e = np.abs(self._target - self.q)
        v_stop = a * dt * (np.sqrt(0.25 + 2.0 * e / (a * dt * dt)) - 0.5)
        bound = np.minimum(v_stop, self.dq_max)
        v = np.clip(np.clip(v_want, -bound, bound), self.dq - a * dt, self.dq + a * dt)
        q_next = self.q + v * dt
        if self.ramp_done:
            # Land on the target (no endless creeping) when its velocity u is reachable now and
            # stopping from u next period is too: both changes stay within a*dt.
            u = (self._target - self.q) / dt
            land = (np.abs(u - self.dq) <= a * dt) & (np.abs(u) <= a * dt)
            q_next, v = np.where(land, self._target, q_next), np.where(land, u, v)
        self.q, self.dq = q_next, v
        return self.q.copy()
