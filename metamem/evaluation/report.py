"""Writing evaluation results: JSON (everything), Markdown and CSV tables; atomic writes.

One table row per result (learner x protocol): accuracy ``± ci95`` of the set and sequence
scorings (in percent) and the sequence accuracy by presentation.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metamem.evaluation.scoring import EvalResult
from metamem.files import write_text

__all__ = [
    "atomic_write_text",
    "read_results",
    "result_rows",
    "results_json_text",
    "to_csv",
    "to_markdown",
    "write_results",
]

_PRESENTATION_COLUMNS = 10  # the Markdown table shows presentations 1..10 at most


#: the name :func:`metamem.files.write_text` had here.
atomic_write_text = write_text


def _pct(v: float | None) -> str:
    return "" if v is None or math.isnan(v) else f"{100 * v:.2f}"


def result_rows(results: Sequence[EvalResult]) -> list[dict[str, Any]]:
    """One flat row per result (numbers as floats in [0, 1], ``None`` where not run)."""
    rows = []
    for r in results:
        p = r.protocol
        row: dict[str, Any] = {
            "learner": r.learner,
            "source": r.source or "",
            "dataset": p.dataset,
            "split": p.split,
            # variable-way episodes (Meta-Dataset) have no single N, K, Q: their limits are in the protocol
            "n_way": p.n_way if p.variable_limits is None else "variable",
            "k_shot": p.k_shot if p.variable_limits is None else "variable",
            "n_query": p.n_query if p.variable_limits is None else "variable",
            "episodes": p.episodes,
            "seed": p.seed,
            "within_group": p.within_group,
            "data_options": json.dumps(r.data_options, sort_keys=True) if r.data_options else "",
        }
        for scoring in ("set", "sequence"):
            s = r.scores.get(scoring)
            row[f"{scoring}_mean"] = None if s is None else s.mean
            row[f"{scoring}_ci95"] = None if s is None else s.ci95
        row["per_presentation"] = r.per_presentation
        row["fingerprint"] = r.fingerprint
        row["device"] = r.device
        row["seconds"] = r.seconds
        rows.append(row)
    return rows


def _pm(mean: float | None, ci: float | None) -> str:
    if mean is None:
        return "-"
    ci_s = _pct(ci)
    return f"{_pct(mean)} ± {ci_s}" if ci_s else _pct(mean)


def to_markdown(results: Sequence[EvalResult]) -> str:
    """A Markdown table: accuracies in percent with their 95% confidence half-width."""
    rows = result_rows(results)
    n_pres = max((len(r["per_presentation"] or []) for r in rows), default=0)
    n_pres = min(n_pres, _PRESENTATION_COLUMNS)
    ords = [_ordinal(i + 1) for i in range(n_pres)]
    head = ["learner", "dataset/split", "ways", "shots", "queries", "episodes",
            "set acc %", "sequence acc %", *[f"seq {o} %" for o in ords], "fingerprint"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        pres = r["per_presentation"] or []
        cells = [
            r["learner"], _where(r), str(r["n_way"]), str(r["k_shot"]),
            str(r["n_query"]), str(r["episodes"]),
            _pm(r["set_mean"], r["set_ci95"]), _pm(r["sequence_mean"], r["sequence_ci95"]),
            *[_pct(pres[i]) if i < len(pres) else "" for i in range(n_pres)],
            r["fingerprint"][:12],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _where(row: dict[str, Any]) -> str:
    """``dataset/split``, plus ``within group`` and eval-only dataset options when set."""
    extra = (["within group"] if row["within_group"] else []) + (
        [row["data_options"]] if row["data_options"] else []
    )
    where = f"{row['dataset']}/{row['split']}"
    return f"{where} ({', '.join(extra)})" if extra else where


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def to_csv(results: Sequence[EvalResult]) -> str:
    """CSV with one row per result; accuracies as fractions, presentations as p1, p2, ..."""
    rows = result_rows(results)
    n_pres = max((len(r["per_presentation"] or []) for r in rows), default=0)
    keys = [k for k in (rows[0] if rows else {}) if k != "per_presentation"]
    header = keys + [f"p{i + 1}" for i in range(n_pres)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        pres = r["per_presentation"] or []
        vals = [_csv(r[k]) for k in keys] + [_csv(pres[i]) if i < len(pres) else "" for i in range(n_pres)]
        w.writerow(vals)
    return buf.getvalue()


def _csv(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


_NUMBER = r"(?:-?[0-9][0-9.eE+-]*|null)"
#: a JSON list of numbers laid out one per line by ``json.dumps(indent=...)``; group 1 is the
#: indentation of its items, group 2 the items
_NUMBER_LIST = re.compile(r"\[\n([ \t]*)(" + _NUMBER + r"(?:,\n[ \t]*" + _NUMBER + r")*)\n([ \t]*)\]")
#: numbers per line in a list longer than this (``per_episode``: 1,000 numbers in 100 lines)
NUMBERS_PER_LINE = 16


def _number_lists_packed(text: str) -> str:
    """Lay out every list of numbers ``NUMBERS_PER_LINE`` to a line: a short list (a row of
    ``per_presentation_episode``, the presentation means) on the line of its key, a long one
    (``per_episode``) in rows. The JSON stays the same; the file is 2-5x shorter."""

    def pack(m: re.Match[str]) -> str:
        items = re.split(r",\n[ \t]*", m.group(2))
        if len(items) <= NUMBERS_PER_LINE:
            return "[" + ", ".join(items) + "]"
        rows = [", ".join(items[i:i + NUMBERS_PER_LINE]) for i in range(0, len(items), NUMBERS_PER_LINE)]
        return "[\n" + m.group(1) + (",\n" + m.group(1)).join(rows) + "\n" + m.group(3) + "]"

    return _NUMBER_LIST.sub(pack, text)


def results_json_text(doc: Any) -> str:
    """``doc`` (results, or any JSON document) as the text metamem writes to a results file:
    indented, numbers packed 16 to a line (:data:`NUMBERS_PER_LINE`), ending in a newline.
    ``json.loads`` of the text gives ``doc`` back."""
    return _number_lists_packed(json.dumps(doc, indent=1, default=_json_default, allow_nan=False)) + "\n"


def write_results(
    results: Sequence[EvalResult], out_dir: str | os.PathLike[str], stem: str = "results",
    *, header: str | None = None,
) -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.csv`` in ``out_dir`` (atomically).

    The JSON holds, for every result, the config, protocol, fingerprint, metamem version,
    device, the scores with per-episode accuracies and the accuracy by presentation.
    ``header`` (the protocol line of ``metamem eval``) goes above the Markdown table and
    into the JSON as ``"header"``.

    Returns:
        ``{"json": path, "md": path, "csv": path}``.
    """
    out = Path(out_dir)
    doc: dict[str, Any] = {"results": [r.to_dict() for r in results]}
    if header:
        doc = {"header": header, **doc}
    md = (header + "\n\n" if header else "") + to_markdown(results)
    return {
        "json": write_text(out / f"{stem}.json", results_json_text(doc)),
        "md": write_text(out / f"{stem}.md", md),
        "csv": write_text(out / f"{stem}.csv", to_csv(results)),
    }


def read_results(path: str | os.PathLike[str]) -> list[EvalResult]:
    """Read the results written by :func:`write_results` (``<stem>.json``), checked
    (:func:`metamem.results_check.read_checked_results`: schema, types, accuracies
    finite and in [0, 1], stored means and intervals equal to the recomputed ones).

    Raises:
        ResultsError: one line naming the file and the field at fault (also for a file
            that is not JSON).
    """
    from metamem.results_check import read_checked_results

    return [EvalResult.from_dict(d) for d in read_checked_results(path)]
