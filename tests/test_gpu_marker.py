"""The ``gpu`` marker: ``pytest -m gpu`` selects the GPU tests; they run where CUDA exists and
are skipped with a reason where it does not (the default tier deselects them without CUDA)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_marker_selects_the_gpu_tests() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "gpu",
         "tests/episodes/test_sampler.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    out = r.stdout
    assert r.returncode == 0, out[-2000:] + r.stderr[-2000:]
    assert "deselected" in out  # the non-gpu tests of the file
    if torch.cuda.is_available():
        assert " passed" in out and "skipped" not in out
    else:
        assert "needs a CUDA device" in out and " passed" not in out
