"""`vjepa2-ros soak`: closed loop on the ROS sim station for a long time, with a fault every ~30 s.

`sim_station` and `planner_node` run as their console scripts over DDS (loopback, a private
ROS_DOMAIN_ID) with the shipped sim world model, as `vjepa2-ros bench ros` runs them. The arm
travels between two goals (the demo's and the start view); every ~--fault-every-s seconds the
next fault of the cycle is injected while the loop is active:

    camera_stops        the station stops publishing frames (its ~/publish_camera false)
    joint_states_stop   the station stops publishing joint states (~/publish_joint_states false)
    nan_joint_state     a JointState of NaNs on /joint_states (published by this command's node)
    bad_image           a truncated rgb8 Image on /camera/image
    planner_killed      SIGKILL of the planner process (its pid from the node's /diagnostics)
    planner_hung        SIGSTOP of the planner process (the node kills it after control.plan_timeout_s)
    goal_changed        the other goal image on ~/goal_image (no hold expected: the arm turns round)
    enable_cycle        ~/enable false, then true
    lifecycle_cycle     change_state deactivate, then activate

For each fault: the hold (the loop leaves 'active'; its latency is the node's state-change stamp
in /diagnostics minus the injection instant, both on this machine's clock), the arm still (from
the commands the station received: the first of the final run of identical targets), then the
recovery asked for (the output back on, ~/enable true, activate) and motion again (the station
receives moving commands). Every --sample-every-s seconds the RSS, thread count and open file
descriptors of the station, the node and the planner process are read from /proc. The report is
soak.json and a printed table in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool

from vjepa2_ros.nodes import ros_session as rs
from vjepa2_ros.robot.kinematics import arm_spec

FAULTS = ("camera_stops", "joint_states_stop", "nan_joint_state", "bad_image", "planner_killed",
          "planner_hung", "goal_changed", "enable_cycle", "lifecycle_cycle")
GOAL_OFFSETS_M = ((0.12, 0.10, -0.12), (0.0, 0.0, 0.0))   # the demo's goal and the start view: ~20 cm apart
TOGGLE_BELOW_M = 0.06          # closer than this to its goal, the arm is sent to the other one
MOVING_RAD = 1e-6              # two consecutive targets further apart than this: the arm is commanded to move
STILL_FOR_S = 0.5              # identical targets for this long: the arm is held
KEEP_MESSAGES_S = 60.0         # the monitor forgets older messages (an hour at 200 Hz would not fit)
STATION = "/sim_station"
PRE_EXISTING = "the loop had left 'active' before the injection"
MASKED = "held for another reason first"
# Stale-input faults hold once the last message is older than the node's limit (its parameter):
# the report gives the hold latency past that limit too (the last message came up to one publish
# period before the injection, so it can be slightly negative).
AGE_LIMITS = {"camera_stops": "safety.max_frame_age_s", "joint_states_stop": "safety.max_state_age_s"}
# The loop's reason when it holds for the fault injected (a substring of it).
HOLD_REASONS = {"camera_stops": "camera frame is stale", "joint_states_stop": "joint state is stale",
                "nan_joint_state": "joint_states message rejected", "bad_image": "camera message rejected",
                "planner_killed": "planner process died", "planner_hung": "planner process hung",
                "enable_cycle": "disabled by ~/enable", "lifecycle_cycle": "loop stopping"}


@dataclass
class SoakConfig:
    duration_s: float = 3600.0            # faults are injected until then (every kind at least once)
    fault_every_s: float = 30.0
    faults: tuple[str, ...] = FAULTS
    out: Path = Path("runs/soak")
    seed: int = 0
    sample_every_s: float = 5.0
    warmup_s: float = 120.0
    plan_timeout_s: float = 20.0          # control.plan_timeout_s: the hung planner is faulted after this
    step_timeout_s: float = 120.0         # the longest wait for a hold, a recovery or motion (busy machine)
    planner_parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class FaultResult:
    kind: str
    injected_at_s: float                  # since the soak started
    moving_at_injection: bool = False
    held: bool = False                    # the loop left 'active' and the commands stood still
    hold_latency_ms: float | None = None  # node's state-change stamp - injection
    past_limit_ms: float | None = None    # stale-input faults: hold latency - the input's age limit
    brake_latency_ms: float | None = None  # first command of the final deceleration at the station - injection
    still_latency_ms: float | None = None  # first of the final identical targets at the station - injection
    state: str = ""                       # the loop's state and reason after the fault
    recovered: bool = False               # active again and the arm commanded to move
    recovery_s: float | None = None       # recovery request -> moving commands at the station
    note: str = ""


# --- /proc -----------------------------------------------------------------------------------------
def proc_sample(pid: int) -> dict[str, float] | None:
    """{rss_mb, threads, fds, age_s} of a running process, or None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if fields.get("State", "").strip().startswith("Z"):
        return None
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024.0, "threads": int(fields["Threads"]),
            "fds": fds, "age_s": uptime_s - start_ticks / os.sysconf("SC_CLK_TCK")}


def parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def descends_from(pid: int, ancestor: int, depth: int = 3) -> bool:
    """pid is a child, grandchild... of ancestor (the planner process is the node's forkserver's child)."""
    for _ in range(depth):
        pid = parent_pid(pid)
        if pid is None or pid <= 1:
            return False
        if pid == ancestor:
            return True
    return False


class ProcSampler(threading.Thread):
    """Samples {role: pid or pid function} every period_s into `samples` (t_s, role, pid, sample)."""

    def __init__(self, roles: dict[str, Callable[[], int | None]], period_s: float, t0: float) -> None:
        super().__init__(name="soak-proc-sampler", daemon=True)
        self.roles, self.period_s, self.t0 = roles, period_s, t0
        self.samples: list[tuple[float, str, int, dict[str, float]]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample_once()
            self._stop_event.wait(self.period_s)

    def sample_once(self) -> None:
        t = time.monotonic() - self.t0
        for role, pid_of in self.roles.items():
            pid = pid_of()
            sample = proc_sample(pid) if pid else None
            if sample is not None:
                self.samples.append((t, role, pid, sample))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5.0)
        self.sample_once()


def resource_summary(samples: list, warmup_s: float, settle_s: float = 30.0) -> dict[str, dict]:
    """Per role: start / end / max of RSS, threads and fds; RSS deviation after warm-up from the first
    sample after it (processes younger than settle_s, i.e. a planner process still loading, left out)."""
    out: dict[str, dict] = {}
    for role in dict.fromkeys(r for _, r, _, _ in samples):
        rows = [(t, pid, s) for t, r, pid, s in samples if r == role]
        settled = [(t, pid, s) for t, pid, s in rows if t >= warmup_s and s["age_s"] >= settle_s]
        summary: dict[str, Any] = {"samples": len(rows), "pids": sorted({pid for _, pid, _ in rows})}
        for key in ("rss_mb", "threads", "fds"):
            values = [s[key] for _, _, s in rows]
            summary[key] = {"start": values[0], "end": values[-1], "max": max(values)}
            if settled:
                ref = settled[0][2][key]
                after = [s[key] for _, _, s in settled]
                summary[key].update(after_warmup=ref, end_settled=after[-1], max_after_warmup=max(after),
                                    min_after_warmup=min(after))
        if settled:
            ref = settled[0][2]["rss_mb"]
            dev = [s["rss_mb"] / ref - 1.0 for _, _, s in settled]
            summary["rss_deviation_after_warmup"] = {"min": min(dev), "max": max(dev), "end": dev[-1]}
            summary["rss_flat_5pct"] = bool(max(abs(d) for d in dev) <= 0.05)
            summary["thread_growth"] = settled[-1][2]["threads"] - settled[0][2]["threads"]
            summary["fd_growth"] = settled[-1][2]["fds"] - settled[0][2]["fds"]
        out[role] = summary
    return out


# --- what the monitor saw --------------------------------------------------------------------------
def forget_older(m: rs.Monitor, keep_s: float = KEEP_MESSAGES_S) -> None:
    """Drop messages older than keep_s from the monitor's lists (memory stays bounded for an hour)."""
    cut = time.monotonic() - keep_s
    with m.got.lock:
        for name in ("joint_states", "commands", "joint_targets", "actions", "diagnostics"):
            items = getattr(m.got, name)
            drop = next((i for i, (t, _) in enumerate(items) if t >= cut), len(items))
            del items[:drop]


def command_times(m: rs.Monitor, t0: float) -> tuple[np.ndarray, np.ndarray]:
    """(receipt times [N] monotonic s, joint targets [N, 7]) of the commands received since t0."""
    with m.got.lock:
        rows = [(t, msg.points[0].positions) for t, msg in m.got.commands if t >= t0 and msg.points]
    if not rows:
        return np.zeros(0), np.zeros((0, 7))
    return np.array([t for t, _ in rows]), np.array([list(q) for _, q in rows], dtype=np.float64)


def moving_since(m: rs.Monitor, t0: float) -> bool:
    """The station received at least two targets since t0 that differ: the arm is commanded to move."""
    _, q = command_times(m, t0)
    return len(q) >= 2 and float(np.abs(np.diff(q, axis=0)).max()) > MOVING_RAD


