"""The planner in its own process: the control process keeps the command stream, the safety
envelope, the watchdogs and all ROS I/O; a child process owns torch, the model (and the GPU)
and runs the real `Planner`. `PlannerProcess` has the Planner's interface, so `ControlLoop`
keeps its semantics (async and blocking modes, hold rule, sub-goals, dry run).

Channel: one duplex pipe for small pickled messages, `(op, seq, args)` out and
`(status, seq, payload)` back, and one shared-memory slot for the frame. `plan()` copies the
newest frame [H, W, 3] into the slot and sends its shape and the state [7]; frames are never
pickled. One request is in flight at a time (the loop's planner lock and this client's lock),
so one slot suffices: nothing writes it while the child reads, and a child that misses its
deadline is killed before the slot is written again. Goal images (rare) go through the pipe;
goal encoding runs in the child too, so the control process never runs the model. So does the
camera calibration (`calibrate`: the recorded 64 px frames through the pipe, a rare call, with
`("progress", seq, text)` lines before its reply); `set_action_frame` changes the frame the child
plans in and `self.cfg`, so every restart plans in it too.

Faults of the child are planner faults, never crashes (PlanningError from the call, and
`problem()`, which the command tick checks every period, so the loop holds within one control
period even when no plan is in flight):
  died     the child exited (SIGKILL, OOM, a crash): its pidfd is readable (Linux; the kernel
           says so at once, the forkserver's exit status comes later), EOF on the pipe while no
           reply is due, or its sentinel is ready;
  hung     no reply within control.plan_timeout_s: the child is killed;
  garbage  a reply with another request's sequence number, a wrong shape or NaN: killed.
`recover()` (called by ControlLoop.resume) starts a fresh child and re-sends the goals from the
current sub-goal on. `kill()`, `hang(s)` and `send_garbage(kind)` inject these faults (soak).

The child is forked from a forkserver that has imported torch once, so a restart costs the
model load, not the interpreter start. Its torch threads are control.planner_threads; it never
runs real time, and `renice(n)` (ControlLoop.start's planner thread, control.planner_nice) lowers
the priority of all its threads, and of every child started after, so that in real time it
never competes with the command stream on equal terms (stepped runs plan at full speed).
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import pickle
import select
import signal
import threading
import time
import weakref
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Callable, Sequence

import numpy as np

from vjepa2_ros.control.config import StackConfig
from vjepa2_ros.errors import PlanningError

GARBAGE = ("nan", "shape", "stale")      # what `send_garbage` makes the next plan reply
CALIBRATION_TIMEOUT_S = 60.0             # `calibrate`: this, plus CALIBRATION_TIMEOUT_S_PER_MOVE per move
CALIBRATION_TIMEOUT_S_PER_MOVE = 30.0    # (CEM and the yaw scan per move; ViT-g on a GPU takes a few s)
PRELOAD = ["torch", "vjepa2_ros.planning.planner", "vjepa2_ros.engines.torch_runtime"]


def _context() -> mp.context.BaseContext:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)    # effective when this process first starts the forkserver
    return ctx


# --- the child ---------------------------------------------------------------------------------
def _portable(e: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else a PlanningError that names it."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return PlanningError(f"{type(e).__name__}: {e}")


def _garble(result: Any, seq: int, kind: str) -> tuple[Any, int]:
    """Fault injection: the reply `send_garbage(kind)` asked for."""
    if kind == "nan":
        result.action = np.full(7, np.nan)
    elif kind == "shape":
        result.action = result.action[:3]
    else:                                  # "stale": the sequence number of the previous request
        seq -= 1
    return result, seq


def serve(conn: Connection, cfg: StackConfig, seed: int, nice: int) -> None:
    """The child's main: build the planner, then answer requests until "close" or EOF."""
    try:                              # never real time, whatever the parent's policy (franky's thread runs FIFO 99)
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        os.setpriority(os.PRIO_PROCESS, 0, nice)                        # before torch starts its threads: all inherit it
    except (OSError, AttributeError):
        pass
    import torch
    threads = cfg.control.planner_threads
    if threads is None:                                                 # a core is left to the control process
        threads = max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) - 1))
    torch.set_num_threads(threads)
    from vjepa2_ros.control.stack import build_inline_planner
    try:
        planner = build_inline_planner(cfg, seed=seed)
    except BaseException as e:                                          # reported, then the child ends
        conn.send(("error", 0, _portable(e)))
        return
    conn.send(("ready", 0, {"pid": os.getpid(), "torch_threads": torch.get_num_threads(),
                            "device": str(planner.world_model.device)}))
    slot: SharedMemory | None = None
    garbage: str | None = None
    try:
        while True:
            op, seq, args = conn.recv()
            if op == "close":
                return
            if op == "hang":                                            # fault injection: stop answering
                time.sleep(args)
                continue
            if op == "garbage":
                garbage = args
                continue
            try:
                out: Any = None
                if op == "plan":
                    name, shape, state = args
                    if slot is None or slot.name != name:
                        if slot is not None:
                            slot.close()
                        slot = SharedMemory(name=name)
                    frame = np.array(np.ndarray(shape, np.uint8, buffer=slot.buf))   # copy: no view outlives this
                    out = planner.plan(frame, state)
                    if garbage is not None:
                        out, seq = _garble(out, seq, garbage)
                        garbage = None
                elif op == "goals":
                    goals, after, below = args
                    planner.set_goals(goals, advance_after_steps=after, advance_below_energy=below)
                elif op == "clear":
                    planner.clear_goal()
                elif op == "reset":
                    planner.reset()
                elif op == "encode":
                    out = planner.world_model.encode(args).float().cpu().numpy()
                elif op == "frame":
                    planner.set_action_frame(*args)
                elif op == "calibrate":
                    from vjepa2_ros.control.calibrate import infer_calibration
                    frames, poses, commanded, cal = args
                    out = infer_calibration(planner.world_model, frames, poses, commanded, cal,
                                            progress=lambda text, seq=seq: conn.send(("progress", seq, text)))
                else:
                    raise PlanningError(f"unknown planner request {op!r}")
                reply = ("ok", seq, out)
            except Exception as e:                                      # the request failed, the child is fine
                reply = ("error", seq, _portable(e))
            conn.send(reply)
    except (EOFError, OSError):                                         # the control process is gone
        return
    finally:
        if slot is not None:
            slot.close()


