"""The results tables of docs/results/*.md and README.md are generated from the committed
runs' scores (scripts/render_tables.py), and the commands printed under them reproduce them
as written from a fresh clone."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs" / "results").glob("*.md"))
FENCE = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)


@pytest.fixture
def render(load_script: Callable[[str], ModuleType]) -> ModuleType:
    return load_script("render_tables")


def test_every_table_matches_the_committed_scores(render: ModuleType) -> None:
    assert render.stale(ROOT) == {}, "run python scripts/render_tables.py"
    names = {m.group(3) for p in render.PAGES for m in render.BLOCK.finditer((ROOT / p).read_text())}
    assert names == set(render.BLOCKS), "every defined table is on a page, and only those"


def _copy_runs(dest: Path, group: str) -> None:
    """results/<group> without weights and plots (empty weight files where there are some)."""
    src = ROOT / "results" / group
    shutil.copytree(src, dest / "results" / group, ignore=shutil.ignore_patterns("*.pt", "*.png"))
    for pt in src.glob("*/checkpoints/last.pt"):
        (dest / pt.relative_to(ROOT)).write_bytes(b"")


def test_a_changed_score_or_a_missing_evaluation_is_caught(render: ModuleType, tmp_path: Path, capsys) -> None:
    _copy_runs(tmp_path, "mini_imagenet")
    page = tmp_path / "docs" / "results" / "mini_imagenet.md"
    page.parent.mkdir(parents=True)
    page.write_text((ROOT / "docs" / "results" / "mini_imagenet.md").read_text())
    assert render.stale(tmp_path) == {}
    # one committed mean changes: that table is out of date, and rendering shows the new value
    f = tmp_path / "results" / "mini_imagenet" / "protonet_conv4" / "eval.json"
    doc = json.loads(f.read_text())
    score = doc[0]["scores"]["set"]  # every episode shifted: the mean moves, the interval stays
    shift = 0.4321 - score["mean"]
    score["per_episode"] = [v + shift for v in score["per_episode"]]
    from metamem.evaluation import Score

    score.update(Score.from_dict(score).to_dict())  # stored mean and ci95 agree with the episodes
    f.write_text(json.dumps(doc))
    assert render.stale(tmp_path) == {"docs/results/mini_imagenet.md": ["mini_imagenet"]}
    assert render.main(["--check", "--root", str(tmp_path)]) == 1
    assert "docs/results/mini_imagenet.md: out of date: mini_imagenet" in capsys.readouterr().out
    assert render.main(["--root", str(tmp_path)]) == 0
    assert "| 43.21 ± 0.40 | 39.34 ± 0.48 |" in page.read_text()
    assert render.stale(tmp_path) == {}
    # a row whose weights go away gets its re-training command
    (tmp_path / "results" / "mini_imagenet" / "probe_conv4" / "checkpoints" / "last.pt").unlink()
    assert render.stale(tmp_path) == {"docs/results/mini_imagenet.md": ["mini_imagenet"]}
    render.main(["--root", str(tmp_path)])
    assert ("metamem train results/mini_imagenet/probe_conv4/config.yaml --out runs/retrain/probe_conv4"
            in page.read_text())
    # an evaluation the table needs is gone: one line naming the row and the protocol
    (tmp_path / "results" / "mini_imagenet" / "metanet_conv4" / "eval_5shot" / "results.json").unlink()
    assert render.main(["--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("render_tables: error: results/mini_imagenet/metanet_conv4 holds no evaluation of 5-way "
                   "5-shot, 15 queries, 1000 episodes, seed 1234, set scoring; score it (the table's "
                   "command) or drop the row from the table")


# --- the printed commands -----------------------------------------------------------------

def commands(page: Path) -> list[str]:
    """Every metamem / python command of the page's bash blocks, continuation lines joined."""
    out = []
    for block in FENCE.findall(page.read_text(encoding="utf-8")):
        for line in block.replace("\\\n", " ").splitlines():
            line = " ".join(line.split())
            if line.startswith(("metamem ", "python ", "METAMEM_DATA=")):
                out.append(line)
    return out


def unquoted_brackets(line: str) -> list[str]:
    """Characters a shell would glob or brace-expand outside quotes (``[``, ``]``, ``{``, ``}``)."""
    quote, bad = "", []
    for ch in line:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[]{}":
            bad.append(ch)
    return bad


def _eval_protocol(words: list[str]) -> dict[str, Any]:
    import yaml

    out = {}
    for w in words:
        key, sep, value = w.partition("=")
        if sep and key.startswith("eval."):
            v = yaml.safe_load(value)
            out[key.removeprefix("eval.")] = sorted(v) if isinstance(v, list) else [v]
    return out


