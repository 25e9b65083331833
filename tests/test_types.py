"""``mypy metamem`` with the config in pyproject.toml ([tool.mypy]): zero errors in the
modules typed strictly, and no module with more errors than ``tests/mypy_baseline.json``
records. The baseline only shrinks: a module with fewer errors than recorded fails too,
until its count there is lowered (or removed at zero)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "tests" / "mypy_baseline.json"
#: modules whose errors must be zero (pyproject.toml types them strictly); prefixes of paths
STRICT = ("metamem/types.py", "metamem/config.py", "metamem/runs.py", "metamem/evaluation/", "metamem/episodes/")

pytestmark = [
    pytest.mark.slow,  # a cold mypy run of the package takes ~20 CPU-seconds
    pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                       reason="mypy is not installed (pip install -e '.[dev]')"),
]


def mypy_errors(tmp_path: Path) -> Counter[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "metamem", "--cache-dir", str(tmp_path / "mypy_cache"),
         "--no-error-summary", "--show-error-codes"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    lines = [ln for ln in proc.stdout.splitlines() if re.match(r"^metamem/\S+\.py:\d+: error:", ln)]
    assert proc.returncode in (0, 1) and (proc.returncode == 0) == (not lines), proc.stdout + proc.stderr
    return Counter(ln.split(":", 1)[0] for ln in lines)


def test_mypy_errors_only_shrink(tmp_path: Path) -> None:
    found = mypy_errors(tmp_path)
    baseline: dict[str, int] = json.loads(BASELINE.read_text())
    strict = sorted(m for m in found if m.startswith(STRICT))
    assert not strict, f"mypy errors in strictly typed modules (must be 0): { {m: found[m] for m in strict} }"
    grown = {m: (n, baseline.get(m, 0)) for m, n in found.items() if n > baseline.get(m, 0)}
    assert not grown, ("mypy errors beyond the baseline (module: found, allowed); run "
                       f"`mypy metamem` and fix them: {grown}")
    shrunk = {m: (found.get(m, 0), n) for m, n in baseline.items() if found.get(m, 0) < n}
    assert not shrunk, (f"fewer mypy errors than {BASELINE.name} records (module: found, recorded); "
                        f"lower the baseline to the found counts: {shrunk}")