def still_since(m: rs.Monitor, t_inject: float, t_pre: float) -> float | None:
    """Receipt time of the first target of the final run of identical targets received after t_pre
    (one before the injection is included, so an arm that was already still counts from it), if
    that run lasts STILL_FOR_S or no command came for that long; else None (still moving)."""
    t, q = command_times(m, t_pre)
    now = time.monotonic()
    if len(t) == 0:
        return t_inject
    changed = np.flatnonzero(np.abs(np.diff(q, axis=0)).max(axis=1) > 1e-9) if len(q) > 1 else np.zeros(0, int)
    first_still = int(changed[-1]) + 1 if changed.size else 0
    if now - t[first_still] < STILL_FOR_S:
        return None
    return float(t[first_still])


def brake_onset(m: rs.Monitor, t_pre: float, t_still: float) -> float | None:
    """Receipt time of the first command of the final deceleration: from it on, the commanded speed
    (largest joint step between consecutive targets) only falls, up to t_still."""
    t, q = command_times(m, t_pre)
    keep = t <= t_still
    t, q = t[keep], q[keep]
    if len(q) < 3:
        return float(t[0]) if len(t) else None
    speed = np.abs(np.diff(q, axis=0)).max(axis=1)            # [N-1], step k from target k to k+1
    flat_or_up = np.flatnonzero(np.diff(speed) > -1e-12)        # speed[i+1] >= speed[i]
    return float(t[min(flat_or_up[-1] + 3, len(t) - 1)]) if flat_or_up.size else float(t[1])


def loop_values(m: rs.Monitor) -> dict[str, str]:
    return m.loop_state()[2]


def goal_distance(m: rs.Monitor, goal_xyz: np.ndarray) -> float:
    """Flange to goal (m) at the newest target the station received (the arm tracks it); inf before
    the first command."""
    cmd = m.latest("commands")
    if cmd is None or not cmd.points:
        return float("inf")
    return float(np.linalg.norm(rs.flange_position(np.asarray(cmd.points[0].positions)) - goal_xyz))


def soak_domain_id() -> int:
    """A ROS_DOMAIN_ID in 101..200, apart from the 1..100 of the tests and benches (private_domain_id):
    a concurrent test's change_state reached this soak's node on a shared domain and ended it."""
    return 101 + os.getpid() % 100


class SoakMonitor(rs.Monitor):
    """The Monitor without the 200 Hz joint states and 100 Hz joint targets subscriptions (the soak
    reads the commands the station receives): in Python they cost a third of a core, on a 2-core
    machine shared with the processes under test. Its joint-state publisher stays."""

    UNWATCHED = (rs.STATION_TOPICS["joint_states"], f"{rs.PLANNER}/joint_targets")

    def create_subscription(self, msg_type: Any, topic: str, *args: Any, **kwargs: Any) -> Any:
        if topic in self.UNWATCHED:
            return None
        return super().create_subscription(msg_type, topic, *args, **kwargs)


class SoakSession(rs.RosSession):
    """RosSession with the SoakMonitor (rclpy in its own context, spinning in a background thread)."""

    def __init__(self, domain_id: int) -> None:
        os.environ.update(rs.ros_env(domain_id))
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.monitor = SoakMonitor(self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.monitor)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()


