"""`vjepa2-ros bench ros`: the simulated station and the planner over DDS, as a lab would run them.

`sim_station` and `planner_node` run as their console scripts (two processes, loopback, a private
ROS_DOMAIN_ID) with the shipped sim world model; a goal image is published and the run lasts
`--seconds`. Reported: the command stream as the station received it (rate, period p50/p99/max),
the joint-state age at the planner (its /diagnostics, once a second), plans per second, and the
reach (distance of the flange to the goal, from the station's joint states). A fault on stale
data (a machine too busy to deliver a joint state in time) is recovered with ~/enable true, as an
operator would, and counted.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from vjepa2_ros.nodes import ros_session as rs

REACH_M = 0.05


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=60.0, help="measured time after the goal is set (default 60)")
    parser.add_argument("--goal-offset", type=float, nargs=3, default=(0.12, 0.10, -0.12), metavar=("DX", "DY", "DZ"),
                        help="goal flange position relative to the start, base frame, m (default: the demo's)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="planner parameter, e.g. control.planner_process=false (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="folder for logs and summary.json "
                        "(default runs/bench-ros-<UTC time>)")


def _value(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "n": 0}
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max()),
            "n": int(a.size)}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown CPU"


def run(seconds: float, goal_offset, planner_parameters: dict, out: Path) -> dict:
    import os
    domain = rs.private_domain_id()
    env = rs.ros_env(domain)
    goal, goal_xyz = rs.goal_image_for_offset(tuple(goal_offset))
    stats_file = out / "station_commands.json"
    session = rs.RosSession(domain)
    station = rs.start_station(env, out, stats_file=str(stats_file))
    planner = rs.start_planner(env, out, **planner_parameters)
    m = session.monitor
    ages, plans, distances, stale_faults = [], [], [], []
    try:
        if not rs.wait_for(lambda: len(m.since("joint_states", 0)) > 10, 60):
            raise RuntimeError(f"no joint states from sim_station:\n{station.output()[-2000:]}")
        if not (m.change_state("configure") and m.change_state("activate")):
            raise RuntimeError(f"the planner did not configure / activate:\n{planner.output()[-3000:]}")
        q0 = np.asarray(m.latest("joint_states").position[:7])
        start_m = float(np.linalg.norm(rs.flange_position(q0) - goal_xyz))
        t0_wall, t0 = time.time(), time.monotonic()
        m.publish_goal(goal)
        reached_s = None
        while (elapsed := time.monotonic() - t0) < seconds:
            time.sleep(1.0)
            level, message, values = m.loop_state()
            if values.get("state") == "fault" and "is stale" in message:
                stale_faults.append(message)                 # a machine too busy to deliver in time: recover
                m.enable(True)                               # as an operator would, and count it
            try:
                ages.append(float(values.get("joint_state_age_s", "nan")))
            except ValueError:
                pass
            plans.append((time.monotonic() - t0, int(values.get("plans", 0) or 0)))
            q = np.asarray(m.latest("joint_states").position[:7])
            distances.append(float(np.linalg.norm(rs.flange_position(q) - goal_xyz)))
            if reached_s is None and distances[-1] <= REACH_M:
                reached_s = time.monotonic() - t0
            print(f"  {elapsed:5.1f} s  distance {100 * distances[-1]:5.1f} cm  plans {plans[-1][1]:4d}  "
                  f"{message[:80]}", flush=True)
        t1_wall = time.time()
        final_state = m.loop_state()[1]
    finally:
        planner_code = planner.stop()
        station_code = station.stop()
        session.close()
    stamps = np.asarray(json.loads(stats_file.read_text())["receipt_times_s"]) if stats_file.exists() else np.zeros(0)
    stamps = stamps[(stamps >= t0_wall) & (stamps <= t1_wall)]
    periods_ms = (np.diff(stamps) * 1e3).tolist()
    finite_ages = [a for a in ages if np.isfinite(a)]
    plan_counts = [n for _, n in plans]
    return {
        "seconds": seconds, "cpu": _cpu(), "cores": os.cpu_count(), "domain_id": domain,
        "planner_parameters": planner_parameters,
        "commands": {"count": int(stamps.size),
                     "rate_hz": float((stamps.size - 1) / (stamps[-1] - stamps[0])) if stamps.size > 1 else 0.0,
                     "period_ms": _percentiles(periods_ms)},
        "joint_state_age_ms": _percentiles([1e3 * a for a in finite_ages]),
        "plans": {"count": max(plan_counts, default=0),
                  "per_s": max(plan_counts, default=0) / seconds},
        "reach": {"start_cm": 100 * start_m, "final_cm": 100 * distances[-1] if distances else float("nan"),
                  "min_cm": 100 * min(distances, default=float("nan")), "reached_5cm_after_s": reached_s},
        "stale_faults_recovered": len(stale_faults), "final_state": final_state, "exit_codes": {"planner_node": planner_code, "sim_station": station_code},
    }


def table(r: dict) -> str:
    c, a, p, reach = r["commands"], r["joint_state_age_ms"], r["plans"], r["reach"]
    reached = (f"<= 5 cm after {reach['reached_5cm_after_s']:.0f} s" if reach["reached_5cm_after_s"] is not None
               else "not within 5 cm")
    rows = [
        ("commands received by sim_station", f"{c['rate_hz']:.1f} Hz ({c['count']}); period p50 "
         f"{c['period_ms']['p50']:.1f} ms, p99 {c['period_ms']['p99']:.1f} ms, max {c['period_ms']['max']:.1f} ms"),
        ("joint-state age at the planner", f"p50 {a['p50']:.1f} ms, p99 {a['p99']:.1f} ms, max {a['max']:.1f} ms "
         f"({a['n']} samples of /diagnostics, 1 Hz)"),
        ("plans", f"{p['per_s']:.2f} per s ({p['count']} in {r['seconds']:.0f} s)"),
        ("reach", f"{reach['start_cm']:.1f} cm -> {reach['final_cm']:.1f} cm (closest {reach['min_cm']:.1f} cm), "
         f"{reached}"),
        ("stale-data faults recovered", str(r.get("stale_faults_recovered", 0))),
        ("exit codes", ", ".join(f"{k} {v}" for k, v in r["exit_codes"].items())),
    ]
    width = max(len(k) for k, _ in rows)
    head = (f"bench ros: sim_station + planner_node over DDS (loopback, ROS_DOMAIN_ID {r['domain_id']}), "
            f"{r['seconds']:.0f} s, {r['cpu']}, {r['cores']} cores")
    return "\n".join([head] + [f"  {k:<{width}}  {v}" for k, v in rows])


def main(args: argparse.Namespace) -> int:
    out = args.out or Path("runs") / time.strftime("bench-ros-%Y%m%d-%H%M%S", time.gmtime())
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    params = {}
    for item in args.set:
        name, _, value = item.partition("=")
        params[name] = _value(value)
    print(f"bench ros: starting sim_station and planner_node (logs in {out})", flush=True)
    result = run(args.seconds, args.goal_offset, params, out)
    (out / "summary.json").write_text(json.dumps(result, indent=1))
    print(table(result))
    return 0
