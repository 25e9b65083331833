"""Checking a ``results.json`` (or a run's ``eval.json``) before anything is computed from it.

These files are plain JSON that anyone can edit. :func:`check_results` checks, for every row,
the schema (the keys :meth:`metamem.evaluation.EvalResult.to_dict` writes, and their types),
the ranges (every accuracy a finite number in [0, 1], counts whole and positive, the
fingerprint a hex digest) and that the stored summaries agree with the per-episode values
they summarise (``mean``, ``ci95``, ``episodes``, ``per_presentation``), so that an edited
file is refused with one line naming the file and the field instead of scored: per-episode
values times 100 used to give "+7444.80 ± 387.06 points".
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["ResultsError", "check_results", "check_row", "read_checked_results"]

#: how far a stored mean / interval may be from the one recomputed from ``per_episode``
TOLERANCE = 1e-9
_HEX = re.compile(r"[0-9a-f]{16,128}")
_SCORINGS = ("set", "sequence")


class ResultsError(ValueError):
    """A results file that is not what ``metamem eval`` writes (one line: file and field)."""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Checker:
    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, field: str, msg: str) -> None:
        raise ResultsError(f"{self.where}: {field}: {msg}; it was edited or damaged: score the "
                           "runs again with `metamem eval`")

    def typed(self, d: dict[str, Any], key: str, types: tuple[type, ...], field: str,
              optional: bool = False) -> Any:
        if key not in d:
            if optional:
                return None
            self.fail(f"{field}.{key}", "missing")
        v = d[key]
        if v is None and optional:
            return None
        if not isinstance(v, types) or isinstance(v, bool) and bool not in types:
            names = " or ".join(t.__name__ for t in types)
            self.fail(f"{field}.{key}", f"expected {names}, got {_short(v)}")
        return v

    def accuracy(self, v: Any, field: str, nullable: bool = False) -> float:
        if v is None and nullable:
            return math.nan
        if not _is_number(v) or not math.isfinite(v) or not 0.0 <= v <= 1.0:
            self.fail(field, f"an accuracy must be a finite number in [0, 1], got {_short(v)}")
        return float(v)

    def agrees(self, stored: Any, recomputed: float, field: str, source: str) -> None:
        if math.isnan(recomputed):
            if stored is not None:
                self.fail(field, f"stored {_short(stored)} but {source} gives none (null)")
            return
        if not _is_number(stored) or not math.isfinite(stored):
            self.fail(field, f"expected a finite number, got {_short(stored)}")
        if abs(stored - recomputed) > TOLERANCE:
            self.fail(field, f"stored {stored!r} but {source} gives {recomputed!r}")


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


#: two-sided 95% quantile of the standard normal distribution (the ``ci95`` of
#: :func:`metamem.evaluation.metrics.mean_ci95`)
Z95 = 1.96


def _mean_ci95(values: list[float]) -> tuple[float, float]:
    """What :func:`metamem.evaluation.metrics.mean_ci95` stores, in plain Python (this module
    sits below torch and the evaluation package, so that every reader can use it)."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, math.nan
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, Z95 * math.sqrt(var) / math.sqrt(n)


def _check_score(c: _Checker, s: Any, field: str, name: str, episodes: int) -> None:
    if not isinstance(s, dict):
        c.fail(field, f"expected an object, got {_short(s)}")
    if s.get("scoring") != name:
        c.fail(f"{field}.scoring", f"expected {name!r}, got {_short(s.get('scoring'))}")
    per = c.typed(s, "per_episode", (list,), field)
    if not per:
        c.fail(f"{field}.per_episode", "empty")
    values = [c.accuracy(v, f"{field}.per_episode[{i}]") for i, v in enumerate(per)]
    if "episodes" in s and s["episodes"] != len(values):
        c.fail(f"{field}.episodes", f"stored {_short(s['episodes'])} but per_episode holds {len(values)}")
    if len(values) != episodes:
        c.fail(f"{field}.per_episode", f"holds {len(values)} values but protocol.episodes is {episodes}")
    mean, ci95 = _mean_ci95(values)
    if "mean" in s:
        c.agrees(s["mean"], mean, f"{field}.mean", "per_episode")
    if "ci95" in s:
        c.agrees(s["ci95"], ci95, f"{field}.ci95", "per_episode")
    rows = c.typed(s, "per_presentation_episode", (list,), field, optional=True)
    means = c.typed(s, "per_presentation", (list,), field, optional=True)
    for key in ("per_presentation", "per_presentation_ci95"):
        vals = c.typed(s, key, (list,), field, optional=True) or []
        for i, v in enumerate(vals):
            if key == "per_presentation":
                c.accuracy(v, f"{field}.{key}[{i}]", nullable=True)
            elif v is not None and (not _is_number(v) or not math.isfinite(v) or v < 0):
                c.fail(f"{field}.{key}[{i}]", f"expected a finite number >= 0 or null, got {_short(v)}")
    if rows is None:
        return
    if len(rows) != len(values):
        c.fail(f"{field}.per_presentation_episode", f"holds {len(rows)} rows but per_episode {len(values)}")
    width = None
    table = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or (width is not None and len(row) != width):
            c.fail(f"{field}.per_presentation_episode[{i}]", f"expected a list of {width or 'P'} values")
        width = len(row)
        table.append([c.accuracy(v, f"{field}.per_presentation_episode[{i}][{j}]", nullable=True)
                      for j, v in enumerate(row)])
    if means is not None:
        if len(means) != (width or 0):
            c.fail(f"{field}.per_presentation", f"holds {len(means)} values but each episode row {width}")
        for j, stored in enumerate(means):
            col = [row[j] for row in table]
            # a presentation no episode reached is null; the writer's mean is NaN-propagating
            recomputed = math.nan if any(math.isnan(v) for v in col) else sum(col) / len(col)
            c.agrees(stored, recomputed, f"{field}.per_presentation[{j}]", "per_presentation_episode")