# --- the soak ----------------------------------------------------------------------------------------
class Soak:
    """One soak run: the processes, the monitor, the goals, and the faults' results."""

    def __init__(self, cfg: SoakConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.domain = soak_domain_id()
        self.env = rs.ros_env(self.domain)
        self.goals = [rs.goal_image_for_offset(offset) for offset in GOAL_OFFSETS_M]
        self.goal_index = 0
        self.results: list[FaultResult] = []
        self.spurious: list[dict[str, Any]] = []    # holds and faults nobody injected
        self.planner_pids: list[int] = []
        self.crashes: list[str] = []
        self.t0 = time.monotonic()
        self.session: rs.RosSession | None = None
        self.station: rs.Process | None = None
        self.node: rs.Process | None = None
        self.sampler: ProcSampler | None = None
        self._clients: dict[str, Any] = {}
        self._resumed_since = 0.0                 # state_since_s of the last spurious hold resumed

    # --- helpers ---------------------------------------------------------------------------------
    @property
    def m(self) -> rs.Monitor:
        return self.session.monitor

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def log(self, text: str) -> None:
        print(f"  {self.elapsed():7.1f} s  {text}", flush=True)

    def planner_pid(self) -> int | None:
        """The planner process's pid from the node's /diagnostics, if it is the node's descendant."""
        text = loop_values(self.m).get("planner_pid")
        if not text or self.node is None:
            return None
        pid = int(text)
        if pid not in self.planner_pids and descends_from(pid, self.node.popen.pid):
            self.planner_pids.append(pid)
        return pid if pid in self.planner_pids and descends_from(pid, self.node.popen.pid) else None

    def station_switch(self, output: str, on: bool) -> None:
        name = f"{STATION}/publish_{output}"
        if name not in self._clients:
            self._clients[name] = self.m.create_client(SetBool, name)
        client = self._clients[name]
        if not client.wait_for_service(timeout_sec=30.0):
            raise TimeoutError(f"service {name} not available")
        future = client.call_async(SetBool.Request(data=on))
        if not rs.wait_for(future.done, 30.0) or not future.result().success:
            raise TimeoutError(f"service {name} did not answer")

    def enable(self, on: bool) -> tuple[bool, str]:
        """~/enable; true restarts a dead or hung planner process, which loads the model: a long timeout."""
        answer = self.m.call(SetBool, "enable", SetBool.Request(data=on), timeout_s=self.cfg.step_timeout_s + 180)
        return bool(answer.success), answer.message

    def check_alive(self) -> None:
        for p in (self.station, self.node):
            if p is not None and p.popen.poll() is not None:
                text = f"{p.name} exited with {p.popen.returncode} at {self.elapsed():.0f} s"
                if text not in self.crashes:
                    self.crashes.append(text)
                raise RuntimeError(f"{text}:\n{p.output()[-3000:]}")

    def wait(self, condition: Callable[[], bool], timeout_s: float, period_s: float = 0.05) -> bool:
        def check() -> bool:
            self.check_alive()
            return condition()
        return rs.wait_for(check, timeout_s, period_s)

    def state(self) -> str:
        return loop_values(self.m).get("state", "")

    def publish_goal(self, index: int) -> None:
        self.goal_index = index
        self.m.publish_goal(self.goals[index][0])

    def distance(self) -> float:
        return goal_distance(self.m, self.goals[self.goal_index][1])

    # --- start and stop ----------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.cfg
        cfg.out.mkdir(parents=True, exist_ok=True)
        self.session = SoakSession(self.domain)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)   # Ctrl-C ends the soak with its report,
            signal.signal(signal.SIGTERM, signal.default_int_handler)  # and so does kill: never orphan the station
        self.station = rs.start_station(self.env, cfg.out)
        params = {"control.plan_timeout_s": cfg.plan_timeout_s, **cfg.planner_parameters}
        self.node_parameters = {**rs.sim_model_parameters(), **params}
        self.node = rs.start_planner(self.env, cfg.out, **params)
        self.sampler = ProcSampler({"sim_station": lambda: self.station.popen.pid,
                                    "planner_node": lambda: self.node.popen.pid,
                                    "planner_process": self.planner_pid}, cfg.sample_every_s, self.t0)
        self.sampler.start()
        client = self.m.create_client(SetBool, f"{STATION}/publish_joint_states")
        if not self.wait(lambda: client.wait_for_service(timeout_sec=0.5), 60):
            raise RuntimeError(f"sim_station did not come up:\n{self.station.output()[-2000:]}")
        self._clients[f"{STATION}/publish_joint_states"] = client
        if not (self.m.change_state("configure", 300) and self.m.change_state("activate")):
            raise RuntimeError(f"the planner did not configure / activate:\n{self.node.output()[-3000:]}")
        t = time.monotonic()
        self.publish_goal(0)
        if not self.wait_active(lambda: moving_since(self.m, t), cfg.step_timeout_s + 60, 0.0, 0.2):
            raise RuntimeError(f"the arm did not start moving: {self.m.loop_state()[1]}\n{self.node.output()[-3000:]}")
        self.log(f"closed loop running (planner process {self.planner_pid()}); "
                 f"{100 * self.distance():.1f} cm to the goal")

    def stop(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        if self.sampler is not None:
            self.sampler.stop()
        for p in (self.node, self.station):
            if p is not None:
                if p.popen.poll() is not None and not any(p.name in c for c in self.crashes):
                    self.crashes.append(f"{p.name} exited with {p.popen.returncode} before the end")
                codes[p.name] = p.stop()
        if self.session is not None:
            self.session.close()
        return codes

    # --- one fault ------------------------------------------------------------------------------------
    def since_s(self) -> float:
        """When the loop entered its current state (the node's clock, s; 0 if not reported)."""
        return float(loop_values(self.m).get("state_since_s", "0") or 0)

    def resume_spurious(self, after_wall: float, unless: str = "\0") -> bool:
        """If the loop left 'active' on its own since after_wall (nobody injected anything: a
        stale-state fault on a starved machine, say), record it and ask ~/enable true; True if so."""
        values = loop_values(self.m)
        since = self.since_s()
        if values.get("state") not in ("fault", "holding") or since < after_wall or since == self._resumed_since:
            return False                                          # (or resumed already: /diagnostics lag)
        if unless in (values.get("reason") or ""):                # the fault under test again: not spurious
            return False
        self._resumed_since = since
        self.spurious.append({"at_s": self.elapsed(), "state": values.get("state"), "reason": values.get("reason"),
                              "since_s": since})
        self.log(f"spurious {values.get('state')}: {values.get('reason')}; ~/enable true")
        self.enable(True)
        return True

    def wait_active(self, condition: Callable[[], bool], timeout_s: float, after_wall: float,
                    period_s: float = 0.05, unless: str = "\0") -> bool:
        """Wait for condition; spurious holds since after_wall (whose reason does not contain
        `unless`) are recorded and resumed meanwhile."""
        def check() -> bool:
            self.resume_spurious(after_wall, unless)
            return condition()
        return self.wait(check, timeout_s, period_s)

    def ready(self) -> None:
        """Active, more than TOGGLE_BELOW_M from its goal, and returns as the arm starts a move (so
        the fault lands while it moves, if a move comes within step_timeout_s)."""
        if self.distance() < TOGGLE_BELOW_M:
            self.publish_goal(1 - self.goal_index)                # a new goal also activates a held loop
            time.sleep(1.0)
        self.resume_spurious(0.0)
        self.wait_active(lambda: self.state() == "active", 30, 0.0)
        self.wait_active(lambda: moving_since(self.m, time.monotonic() - 0.05) and self.state() == "active",
                         self.cfg.step_timeout_s, 0.0, 0.01)

    def inject(self, kind: str) -> tuple[float, float, Callable[[], None], float]:
        """Inject `kind`: (wall time, monotonic time of the injection, the recovery, hold timeout s)."""
        m, cfg = self.m, self.cfg
        quick = 15.0
        if kind == "camera_stops":
            t = time.time(), time.monotonic()
            self.station_switch("camera", False)

            def recover() -> None:
                self.station_switch("camera", True)
                time.sleep(1.0)                                   # fresh frames at the node (20 Hz)
                self.enable(True)
            return (*t, recover, cfg.plan_timeout_s + cfg.step_timeout_s)
        if kind == "joint_states_stop":
            t = time.time(), time.monotonic()
            self.station_switch("joint_states", False)

            def recover() -> None:
                self.station_switch("joint_states", True)
                time.sleep(1.0)                                   # fresh joint states at the node (200 Hz)
                self.enable(True)
            return (*t, recover, quick)
        if kind == "nan_joint_state":
            msg = JointState(name=list(arm_spec("panda").joint_names), position=[float("nan")] * 7)
            msg.header.stamp = m.get_clock().now().to_msg()
            t = time.time(), time.monotonic()
            for _ in range(3):
                m.joint_pub.publish(msg)
                time.sleep(0.02)
            return (*t, lambda: self.enable(True), quick)
        if kind == "bad_image":
            img = rs.rgb_image(np.zeros((64, 64, 3), np.uint8), m.get_clock().now().to_msg())
            img.data = img.data[:1000]                            # truncated: 1000 of 12288 bytes
            t = time.time(), time.monotonic()
            for _ in range(3):
                m.image_pub.publish(img)
                time.sleep(0.02)
            return (*t, lambda: self.enable(True), quick)
        if kind in ("planner_killed", "planner_hung"):
            pid = self.planner_pid()
            if pid is None:
                raise RuntimeError("the node's /diagnostics give no planner_pid that is its descendant "
                                   "(control.planner_process off?)")
            sig = signal.SIGKILL if kind == "planner_killed" else signal.SIGSTOP
            t = time.time(), time.monotonic()
            os.kill(pid, sig)

            def recover() -> None:
                if kind == "planner_hung" and descends_from(pid, self.node.popen.pid):
                    os.kill(pid, signal.SIGCONT)                  # the node kills it past the timeout
                self.enable(True)                                 # restarts the planner process
            return (*t, recover, (quick if kind == "planner_killed" else cfg.plan_timeout_s + quick))
        if kind == "goal_changed":
            t = time.time(), time.monotonic()
            self.publish_goal(1 - self.goal_index)
            return (*t, lambda: None, 0.0)
        if kind == "enable_cycle":
            t = time.time(), time.monotonic()
            ok, message = self.enable(False)
            if not ok:
                raise RuntimeError(f"~/enable false failed: {message}")
            return (*t, lambda: self.enable(True), quick)
        if kind == "lifecycle_cycle":
            t = time.time(), time.monotonic()
            if not m.change_state("deactivate"):
                raise RuntimeError("change_state deactivate failed")

            def recover() -> None:
                if not m.change_state("activate"):
                    raise RuntimeError("change_state activate failed")
            return (*t, recover, quick)
        raise ValueError(f"unknown fault {kind!r}; one of {FAULTS}")

    def run_fault(self, kind: str) -> FaultResult:
        m, cfg = self.m, self.cfg
        self.ready()
        moving = moving_since(m, time.monotonic() - 0.3)
        t_pre = time.monotonic() - 0.2
        start_distance = goal_distance(m, self.goals[1 - self.goal_index][1])   # to the other goal
        wall, mono, recover, hold_timeout_s = self.inject(kind)
        r = FaultResult(kind, mono - self.t0, moving_at_injection=moving)
        if kind == "goal_changed":
            return self._goal_changed(r, mono, start_distance)
        # the hold: the loop's state changes after the injection (its stamp says when)
        left = self.wait(lambda: self.state() != "active", hold_timeout_s)
        values = loop_values(m)
        r.state = f"{values.get('state')}: {values.get('reason')}"
        if left and self.since_s() < wall - 0.002:                # already left before: not this fault's hold
            r.note = f"{PRE_EXISTING} ({r.state})"
            self.spurious.append({"at_s": self.elapsed(), "state": values.get("state"), "reason": values.get("reason")})
            left = False
        if left and HOLD_REASONS[kind] not in (values.get("reason") or ""):   # e.g. a stale state on a starved machine
            r.note = f"{MASKED} ({r.state})"
            self.spurious.append({"at_s": self.elapsed(), "state": values.get("state"), "reason": values.get("reason"),
                                  "since_s": self.since_s()})
            left = False
        if left:
            r.hold_latency_ms = 1e3 * (self.since_s() - wall)
            if kind in AGE_LIMITS:                                # the input went stale this long after it stopped
                r.past_limit_ms = r.hold_latency_ms - 1e3 * float(self.node_parameters[AGE_LIMITS[kind]])
        still = None
        if left and self.wait(lambda: still_since(m, mono, t_pre) is not None, 15, 0.1):
            still = still_since(m, mono, t_pre)
            r.still_latency_ms = max(0.0, 1e3 * (still - mono))      # 0: already still at the injection
            onset = brake_onset(m, t_pre, still)
            if onset is not None:
                r.brake_latency_ms = max(0.0, 1e3 * (onset - mono))  # 0: already slowing at the injection
        r.held = bool(left and still is not None)
        if not r.held and not r.note:
            r.note = "did not leave 'active'" if not left else "the commands kept moving"
        # the recovery asked for, then motion
        t_rec, t_rec_wall = time.monotonic(), time.time()
        try:
            recover()
        except (RuntimeError, TimeoutError) as e:
            r.note = (r.note + "; " if r.note else "") + f"recovery failed: {e}"
        guard = time.time()                # other holds after the recovery are spurious: resumed, counted
        unless = HOLD_REASONS[kind]        # this fault again: the recovery did not work
        active = self.wait_active(lambda: self.state() == "active" and self.since_s() >= t_rec_wall - 0.002,
                                  30, guard, 0.1, unless)
        moved = active and self.wait_active(lambda: moving_since(m, t_rec), cfg.step_timeout_s, guard, 0.1, unless)
        r.recovered = bool(moved)
        if moved:
            t_move = self._first_move_after(t_rec)
            r.recovery_s = None if t_move is None else t_move - t_rec
        elif not r.note:
            r.note = f"not moving again after the recovery: {self.m.loop_state()[1]}"
        return r

    def _first_move_after(self, t0: float) -> float | None:
        t, q = command_times(self.m, t0)
        if len(q) < 2:
            return None
        moved = np.flatnonzero(np.abs(np.diff(q, axis=0)).max(axis=1) > MOVING_RAD)
        return float(t[moved[0] + 1]) if moved.size else None

    def _goal_changed(self, r: FaultResult, mono: float, start_distance: float) -> FaultResult:
        """No hold expected: the loop stays active and the arm comes 2 cm closer to the new goal."""
        closer = self.wait_active(lambda: self.distance() < start_distance - 0.02, self.cfg.step_timeout_s,
                                  time.time(), 0.2)
        r.recovered = bool(closer and self.state() == "active")
        r.recovery_s = time.monotonic() - mono if closer else None
        r.state = f"{self.state()}: {loop_values(self.m).get('reason')}"
        r.note = "no hold expected; recovery_s = until 2 cm closer to the new goal"
        return r

    # --- the run -------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        codes: dict[str, int | None] = {}
        error = None
        try:
            self.start()
            end = time.monotonic() + cfg.duration_s
            i = 0
            next_at = time.monotonic() + cfg.fault_every_s
            while i < len(cfg.faults) or time.monotonic() < end:
                kind = cfg.faults[i % len(cfg.faults)]
                while time.monotonic() < next_at:
                    self.check_alive()
                    forget_older(self.m)
                    time.sleep(min(1.0, max(0.0, next_at - time.monotonic())))
                r = self.run_fault(kind)
                for _ in range(2):                        # a hold nobody injected came first: inject again
                    if not r.note.startswith((PRE_EXISTING, MASKED)):
                        break
                    self.log(f"{kind}: {r.note}; injecting it again")
                    r = self.run_fault(kind)
                self.results.append(r)
                forget_older(self.m)
                self.log(f"{kind:18s} held {'yes' if r.held else 'NO '} "
                         f"{_ms(r.hold_latency_ms):>9s} brake {_ms(r.brake_latency_ms):>9s} "
                         f"still {_ms(r.still_latency_ms):>9s}  "
                         f"recovered {'yes' if r.recovered else 'NO '} {_s(r.recovery_s):>6s}  {r.state[:70]}"
                         + (f"  ({r.note})" if r.note and not (r.held and r.recovered) else ""))
                i += 1
                jitter = 1.0 + 0.2 * (2 * self.rng.random() - 1)
                next_at = time.monotonic() + cfg.fault_every_s * jitter
        except (RuntimeError, TimeoutError) as e:
            error = str(e)
            self.log(f"soak stopped: {e}")
        except KeyboardInterrupt:
            error = "interrupted (Ctrl-C)"
            self.log("interrupted: stopping the station and the node")
        finally:
            codes = self.stop()
        return self.report(codes, error)

    def report(self, codes: dict[str, int | None], error: str | None) -> dict[str, Any]:
        cfg = self.cfg
        per_kind: dict[str, Any] = {}
        for kind in dict.fromkeys(r.kind for r in self.results):
            rs_ = [r for r in self.results if r.kind == kind]
            hold = [r.hold_latency_ms for r in rs_ if r.hold_latency_ms is not None]
            past = [r.past_limit_ms for r in rs_ if r.past_limit_ms is not None]
            still = [r.still_latency_ms for r in rs_ if r.still_latency_ms is not None]
            brake = [r.brake_latency_ms for r in rs_ if r.brake_latency_ms is not None]
            per_kind[kind] = {
                "count": len(rs_), "held": sum(r.held for r in rs_), "recovered": sum(r.recovered for r in rs_),
                "moving_at_injection": sum(r.moving_at_injection for r in rs_),
                "hold_latency_ms": _p50_max(hold), "past_limit_ms": _p50_max(past),
                "brake_latency_ms": _p50_max(brake),
                "still_latency_ms": _p50_max(still),
                "recovery_s": _p50_max([r.recovery_s for r in rs_ if r.recovery_s is not None])}
        samples = self.sampler.samples if self.sampler is not None else []
        expected_restarts = sum(r.kind in ("planner_killed", "planner_hung") for r in self.results)
        return {
            "ran_s": self.elapsed(), "config": {**asdict(cfg), "out": str(cfg.out)},
            "control_period_ms": 10.0, "cpu": _cpu(), "cores": os.cpu_count(), "domain_id": self.domain,
            "faults": [asdict(r) for r in self.results], "per_kind": per_kind,
            "all_held": all(r.held or r.kind == "goal_changed" for r in self.results),
            "all_recovered": all(r.recovered for r in self.results),
            "spurious_holds": self.spurious, "crashes": self.crashes, "error": error,
            "planner_processes": {"pids": self.planner_pids, "restarts": max(0, len(self.planner_pids) - 1),
                                  "restarts_requested": expected_restarts},
            "exit_codes": codes,
            "resources": resource_summary(samples, cfg.warmup_s),
            "samples": [{"t_s": round(t, 2), "role": role, "pid": pid, **s} for t, role, pid, s in samples],
        }


def _p50_max(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "max": None}
    return {"p50": float(np.percentile(values, 50)), "max": float(max(values))}


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} s"