def check_command(line: str) -> list[str]:
    """What is wrong with one printed command (empty: nothing)."""
    problems = []
    if "../" in line:
        problems.append("a relative path above the repository (../)")
    if unquoted_brackets(line):
        problems.append("unquoted brackets or braces (quote the whole key=value)")
    words = shlex.split(line)
    if words[:2] not in (["metamem", "eval"], ["metamem", "train"]):
        return problems
    out = words[words.index("--out") + 1] if "--out" in words else None
    if out is None:
        problems.append("no --out (it would write into the run directory)")
    elif Path(out).as_posix().startswith("results/") or not out.startswith("runs/"):
        problems.append(f"--out {out} is not under runs/")
    if words[1] == "train":
        if not (ROOT / words[2]).is_file():
            return problems + [f"{words[2]} does not exist"]
        from metamem.config import load_config

        overrides = [w for w in words[3:] if "=" in w and not w.startswith("-")]
        try:  # the committed config, with the command's overrides, is a valid experiment
            load_config(ROOT / words[2], overrides)
        except ValueError as e:
            problems.append(f"{words[2]} does not load: {e}")
        return problems
    run = words[2]
    if not (out or "").startswith("runs/rescore/") or not run.startswith(("results/", "runs/retrain/")):
        return problems  # not a table row's re-score (a run the page trains, a planned sweep)
    if run.startswith("runs/retrain/"):  # scored after re-training: the committed scores of that row
        run = next(str(p.relative_to(ROOT)) for p in (ROOT / "results").glob(f"*/{Path(run).name}"))
    sub = Path(out).name if out else ""
    file = ROOT / run / ("eval.json" if sub == "eval_train" else f"{sub}/results.json")
    if not file.is_file():
        return problems + [f"{file.relative_to(ROOT)} (the scores it reproduces) does not exist"]
    doc = json.loads(file.read_text(encoding="utf-8"))
    results = doc["results"] if isinstance(doc, dict) else doc
    got = _eval_protocol(words)
    for key in ("n_way", "k_shot", "n_query", "episodes", "seed"):
        want = sorted({r["protocol"][key] for r in results})
        if got.get(key) != want:
            problems.append(f"eval.{key}={got.get(key)} but {file.relative_to(ROOT)} used {want}")
    return problems


def test_check_command_catches_each_mistake() -> None:
    good = ("metamem eval results/omniglot_paper/protonet 'eval.n_way=[5,20]' 'eval.k_shot=[1,5]' "
            "eval.n_query=15 eval.episodes=1000 eval.seed=2026 eval.protocol=set --out runs/rescore/protonet/eval")
    assert check_command(good) == []
    assert check_command(good.replace("eval.seed=2026", "eval.seed=7")) == [
        "eval.seed=[7] but results/omniglot_paper/protonet/eval/results.json used [2026]"]
    assert check_command(good.replace("'eval.n_way=[5,20]'", "eval.n_way=[5,20]")) == [
        "unquoted brackets or braces (quote the whole key=value)"]
    assert check_command(good.replace("runs/rescore/protonet/eval", "results/omniglot_paper/protonet/eval")) == [
        "--out results/omniglot_paper/protonet/eval is not under runs/"]
    assert "a relative path above the repository (../)" in check_command(
        "metamem prepare omniglot --from ../shared/data/omniglot/full")
    train = "metamem train results/omniglot_paper/matching/config.yaml --out runs/retrain/matching --threads 1"
    assert check_command(train) == []
    (bad,) = check_command(train.replace(" --out", " train.stepz=5 --out"))
    assert bad.startswith("results/omniglot_paper/matching/config.yaml does not load:") and "stepz" in bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_printed_commands_reproduce_their_tables_as_written(page: Path) -> None:
    found = commands(page)
    assert found, f"{page.name} prints no command"
    problems = [f"{page.name}: {c[:90]}...: {p}" for c in found for p in check_command(c)]
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_a_printed_rescore_command_gives_the_committed_figures(tmp_path: Path, monkeypatch) -> None:
    """The within-alphabet ProtoNet row, re-scored by the command printed under its table, in
    a copy of the repository's run (as a fresh clone would hold it), matches its results.json."""
    import metamem
    from metamem.cli.main import main
    from metamem.data.paths import data_root

    try:
        metamem.load_dataset("omniglot", split="vinyals/test", image_size=28)
    except (ValueError, FileNotFoundError) as e:
        pytest.skip(f"the full Omniglot is not prepared in {data_root()} (metamem prepare omniglot): {e}")
    line = next(c for c in commands(ROOT / "docs" / "results" / "omniglot_paper.md")
                if c.startswith("metamem eval results/omniglot_paper/protonet_7000 ") and "within_group" in c)
    shutil.copytree(ROOT / "results" / "omniglot_paper" / "protonet_7000",
                    tmp_path / "results" / "omniglot_paper" / "protonet_7000")
    monkeypatch.chdir(tmp_path)
    assert main([*shlex.split(line)[1:], "--no-progress", "--no-plots"]) == 0
    (new,) = json.loads((tmp_path / "runs/rescore/protonet_7000/eval_within_alphabet/results.json").read_text())["results"]
    (old,) = json.loads((ROOT / "results/omniglot_paper/protonet_7000/eval_within_alphabet/results.json").read_text())["results"]
    assert new["fingerprint"] == old["fingerprint"]
    assert abs(new["scores"]["set"]["mean"] - old["scores"]["set"]["mean"]) <= 0.0005  # 0.05 points


