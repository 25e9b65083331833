"""Every fenced shell and Python block of README.md runs as written (slow tier).

The blocks run in order in one scratch folder (so ``runs/mann_quick`` made by the main
job is there for the blocks after it), with ``metamem`` on the PATH running this checkout.
Three substitutions keep the test honest and bounded, and nothing else is changed:

* ``train.steps=N`` becomes ``train.steps=$METAMEM_README_STEPS`` when that variable is set
  (CI: a small number, to check that every line works); unset, the main job runs as
  written and its result must fall inside the expected number ± spread that the README
  prints (``Expected result: X% ± Y``);
* install lines (``python -m venv``, ``pip install``) are not re-run: the shell must parse
  them, and every requirement they name must be installed here;
* ``python -m pytest -q`` (the fast tier, which CI runs on its own) only collects.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)
EXPECTED = re.compile(r"Expected result: \*\*([\d.]+)% ± ([\d.]+)\*\*")

pytestmark = pytest.mark.slow


def readme_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block tagged bash/sh/shell/console or python."""
    out = []
    for lang, code in FENCE.findall(text):
        lang = lang.lower()
        if lang in ("bash", "sh", "shell", "console"):
            out.append(("shell", code))
        elif lang in ("python", "py"):
            out.append(("python", code))
    return out


def _is_install(line: str) -> bool:
    return bool(re.match(r"\s*(python3? -m venv|pip install|\. \S+/bin/activate)", line))


def _check_install_line(line: str) -> None:
    """An install line must parse, and what it installs must be installed here."""
    assert subprocess.run(["bash", "-n", "-c", line]).returncode == 0, line
    for part in line.split("&&"):
        words = shlex.split(part, comments=True)
        if words[:2] != ["pip", "install"]:
            continue
        for req in words[2:]:
            if req.startswith("-") or req.startswith("http"):
                continue
            if req in ("-e", "."):
                continue
            if req.startswith(".["):
                assert metadata.version("metamem")
                for extra_dep in ("pytest",):
                    assert metadata.version(extra_dep)
                continue
            name, _, version = req.partition("==")
            installed = metadata.version(name)
            assert not version or installed.split("+")[0] == version, f"{line}: {name} {installed}"


def _shim(bin_dir: Path) -> None:
    """``metamem`` on the PATH runs this checkout with this interpreter."""
    bin_dir.mkdir()
    tool = bin_dir / "metamem"
    tool.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m metamem \"$@\"\n")
    tool.chmod(0o755)


def _prepare_shell(code: str, steps: str | None) -> str:
    lines = []
    for line in code.splitlines():
        if _is_install(line):
            _check_install_line(line)
            continue
        if re.match(r"\s*python -m pytest -q\s*(#.*)?$", line):
            line = "python -m pytest -q --co -p no:cacheprovider >/dev/null"
        if steps is not None:
            line = re.sub(r"train\.steps=\d+", f"train.steps={steps}", line)
        lines.append(line)
    return "\n".join(lines)


@pytest.mark.timeout(7200)  # the main job as written runs for minutes
def test_every_readme_block_runs(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    blocks = readme_blocks(text)
    assert sum(lang == "shell" for lang, _ in blocks) >= 4 and any(lang == "python" for lang, _ in blocks)
    steps = os.environ.get("METAMEM_README_STEPS")
    work = tmp_path / "work"
    work.mkdir()
    for name in ("experiments", "scripts", "tests", "pyproject.toml", "datasets"):
        (work / name).symlink_to(ROOT / name)
    _shim(tmp_path / "bin")
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    for i, (lang, code) in enumerate(blocks):
        if lang == "shell":
            script = _prepare_shell(code, steps)
            cmd = ["bash", "-euo", "pipefail", "-c", script]
        else:
            cmd = [sys.executable, "-c", code]
        t = time.perf_counter()
        res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=3600)
        print(f"README block {i} ({lang}): {time.perf_counter() - t:.0f} s", file=sys.stderr)
        assert res.returncode == 0, f"README block {i} ({lang}) failed:\n{code}\n--- stderr:\n{res.stderr[-3000:]}"
    run = work / "runs" / "mann_quick"
    for name in ("config.yaml", "metrics.jsonl", "eval.json", "eval.md", "learning_curve.png",
                 "per_presentation.png"):
        assert (run / name).is_file(), name
    expected = EXPECTED.search(text)
    assert expected, "the README states the main job's expected result"
    if steps is None:  # the main job as written: its number must match the README's
        mean, spread = float(expected.group(1)), float(expected.group(2))
        got = 100 * json.loads((run / "eval.json").read_text())[0]["scores"]["sequence"]["mean"]
        assert abs(got - mean) <= spread, f"main job scored {got:.2f}%, README expects {mean} ± {spread}"