# --- the client ----------------------------------------------------------------------------------
@dataclass
class _Child:
    """What one child holds in the control process; `close` is safe to call twice."""

    proc: Any = None                        # multiprocessing Process
    conn: Connection | None = None
    slot: SharedMemory | None = None
    pidfd: int | None = None                # readable once the child has ended (None: no pidfd_open)
    reap_lock: threading.Lock = field(default_factory=threading.Lock)

    def watch(self) -> None:
        """Open a pidfd on the started child: the kernel marks it readable when the child ends,
        without waiting for the forkserver to reap it and send its status (tens of ms on a busy
        machine). Linux >= 5.3; elsewhere `ended()` falls back to the exit status."""
        try:
            self.pidfd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):             # not Linux, an old kernel, or already gone
            self.pidfd = None

    def ended(self) -> bool:
        """The child has ended, by its pidfd, else by its exit status. Never blocks or raises."""
        with self.reap_lock:                       # close() may be freeing the pidfd
            fd = self.pidfd
            if fd is not None:
                try:
                    return bool(select.select([fd], [], [], 0)[0])
                except (OSError, ValueError):
                    return False
        return self.exitcode() is not None

    def exitcode(self, timeout_s: float = 0.0) -> int | None:
        """The child's exit code once it has ended (waiting up to timeout_s), else None. The
        forkserver sends the status through the sentinel pipe, which one reader drains: reads go
        through reap_lock, and the status is kept once read. Never raises: the command tick calls
        it while another thread may restart the child."""
        proc = self.proc
        try:
            if proc is None:
                return None
            with self.reap_lock:
                code = proc.exitcode                   # reads the status if it is there, without waiting
            if code is None and timeout_s > 0 and wait([proc.sentinel], timeout_s):
                with self.reap_lock:
                    code = proc.exitcode
            return code
        except (ValueError, OSError):                  # closed meanwhile
            return None

    def kill(self) -> None:
        """SIGKILL the child (if it runs) and wait until it is gone."""
        if self.proc is not None and self.exitcode() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.exitcode(timeout_s=30.0)             # the forkserver reaps it and reports the status

    def close(self) -> None:
        """Ask the child to stop, kill it if it does not; free the pipe, the slot, the process handle."""
        if self.proc is not None and self.conn is not None and self.exitcode() is None:
            try:
                self.conn.send(("close", 0, None))
            except OSError:
                pass
            if self.exitcode(timeout_s=2.0) is None:
                self.kill()
        proc, conn, slot = self.proc, self.conn, self.slot
        self.proc = self.conn = self.slot = None
        with self.reap_lock:
            if self.pidfd is not None:
                os.close(self.pidfd)
                self.pidfd = None
            if proc is not None and proc.exitcode is not None:
                proc.close()                           # its sentinel fd
        if conn is not None:
            conn.close()
        if slot is not None:
            slot.close()
            slot.unlink()


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status not read yet"
    if code < 0:
        try:
            return f"killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class RemoteWorldModel:
    """What the ROS node asks of `planner.world_model` (encode a check frame, release at cleanup),
    answered by the planner process."""

    def __init__(self, planner: "PlannerProcess") -> None:
        self._planner = planner
        self.runtime = self                 # runtime.release() closes the planner process

    def encode(self, frames: np.ndarray) -> Any:
        """uint8 RGB [H, W, 3] or [B, H, W, 3] -> normalised latents [B, N, D] (a CPU tensor)."""
        import torch
        return torch.from_numpy(self._planner.encode(frames))

    def release(self) -> None:
        self._planner.close()


