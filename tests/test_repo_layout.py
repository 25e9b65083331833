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