def test_readme_spread_covers_the_matrix_and_its_bands_cover_every_run(render: ModuleType) -> None:
    """The README main job was measured on >= 5 seeds x 1 and 2 threads x AVX2 and AVX-512
    kernels, and the bands the README quotes (and its test checks) hold every measured run:
    its accuracy in the band of its plateau state, its shapes score and CPU time in theirs."""
    runs = json.loads((ROOT / render.SPREAD).read_text())["runs"]
    cells = {(r["seed"], r["threads"], r["kernels"]) for r in runs}
    seeds = {s for s, _, _ in cells}
    assert len(seeds) >= 5 and all((s, t, k) in cells for s in seeds for t in (1, 2) for k in ("avx2", "avx512"))

    def band(name: str) -> tuple[float, float]:
        c, h = map(float, re.findall(r"[\d.]+", render.BLOCKS[name].render(ROOT)))
        return c - h, c + h

    for r in runs:
        lo, hi = band("readme_band_left" if r["left_plateau"] else "readme_band_plateau")
        assert lo <= r["acc"] <= hi, r
        assert r["left_plateau"] == (r["second"] > r["first"]), r
        lo, hi = band("readme_band_shapes")
        assert lo <= r["shapes"] <= hi, r
        lo, hi = map(int, render.BLOCKS["readme_band_cpu"].render(ROOT).split("–"))
        assert r["threads"] != 1 or lo <= r["cpu_s"] <= hi, r


def test_readme_spread_records_round_trip_and_a_bad_file_is_named(load_script, tmp_path: Path) -> None:
    spread = load_script("readme_spread")
    runs = json.loads((ROOT / "results" / "readme_spread" / "spread.json").read_text())["runs"]
    out = tmp_path / "sub" / "spread.json"
    spread.save(out, runs[::-1])
    assert spread.load(out) == sorted(runs, key=lambda r: (r["kernels"], r["threads"], r["seed"]))
    assert spread.load(tmp_path / "missing.json") == []
    out.write_text('{"runs": 3}')
    with pytest.raises(SystemExit, match=r"spread.json: expected \{'runs': \[...\]\}; move the file away"):
        spread.load(out)


def test_easyfsl_comparison_is_complete_and_supports_what_the_page_says(render: ModuleType) -> None:
    """results/vs_easyfsl: both learners, >= 3 seeds, every budget up to >= 8 CPU-minutes; at
    every budget metamem's default ProtoNet scores above easyfsl's on the mean over seeds, up
    to 4 CPU-minutes every seed above every seed (docs/benchmarks_training.md says so), and
    metamem trains more episodes."""
    points = render.versus_points(ROOT)
    seeds = {p["seed"] for p in points}
    budgets = sorted({p["budget_cpu_min"] for p in points})
    assert len(seeds) >= 3 and max(budgets) >= 8
    for b in budgets:
        cells = {k: [p for p in points if p["learner"] == k and p["budget_cpu_min"] == b] for k in ("metamem", "easyfsl")}
        assert all({p["seed"] for p in c} == seeds for c in cells.values()), b
        if b <= 4:
            assert min(p["accuracy"] for p in cells["metamem"]) > max(p["accuracy"] for p in cells["easyfsl"]), b
        assert render.versus_cell(points, "metamem", b)[0] > render.versus_cell(points, "easyfsl", b)[0], b
        assert render.versus_cell(points, "metamem", b)[3] > render.versus_cell(points, "easyfsl", b)[3]
    assert min(budgets) <= 0.125
    text = (ROOT / "docs" / "benchmarks_training.md").read_text()
    assert "ahead of easyfsl's at every budget" in text
    assert "86.27 against 77.04" in text and "98.50 against 98.42" in text
    assert f"{render.versus_cell(points, 'metamem', 0.125)[0]:.2f}" == "86.27"
    assert f"{render.versus_cell(points, 'easyfsl', 8)[0]:.2f}" == "98.42"



