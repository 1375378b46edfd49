"""Shared fixtures: the repository root, the shared real data (skip when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RIG_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $RIG_SHARED_DATA); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set RIG_SHARED_DATA)")
    return SHARED_DATA


def shared_subdir(name: str) -> Path:
    """A sub-folder of the shared data, or skip."""
    p = SHARED_DATA / name
    if not p.is_dir():
        pytest.skip(f"real data not found at {p}")
    return p
