"""export_run: a shareable, re-scorable copy of a run directory; learning curves from metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from metamem import load_run
from metamem.evaluation import parse_sweep, sweep
from metamem.evaluation.plots import learning_curve, plot_learning_curves
from metamem.runs import load_checkpoint, read_metrics
from metamem.training import train
from metamem.training.export import ExportError, export_run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from metamem.config import load_config

    cfg = load_config(REPO / "experiments" / "smoke" / "synthetic_lstm.yaml",
                      ["train.steps=6", "train.val_every=3", "train.log_every=3",
                       "train.checkpoint_every=3", "eval.episodes=4"])
    run = tmp_path_factory.mktemp("runs") / "lstm"
    train(cfg, run, progress=False)
    return run


def test_export_keeps_weights_drops_state_and_paths(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dest = export_run(trained, Path("results") / "row")
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "checkpoints/last.pt", "config.yaml", "eval.json", "metrics.jsonl"]
    ck = load_checkpoint(dest, "last")
    orig = load_checkpoint(trained, "last")
    assert not {"optimizer", "scheduler", "sampler", "rng", "accum"} & ck.keys()
    assert ck["model"].keys() == orig["model"].keys()
    assert all(torch.equal(ck["model"][k], orig["model"][k]) for k in ck["model"])
    assert read_metrics(dest / "metrics.jsonl") == read_metrics(trained / "metrics.jsonl")
    assert yaml.safe_load((dest / "config.yaml").read_text()) == orig["config"]
    text = "".join(p.read_text() for p in dest.iterdir() if p.is_file())
    assert str(tmp_path) not in text and str(trained) not in text
    assert json.loads((dest / "eval.json").read_text())[0]["source"] == "results/row"
    # re-scorable from the copy: the same learner scores the same episodes alike
    learner = load_run(dest, device="cpu").learner
    assert learner.state_dict().keys() == orig["model"].keys()
    (a,) = sweep([dest], parse_sweep(["eval.episodes=3", "eval.seed=5", "device=cpu"]))
    (b,) = sweep([trained / "checkpoints" / "last.pt"],
                 parse_sweep(["eval.episodes=3", "eval.seed=5", "device=cpu"]))
    assert a.fingerprint == b.fingerprint and a.mean == b.mean


def test_export_refusals(trained, tmp_path):
    dest = export_run(trained, tmp_path / "row")
    with pytest.raises(ExportError, match="already exists; pass overwrite=True"):
        export_run(trained, dest)
    with pytest.raises(ExportError, match=r"above the limit of 0.00 MiB \(largest: checkpoints/last.pt"):
        export_run(trained, tmp_path / "small", max_bytes=100)
    assert not (tmp_path / "small").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["row"]  # no temporary folder left behind
    # a machine path in the config: data.options.root is dropped, anything else is refused
    ck = torch.load(trained / "checkpoints" / "last.pt", weights_only=True)
    ck["config"]["data"]["options"]["root"] = "/home/someone/data"
    run2 = tmp_path / "run2"
    (run2 / "checkpoints").mkdir(parents=True)
    torch.save(ck, run2 / "checkpoints" / "last.pt")
    out = export_run(run2, tmp_path / "row2")
    assert "root" not in yaml.safe_load((out / "config.yaml").read_text())["data"]["options"]
    ck["config"]["eval"]["split"] = "/tmp/elsewhere"
    torch.save(ck, run2 / "checkpoints" / "last.pt")
    with pytest.raises(ExportError, match="key eval.split holds a path of this machine"):
        export_run(run2, tmp_path / "row3")


def test_learning_curve_and_plot(trained, tmp_path):
    records = read_metrics(trained / "metrics.jsonl")
    c = learning_curve(records)
    assert c["step"] == [3.0, 6.0] and len(c["val_acc"]) == 2
    assert c["val_wall_s"] == c["wall_s"] and all(v >= 0 for v in c["cpu_s"])
    out = plot_learning_curves({"lstm": records}, tmp_path / "curves.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no runs given"):
        plot_learning_curves({}, tmp_path / "x.png")
    one = plot_learning_curves({"lstm": records}, tmp_path / "steps.png", x=("step",))
    with Image.open(out) as two_panels, Image.open(one) as one_panel:  # one panel: a narrower figure
        assert one_panel.width < two_panels.width and one_panel.height == two_panels.height


def test_past_ten_runs_the_curves_differ_by_marker_and_dash(trained, tmp_path, monkeypatch):
    """Colours repeat after 10 runs (matplotlib's cycle): the 11th run's lines share the 1st
    run's colour, so they are dashed and their validation markers are squares."""
    from matplotlib.axes import Axes

    records = read_metrics(trained / "metrics.jsonl")
    seen: dict[str, dict] = {}
    real = Axes.plot

    def plot(self, *args, **kw):
        seen.setdefault(kw.get("label", ""), kw)
        return real(self, *args, **kw)

    monkeypatch.setattr(Axes, "plot", plot)
    plot_learning_curves({f"run{i}": records for i in range(11)}, tmp_path / "many.png", x=("step",))
    first, eleventh = seen["run0 (val)"], seen["run10 (val)"]
    assert first["color"] == eleventh["color"] == "C0"
    assert (first["marker"], first["ls"]) == ("o", "-") and (eleventh["marker"], eleventh["ls"]) == ("s", "--")
    assert seen["run10 (train)"]["ls"] == "--" and seen["run9 (train)"]["ls"] == "-"


def test_learning_curve_joins_resumed_segments():
    """A resumed process logs times from zero again: the curve lays segments end to end."""
    recs = [
        {"step": 10, "acc": 0.5, "elapsed_s": 5.0, "cpu_s": 4.0},
        {"step": 20, "acc": 0.6, "elapsed_s": 9.0, "cpu_s": 8.0},
        {"step": 20, "val_acc": 0.55},
        {"step": 30, "acc": 0.7, "elapsed_s": 3.0, "cpu_s": 2.5},  # resumed after step 20
        {"step": 40, "acc": 0.8, "elapsed_s": 6.0, "cpu_s": 5.0},
        {"step": 40, "val_acc": 0.75},
    ]
    c = learning_curve(recs)
    assert c["wall_s"] == [5.0, 9.0, 12.0, 15.0] and c["cpu_s"] == [4.0, 8.0, 10.5, 13.0]
    assert c["val_wall_s"] == [9.0, 15.0] and c["val_cpu_s"] == [8.0, 13.0]


def test_script_export_and_curves(trained, tmp_path):
    script = REPO / "scripts" / "omniglot_paper.py"
    env_run = [sys.executable, str(script)]
    r = subprocess.run(env_run + ["export", str(trained), str(tmp_path / "row")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "MiB" in r.stdout
    r = subprocess.run(env_run + ["curves", f"lstm={tmp_path / 'row'}", "--out",
                                  str(tmp_path / "c.png")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "c.png").is_file()


def test_export_drops_metrics_past_the_weights(trained, tmp_path):
    import shutil

    run = tmp_path / "stopped"
    shutil.copytree(trained, run)
    with open(run / "metrics.jsonl", "a") as f:  # logged after the last checkpoint, then killed
        f.write(json.dumps({"step": 7, "loss": 1.0, "acc": 0.5}) + "\n")
    dest = export_run(run, tmp_path / "row")
    assert [r["step"] for r in read_metrics(dest / "metrics.jsonl")] == [
        r["step"] for r in read_metrics(trained / "metrics.jsonl")]
    assert oct(dest.stat().st_mode & 0o777) == "0o755"
    assert oct((dest / "metrics.jsonl").stat().st_mode & 0o777) == "0o644"


def test_export_never_records_an_absolute_source(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inside = export_run(trained, tmp_path / "results" / "row")  # absolute, under the cwd
    assert json.loads((inside / "eval.json").read_text())[0]["source"] == "results/row"
    elsewhere = tmp_path.parent / f"{tmp_path.name}_out" / "row2"
    try:
        out = export_run(trained, elsewhere)
        assert json.loads((out / "eval.json").read_text())[0]["source"] == "row2"
    finally:
        import shutil

        shutil.rmtree(elsewhere.parent, ignore_errors=True)


def test_export_without_weights_says_so_where_eval_looks(trained, tmp_path):
    full = export_run(trained, tmp_path / "full")
    dest = export_run(trained, tmp_path / "light", weights=False)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "checkpoints/WEIGHTS_NOT_INCLUDED.txt", "config.yaml", "eval.json", "metrics.jsonl"]
    note = (dest / "checkpoints" / "WEIGHTS_NOT_INCLUDED.txt").read_text()
    size = (full / "checkpoints" / "last.pt").stat().st_size / 2**20
    assert f"step 6, {size:.1f} MiB" in note
    for name in ("config.yaml", "metrics.jsonl"):
        assert (dest / name).read_text() == (full / name).read_text()
    with pytest.raises(FileNotFoundError, match="was shared without its weights: the final weights"):
        sweep([dest], parse_sweep(["eval.episodes=3", "device=cpu"]))
    r = subprocess.run([sys.executable, "scripts/omniglot_paper.py", "export", str(trained),
                        str(tmp_path / "cli"), "--no-weights"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "cli" / "checkpoints" / "last.pt").exists()
    assert (tmp_path / "cli" / "checkpoints" / "WEIGHTS_NOT_INCLUDED.txt").is_file()


def test_export_in_float16_halves_the_weights_and_loads_them_rounded(trained, tmp_path):
    dest = export_run(trained, tmp_path / "half", weights_dtype=torch.float16)
    full = export_run(trained, tmp_path / "full")
    ck, orig = load_checkpoint(dest, "last"), load_checkpoint(trained, "last")
    assert ck["exported"]["weights_dtype"] == "float16"
    for k, v in orig["model"].items():  # floats rounded to float16, integer buffers untouched
        want = v.to(torch.float16) if v.is_floating_point() else v
        assert ck["model"][k].dtype == want.dtype and torch.equal(ck["model"][k], want), k
    half, whole = ((d / "checkpoints" / "last.pt").stat().st_size for d in (dest, full))
    assert half < 0.75 * whole
    learner = load_run(dest, device="cpu").learner  # the learner's parameters stay float32, holding the rounded values
    for k, v in learner.state_dict().items():
        if v.is_floating_point():
            assert v.dtype == torch.float32 and torch.equal(v, orig["model"][k].to(torch.float16).float()), k


def test_export_names_a_run_continued_from_the_checkout_by_its_relative_path(trained, tmp_path, monkeypatch):
    from metamem.training.export import portable_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "row").mkdir(parents=True)
    cfg = {"train": {"init_from": str(tmp_path / "results" / "row")}, "data": {"options": {}}}
    assert portable_config(cfg)["train"]["init_from"] == "results/row"
    assert cfg["train"]["init_from"] == str(tmp_path / "results" / "row")  # the input is left alone
    # a source outside the working directory names this machine: refused
    with pytest.raises(ExportError, match="key train.init_from holds a path of this machine"):
        portable_config({"train": {"init_from": "/elsewhere/run"}})


def test_export_of_best_weights_drops_the_final_evaluation_and_keeps_the_curve(trained, tmp_path):
    """The final evaluation scored the final weights: a copy of earlier best weights must not
    carry it (it would quote figures those weights never gave), and keeps the whole curve."""
    best, last = load_checkpoint(trained, "best")["step"], load_checkpoint(trained, "last")["step"]
    dest = export_run(trained, tmp_path / "row", which="best")
    assert load_checkpoint(dest, "last")["step"] == best
    assert read_metrics(dest / "metrics.jsonl") == read_metrics(trained / "metrics.jsonl")
    assert (dest / "eval.json").is_file() == (best == last)
    if best == last:  # the same weights: the final evaluation is theirs
        pytest.skip("the smoke run's best validation is at its last step")


def test_export_in_float16_drops_the_final_evaluation(trained, tmp_path):
    """Rounded weights score (a little) differently: the copy carries no figures of the
    float32 weights; its weights are float16."""
    dest = export_run(trained, tmp_path / "row", weights_dtype=torch.float16)
    assert not (dest / "eval.json").exists()
    model = load_checkpoint(dest, "last")["model"]
    assert {t.dtype for t in model.values() if t.is_floating_point()} == {torch.float16}


def test_export_of_a_run_stopped_early_records_the_steps_it_trained(tmp_path):
    """A run stopped before its train.steps (a queued run given a lower target) exports with
    train.steps = its last step, and a cosine schedule keeps its length (T_max): training
    the exported config again gives the exported weights."""
    import shutil

    from metamem.config import load_config
    from metamem.training.export import stopped_at

    cfg = load_config(REPO / "experiments" / "smoke" / "synthetic_lstm.yaml",
                      ["train.steps=9", "train.val_every=3", "train.log_every=3", "train.checkpoint_every=3",
                       "train.snapshot_every=3", "eval.episodes=4", "train.scheduler={name: cosine}"])
    full = tmp_path / "full"
    train(cfg, full, progress=False, final_eval=False)
    stopped = tmp_path / "stopped"  # the same run as it stood at step 6, its target still 9
    shutil.copytree(full, stopped)
    shutil.copy(stopped / "checkpoints" / "step_000006.pt", stopped / "checkpoints" / "last.pt")
    snap = load_checkpoint(stopped, "last")
    assert snap["step"] == 6 and snap["config"]["train"]["steps"] == 9
    dest = export_run(stopped, tmp_path / "row")
    config = yaml.safe_load((dest / "config.yaml").read_text())
    assert config["train"]["steps"] == 6 and config["train"]["scheduler"] == {"name": "cosine", "T_max": 9}
    assert load_checkpoint(dest, "last")["config"] == config
    again = tmp_path / "again"
    train(load_config(dest / "config.yaml"), again, progress=False, final_eval=False)
    redone = load_checkpoint(again, "last")
    assert redone["step"] == 6
    for k, v in snap["model"].items():
        torch.testing.assert_close(redone["model"][k], v, msg=k)
    # unchanged: a run that reached its target, an explicit T_max, another schedule
    done = {"train": {"steps": 6, "scheduler": {"name": "cosine"}}}
    assert stopped_at(done, 6) is done
    assert stopped_at({"train": {"steps": 9, "scheduler": {"name": "cosine", "T_max": 20}}}, 6) == {
        "train": {"steps": 6, "scheduler": {"name": "cosine", "T_max": 20}}}
    assert stopped_at({"train": {"steps": 9, "scheduler": {"name": "step", "step_size": 3}}}, 6) == {
        "train": {"steps": 6, "scheduler": {"name": "step", "step_size": 3}}}
