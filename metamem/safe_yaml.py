"""Reading YAML that a user wrote: :func:`yaml.safe_load` with three more refusals.

- **duplicate keys**: ``yaml.safe_load`` keeps the last of two ``learner:`` keys without a
  word; here the second one is an error naming its line;
- **alias bombs**: a few hundred bytes of nested ``&a [*b, *b, ...]`` anchors describe
  millions of values. The size the document would have with every alias expanded is counted
  on the composed node graph (each distinct node once, so the count is linear in the file)
  *before* any Python object is built, and a document over :data:`MAX_NODES` is refused;
- **self-referencing aliases** (``&d {options: *d}``).

Every error is one :class:`YamlError` line of at most :data:`MAX_MESSAGE` characters.
:func:`load_file` reads a UTF-8 file and names it in every error (configs, dataset cards).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

__all__ = ["YamlError", "safe_load", "load_file", "MAX_NODES", "MAX_MESSAGE", "shorten"]

#: most values (scalars, lists, mappings) a document may expand to; a config is a few dozen.
MAX_NODES = 100_000
#: longest error message (characters); longer text is cut with an ellipsis.
MAX_MESSAGE = 300


class YamlError(ValueError):
    """The text is not YAML metamem accepts (one line, naming the line or the limit)."""


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line, cut to ``limit`` characters (``...`` marks the cut)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Loader(yaml.SafeLoader):
    """A ``SafeLoader`` that refuses duplicate mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                raise YamlError(
                    f"line {line}: duplicate key {shorten(repr(key), 60)} (first given on line "
                    f"{first}); keep one of them"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, limit: int) -> int:
    """The number of values ``node`` stands for with every alias expanded (each distinct
    node is sized once: an alias is the node it names, so the graph is shared)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise YamlError(f"line {n.start_mark.line + 1}: a YAML alias refers to itself")
        active.add(key)
        total = 1
        if isinstance(n, yaml.SequenceNode):
            for child in n.value:
                total += size(child)
                if total > limit:
                    break
        elif isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                total += size(k) + size(v)
                if total > limit:
                    break
        active.discard(key)
        sizes[key] = total
        return total

    import sys

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 10_000))
    try:
        return size(node)
    finally:
        sys.setrecursionlimit(old)


def safe_load(text: str, *, max_nodes: int = MAX_NODES) -> Any:
    """Parse one YAML document like :func:`yaml.safe_load`, refusing duplicate keys,
    self-referencing aliases and documents that expand to more than ``max_nodes`` values.

    Raises:
        YamlError: one line naming the line at fault or the limit.
        yaml.YAMLError: for text that is not YAML (the caller names the file).
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        total = _expanded_size(node, max_nodes)
        if total > max_nodes:
            raise YamlError(
                f"more than {max_nodes} values once its aliases are expanded (a YAML alias "
                "bomb?); a config is a few dozen keys"
            )
        return loader.construct_document(node)
    except RecursionError:
        raise YamlError("nested too deeply (more than a thousand levels)") from None
    finally:
        loader.dispose()


def load_file(path: str | os.PathLike[str], *, max_nodes: int = MAX_NODES) -> Any:
    """:func:`safe_load` of a UTF-8 text file, every error naming the file.

    Raises:
        YamlError: one line ``<path>: ...``: the file is not UTF-8 text (the byte at fault),
            not YAML, or refused by :func:`safe_load`.
        OSError: the file cannot be read (the caller says what it expected there).
    """
    try:
        return safe_load(Path(path).read_text(encoding="utf-8"), max_nodes=max_nodes)
    except UnicodeDecodeError as e:
        raise YamlError(f"{path}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
    except YamlError as e:
        raise YamlError(f"{path}: {e}") from None
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError) as e:
        raise YamlError(shorten(f"{path}: not valid YAML: {e}")) from None
