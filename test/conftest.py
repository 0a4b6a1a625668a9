"""Shared test fixtures: paths to the official parity fixtures and small model factories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VJEPA2_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "official"


def load_fixture(name: str) -> dict:
    from safetensors.torch import load_file
    path = FIXTURES / name
    if not path.is_file():
        pytest.fail(f"official fixture {path} is missing (set VJEPA2_SHARED to the shared/ folder)")
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
