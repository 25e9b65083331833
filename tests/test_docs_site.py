"""The documentation site: every page is in mkdocs.yml's nav, and its hooks re-point links.

The strict build itself (``mkdocs build --strict``: broken links, anchors and docstring
references) runs in ``.ci/run``; these checks are the fast part of it.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _hooks() -> Any:
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "scripts" / "mkdocs_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nav_pages(nav: Any) -> list[str]:
    """Every page path named in an mkdocs nav (nested lists of titles and paths)."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    raise AssertionError(f"mkdocs.yml: unexpected nav entry {nav!r}")


def test_nav_lists_every_docs_page_once() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = _nav_pages(config["nav"])
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")} | set(_hooks().GENERATED)
    twice = sorted({p for p in listed if listed.count(p) > 1})
    assert not twice, f"mkdocs.yml: pages listed twice in nav: {twice}"
    missing = sorted(pages - set(listed))
    assert not missing, f"mkdocs.yml: add these pages to nav: {missing}"
    unknown = sorted(set(listed) - pages)
    assert not unknown, f"mkdocs.yml: nav names pages that do not exist: {unknown}"


def test_every_public_package_has_an_api_page() -> None:
    packages = sorted(p.parent.name for p in (ROOT / "metamem").glob("*/__init__.py") if p.parent.name != "cli")
    api = "\n".join(p.read_text(encoding="utf-8") for p in (DOCS / "api").glob("*.md"))
    documented = set(re.findall(r"^::: metamem\.(\w+)", api, re.MULTILINE))
    assert set(packages) <= documented, f"docs/api: no page for metamem.{sorted(set(packages) - documented)}"


@pytest.mark.parametrize(
    ("target", "source", "expected"),
    [
        ("docs/mann.md", "README.md", "mann.md"),
        ("docs/evaluation.md#your-own-episodes", "README.md", "evaluation.md#your-own-episodes"),
        ("docs/images/curve.png", "README.md", "images/curve.png"),
        ("experiments/README.md", "README.md", "experiments.md"),
        ("../README.md#quick-start", "experiments/README.md", "index.md#quick-start"),
        ("../docs/datasets.md", "experiments/README.md", "datasets.md"),
        ("https://github.com/brendenlake/omniglot", "README.md", "https://github.com/brendenlake/omniglot"),
        ("#layout", "README.md", "#layout"),
        ("datasets/omniglot/LICENSE", "README.md", "datasets/omniglot/LICENSE"),  # left for --strict to report
    ],
)
def test_site_link(target: str, source: str, expected: str) -> None:
    assert _hooks().site_link(target, source) == expected


def test_site_markdown_repoints_links_and_images_only() -> None:
    text = "See [the guide](docs/mann.md) and ![a curve](docs/images/c.png); `docs/mann.md` stays.\n"
    assert _hooks().site_markdown(text, "README.md") == (
        "See [the guide](mann.md) and ![a curve](images/c.png); `docs/mann.md` stays.\n"
    )


def test_readme_links_resolve_in_the_site() -> None:
    hooks = _hooks()
    text = hooks.site_markdown((ROOT / "README.md").read_text(encoding="utf-8"), "README.md")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        path = target.partition("#")[0]
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or not path:
            continue
        if path not in hooks.GENERATED and not (DOCS / path).exists():
            broken.append(target)
    assert not broken, f"README.md: links that the site cannot resolve: {broken}"


def test_plain_roles() -> None:
    plain = _hooks().plain_roles
    assert plain("Uses :class:`metamem.types.EpisodeBatch` and :func:`~metamem.evaluate`.") == (
        "Uses `metamem.types.EpisodeBatch` and `metamem.evaluate`."
    )
    assert plain(":py:meth:`Run.evaluate`, :data:`X`, :mod:`metamem`") == "`Run.evaluate`, `X`, `metamem`"
    assert plain("Example::\n\n    x = 1\n") == "Example:\n\n    x = 1\n"
    assert plain("no roles here: `code`") == "no roles here: `code`"
