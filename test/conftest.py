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
