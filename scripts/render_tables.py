"""Render the results tables of docs/results/*.md, docs/learners.md and README.md from the
committed scores.

Every table (and every result figure quoted in the README) sits between marker comments::

    <!-- table:omniglot_nway -->
    ...generated...
    <!-- /table -->

and is rebuilt from the ``results.json`` / ``eval.json`` files of ``results/<group>/<row>/``:
the accuracies, their 95 % half-widths and the paired differences, each from the one
evaluation whose protocol (ways, shots, queries, episodes, seed, scoring) the table names.
Below each table it prints, per row, the command that reproduces it: ``metamem eval`` on
the committed run (rows that keep their weights), or ``metamem train`` on the run's own
config (same seed and steps; ``train.init_from`` chains re-trained first) then ``metamem
eval``, writing under ``runs/`` (never into ``results/``)::

    python scripts/render_tables.py            # rewrite the marked blocks in place
    python scripts/render_tables.py --check    # exit 1, naming each block that is out of date

A table row without its evaluation in the run directory is an error naming the row and the
protocol, so a table cannot silently keep a number its run no longer holds.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metamem.runs import recorded_evaluations

REPO = Path(__file__).resolve().parents[1]
#: the files whose marked blocks are generated
PAGES = ("docs/results/omniglot_paper.md", "docs/results/memory_fewshot.md", "docs/results/multi_memory.md",
         "docs/results/mini_imagenet.md", "docs/learners.md", "docs/benchmarks_training.md", "README.md")
BLOCK = re.compile(r"(<!-- (table|value):(\S+) -->)(.*?)(<!-- /\2 -->)", re.DOTALL)


class RenderError(ValueError):
    """A table whose row has no evaluation of the protocol it names."""


# --- the committed evaluations ---------------------------------------------------------

@dataclass(frozen=True)
class Want:
    """The protocol of a table column: which evaluation of a row it shows."""

    n_way: int
    k_shot: int
    seed: int
    scoring: str = "set"
    n_query: int | None = 15
    episodes: int = 1000
    within_group: bool = False
    data_options: dict[str, Any] | None = None
    split: str | None = None

    def matches(self, r: dict[str, Any]) -> bool:
        p = r["protocol"]
        return (p["n_way"], p["k_shot"], p["seed"], p["episodes"], bool(p["within_group"])) == (
            self.n_way, self.k_shot, self.seed, self.episodes, self.within_group) and (
            self.n_query is None or p["n_query"] == self.n_query) and self.scoring in r["scores"] and (
            (r.get("data_options") or None) == self.data_options) and (
            self.split is None or p["split"] == self.split)

    def __str__(self) -> str:
        extra = f", within_group, {self.data_options}" if self.within_group else ""
        return (f"{self.n_way}-way {self.k_shot}-shot, {self.n_query} queries, {self.episodes} episodes, "
                f"seed {self.seed}, {self.scoring} scoring{extra}")


def find(root: Path, row: str, want: Want) -> tuple[Path, dict[str, Any]]:
    """The evaluation of ``row`` (``group/name`` under ``root/results``) with protocol ``want``."""
    for f, r in recorded_evaluations(root / "results" / row):
        if want.matches(r):
            return f, r
    raise RenderError(f"results/{row} holds no evaluation of {want}; score it (the table's "
                      "command) or drop the row from the table")


def pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}"


def signed(x: float) -> str:
    """``x`` (a fraction) in points with its sign, a minus sign for negatives."""
    return f"{100 * x:+.2f}".replace("-", "−")


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


# --- commands ---------------------------------------------------------------------------

def has_weights(run: Path) -> bool:
    return (run / "checkpoints" / "last.pt").is_file() or (run / "checkpoints" / "weights.yaml").is_file()


def _item(key: str, values: list[Any]) -> str:
    def lit(v: Any) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {lit(x)}" for k, x in v.items()) + "}"
        return str(v)

    text = f"{key}={lit(values[0])}" if len(values) == 1 else f"{key}=[{','.join(lit(v) for v in values)}]"
    return shlex.quote(text)


def eval_overrides(config: dict[str, Any], results: list[dict[str, Any]]) -> list[str]:
    """``key=value`` items of ``metamem eval`` that repeat ``results`` (one file's entries,
    a product of swept values) on the run's data."""
    def values(get: Callable[[dict[str, Any]], Any]) -> list[Any]:
        out: list[Any] = []
        for r in results:
            if get(r) not in out:
                out.append(get(r))
        return out

    p = lambda k: (lambda r: r["protocol"][k])  # noqa: E731
    scorings = values(lambda r: "both" if set(r["scores"]) == {"set", "sequence"} else next(iter(r["scores"])))
    items = []
    splits = values(p("split"))
    if splits != [config["data"].get("test_split", "test")]:
        items.append(_item("eval.split", splits))
    for key in ("n_way", "k_shot", "n_query", "episodes", "seed"):
        items.append(_item(f"eval.{key}", sorted(values(p(key)))))
    if values(p("within_group")) != [False]:
        items.append(_item("eval.within_group", values(p("within_group"))))
    opts = values(lambda r: r.get("data_options") or None)
    if opts != [None]:
        items.append(_item("eval.data_options", opts))
    items.append(_item("eval.protocol", scorings))
    return items