class PlannerProcess:
    """A `Planner` (cfg.model, cfg.planning, hold rule, seed) running in a child process.

    Same calls as `Planner`: set_goal_image / set_goal_latent / set_goals, clear_goal, reset,
    plan(frame [H, W, 3] uint8, state [7]) -> PlanResult, has_goal, goal_index; plus
    problem(), recover(), close() and the fault injections kill(), hang(s), send_garbage(kind).
    Thread-safe: requests are serialised; `problem()` and the injections never wait on a request.
    """

    def __init__(self, cfg: StackConfig, seed: int = 0) -> None:
        self.cfg, self.seed = cfg, int(seed)
        self.plan_timeout_s = cfg.control.plan_timeout_s
        self._lock = threading.Lock()                    # one request / reply at a time
        self._send_lock = threading.Lock()               # sends (injections come from other threads)
        self._goals: list[np.ndarray] = []               # as set (images or latents), for restarts
        self._advance: tuple[Any, float | None] = (None, None)
        self._goal_offset = 0                            # sub-goals passed before the last restart
        self._child_goal_index = 0
        self._seq = 0
        self._deadline: float | None = None              # monotonic s by which the reply in flight is due
        self._broken: str | None = None                  # why the child was killed or found dead
        self._closed = False
        self._nice = 0                                   # of the child's threads (renice)
        self.starts = 0
        self.info: dict[str, Any] = {}
        self._child = _Child()
        self._finalizer = weakref.finalize(self, _Child.close, self._child)
        with self._lock:
            self._start()

    # -- the child's life -----------------------------------------------------------------------
    def _start(self) -> None:
        """A fresh child with the planner built; raises what building it raised."""
        ctx = _context()
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=serve, args=(child, self.cfg, self.seed, self._nice), name="vjepa2-planner",
                           daemon=True)
        timeout = self.cfg.control.planner_start_timeout_s
        self._deadline = time.monotonic() + timeout      # "ready" is due
        try:
            proc.start()
            child.close()                                # so the child's death is EOF here
            c = self._child
            c.proc, c.conn = proc, parent
            c.watch()
            self.starts += 1
            status, _, payload = self._reply(timeout, "start (load the model)")
        finally:
            self._deadline = None
        if status != "ready":
            self._kill(f"planner process failed to start: {payload}")
            raise payload if isinstance(payload, BaseException) else PlanningError(str(payload))
        self.info = payload
        self._broken = None

    def _kill(self, reason: str) -> None:
        """Record why, and make sure the child is gone (a hung or lying child is not reused)."""
        self._broken = reason
        self._child.kill()

    def _died(self) -> str:
        """Why the child is gone; records it first, so problem() says so while the status is read."""
        self._broken = "planner process died (exit status not read yet)"
        return f"planner process died ({describe_exit(self._child.exitcode(timeout_s=1.0))})"

    def _reply(self, timeout_s: float, what: str,
               progress: Callable[[str], None] | None = None) -> tuple[str, int, Any]:
        """The reply within timeout_s; ("progress", seq, text) lines before it go to `progress`."""
        conn = self._child.conn
        deadline = time.monotonic() + timeout_s
        while True:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                reason = f"planner process hung: no reply to {what} within {timeout_s:.3g} s"
                self._kill(reason + " (killed)")
                raise PlanningError(reason)
            try:
                message = conn.recv()
            except (EOFError, OSError):
                reason = self._died()
                self._kill(reason)
                raise PlanningError(reason) from None
            if message[0] != "progress":
                return message
            if progress is not None:
                progress(message[2])

    def _require_running(self) -> None:
        if self._closed:
            raise PlanningError("the planner process was closed")
        if self._broken is not None:
            raise PlanningError(f"{self._broken}; resume() restarts it")

    def _request(self, op: str, args: Any, what: str, timeout_s: float | None = None,
                 progress: Callable[[str], None] | None = None) -> Any:
        """Send one request and wait for its reply, within timeout_s (default control.plan_timeout_s;
        caller holds self._lock)."""
        self._require_running()
        timeout_s = self.plan_timeout_s if timeout_s is None else timeout_s
        self._seq += 1
        seq = self._seq
        try:
            with self._send_lock:                        # a reply is due from here on (see _pipe_closed)
                self._deadline = time.monotonic() + timeout_s
                self._child.conn.send((op, seq, args))
            status, got, payload = self._reply(timeout_s, what, progress)
        except OSError:                                  # the send found the pipe closed
            reason = self._died()
            self._kill(reason)
            raise PlanningError(reason) from None
        finally:
            self._deadline = None
        if got != seq:
            reason = f"planner process returned garbage: a reply to request {got}, expected {seq}"
            self._kill(reason + " (killed)")
            raise PlanningError(reason)
        if status == "error":
            raise payload
        return payload

    def problem(self) -> str | None:
        """Why the planner process cannot plan now (died, hung past its deadline, killed for
        garbage), or None. Cheap and never blocking: the command tick calls it every period."""
        if self._closed:
            return None
        if self._broken is not None:
            return self._broken
        if self._child.ended() or self._pipe_closed():  # the pidfd / pipe say so before the exit status is out
            return f"planner process died ({describe_exit(self._child.exitcode())})"
        deadline = self._deadline
        if deadline is not None and time.monotonic() > deadline:
            return f"planner process hung: no reply within plan_timeout_s {self.plan_timeout_s:.3g} s"
        return None

    def _pipe_closed(self) -> bool:
        """The pipe is readable while no reply is due: the child's end closed (it died). Never
        waits: while a request is being sent, it says False."""
        if not self._send_lock.acquire(blocking=False):
            return False
        try:
            conn = self._child.conn
            return self._deadline is None and conn is not None and conn.poll(0)
        except OSError:                                  # closed meanwhile (a restart)
            return False
        finally:
            self._send_lock.release()

    def recover(self) -> None:
        """Restart the child if it died, hung or lied, and re-send the goals from the current
        sub-goal on; nothing to do when it is healthy. Waits for a request in flight to end."""
        with self._lock:
            if self._closed or (self._broken is None and not self._child.ended()):
                return
            self._child.close()
            self._broken = None
            offset, self._child_goal_index = self.goal_index, 0
            self._start()
            if self._goals:
                after, below = self._advance
                if isinstance(after, list):
                    after = after[offset:]
                self._request("goals", (self._goals[offset:], after, below), "the goals")
                self._goal_offset = offset

    def close(self) -> None:
        """Stop the child and free the shared memory (also done when this object is collected). A
        request in flight (a plan that outlived ControlLoop.stop()) ends at once: the child is killed."""
        self._closed = True
        self._child.kill()
        with self._lock:
            self._finalizer()

    def __enter__(self) -> "PlannerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def renice(self, nice: int) -> None:
        """Set the nice value (0..19) of every thread of the child, and of every child started later."""
        self._nice = int(nice)
        proc = self._child.proc
        if proc is None:
            return
        try:
            tids = os.listdir(f"/proc/{proc.pid}/task")
        except FileNotFoundError:                        # it died; the next child starts at this value
            return
        for tid in tids:
            try:
                os.setpriority(os.PRIO_PROCESS, int(tid), self._nice)
            except ProcessLookupError:                   # a thread that just ended
                pass

    # -- fault injection (soak tests) -------------------------------------------------------------
    def kill(self) -> None:
        """SIGKILL the child (as the OOM killer would) and wait until it is gone."""
        self._child.kill()

    def hang(self, seconds: float) -> None:
        """The child stops answering for `seconds` after the request it is on."""
        with self._send_lock:
            self._child.conn.send(("hang", 0, float(seconds)))

    def send_garbage(self, kind: str = "nan") -> None:
        """The child's next plan reply is garbage: "nan" action, wrong "shape", or a "stale" sequence number."""
        if kind not in GARBAGE:
            raise ValueError(f"kind must be one of {GARBAGE}, got {kind!r}")
        with self._send_lock:
            self._child.conn.send(("garbage", 0, kind))

    # -- the Planner's interface -------------------------------------------------------------------
    @property
    def has_goal(self) -> bool:
        return bool(self._goals)

    @property
    def goal_index(self) -> int:
        """Index of the current sub-goal (0 for a single goal)."""
        return self._goal_offset + self._child_goal_index

    @property
    def world_model(self) -> RemoteWorldModel:
        return RemoteWorldModel(self)

    def set_goal_image(self, frame: np.ndarray) -> None:
        self.set_goals([frame])

    def set_goal_latent(self, z: Any) -> None:
        self.set_goals([z])

    def set_goals(self, goals: Sequence[Any], advance_after_steps: int | Sequence[int] | None = None,
                  advance_below_energy: float | None = None) -> None:
        """As `Planner.set_goals`: uint8 images [H, W, 3] (encoded in the child) or latents [N, D]."""
        goals = [np.asarray(g.detach().cpu() if hasattr(g, "detach") else g) for g in goals]
        after = list(advance_after_steps) if advance_after_steps is not None and \
            not isinstance(advance_after_steps, int) else advance_after_steps
        with self._lock:
            self._request("goals", (goals, after, advance_below_energy), "the goals")
            self._goals, self._advance = goals, (after, advance_below_energy)
            self._goal_offset = self._child_goal_index = 0

    def clear_goal(self) -> None:
        with self._lock:
            self._goals, self._goal_offset, self._child_goal_index = [], 0, 0
            if self._broken is None and not self._closed:
                self._request("clear", None, "clear_goal")

    def reset(self) -> None:
        with self._lock:
            self._request("reset", None, "reset")

    def encode(self, frames: np.ndarray) -> np.ndarray:
        """uint8 RGB [H, W, 3] or [B, H, W, 3] -> normalised latents [B, N, D] float32 (in the child)."""
        with self._lock:
            return self._request("encode", np.asarray(frames), "encode")

    def calibrate(self, frames: np.ndarray, poses: np.ndarray, commanded: np.ndarray, cfg: Any,
                  progress: Callable[[str], None] | None = None) -> Any:
        """`control.calibrate.infer_calibration` on the child's world model: frames uint8 [N+1, H, W, 3],
        poses [N+1, 7], commanded [N, 3], cfg a CalibrationConfig -> CalibrationResult. The frames go
        through the pipe (small, a rare call); progress(text) per move. Goals and plans are untouched;
        plans wait meanwhile. Within CALIBRATION_TIMEOUT_S + CALIBRATION_TIMEOUT_S_PER_MOVE per move."""
        frames, poses, commanded = np.asarray(frames), np.asarray(poses), np.asarray(commanded)
        timeout_s = max(self.plan_timeout_s, CALIBRATION_TIMEOUT_S + CALIBRATION_TIMEOUT_S_PER_MOVE * len(commanded))
        with self._lock:
            return self._request("calibrate", (frames, poses, commanded, cfg), "the calibration",
                                 timeout_s=timeout_s, progress=progress)

    def set_action_frame(self, frame: Sequence[float] | None, center_m: Sequence[float] = (0.0, 0.0, 0.0)) -> None:
        """Plan in this action frame (9 numbers, a 3x3 rotation row-major, about center_m; None: the
        robot's frame) from the next plan on, and after every restart: it becomes part of self.cfg.
        ConfigError for a bad frame, before anything changes."""
        planning = dataclasses.replace(
            self.cfg.planning, action_frame=None if frame is None else tuple(float(v) for v in frame),
            action_frame_center_m=tuple(float(v) for v in center_m))            # CEMConfig checks it
        with self._lock:
            self.cfg = dataclasses.replace(self.cfg, planning=planning)
            if self._broken is None and not self._closed:   # else the restart builds it from self.cfg
                self._request("frame", (planning.action_frame, planning.action_frame_center_m), "the action frame")

    def plan(self, frame: np.ndarray, state: np.ndarray) -> Any:
        """frame uint8 RGB [H, W, 3], state [7] -> PlanResult, computed in the child. The reply is
        checked: its sequence number, action [7] and plan [H, 7] finite, energy finite."""
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3:
            raise PlanningError(f"frame must be uint8 [H, W, 3], got {frame.dtype} {list(frame.shape)}")
        state = np.asarray(state, dtype=np.float64)
        t0 = time.monotonic()
        with self._lock:
            self._require_running()
            slot = self._slot(frame.nbytes)
            view = np.ndarray(frame.shape, np.uint8, buffer=slot.buf)
            view[...] = frame
            del view                                               # no export of slot.buf outlives this
            seq = self._seq + 1
            result = self._request("plan", (slot.name, frame.shape, state), "a plan")
            problem = _check_plan(result, self.cfg.planning.horizon)
            if problem is not None:
                reason = f"planner process returned garbage: {problem}"
                self._kill(reason + " (killed)")
                raise PlanningError(reason)
            self._child_goal_index = int(result.diagnostics.get("goal_index", 0))
        result.diagnostics["goal_index"] = self.goal_index
        result.diagnostics["process"] = {"pid": self.info.get("pid"), "seq": seq,
                                         "roundtrip_s": time.monotonic() - t0}
        return result

    def _slot(self, nbytes: int) -> SharedMemory:
        """The shared-memory slot, (re)made when a frame does not fit (caller holds self._lock)."""
        c = self._child
        if c.slot is None or c.slot.size < nbytes:
            if c.slot is not None:
                c.slot.close()
                c.slot.unlink()
            c.slot = SharedMemory(create=True, size=nbytes)
        return c.slot


def _check_plan(result: Any, horizon: int) -> str | None:
    """What is wrong with a PlanResult from the child, or None."""
    try:
        action, plan = np.asarray(result.action, dtype=np.float64), np.asarray(result.plan, dtype=np.float64)
        energy = float(result.energy)
    except (AttributeError, TypeError, ValueError) as e:
        return f"not a plan result ({type(e).__name__}: {e})"
    if action.shape != (7,) or plan.shape != (horizon, 7):
        return f"action {list(action.shape)} and plan {list(plan.shape)}, expected [7] and [{horizon}, 7]"
    if not (np.isfinite(action).all() and np.isfinite(plan).all() and np.isfinite(energy)):
        return f"non-finite action {action.tolist()} or energy {energy}"
    return None
