"""Shared fixtures: the real assets in ../shared (override with DANCE_SHARED) and a tiny synthetic dataset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DANCE_SHARED", REPO.parent / "shared"))


def shared_asset(relative: str) -> Path:
    """Path of an asset under shared/, or skip the test naming the missing asset."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"shared asset {relative} not found under {SHARED} (set DANCE_SHARED)")
    return path


def run_bin(name: str, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    """Run bin/<name> with this interpreter, as a user would from the repo."""
    result = subprocess.run([sys.executable, str(REPO / "bin" / name), *map(str, args)], capture_output=True,
                            text=True, cwd=REPO)
    if check and result.returncode != 0:
        raise AssertionError(f"bin/{name} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """The tiny synthetic preset (30 clips), rendered once per test session."""
    from preprocess.synth.dataset import generate

    out = tmp_path_factory.mktemp("synth_tiny")
    generate(out, preset="tiny", seed=7, workers=1)
    return out