def rescore_command(root: Path, row: str, file: Path, run_arg: str) -> str:
    """``metamem eval`` of ``run_arg`` that repeats every evaluation of ``file``."""
    import yaml

    run = root / "results" / row
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    doc = json.loads(file.read_text(encoding="utf-8"))
    results = doc["results"] if isinstance(doc, dict) else doc
    sub = "eval_train" if file.name == "eval.json" else file.parent.name
    name = row.split("/")[1]
    return " ".join(["metamem eval", run_arg, *eval_overrides(config, results),
                     f"--out runs/rescore/{name}/{sub}"])


def retrain_commands(root: Path, row: str, done: set[str] | None = None) -> list[str]:
    """``metamem train`` commands that re-create ``row``'s weights under ``runs/retrain/``
    from its committed config: first the run it starts from (``train.init_from``), if that
    one keeps no weights either."""
    import yaml

    done = set() if done is None else done
    run = root / "results" / row
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    cmds: list[str] = []
    extra: list[str] = []
    init = (config.get("train") or {}).get("init_from")
    if init:
        parent = Path(init).as_posix().removeprefix("results/")
        if has_weights(root / "results" / parent):
            extra = []  # the committed weights it starts from are here
        else:
            if parent not in done:
                cmds += retrain_commands(root, parent, done)
            extra = [f"train.init_from=runs/retrain/{parent.split('/')[1]}"]
    name = row.split("/")[1]
    if row not in done:
        cmds.append(" ".join(["metamem train", f"results/{row}/config.yaml", *extra,
                              f"--out runs/retrain/{name}", "--threads 1"]))
        done.add(row)
    return cmds


def commands(root: Path, row: str, files: list[Path]) -> list[str]:
    """The commands that reproduce ``row``'s cells read from ``files``."""
    name = row.split("/")[1]
    if has_weights(root / "results" / row):
        return [rescore_command(root, row, f, f"results/{row}") for f in files]
    return retrain_commands(root, row) + [rescore_command(root, row, f, f"runs/retrain/{name}") for f in files]


# --- tables -----------------------------------------------------------------------------

@dataclass
class Row:
    """A table row: a committed run (``group/name``) and its label; ``note`` is a last cell."""

    run: str
    label: str
    note: str = ""
    paper_tta: float | None = None  # the paper's figure in the table's time-to-accuracy setting
    tta_from: str | None = None  # a row whose run this one continues (train.init_from): its time
    tta_at: str | None = None  # the setting of its time-to-accuracy cell, where not the table's