def test_the_early_easyfsl_ablation_supports_what_the_page_says(render: ModuleType) -> None:
    """results/vs_easyfsl/early_points.json: at 0.125 and 0.25 CPU-minutes every seed of the
    default (warm running statistics) is above every seed of the cold-statistics ablation and
    of easyfsl, and the default is above easyfsl at every budget."""
    points = render.versus_points(ROOT, render.VERSUS_EARLY)
    assert {p["learner"] for p in points} == {"metamem", "metamem-coldbn", "metamem-separate", "easyfsl"}
    assert len({p["seed"] for p in points}) >= 3

    def accs(learner: str, budget: float) -> list[float]:
        return [p["accuracy"] for p in points if p["learner"] == learner and p["budget_cpu_min"] == budget]

    for b in sorted({p["budget_cpu_min"] for p in points}):
        assert min(accs("metamem", b)) > max(accs("easyfsl", b)), b
        if b <= 0.25:
            assert min(accs("metamem", b)) > max(accs("metamem-coldbn", b)), b
    text = (ROOT / "docs" / "benchmarks_training.md").read_text()
    assert "76.91 → 85.44 % after 0.125" in text and "88.37 → 90.65 % after 0.25" in text
    assert f"{render.versus_cell(points, 'metamem-coldbn', 0.125)[0]:.2f}" == "76.91"
    assert f"{render.versus_cell(points, 'metamem', 0.125)[0]:.2f}" == "85.44"


def test_every_omniglot_row_has_its_cpu_minutes_to_the_paper(render: ModuleType) -> None:
    """The time-to-accuracy column: measured (time_to_accuracy.json, here or in the run a row
    continues), or "not reached" for a row whose own score stays under the paper − 1.5;
    never "not measured"."""
    table = render.BLOCKS["omniglot_nway"]
    text = table.render(ROOT)
    rows = {line.split("(`")[1].split("`)")[0]: line for line in text.splitlines() if line.startswith("| ") and "(`" in line}
    assert len(rows) == len(table.rows)
    for row in table.rows:
        cell = rows[row.run.split("/")[1]].split(" | ")[6]
        if row.note == "–":
            assert cell == "–"
            continue
        assert "not measured" not in cell, row.run
        at = row.tta_at or table.tta  # a 20-way row's cell is at 20w1s, and says so
        where = "" if at == table.tta else f" at {at}"
        acc = render.find(ROOT, row.run, dict(table.columns)[at])[1]["scores"]["set"]["mean"] * 100
        if cell.startswith("not reached"):
            assert row.paper_tta is not None and acc < row.paper_tta - 1.5, row.run
            if not (ROOT / "results" / (row.tta_from or row.run) / "time_to_accuracy.json").is_file():
                assert f"({acc:.1f}%{where} at the end)" in cell, row.run
        else:
            source = row.tta_from or row.run
            hit = json.loads((ROOT / "results" / source / "time_to_accuracy.json").read_text())["reached"][at]
            assert cell.startswith(f"{hit['cpu_min']:.0f} ({hit['target']:.1f}%{where} at step {hit['step']:,})"), row.run


def test_paired_mean_over_seeds_is_the_t_interval_of_the_seed_rows(render: ModuleType) -> None:
    """The over-seeds row of a paired table: the mean of the per-seed differences, with the
    Student-t 95 % half-width over seeds (two seeds: t = 12.706 times half their spread)."""
    seq = render.Want(10, 8, 2026, n_query=0, scoring="sequence")
    pairs = [("omniglot_paper/mann_lru_10way_curriculum", render.Row("omniglot_paper/nutm_lru_10way_curriculum", "s0")),
             ("omniglot_paper/mann_lru_10way_curriculum_seed1",
              render.Row("omniglot_paper/nutm_lru_10way_curriculum_seed1", "s1"))]
    text = render.Paired(pairs, seq, [2, 5], over_seeds=True).render(ROOT)

    def cells(prefix: str) -> list[str]:
        (line,) = [ln for ln in text.splitlines() if ln.startswith(prefix)]
        return [c.strip() for c in line.strip("|").split("|")]

    def number(cell: str) -> tuple[float, float]:
        mean, half = cell.replace("*", "").replace("−", "-").split(" ± ")
        return float(mean), float(half)

    s0, s1, mean = cells("| s0 "), cells("| s1 "), cells("| **mean over the 2 seeds**")
    for col in (1, 2, 3):  # all steps, 2nd, 5th
        a, b = number(s0[col])[0], number(s1[col])[0]
        m, half = number(mean[col])
        assert m == pytest.approx((a + b) / 2, abs=0.011)
        assert half == pytest.approx(12.706 * abs(a - b) / 2, abs=0.02 * 12.706)
    assert "--pairs" in text and text.count("metamem compare") == 3
    with pytest.raises(render.RenderError, match="at least two pairs"):
        render.Paired(pairs[:1], seq, [2], over_seeds=True).render(ROOT)
