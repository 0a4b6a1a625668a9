"""The control loop's state machine: idle, active, holding, fault — each with a reason.

    idle ──activate / goal──► active ──hold──► holding ──activate──► active
      ▲                         │  fault(reason)            │
      └──── clear ──────────────┴──────────► fault ◄────────┘
                                               │ resume() (explicit)
                                               ▼
                                        idle / active

`idle`: no goal; the arm is held where it is. `active`: plans are executed. `holding`: the arm is
held on request (a hold call, ~/enable false, a deactivated node); a new goal does not lift a
hold, only activate() / resume() do. `fault`: something went wrong
(stale data, planner exception, non-finite plan, backend error); the arm is held and only an
explicit `resume()` leaves this state. Transitions are thread-safe: the command thread, the
planner thread and the caller all touch the machine.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass


class LoopState(enum.Enum):
    IDLE = "idle"
    ACTIVE = "active"
    HOLDING = "holding"
    FAULT = "fault"


@dataclass(frozen=True)
class StateEvent:
    """One transition, for logs and recordings."""

    stamp_s: float             # loop clock time of the transition
    state: LoopState
    reason: str


class StateMachine:
    """Current state + reason; every transition is kept in `events` (bounded)."""

    MAX_EVENTS = 1000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = LoopState.IDLE
        self._reason = "started"
        self.events: list[StateEvent] = []

    @property
    def state(self) -> LoopState:
        return self._state

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def commanding(self) -> bool:
        """True when plans may move the arm."""
        return self._state is LoopState.ACTIVE

    def _set(self, state: LoopState, reason: str, stamp_s: float) -> None:
        self._state, self._reason = state, reason
        self.events.append(StateEvent(stamp_s, state, reason))
        del self.events[:-self.MAX_EVENTS]

    def activate(self, reason: str, stamp_s: float) -> bool:
        """idle/holding -> active. A fault is never left this way; returns whether it changed."""
        with self._lock:
            if self._state in (LoopState.FAULT, LoopState.ACTIVE):
                return False
            self._set(LoopState.ACTIVE, reason, stamp_s)
            return True

    def goal_set(self, reason: str, stamp_s: float) -> bool:
        """A new goal: idle -> active. A hold and a fault stay (only activate / resume lift them);
        returns whether it changed."""
        with self._lock:
            if self._state is not LoopState.IDLE:
                return False
            self._set(LoopState.ACTIVE, reason, stamp_s)
            return True

    def hold(self, reason: str, stamp_s: float) -> bool:
        """idle/active -> holding (a fault stays a fault); returns whether it changed."""
        with self._lock:
            if self._state is LoopState.FAULT:
                return False
            self._set(LoopState.HOLDING, reason, stamp_s)
            return True

    def idle(self, reason: str, stamp_s: float) -> bool:
        """Goal cleared: -> idle (a fault stays a fault); returns whether it changed."""
        with self._lock:
            if self._state is LoopState.FAULT:
                return False
            self._set(LoopState.IDLE, reason, stamp_s)
            return True

    def fault(self, reason: str, stamp_s: float) -> bool:
        """Any state -> fault. The first fault's reason is kept; returns True if this call set it."""
        with self._lock:
            if self._state is LoopState.FAULT:
                return False
            self._set(LoopState.FAULT, reason, stamp_s)
            return True

    def resume(self, has_goal: bool, stamp_s: float) -> None:
        """The explicit way out of a fault (or a hold): -> active with a goal, else idle."""
        with self._lock:
            if has_goal:
                self._set(LoopState.ACTIVE, "resumed", stamp_s)
            else:
                self._set(LoopState.IDLE, "resumed without a goal", stamp_s)