def _cpu() -> str:
    from vjepa2_ros.nodes.bench_ros import _cpu as cpu
    return cpu()


def table(r: dict[str, Any]) -> str:
    lines = [f"soak: {r['ran_s'] / 60:.1f} min on the ROS sim station over DDS (ROS_DOMAIN_ID {r['domain_id']}), "
             f"{len(r['faults'])} faults, {r['cpu']}, {r['cores']} cores; control period {r['control_period_ms']:.0f} ms",
             "  hold: the node's state change after the injection; brake / still: the station's commands start"
             " their final deceleration / stand still (ms, p50/max)",
             "  past limit: a stale-input fault's hold after its input's age limit (ms, p50/max)",
             f"  {'fault':18s} {'n':>3s} {'held':>5s} {'hold':>15s} {'past limit':>11s} {'brake':>11s} {'still':>11s} "
             f"{'recovered':>9s} {'recovery p50/max s':>18s}"]
    for kind, k in r["per_kind"].items():
        def pm(d: dict, fmt: str) -> str:
            return "-" if d["p50"] is None else f"{d['p50']:{fmt}}/{d['max']:{fmt}}"
        held = "n/a" if kind == "goal_changed" else f"{k['held']}/{k['count']}"
        lines.append(f"  {kind:18s} {k['count']:3d} {held:>5s} {pm(k['hold_latency_ms'], '.1f'):>15s} "
                     f"{pm(k['past_limit_ms'], '.0f'):>11s} "
                     f"{pm(k['brake_latency_ms'], '.0f'):>11s} {pm(k['still_latency_ms'], '.0f'):>11s} "
                     f"{k['recovered']:>5d}/{k['count']:<3d} "
                     f"{pm(k['recovery_s'], '.1f'):>18s}")
    lines.append(f"  {'process':16s} {'RSS MB start/end/max':>22s} {'RSS dev. after warm-up':>24s} "
                 f"{'threads s/e/max':>16s} {'fds s/e/max':>14s}")
    for role, s in r["resources"].items():
        dev = s.get("rss_deviation_after_warmup")
        dev_text = "-" if dev is None else f"{100 * dev['min']:+.1f}..{100 * dev['max']:+.1f}%"
        rss, th, fd = s["rss_mb"], s["threads"], s["fds"]
        lines.append(f"  {role:16s} {rss['start']:6.0f}/{rss['end']:6.0f}/{rss['max']:6.0f}   {dev_text:>22s} "
                     f"{th['start']:4d}/{th['end']:4d}/{th['max']:4d}   {fd['start']:3d}/{fd['end']:3d}/{fd['max']:3d}")
    p = r["planner_processes"]
    lines.append(f"  planner process restarts {p['restarts']} (requested by faults: {p['restarts_requested']}); "
                 f"spurious holds {len(r['spurious_holds'])}; crashes {len(r['crashes'])}; "
                 f"exit codes {', '.join(f'{k} {v}' for k, v in r['exit_codes'].items())}"
                 + (f"; stopped early: {r['error']}" if r["error"] else ""))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=60.0, help="run time (default 60); every fault "
                        "kind is injected at least once")
    parser.add_argument("--fault-every-s", type=float, default=30.0, help="a fault every ~this many s (+-20%%)")
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated cycle (default: {','.join(FAULTS)})")
    parser.add_argument("--out", type=Path, default=None, help="folder for logs, soak.json and soak.txt "
                        "(default runs/soak-<UTC time>)")
    parser.add_argument("--seed", type=int, default=0, help="the fault intervals' jitter")
    parser.add_argument("--sample-every-s", type=float, default=5.0, help="/proc sampling period")
    parser.add_argument("--warmup-s", type=float, default=120.0, help="RSS flatness is judged after this")
    parser.add_argument("--plan-timeout-s", type=float, default=20.0, help="control.plan_timeout_s of the node")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="planner parameter (repeatable), as in bench ros")


