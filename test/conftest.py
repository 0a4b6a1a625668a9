"""Shared test fixtures: the official parity tensors and key lists, all inside the repository.

Every file a test reads lives in the clone (test/fixtures/, config/, models/) or is made by the
test itself; test_fixtures_inside_repo.py keeps it that way.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Tensors and key lists from Meta's reference implementation; README.md there says what each holds.
FIXTURES = REPO / "test" / "fixtures" / "official"


def load_fixture(name: str) -> dict:
    """test/fixtures/official/<name> (safetensors) as {name: tensor}."""
    from safetensors.torch import load_file
    path = FIXTURES / name
    if not path.is_file():
        pytest.fail(f"official fixture {path} is missing from the repository (test/fixtures/official/)")
    return load_file(str(path))


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The suite's models are tiny: one thread is fastest, and a second spinning thread stalls
    everything on a busy 2-core machine. Benchmarks choose their own thread count."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module", autouse=True)
def normal_scheduling():
    """franky raises the calling thread to SCHED_FIFO 99 for its control loop and leaves it there;
    every process a later test starts would inherit it and starve a 2-core machine. Restore
    normal scheduling after each test module (not between the franky tests: they run as franky
    expects)."""
    yield
    if hasattr(os, "sched_getscheduler") and os.sched_getscheduler(0) != os.SCHED_OTHER:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
