"""How a node process of this package runs, start to exit (`planner_node`, `sim_station`).

rclpy's own signal handler would shut the context down before a node's cleanup runs (commands
published there would be lost), so it is off: SIGINT / SIGTERM end the spin instead. The
executor spins in a thread; `cleanup` runs while it still delivers messages (a controller brakes
there with its publishers valid); then the executor stops, its thread is joined (none is left in
rcl at interpreter exit) and rclpy shuts down. `rclpy.init()` / `try_shutdown()` is the form
every distribution accepts (on Jazzy, `rclpy.init()` is no context manager).
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from vjepa2_ros.errors import Vjepa2RosError

SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_node(make_node: Callable[[], Any], name: str, args: list[str] | None = None,
             num_threads: int | None = None, on_signal: Callable[[Any, int], None] | None = None,
             cleanup: Callable[[Any], None] | None = None) -> None:
    """Build the node, spin until a shutdown signal or rclpy stops, clean up, exit 0 (1 on a
    Vjepa2RosError at start, e.g. a bad config file, with its message on stderr).

    on_signal(node, signum): called once after a signal ended the spin (e.g. to log it).
    cleanup(node): runs while the executor still spins.
    """
    stop = threading.Event()
    signals: list[int] = []
    for sig in SHUTDOWN_SIGNALS:
        signal.signal(sig, lambda signum, frame: (signals.append(signum), stop.set()))
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = executor = spinner = None
    try:
        node = make_node()
        executor = MultiThreadedExecutor(num_threads=num_threads)
        executor.add_node(node)
        spinner = threading.Thread(target=_spin, args=(executor, stop), name="executor", daemon=True)
        spinner.start()
        while not stop.wait(0.1):                            # signal handlers run in this thread
            if not rclpy.ok():
                break
        if signals and on_signal is not None:
            on_signal(node, signals[0])
    except Vjepa2RosError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        if node is not None and cleanup is not None:
            cleanup(node)
        if executor is not None:
            executor.shutdown(timeout_sec=10.0)
        if spinner is not None:
            spinner.join(timeout=10.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


def _spin(executor: MultiThreadedExecutor, stop: threading.Event) -> None:
    try:
        executor.spin()
    except ExternalShutdownException:
        pass
    finally:
        stop.set()
