"""Wall-clock time per planning stage (encode, predict, pose, sample, select), for diagnostics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class StageTimer:
    """Accumulates seconds per named stage. On CUDA it synchronises at stage ends (a CPU-GPU
    sync point), so times are real work, not kernel launches."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.sync = torch.device(device).type == "cuda"
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                torch.cuda.synchronize()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def as_dict(self) -> dict[str, float]:
        """{stage: seconds} as plain floats."""
        return {f"{k}_s": float(v) for k, v in self.seconds.items()}