@dataclass
class Table:
    """A table of committed runs, one row each, plus fixed rows (the papers' figures)."""

    columns: list[tuple[str, Want]]
    rows: list[Row]
    kind: str = "set"  # "set": mean ± ci95 per column; "sequence": by presentation
    presentations: list[int] = field(default_factory=list)
    note_header: str = ""
    fixed: list[list[str]] = field(default_factory=list)  # label + one cell per column (+ note)
    ci_at: int = 2  # the presentation that shows its ± (sequence tables)
    budget: bool = False  # a column "steps × batch" from the run's config
    tta: str = ""  # a column "CPU-min to reach the paper − 1.5" in this setting (time_to_accuracy.json)

    def _tta(self, root: Path, row: Row, acc: float | None) -> str:
        """The CPU-minutes cell: from the row's ``time_to_accuracy.json`` (or, for a row that
        continues another run, that run's); without one, "not reached" where the row's own
        score stays under the paper − 1.5, with its training CPU-minutes."""
        if row.tta_from is not None:
            cell = self._tta(root, Row(row.tta_from, "", row.note, row.paper_tta, tta_at=row.tta_at), None)
            return f"{cell}, in `{row.tta_from.split('/')[1]}`, which it continues"
        at = row.tta_at or self.tta
        where = f" at {at}" if at != self.tta else ""
        path = root / "results" / row.run / "time_to_accuracy.json"
        if not path.is_file():
            if row.paper_tta is not None and acc is not None and acc < row.paper_tta - 1.5:
                from metamem.evaluation.plots import learning_curve  # resumed segments laid end to end

                metrics = [json.loads(line) for line in
                           (root / "results" / row.run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
                cpu = max(learning_curve(metrics)["cpu_s"]) / 60
                return f"not reached in {cpu:.0f} ({acc:.1f}%{where} at the end)"
            return "not measured"
        data = json.loads(path.read_text(encoding="utf-8"))
        hit = data.get("reached", {}).get(at)
        if hit:
            return f"{hit['cpu_min']:.0f} ({hit['target']:.1f}%{where} at step {hit['step']:,})"
        pts = [p for p in data["points"] if at in p["acc"]]
        return f"not reached in {pts[-1]['cpu_min']:.0f}{where}" if pts else "not measured"

    def _budget(self, root: Path, row: str) -> str:
        import yaml

        config = yaml.safe_load((root / "results" / row / "config.yaml").read_text(encoding="utf-8"))
        return f"{config['train']['steps']:,} × {config['episodes'].get('batch_size', 1)}"

    def render(self, root: Path) -> str:
        if self.kind == "set":
            head = ["model", *(c for c, _ in self.columns)]
        else:
            head = ["model", *(ordinal(p) for p in self.presentations), "all steps"]
        if self.budget:
            head.append("training steps × batch")
        if self.tta:
            head.append(f"CPU-min to paper − 1.5 at {self.tta}")
        if self.note_header:
            head.append(self.note_header)
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        cmds: list[str] = []
        for row in self.rows:
            cells, files = [f"{row.label} (`{row.run.split('/')[1]}`)"], []
            acc = None
            for key, want in self.columns:
                f, r = find(root, row.run, want)
                s = r["scores"][want.scoring]
                if f not in files:
                    files.append(f)
                if key == (row.tta_at or self.tta):
                    acc = 100 * s["mean"]
                if self.kind == "set":
                    cells.append(f"{pct(s['mean'], 2)} ± {pct(s['ci95'], 2)}")
                else:
                    pres, ci = s["per_presentation"], s["per_presentation_ci95"]
                    for p in self.presentations:
                        cells.append(pct(pres[p - 1]) + (f" ± {pct(ci[p - 1])}" if p == self.ci_at else ""))
                    cells.append(f"{pct(s['mean'], 2)} ± {pct(s['ci95'], 2)}")
            if self.budget:
                cells.append(self._budget(root, row.run))
            if self.tta:
                cells.append("–" if row.note == "–" else self._tta(root, row, acc))
            if self.note_header:
                cells.append(row.note)
            lines.append("| " + " | ".join(cells) + " |")
            cmds += [f"# {row.label}" + ("" if has_weights(root / "results" / row.run) else
                                         " (weights not committed: re-train, then score)")]
            cmds += [c for c in commands(root, row.run, files) if c not in cmds]  # a shared start once
        for fixed in self.fixed:
            lines.append("| " + " | ".join(fixed) + " |")
        return "\n".join(lines) + "\n\nReproduce each row:\n\n```bash\n" + "\n".join(cmds) + "\n```"


@dataclass
class Paired:
    """Paired differences B − A over the same episodes (``metamem compare``), in points:
    one row per (A, B) pair; ``plot`` also draws them (``metamem compare --plot``).
    ``over_seeds`` adds the mean of the pairs' differences with its Student-t 95 % interval
    over the pairs (training seeds; ``metamem compare --pairs``)."""

    pairs: list[tuple[str, Row]]
    want: Want
    presentations: list[int]
    plot: str | None = None
    over_seeds: bool = False

    def render(self, root: Path) -> str:
        from metamem.evaluation.compare import over_runs, paired_difference
        from metamem.evaluation.scoring import EvalResult

        def result(row: str) -> Any:
            return EvalResult.from_dict(find(root, row, self.want)[1])

        head = ["B − A", "all steps", *(ordinal(p) for p in self.presentations), "episodes B better / same / worse"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        groups: dict[str, list[str]] = {}
        diffs = []
        for base, row in self.pairs:
            d = paired_difference(result(base), result(row.run), self.want.scoring)
            diffs.append(d)
            pp = d.per_presentation or []
            cells = [f"{row.label} (`{row.run.split('/')[1]}` − `{base.split('/')[1]}`)",
                     f"{signed(d.diff)} ± {100 * d.ci95:.2f}",
                     *(f"{signed(pp[p - 1][0])} ± {100 * pp[p - 1][1]:.2f}" for p in self.presentations),
                     f"{d.wins} / {d.ties} / {d.losses}"]
            lines.append("| " + " | ".join(cells) + " |")
            groups.setdefault(base, []).append(f"results/{row.run}")
        cmds = [" ".join(["metamem compare", f"results/{base}", *others, f"--presentations {max(self.presentations)}",
                          *([f"--plot {self.plot}"] if self.plot else [])]) for base, others in groups.items()]
        if self.over_seeds:
            if len(diffs) < 2:
                raise RenderError("Paired(over_seeds=True) needs at least two pairs")
            o = over_runs(diffs)
            opp = o.per_presentation or []
            lines.append("| " + " | ".join([
                f"**mean over the {o.runs} seeds** (Student-t 95 % over seeds)",
                f"**{signed(o.diff)} ± {100 * o.ci95:.2f}**",
                *(f"{signed(opp[p - 1][0])} ± {100 * opp[p - 1][1]:.2f}" for p in self.presentations),
                "–"]) + " |")
            cmds.append(" ".join(["metamem compare", *(f"results/{x}" for base, row in self.pairs for x in (base, row.run)),
                                  f"--presentations {max(self.presentations)}", "--pairs"]))
        return ("\n".join(lines) + "\n\nReproduce it (from the committed scores, no weights needed):\n\n```bash\n"
                + "\n".join(cmds) + "\n```")


@dataclass
class FileTable:
    """A table of ``metamem eval`` result files kept outside ``results/`` (runs that are not
    committed; the page prints the commands that make them): one row per learner, the best
    mean of each column in bold."""

    files: list[str]
    columns: list[tuple[str, Want]]
    rows: list[tuple[str, str, str]]  # (label, the row name ``learner [run]`` in the files, last cell)
    last_header: str

    def render(self, root: Path) -> str:
        results = [r for f in self.files for r in json.loads((root / f).read_text(encoding="utf-8"))["results"]]
        cells: dict[tuple[str, str], dict[str, float]] = {}
        for label, name, _ in self.rows:
            for col, want in self.columns:
                hit = [r for r in results if r["learner"] == name and want.matches(r)]
                if hit:
                    cells[label, col] = hit[0]["scores"][want.scoring]
        best = {col: max((c["mean"] for (_, k), c in cells.items() if k == col), default=None) for col, _ in self.columns}
        lines = ["| learner | " + " | ".join(c for c, _ in self.columns) + f" | {self.last_header} |",
                 "|" + "---|" * (len(self.columns) + 2)]
        for label, _, last in self.rows:
            row = [label]
            for col, _ in self.columns:
                c = cells.get((label, col))
                text = "–" if c is None else f"{pct(c['mean'])} ± {pct(c['ci95'])}"
                row.append(f"**{text}**" if c is not None and c["mean"] == best[col] else text)
            lines.append("| " + " | ".join([*row, last]) + " |")
        return "\n".join(lines)


@dataclass
class SeedPairs:
    """Two models trained with the same seeds, scored in one ``metamem eval`` results file:
    one row per seed (A, B, and B − A paired over the same episodes), then the mean of the
    per-seed differences with its Student-t interval over seeds (``metamem compare --pairs``)."""

    file: str
    pairs: list[tuple[str, str, str]]  # (seed label, A's source run, B's source run)
    headers: tuple[str, str, str, str]  # seed column, A, B, difference
    scoring: str = "set"

    def render(self, root: Path) -> str:
        from metamem.evaluation.compare import over_runs, paired_difference
        from metamem.evaluation.scoring import EvalResult

        results = json.loads((root / self.file).read_text(encoding="utf-8"))["results"]

        def result(source: str) -> Any:
            hit = [r for r in results if r.get("source") == source]
            if len(hit) != 1:
                raise RenderError(f"{self.file}: {len(hit)} results from {source}; score it once")
            return EvalResult.from_dict(hit[0])

        lines = ["| " + " | ".join(self.headers) + " |", "|---|---|---|---|"]
        diffs, a_means, b_means = [], [], []
        for label, a, b in self.pairs:
            ra, rb = result(a), result(b)
            d = paired_difference(ra, rb, self.scoring)
            diffs.append(d)
            sa, sb = ra.scores[self.scoring], rb.scores[self.scoring]
            a_means.append(sa.mean)
            b_means.append(sb.mean)
            lines.append(f"| {label} | {pct(sa.mean, 2)} ± {pct(sa.ci95, 2)} | {pct(sb.mean, 2)} ± {pct(sb.ci95, 2)} | "
                         f"{signed(d.diff)} ± {100 * d.ci95:.2f} |")
        o = over_runs(diffs)
        lines.append(f"| mean over the {o.runs} seeds | {pct(sum(a_means) / len(a_means), 2)} | "
                     f"{pct(sum(b_means) / len(b_means), 2)} | **{signed(o.diff)} ± {100 * o.ci95:.2f}** "
                     "(Student-t 95 % over seeds) |")
        return "\n".join(lines)


@dataclass
class Value:
    """A figure quoted in prose: accuracies by presentation of one row, as ``a / b / c %``."""

    run: str
    want: Want
    presentations: list[int]

    def render(self, root: Path) -> str:
        _, r = find(root, self.run, self.want)
        pres = r["scores"][self.want.scoring]["per_presentation"]
        return " / ".join(pct(pres[p - 1]) for p in self.presentations) + " %"


SPREAD = "results/readme_spread/spread.json"
KERNELS = {"avx2": "AVX2", "avx512": "AVX-512", "default": "default"}


def _spread(root: Path) -> list[dict[str, Any]]:
    """The README main job's records (``scripts/readme_spread.py``)."""
    runs: list[dict[str, Any]] = json.loads((root / SPREAD).read_text(encoding="utf-8"))["runs"]
    if not runs:
        raise RenderError(f"{SPREAD}: no runs; python scripts/readme_spread.py measures them")
    return runs


@dataclass
class SpreadTable:
    """The README main job over seeds, threads and CPU kernels: one row per run, and the
    mean, min and max of the runs that left MANN's plateau and of those that did not."""

    def render(self, root: Path) -> str:
        runs = _spread(root)
        lines = ["| seed | threads | CPU kernels | accuracy | 1st / 2nd presentation | left the plateau | training CPU-s | shapes |",
                 "|---|---|---|---|---|---|---|---|"]
        for r in runs:
            lines.append(f"| {r['seed']} | {r['threads']} | {KERNELS[r['kernels']]} | {r['acc']:.2f}% | "
                         f"{r['first']:.1f}% / {r['second']:.1f}% | {'yes' if r['left_plateau'] else 'no'} | "
                         f"{r['cpu_s']} | {r['shapes']:.1f}% |")
        lines.append("")
        for name, group in (("Left the plateau", [r for r in runs if r["left_plateau"]]),
                            ("Still on it", [r for r in runs if not r["left_plateau"]])):
            if group:
                accs = [r["acc"] for r in group]
                lines.append(f"- {name}: {len(group)} of {len(runs)} runs, accuracy mean "
                             f"{sum(accs) / len(accs):.2f}%, min {min(accs):.2f}%, max {max(accs):.2f}%.")
        cpus = sorted({r["cpu"] for r in runs})
        lines.append(f"- Measured on: {', '.join(cpus)}.")
        return "\n".join(lines)


@dataclass
class SpreadBand:
    """A band quoted by the README and checked by its test: ``**c% ± h**`` around the
    accuracies (``what``: ``left``/``plateau``) or the shapes scores of the runs, widened by
    ``margin`` points each side; ``what="cpu"``: ``lo–hi`` training CPU-seconds of the
    one-thread runs (the command as written), from ``0.6 ×`` the fastest to ``1.6 ×`` the
    slowest, in 50s (CI machines differ)."""

    what: str
    margin: float = 2.0

    def render(self, root: Path) -> str:
        import math

        runs = _spread(root)
        if self.what == "cpu":  # the command as written: one thread
            cpu = [r["cpu_s"] for r in runs if r["threads"] == 1]
            lo = int(50 * math.floor(0.6 * min(cpu) / 50))
            hi = int(50 * math.ceil(1.6 * max(cpu) / 50))
            return f"{lo}–{hi}"
        if self.what == "shapes":
            values = [r["shapes"] for r in runs]
        else:
            values = [r["acc"] for r in runs if r["left_plateau"] == (self.what == "left")]
        if not values:  # no run on the plateau: the band of a model that guesses among the
            return "**31.5% ± 5.5**"  # labels not yet shown (45.7% at the 1st presentation, ~30% overall)
        lo, hi = min(values) - self.margin, max(values) + self.margin
        return f"**{(lo + hi) / 2:.1f}% ± {(hi - lo) / 2:.1f}**"


VERSUS = "results/vs_easyfsl/points.json"
VERSUS_LABELS = {"metamem": "metamem (default)", "easyfsl": "easyfsl 1.5.0",
                 "metamem-paper": "metamem, squared distance (paper config)",
                 "metamem-separate": "metamem, separate support and query passes",
                 "metamem-coldbn": "metamem, running statistics from (0, 1)"}


VERSUS_EARLY = "results/vs_easyfsl/early_points.json"


def versus_points(root: Path, path: str = VERSUS) -> list[dict[str, Any]]:
    """The points of ``scripts/vs_easyfsl.py`` (one per learner, seed and CPU budget)."""
    points: list[dict[str, Any]] = json.loads((root / path).read_text(encoding="utf-8"))["points"]
    if not points:
        raise RenderError(f"{path}: no points; python scripts/vs_easyfsl.py measures them")
    return points


def versus_cell(points: list[dict[str, Any]], learner: str, budget: float) -> tuple[float, float, float, int]:
    """``(mean, min, max accuracy in %, mean episodes)`` of one learner at one budget."""
    mine = [p for p in points if p["learner"] == learner and p["budget_cpu_min"] == budget]
    if not mine:
        raise RenderError(f"vs_easyfsl points: no point of {learner!r} at {budget:g} CPU-min")
    accs = [100 * p["accuracy"] for p in mine]
    return sum(accs) / len(accs), min(accs), max(accs), round(sum(p["episodes"] for p in mine) / len(mine))


@dataclass
class VersusTable:
    """ProtoNet against easyfsl at equal training CPU: mean accuracy over seeds (min–max;
    episodes trained) per budget; the best mean of each budget in bold."""

    path: str = VERSUS

    def render(self, root: Path) -> str:
        points = versus_points(root, self.path)
        learners = list(dict.fromkeys(p["learner"] for p in points))
        budgets = sorted({p["budget_cpu_min"] for p in points})
        seeds = sorted({p["seed"] for p in points})
        lines = ["| CPU-min | " + " | ".join(VERSUS_LABELS.get(k, k) for k in learners) + " |",
                 "|---" * (len(learners) + 1) + "|"]
        for b in budgets:
            cells = {k: versus_cell(points, k, b) for k in learners}
            best = max(c[0] for c in cells.values())
            row = []
            for k in learners:
                mean, lo, hi, eps = cells[k]
                text = f"{mean:.2f}"
                row.append(f"**{text}** ({lo:.2f}–{hi:.2f}; {eps:,} ep)" if mean == best
                           else f"{text} ({lo:.2f}–{hi:.2f}; {eps:,} ep)")
            lines.append(f"| {b:g} | " + " | ".join(row) + " |")
        meta = json.loads((root / self.path).read_text(encoding="utf-8")).get("meta", {})
        lines += ["", f"Seeds {', '.join(map(str, seeds))}; scored on {meta.get('test_episodes', '?')} fixed "
                      f"5-way 1-shot 15-query `vinyals/test` episodes (seed {meta.get('test_seed', '?')}); "
                      f"torch {meta.get('torch', '?')}, {meta.get('threads', '?')} thread."]
        return "\n".join(lines)


def _seq(n_way: int, shots: int) -> Want:
    return Want(n_way, shots, 2026, scoring="sequence", n_query=0)


SET_2026 = [(f"{n}w{k}s", Want(n, k, 2026)) for n in (5, 20) for k in (1, 5)]
SEQ5, SEQ10 = _seq(5, 10), _seq(10, 8)
PRES5 = [1, 2, 3, 4, 5, 10]
PRES10 = [1, 2, 3, 4, 5, 8]


#: Le et al. 2020's 10-class figures (2nd / 3rd / 5th presentation) in a PRES10 row
LE_MANN_10 = ["MANN (LRUA), Le et al. 2020's re-run (T = 75)", "–", "52.7", "60.6", "–", "64.7", "–", "–"]
LE_NUTM_10 = ["NUTM (LRUA, p = 3), Le et al. 2020 (T = 75)", "–", "68.0", "78.1", "–", "82.8", "–", "–"]


def _paper5(label: str, values: str) -> list[str]:
    return [label, *values.split(" / "), "–"]


BLOCKS: dict[str, Any] = {
    "omniglot_nway": Table(SET_2026, [
        Row("omniglot_paper/protonet_euclid", "ProtoNet, plain distance (metamem's default), 7,000 steps",
            "98.8 / 99.7 / 96.0 / 98.9 (Snell et al. 2017)"),
        Row("omniglot_paper/protonet_7000", "ProtoNet, squared distance, 7,000 steps", "98.8 / 99.7 / 96.0 / 98.9 (Snell et al. 2017)",
            98.8, tta_from="omniglot_paper/protonet"),
        Row("omniglot_paper/protonet", "ProtoNet, squared distance, 2,500 steps", "98.8 / 99.7 / 96.0 / 98.9 (Snell et al. 2017)",
            98.8),
        Row("omniglot_paper/matching_60way", "Matching Networks, 60-way episodes, learned cosine scale",
            "98.1 / 98.9 / 93.8 / 98.5 (Vinyals et al. 2016)"),
        Row("omniglot_paper/matching_60way_scale10", "Matching Networks, 60-way episodes, cosine × 10, best validation",
            "98.1 / 98.9 / 93.8 / 98.5 (Vinyals et al. 2016)"),
        Row("omniglot_paper/matching", "Matching Networks, plain cosine", "98.1 / 98.9 / 93.8 / 98.5 (Vinyals et al. 2016)",
            98.1),
        Row("omniglot_paper/memory_matching_20way", "Memory Matching Networks, 20-way episodes, fresh-slot writes",
            "99.28 at 5w1s (Cai et al. 2018)"),
        Row("omniglot_paper/metanet_20way", "Meta Networks, 20-way episodes",
            "98.95 at 5w1s, 97.00 at 20w1s (Munkhdalai & Yu 2017)"),
        Row("omniglot_paper/metanet_20way_trainval", "Meta Networks, 20-way episodes, the paper's 1,200 training characters",
            "98.95 at 5w1s, 97.00 at 20w1s (Munkhdalai & Yu 2017)", 97.0, tta_at="20w1s"),
        Row("omniglot_paper/maml_paper", "MAML, the paper's recipe and network (second order), 9,000 steps",
            "98.7 / 99.9 / 95.8 / 98.9 (Finn et al. 2017)", 98.7),
        Row("omniglot_paper/maml_20way", "MAML, the paper's 20-way recipe (second order), 5,000 steps",
            "98.7 / 99.9 / 95.8 / 98.9 (Finn et al. 2017)", 95.8, tta_at="20w1s"),
        Row("omniglot_paper/linear_probe", "linear probe", "86.0 / 97.6 / 72.9 / 92.3 (baseline classifier, Vinyals et al.; a floor)"),
        Row("omniglot_paper/mann_lru", "MANN (LRUA), set scoring", "–"),
        Row("omniglot_paper/mann_spread", "MANN (LRUA), spread labels, set scoring", "–"),
        Row("omniglot_paper/lstm", "LSTM, set scoring", "–"),
        Row("omniglot_paper/lstm_spread", "LSTM, spread labels, set scoring", "–"),
    ], note_header="paper (5w1s / 5w5s / 20w1s / 20w5s)", budget=True, tta="5w1s"),
    "omniglot_sequence": Table([("seq", SEQ5)], [
        Row("omniglot_paper/mann_lru", "MANN (LRUA), 100,000 episodes"),
        Row("omniglot_paper/mann_lru_500k", "MANN (LRUA), 500,000 episodes"),
        Row("omniglot_paper/mann_lru_900k", "MANN (LRUA), 900,000 episodes"),
        Row("omniglot_paper/lstm", "LSTM, 100,000 episodes"),
    ], kind="sequence", presentations=PRES5, fixed=[
        _paper5("MANN, Santoro et al. 2016, Table 1", "36.4 / 82.8 / 91.0 / 92.6 / 94.9 / 98.1"),
        _paper5("LSTM, Santoro et al. 2016, Table 1", "24.4 / 49.5 / 55.3 / 61.0 / 63.6 / 62.5"),
        _paper5("MANN, snowkylin/ntm (1.6 M episodes)", "35.6 / 88.8 / 95.0 / 96.5 / 97.3 / 97.6"),
    ]),
    "omniglot_within_alphabet": Table([
        ("20w1s", Want(20, 1, 2026, n_query=1, within_group=True, data_options={"rotations": False})),
    ], [
        Row("omniglot_paper/protonet_7000", "ProtoNet (7,000 steps), trained on `vinyals/train`, scored on the 12 alphabets of `vinyals/test`"),
        Row("omniglot_paper/protonet", "ProtoNet (2,500 steps), trained on `vinyals/train`, scored on the 12 alphabets of `vinyals/test`"),
        Row("omniglot_paper/background_only", "ProtoNet, trained on the background set, scored on the 20 evaluation alphabets (Lake et al.'s protocol)"),
        Row("omniglot_paper/background_within56", "ProtoNet, trained on the background set on within-alphabet 20-way episodes at 56×56, scored on the 20 evaluation alphabets (Lake et al.'s protocol)"),
        Row("omniglot_paper/background_aug", "ProtoNet, trained on the background set with affine distortions (6,000 steps), scored on the 20 evaluation alphabets (Lake et al.'s protocol)"),
    ]),
    "memory_5class": Table([("seq", SEQ5)], [
        Row("omniglot_paper/mann_lru", "MANN (LRUA), 20 label units"),
        Row("omniglot_paper/nutm_lru", "NUTM (LRUA, p = 2), 5 label units"),
        Row("omniglot_paper/nutm_lru_maxway20", "NUTM (LRUA, p = 2), 20 label units"),
        Row("omniglot_paper/mann_dnc", "MANN, DNC core, 5 label units"),
    ], kind="sequence", presentations=PRES5, fixed=[
        ["MANN (LRUA), Le et al. 2020's re-run", "–", "82.3", "88.7", "–", "92.3", "–", "–"],
        ["NUTM (LRUA, p = 2), Le et al. 2020", "–", "85.7", "91.3", "–", "95.5", "–", "–"],
    ]),
    "memory_5class_paired": Paired([
        ("omniglot_paper/mann_lru", Row("omniglot_paper/nutm_lru", "NUTM (LRUA, p = 2), 5 label units")),
        ("omniglot_paper/mann_lru", Row("omniglot_paper/nutm_lru_maxway20", "NUTM (LRUA, p = 2), 20 label units")),
        ("omniglot_paper/mann_lru", Row("omniglot_paper/mann_dnc", "MANN, DNC core")),
    ], SEQ5, [1, 2, 3, 4, 5], plot="docs/results/memory_fewshot_paired_5class.png"),
    "memory_5class_long": Table([("seq", SEQ5)], [
        Row("omniglot_paper/mann_lru_300k", "MANN (LRUA), 300,000 episodes"),
        Row("omniglot_paper/nutm_lru_maxway20_300k", "NUTM (LRUA, p = 2), 300,000 episodes"),
        Row("omniglot_paper/mann_lru_500k", "MANN (LRUA), 500,000 episodes"),
        Row("omniglot_paper/nutm_lru_maxway20_500k", "NUTM (LRUA, p = 2), 500,000 episodes"),
        Row("omniglot_paper/mann_lru_900k", "MANN (LRUA), 900,000 episodes"),
    ], kind="sequence", presentations=PRES5),
    "memory_5class_long_paired": Paired([
        ("omniglot_paper/mann_lru_500k", Row("omniglot_paper/nutm_lru_maxway20_500k", "NUTM − MANN, 500,000 episodes")),
    ], SEQ5, [1, 2, 3, 4, 5]),
    "memory_10class": Table([("seq", SEQ10)], [
        Row("omniglot_paper/mann_lru_10way", "MANN (LRUA)"),
        Row("omniglot_paper/nutm_lru_10way", "NUTM (LRUA, p = 3)"),
        Row("omniglot_paper/mann_dnc_10way", "MANN, DNC core"),
    ], kind="sequence", presentations=PRES10, fixed=[
        LE_MANN_10,
        LE_NUTM_10,
    ]),
    "memory_curriculum": Table([("seq", SEQ10)], [
        Row("omniglot_paper/mann_lru_10way_curriculum", "MANN (LRUA), seed 0"),
        Row("omniglot_paper/nutm_lru_10way_curriculum", "NUTM (LRUA, p = 2), seed 0"),
        Row("omniglot_paper/mann_lru_10way_curriculum_seed1", "MANN (LRUA), seed 1"),
        Row("omniglot_paper/nutm_lru_10way_curriculum_seed1", "NUTM (LRUA, p = 2), seed 1"),
    ], kind="sequence", presentations=PRES10, fixed=[
        LE_NUTM_10,
    ]),
    "memory_curriculum_paired": Paired([
        ("omniglot_paper/mann_lru_10way_curriculum", Row("omniglot_paper/nutm_lru_10way_curriculum", "NUTM − MANN, seed 0")),
        ("omniglot_paper/mann_lru_10way_curriculum_seed1",
         Row("omniglot_paper/nutm_lru_10way_curriculum_seed1", "NUTM − MANN, seed 1")),
    ], SEQ10, [1, 2, 3, 4, 5, 8], over_seeds=True),
    "two_view_sum": SeedPairs("results/two_view/sum_eval/results.json", [
        (str(i), f"results/two_view/dcman_sum_s{i}", f"results/two_view/dmnc_sum_s{i}") for i in range(3)
    ], ("training seed", "one memory", "DMNC", "DMNC − one memory, paired over the 1,000 pairs")),
    "two_view_sum_12k": SeedPairs("results/two_view/sum_12k_eval/results.json", [
        (str(i), f"results/two_view/dcman_sum_12k_s{i}", f"results/two_view/dmnc_sum_12k_s{i}") for i in range(3)
    ], ("training seed", "one memory", "DMNC", "DMNC − one memory, paired over the 1,000 pairs")),
    "nutm_10class_long": Table([("seq", SEQ10)], [
        Row("omniglot_paper/mann_lru_10way_long_s0", "MANN (LRUA), seed 0"),
        Row("omniglot_paper/nutm_lru_10way_long_s0", "NUTM (LRUA, p = 3), seed 0"),
        Row("omniglot_paper/mann_lru_10way_long_s1", "MANN (LRUA), seed 1"),
        Row("omniglot_paper/nutm_lru_10way_long_s1", "NUTM (LRUA, p = 3), seed 1"),
    ], kind="sequence", presentations=PRES10, fixed=[
        LE_MANN_10,
        LE_NUTM_10,
    ]),
    "nutm_10class_long_paired": Paired([
        ("omniglot_paper/mann_lru_10way_long_s0", Row("omniglot_paper/nutm_lru_10way_long_s0", "NUTM − MANN, seed 0")),
        ("omniglot_paper/mann_lru_10way_long_s1", Row("omniglot_paper/nutm_lru_10way_long_s1", "NUTM − MANN, seed 1")),
    ], SEQ10, PRES10, over_seeds=True),
    "mini_imagenet": Table([(f"5w{k}s", Want(5, k, 1234)) for k in (1, 5)], [
        Row("mini_imagenet/protonet_conv4", "ProtoNets, Conv-4-64", "49.42 / 68.20 (Snell et al. 2017)"),
        Row("mini_imagenet/matching_scale10_conv4", "Matching Networks, cosine × 10, Conv-4-64", "43.56 / 55.31 (Vinyals et al. 2016)"),
        Row("mini_imagenet/memory_matching_conv4", "Memory Matching Networks, Conv-4-64", "53.37 / 66.97 (Cai et al. 2018)"),
        Row("mini_imagenet/maml_conv4_32", "MAML, second order, Conv-4-32", "48.70 / 63.11 (Finn et al. 2017)"),
        Row("mini_imagenet/metanet_conv4", "Meta Networks, Conv-4", "49.21 / – (Munkhdalai & Yu 2017)"),
        Row("mini_imagenet/probe_conv4", "pretrain + probe, Conv-4-64", "–"),
        Row("mini_imagenet/probe_resnet12", "pretrain + probe, ResNet-12", "62.02 / 79.64 (Tian et al. 2020)"),
    ], note_header="paper (5w1s / 5w5s)", budget=True),
    "readme_spread": SpreadTable(),
    "vs_easyfsl": VersusTable(),
    "vs_easyfsl_early": VersusTable(VERSUS_EARLY),
    "readme_band_left": SpreadBand("left"),
    "readme_band_plateau": SpreadBand("plateau"),
    "readme_band_shapes": SpreadBand("shapes"),
    "readme_band_cpu": SpreadBand("cpu"),
    "readme_mann_500k": Value("omniglot_paper/mann_lru_500k", SEQ5, [2, 3, 5, 10]),
    "learners_minimal": FileTable(
        [f"docs/results/omniglot_table/{f}.json" for f in ("set_learners_5way", "any_way_learners_20way", "mann_lstm_5way")],
        [("5-way 1-shot", Want(5, 1, 2026, episodes=400)), ("5-way 5-shot", Want(5, 5, 2026, episodes=400)),
         ("20-way 1-shot", Want(20, 1, 2026, n_query=5, episodes=400))],
        [("protonet", "protonet [protonet]", "300 steps × one 60-way episode"),
         ("matching", "matching [matching]", "300 steps × 4 episodes"),
         ("matching (FCE)", "matching [matching_fce]", "300 steps × 4 episodes"),
         ("memory_matching (LRU)", "memory_matching [memory_matching]", "300 steps × 4 episodes"),
         ("metanet", "metanet [metanet]", "300 steps × 4 episodes"),
         ("maml (2nd order)", "maml [maml]", "300 steps × 32 episodes"),
         ("linear_probe", "linear_probe [linear_probe]", "300 steps × 4 30-way episodes"),
         ("mann (LRU)", "mann [mann_lru_a]", "6,250 steps × 16 sequences"),
         ("lstm", "lstm [lstm_100k]", "6,250 steps × 16 sequences")],
        "training budget"),
}


# --- pages ------------------------------------------------------------------------------

def render_text(text: str, root: Path, where: str = "text") -> str:
    """``text`` with every marked block rebuilt."""
    def sub(m: re.Match[str]) -> str:
        kind, name = m.group(2), m.group(3)
        if name not in BLOCKS:
            raise RenderError(f"{where}: unknown {kind} {name!r} (known: {', '.join(BLOCKS)})")
        body = BLOCKS[name].render(root)
        return f"{m.group(1)}\n{body}\n{m.group(5)}" if kind == "table" else f"{m.group(1)}{body}{m.group(5)}"

    return BLOCK.sub(sub, text)


def stale(root: Path = REPO, pages: tuple[str, ...] = PAGES) -> dict[str, list[str]]:
    """``{page: [names of the blocks whose text differs from a fresh rendering]}``."""
    out: dict[str, list[str]] = {}
    for page in pages:
        path = root / page
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        fresh = render_text(text, root, page)
        old = {m.group(3): m.group(0) for m in BLOCK.finditer(text)}
        new = {m.group(3): m.group(0) for m in BLOCK.finditer(fresh)}
        bad = [k for k in old if old[k] != new.get(k)]
        if bad:
            out[page] = bad
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is out of date")
    ap.add_argument("--root", type=Path, default=REPO, help="the repository (default: this one)")
    args = ap.parse_args(argv)
    try:
        if args.check:
            bad = stale(args.root)
            for page, names in bad.items():
                print(f"{page}: out of date: {', '.join(names)} (run python scripts/render_tables.py)")
            return 1 if bad else 0
        from metamem.files import write_text

        for page in PAGES:
            path = args.root / page
            if path.is_file():
                text = path.read_text(encoding="utf-8")
                fresh = render_text(text, args.root, page)
                if fresh != text:
                    write_text(path, fresh)
                    print(f"rewrote {page}")
    except RenderError as e:
        print(f"render_tables: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
