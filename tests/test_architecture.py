"""The layering of metamem is a checked contract (``[tool.importlinter]`` in pyproject.toml).

data -> episodes -> memory -> learners -> runs -> evaluation -> training -> cli: a module
imports only from layers below its own, and no two modules of a package import each other in
a circle. ``lint-imports`` reads every import statement, including those inside functions.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is a test dependency (pip install -e '.[dev]')")
import grimp  # noqa: E402  (import-linter's graph builder)

ROOT = Path(__file__).resolve().parents[1]


def _lint(cwd: Path, env_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
         "sys.exit(lint_imports_command())"],
        cwd=cwd, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(env_path), "PATH": "/usr/bin:/bin"},
    )


def test_layers_contract_is_kept() -> None:
    res = _lint(ROOT, ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 kept, 0 broken" in res.stdout, res.stdout


def test_function_level_imports_are_in_the_graph() -> None:
    # metamem.validate imports the data package only inside a function
    graph = grimp.build_graph("metamem")
    assert graph.direct_import_exists(importer="metamem.validate", imported="metamem.data")
    assert not graph.chain_exists(importer="metamem.evaluation", imported="metamem.training", as_packages=True)
    assert not graph.chain_exists(importer="metamem.runs", imported="metamem.training", as_packages=True)


def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path: Path) -> None:
    """A copy of the package where evaluation imports training inside a function fails."""
    import shutil

    shutil.copytree(ROOT / "metamem", tmp_path / "metamem",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    bad = tmp_path / "metamem" / "evaluation" / "metrics.py"
    bad.write_text(bad.read_text() + textwrap.dedent('''

        def _sneaky():
            from metamem.training import train
            return train
        '''))
    res = _lint(tmp_path, tmp_path)
    assert res.returncode != 0, res.stdout
    assert "metamem.evaluation.metrics -> metamem.training" in res.stdout, res.stdout