def main(args: argparse.Namespace) -> int:
    from vjepa2_ros.nodes.bench_ros import _value
    faults = tuple(f.strip() for f in args.faults.split(",") if f.strip())
    unknown = [f for f in faults if f not in FAULTS]
    if unknown or not faults:
        print(f"vjepa2-ros soak: unknown faults {unknown}; choose from {', '.join(FAULTS)}")
        return 2
    out = (args.out or Path("runs") / time.strftime("soak-%Y%m%d-%H%M%S", time.gmtime())).resolve()
    params = {name: _value(value) for name, _, value in (s.partition("=") for s in args.set)}
    cfg = SoakConfig(duration_s=60.0 * args.minutes, fault_every_s=args.fault_every_s, faults=faults, out=out,
                     seed=args.seed, sample_every_s=args.sample_every_s, warmup_s=args.warmup_s,
                     plan_timeout_s=args.plan_timeout_s, planner_parameters=params)
    print(f"soak: {args.minutes:g} min, a fault every ~{args.fault_every_s:g} s (logs in {out})", flush=True)
    report = Soak(cfg).run()
    text = table(report)
    (out / "soak.json").write_text(json.dumps(report, indent=1))
    (out / "soak.txt").write_text(text + "\n")
    print(text)
    ok = report["all_held"] and report["all_recovered"] and not report["crashes"] and report["error"] is None
    return 0 if ok else 1
