"""Every fenced shell and Python block of README.md runs as written (slow tier).

The blocks run in order in one scratch folder (so ``runs/mann_quick`` made by the main
job is there for the blocks after it), with ``metamem`` on the PATH running this checkout.
Three substitutions keep the test honest and bounded, and nothing else is changed:

* ``train.steps=N`` becomes ``train.steps=$METAMEM_README_STEPS`` when that variable is set
  (a small number, to check quickly by hand that every line works). Unset (CI), the main
  job runs as written and the README's figures are checked against what the blocks gave:
  the main job's result inside one of the two bands it prints (a run that has left MANN's
  plateau by step 2,000, one that has not; see :func:`check_figures`), its training CPU
  time inside ``N–M CPU-seconds``, and the shapes score inside its band;
* install lines (``python -m venv``, ``pip install``) are not re-run: the shell must parse
  them, and every requirement they name must be installed here;
* ``python -m pytest -q`` (the fast tier, which CI runs on its own) only collects.

Following the README writes nothing outside ``runs/`` (its demo outputs go there).
"""

from __future__ import annotations

import fnmatch
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
EXPECTED = re.compile(r"\*\*([\d.]+)% ± ([\d.]+)\*\*\s+for\s+a\s+run\s+that\s+has\s+left\s+the\s+plateau")
PLATEAU = re.compile(r"\*\*([\d.]+)% ± ([\d.]+)\*\*\s+for\s+one\s+that\s+has\s+not")
CPU_BAND = re.compile(r"Training\s+takes\s+(\d+)–(\d+)\s+CPU-seconds")
SHAPES = re.compile(r"scores\s+\*\*([\d.]+)% ± ([\d.]+)\*\*\s+on\s+these\s+shapes")
SHAPES_OUT = "runs/mann_quick_shapes"  # the --out of the README's shapes evaluation

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
    linked = ("experiments", "scripts", "tests", "pyproject.toml", "datasets")
    for name in linked:
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
    ignored = [g.strip().strip("/") for g in (ROOT / ".gitignore").read_text().splitlines()
               if g.strip() and not g.startswith("#")]
    left = sorted(p.name for p in work.iterdir() if p.name not in (*linked, "runs")
                  and not any(fnmatch.fnmatch(p.name, g) for g in ignored))
    assert not left, f"following the README left {left} outside runs/ (and not in .gitignore)"
    prose = re.sub(r"<!--.*?-->", "", text, flags=re.S)  # the figures rendered between markers
    bands = [m.groups() if m else None for m in (EXPECTED.search(prose), PLATEAU.search(prose),
                                                  CPU_BAND.search(prose), SHAPES.search(prose))]
    assert all(bands), f"the README states the main job's two expected results, CPU time and shapes score: {bands}"
    if steps is None:  # the main job as written: the README's figures must be what it gave
        check_figures(work, *bands)  # type: ignore[arg-type]


def _within(got: float, band: tuple[str, str]) -> bool:
    return abs(got - float(band[0])) <= float(band[1])


def check_figures(work: Path, climbing: tuple[str, str], plateau: tuple[str, str],
                  cpu_band: tuple[str, str], shapes: tuple[str, str]) -> None:
    """The main job's score, training CPU time and shapes score against the README's bands.

    The score must lie in the band of a run that has left the plateau, with the 2nd
    presentation above the 1st (the memory is used), or in the plateau's band, with the 1st
    presentation above the 2nd (a guess among the labels not shown yet, nothing recalled).
    """
    run = work / "runs" / "mann_quick"
    seq = json.loads((run / "eval.json").read_text())[0]["scores"]["sequence"]
    got, (p1, p2) = 100 * seq["mean"], seq["per_presentation"][:2]
    left, stuck = _within(got, climbing) and p2 > p1, _within(got, plateau) and p1 > p2
    assert left or stuck, (f"main job scored {got:.2f}% ({100 * p1:.1f}% / {100 * p2:.1f}% at the 1st / 2nd "
                           f"presentation); README expects {climbing[0]} ± {climbing[1]} (2nd above 1st) "
                           f"or, on the plateau, {plateau[0]} ± {plateau[1]} (1st above 2nd)")
    lo, hi = int(cpu_band[0]), int(cpu_band[1])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    cpu = max(float(r["cpu_s"]) for r in records if "cpu_s" in r)
    assert lo <= cpu <= hi, f"main job trained for {cpu:.0f} CPU-s, README says {lo}–{hi}"
    res = json.loads((work / SHAPES_OUT / "results.json").read_text())["results"][0]
    got = 100 * res["scores"]["sequence"]["mean"]
    assert _within(got, shapes), f"shapes scored {got:.2f}%, README expects {shapes[0]} ± {shapes[1]}"
