"""Hooks of the documentation site (``mkdocs.yml``: ``hooks`` and the mkdocstrings extension).

* :func:`on_files` adds pages built from files outside ``docs/``: the README as the home
  page, the changelog and the experiments guide, with their links re-pointed for the site
  (``docs/x.md`` becomes ``x.md``);
* :class:`SphinxRoles` is a griffe extension that shows the docstrings' Sphinx roles
  (``:class:`X```, ``:func:`f```) as inline code, which Markdown renders.

Build the site with ``mkdocs build --strict`` (or ``mkdocs serve``) from the repository root.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: site page -> the repository file it is built from
GENERATED: dict[str, str] = {
    "index.md": "README.md",
    "changelog.md": "CHANGELOG.md",
    "experiments.md": "experiments/README.md",
}

_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")
_ROLE = re.compile(r":(?:py:)?(?:mod|class|func|meth|attr|data|exc|obj):`~?([^`]+)`")


def site_link(target: str, source: str) -> str:
    """The link ``target`` of repository file ``source`` as a link of its page in the site.

    Targets under ``docs/`` lose that prefix, targets that are built into a page of their own
    (``GENERATED``) point at it; URLs, anchors and other targets are returned unchanged (a
    strict build then reports those that do not resolve).
    """
    if re.match(r"[a-z][a-z0-9+.-]*:|#", target):
        return target
    path, sep, anchor = target.partition("#")
    repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
    pages = {src: page for page, src in GENERATED.items()}
    if repo_path in pages:
        return pages[repo_path] + sep + anchor
    if repo_path.startswith("docs/"):
        return repo_path[len("docs/"):] + sep + anchor
    return target


def site_markdown(text: str, source: str) -> str:
    """``text`` of repository file ``source`` with every Markdown link re-pointed for the site."""
    return _LINK.sub(lambda m: m.group(1) + site_link(m.group(2), source) + m.group(3), text)


def on_files(files: Any, config: Any) -> Any:
    """mkdocs hook: add the pages of ``GENERATED``."""
    from mkdocs.structure.files import File

    for page, source in GENERATED.items():
        text = (ROOT / source).read_text(encoding="utf-8")
        files.append(File.generated(config, page, content=site_markdown(text, source)))
    return files


def plain_roles(docstring: str) -> str:
    """``docstring`` with Sphinx roles as inline code and ``::`` before a code block as ``:``."""
    return re.sub(r"::\n", ":\n", _ROLE.sub(r"`\1`", docstring))


try:
    import griffe
except ImportError:  # the hooks above do not need it
    pass
else:

    class SphinxRoles(griffe.Extension):
        """Griffe extension: Sphinx roles in docstrings rendered as inline code."""

        def on_instance(self, *, node: Any, obj: griffe.Object, agent: Any, **kwargs: Any) -> None:
            if obj.docstring is not None:
                obj.docstring.value = plain_roles(obj.docstring.value)
