"""Repository rules that keep the project installable and importable."""

from __future__ import annotations

from pathlib import Path


def test_datasets_folder_holds_no_python(repo_root: Path) -> None:
    # a top-level `datasets` package would shadow HuggingFace's `datasets`
    offenders = [p for p in (repo_root / "datasets").rglob("*") if p.suffix in {".py", ".pyc"}]
    assert offenders == []


def test_library_never_seeds_global_rngs(repo_root: Path) -> None:
    forbidden = ("torch.manual_seed(", "random.seed(", "np.random.seed(", "torch.cuda.manual_seed")
    hits = []
    for path in (repo_root / "metamem").rglob("*.py"):
        if path.parts[-2] == "cli":  # entry points may seed, once, and log it
            continue
        text = path.read_text()
        hits += [f"{path.name}: {f}" for f in forbidden if f in text]
    assert hits == []


def test_no_machine_local_paths_in_the_package() -> None:
    """Docstrings cite papers, not files on a developer's machine."""
    import re

    root = Path(__file__).resolve().parents[1] / "metamem"
    bad = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py")
           for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
           if re.search(r"/work/|/home/|/root/|shared/notes", line)]
    assert not bad, bad


def test_committed_runs_are_small_portable_and_final(repo_root: Path) -> None:
    """Every committed run directory (``results/<table>/<row>/``) holds a config, metrics and
    final weights only (no intermediate checkpoints), at most 5 MB, and names no path of the
    machine it was trained on (the export's own check), so ``metamem eval`` re-scores it anywhere.
    A row that is not its table's best for its learner and dataset is committed without its
    weights and says so, and how to re-create them, in ``checkpoints/WEIGHTS_NOT_INCLUDED.txt``
    (``metamem eval`` quotes it)."""
    import json

    import yaml

    from metamem.training.export import _machine_paths, portable_config

    runs = sorted(p.parent for p in (repo_root / "results").glob("*/*/config.yaml"))
    assert len(runs) >= 10, runs
    problems = []
    for run in runs:
        name = run.relative_to(repo_root)
        size = sum(f.stat().st_size for f in run.rglob("*") if f.is_file())
        if size > 5 * 2**20:
            problems.append(f"{name}: {size / 2**20:.1f} MB > 5 MB")
        config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
        if ckpts not in (["last.pt"], ["WEIGHTS_NOT_INCLUDED.txt"], ["WEIGHTS_NOT_INCLUDED.txt", "weights.yaml"]):
            problems.append(f"{name}: checkpoints {ckpts}, expected only last.pt or WEIGHTS_NOT_INCLUDED.txt "
                            "(and weights.yaml, for weights hosted elsewhere)")
        elif "last.pt" not in ckpts:
            note = (run / "checkpoints" / "WEIGHTS_NOT_INCLUDED.txt").read_text(encoding="utf-8")
            if "docs/results/" not in note:
                problems.append(f"{name}: WEIGHTS_NOT_INCLUDED.txt does not say where the re-training command is")
        if list(run.rglob("saliency.pt")):
            problems.append(f"{name}: saliency.pt committed (--inspect re-creates it)")
        if portable_config(config) != config:  # raises on a path; drops machine keys
            problems.append(f"{name}/config.yaml: holds a machine key of data.options")
        records = [json.loads(x) for x in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
        records += [json.loads(f.read_text(encoding="utf-8")) for f in run.rglob("*.json")]
        bad = [k for r in records for k in _machine_paths(r)]
        if bad:
            problems.append(f"{name}: machine path under {bad[0]}")
    assert not problems, problems


#: caps on the tracked files (``git ls-files | xargs du -cb``), in bytes (1 MB = 10**6)
TRACKED_CAP, RESULTS_CAP = 25 * 10**6, 15 * 10**6


def tracked_sizes(root: Path) -> dict[str, int]:
    """``{path: size in bytes}`` of the files git tracks under ``root`` (skips the test
    outside a git checkout, e.g. in an unpacked sdist)."""
    import shutil
    import subprocess

    import pytest

    if shutil.which("git") is None:
        pytest.skip("git is not installed: the size caps are checked on a git checkout")
    r = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"{root} is not a git checkout: the size caps are checked on one")
    names = [n for n in r.stdout.decode("utf-8", "surrogateescape").split("\0") if n]
    return {n: (root / n).stat().st_size for n in names if (root / n).is_file()}


def test_tracked_files_fit_the_size_caps(repo_root: Path) -> None:
    """A clone stays small: the tracked files <= 25 MB, results/ <= 15 MB. Rows keep
    config, metrics and eval files (no plots: re-scoring draws them, and the docs keep the
    figures they show); only each table's best row per learner and
    dataset keeps (half-precision) weights, and the others print a command that re-trains
    them (docs/results/*.md)."""
    sizes = tracked_sizes(repo_root)
    total = sum(sizes.values())
    results = {n: s for n, s in sizes.items() if n.startswith("results/")}

    def biggest(d: dict[str, int]) -> str:
        return ", ".join(f"{n} ({s / 1e6:.2f} MB)" for n, s in sorted(d.items(), key=lambda x: -x[1])[:3])

    plots = sorted(n for n in results if n.endswith(".png"))
    assert not plots, f"plots tracked under results/ ({plots[0]}, ...): git rm --cached them (.gitignore skips them)"
    assert total <= TRACKED_CAP, f"tracked files {total / 1e6:.2f} MB > 25 MB; largest: {biggest(sizes)}"
    assert sum(results.values()) <= RESULTS_CAP, (
        f"results/ {sum(results.values()) / 1e6:.2f} MB > 15 MB; largest: {biggest(results)}; "
        "drop the weights of rows that are not their table's best (scripts/half_weights.py halves the rest)")