def check_row(row: Any, where: str) -> None:
    """Check one result (a ``results[i]`` of results.json, an item of eval.json).

    Raises:
        ResultsError: naming ``where`` and the first field at fault.
    """
    c = _Checker(where)
    if not isinstance(row, dict):
        c.fail("(row)", f"expected an object, got {_short(row)}")
    for key in ("learner", "version", "device"):
        c.typed(row, key, (str,), "row")
    c.typed(row, "source", (str,), "row", optional=True)
    fp = c.typed(row, "fingerprint", (str,), "row")
    if not _HEX.fullmatch(fp):
        c.fail("fingerprint", f"expected a hex digest, got {_short(fp)}")
    seconds = c.typed(row, "seconds", (int, float), "row")
    if not math.isfinite(seconds) or seconds < 0:
        c.fail("seconds", f"expected a finite number >= 0, got {seconds!r}")
    for key in ("config", "data_options", "declined"):
        c.typed(row, key, (dict,), "row", optional=True)
    proto = c.typed(row, "protocol", (dict,), "row")
    for key, low in (("n_way", 1), ("k_shot", 1), ("episodes", 1), ("n_query", 0)):
        v = c.typed(proto, key, (int,), "protocol")
        if v < low:
            c.fail(f"protocol.{key}", f"must be >= {low}, got {v}")
    c.typed(proto, "seed", (int,), "protocol")
    scores = c.typed(row, "scores", (dict,), "row")
    if not scores:
        c.fail("scores", "empty: no scoring was stored")
    for name, s in scores.items():
        if name not in _SCORINGS:
            c.fail(f"scores.{name}", f"unknown scoring; expected {' or '.join(_SCORINGS)}")
        _check_score(c, s, f"scores.{name}", name, proto["episodes"])


def check_results(doc: Any, path: str) -> list[dict[str, Any]]:
    """The rows of a parsed ``results.json`` (``{"results": [...]}``) or ``eval.json``
    (``[...]``), each checked with :func:`check_row`.

    Raises:
        ResultsError: naming ``path``, the row and the field at fault.
    """
    rows = doc.get("results") if isinstance(doc, dict) else doc
    if not isinstance(rows, list):
        raise ResultsError(f"{path}: not a results.json of `metamem eval` (results: expected a "
                           "list of results, as in {\"results\": [...]})")
    if isinstance(doc, dict) and doc.get("header") is not None and not isinstance(doc["header"], str):
        raise ResultsError(f"{path}: header: expected a string, got {_short(doc['header'])}")
    for i, row in enumerate(rows):
        check_row(row, f"{path}: results[{i}]")
    return rows


def read_checked_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The result dicts of a ``results.json`` or ``eval.json`` file, checked.

    Raises:
        ResultsError: one line naming the file (not JSON, NaN/Infinity in it) and, for a
            bad row, the row and field.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
        doc = json.loads(text, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultsError(f"{path}: not valid JSON ({' '.join(str(e).split())[:120]})") from None
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ResultsError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:  # NaN / Infinity: not JSON, and never written by metamem
        raise ResultsError(f"{path}: {e}") from None
    return check_results(doc, str(path))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"holds {name}, which JSON does not allow and metamem never writes; "
                     "it was edited: score the runs again with `metamem eval`")
