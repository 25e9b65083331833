"""Evaluating a run on other data, the common protocol of ``metamem eval`` and its output
folder: the folder loader's ``invert``, pixel statistics and their warnings, set settings
on a sequence-protocol run, refused mixes, no silent overwrite."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_learners import NearestNeighbourLearner, OracleSequenceLearner, patch_load_run
from PIL import Image

import metamem
from metamem.cli.main import main
from metamem.config import ConfigError, config_from_dict, eval_protocols
from metamem.data import DatasetError, ImageDataset
from metamem.data.stats import compare_pixel_stats, pixel_stats
from metamem.evaluation.sweeps import parse_sweep, plan_sweep
from metamem.evaluation.trained_run import DataMismatchWarning, Run

DATA = {"name": "synthetic", "train_split": "train", "val_split": "val", "test_split": "test",
        "options": {"num_classes": 8, "per_class": 9, "image_size": 5, "noise": 0.35}}


def _config(learner: str, data: dict = DATA, protocol: str = "both", n_query: int = 2) -> dict:
    return {"seed": 0, "device": "cpu", "data": data, "learner": {"name": learner},
            "eval": {"split": "test", "n_way": 3, "k_shot": 1, "n_query": n_query, "episodes": 5,
                     "seed": 11, "protocol": protocol}}


def _run_dir(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    (d / "checkpoints").mkdir(parents=True)
    (d / "checkpoints" / "last.pt").write_bytes(b"")
    return d


def _fake_loader(monkeypatch, configs: dict[str, dict]) -> None:
    def load(path, device):
        cfg = configs[Path(path).name]
        cls = OracleSequenceLearner if cfg["learner"]["name"] == "oracle" else NearestNeighbourLearner
        return cls(), cfg

    patch_load_run(monkeypatch, load)


def _strokes(dark_background: bool, n: int = 40, size: int = 12, width: int = 1) -> ImageDataset:
    """n images of one bar each: 255 on 0 (dark background) or 0 on 255."""
    x = np.zeros((n, 1, size, size), dtype=np.uint8)
    for i in range(n):
        r = 2 + i % (size - 4)
        x[i, 0, r:r + width, 2:size - 2] = 255
    if not dark_background:
        x = 255 - x
    return ImageDataset(torch.from_numpy(x), torch.arange(n) % 4, ["a", "b", "c", "d"], name="bars")


# ----------------------------------------------------------------------- folder loader
def test_folder_invert_option_and_card(tmp_path: Path) -> None:
    root = tmp_path / "ink"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            a = np.full((6, 6), 250, dtype=np.uint8)
            a[2, :] = 10 + i
            Image.fromarray(a).save(root / c / f"{i}.png")
    plain = metamem.load_dataset("folder", root=root, cache_dir=tmp_path / "c")
    inv = metamem.load_dataset("folder", root=root, invert=True, cache_dir=tmp_path / "c")
    assert torch.equal(inv.images, 255 - plain.images)  # not the cache entry of the other
    assert inv.info["preprocess"]["invert"] is True and plain.info["preprocess"]["invert"] is False
    (root / "card.yaml").write_text("invert: true\nchannels: 3\n")
    card = metamem.load_dataset("folder", root=root, cache=False)
    assert card.image_shape == (3, 6, 6) and torch.equal(card.images[:, :1], inv.images)
    (root / "card.yaml").write_text("invert: yes please\n")
    with pytest.raises(DatasetError, match=r"invert must be true or false, got 'yes please'"):
        metamem.load_dataset("folder", root=root, cache=False)


# ----------------------------------------------------------------------- pixel statistics
def test_pixel_stats_and_mismatch_messages() -> None:
    dark, light = pixel_stats(_strokes(True)), pixel_stats(_strokes(False))
    assert dark["polarity"] == "dark" and light["polarity"] == "light"
    assert dark["ink"] == pytest.approx(8 / 144, abs=1e-6)  # one 8-pixel bar in 12x12
    assert compare_pixel_stats(dark, pixel_stats(_strokes(True))) == []
    msgs = compare_pixel_stats(dark, light, what="my_shapes", fix="invert=True")
    assert len(msgs) == 1 and msgs[0].startswith("polarity: the run was trained on a dark background")
    assert "my_shapes has a light one" in msgs[0] and "invert=True" in msgs[0]
    thick = compare_pixel_stats(dark, pixel_stats(_strokes(True, width=5)))
    assert len(thick) == 1 and thick[0].startswith("mean ink:")


def test_ink_warning_fires_for_strokes_2_7_times_the_training_ink() -> None:
    """Thick digits at 2.7x the training ink are flagged; the demo shapes (1.1x) are not."""
    thin = pixel_stats(_strokes(True, n=10))
    w3, w2 = _strokes(True, n=7, width=3), _strokes(True, n=3, width=2)
    thick = ImageDataset(torch.cat([w3.images, w2.images]), torch.arange(10) % 4, ["a", "b", "c", "d"])
    stats = pixel_stats(thick)
    assert stats["ink"] / thin["ink"] == pytest.approx(2.7)
    msgs = compare_pixel_stats(thin, stats, what="digits")
    assert len(msgs) == 1 and msgs[0].startswith("mean ink: 15.0% of the pixels of digits are strokes "
                                                 "against 5.6% in the training data (2.7x)")
    assert len(compare_pixel_stats(stats, thin, what="digits")) == 1  # 2.7x thinner too
    assert compare_pixel_stats(thin, {**thin, "ink": 1.1 * thin["ink"]}) == []


# ----------------------------------------------------------------------- settings
def resolve_settings(base: dict, overrides: dict) -> tuple[dict, list[str]]:
    """One protocol of :func:`eval_protocols` (each override a single value)."""
    (settings,), notes = eval_protocols(base, {k: [v] for k, v in overrides.items()})
    return settings, notes


def test_set_settings_switch_a_sequence_run_to_the_set_protocol() -> None:
    seq = {"n_way": 5, "k_shot": 10, "n_query": 0, "protocol": "sequence"}
    s, notes = resolve_settings(seq, {"k_shot": 5})
    assert (s["protocol"], s["k_shot"], s["n_query"]) == ("set", 5, 15)
    assert "eval.k_shot asked on a run scored with the sequence protocol" in notes[0]
    s, notes = resolve_settings(seq, {"k_shot": 5, "n_query": 3})
    assert (s["protocol"], s["n_query"]) == ("set", 3)
    s, notes = resolve_settings(seq, {"k_shot": 5, "protocol": "sequence"})
    assert (s["protocol"], s["n_query"], notes) == ("sequence", 0, [])
    with pytest.raises(ValueError, match=r"eval.protocol=both scores queries but eval.n_query=0"):
        resolve_settings(seq, {"protocol": "both"})
    assert resolve_settings({**seq, "protocol": "set", "n_query": 15}, {"k_shot": 5})[1] == []


def test_eval_protocols_expands_lists_in_order_without_duplicates() -> None:
    # the one expansion: training's final evaluation and metamem eval both score these
    from metamem.config import EvalCfg

    got, notes = eval_protocols(EvalCfg(n_way=[5, 20], k_shot=[1, 5], n_query=2))
    assert [(s["n_way"], s["k_shot"]) for s in got] == [(5, 1), (5, 5), (20, 1), (20, 5)] and notes == []
    assert all(s["split"] == "test" and s["n_query"] == 2 for s in got)
    got, _ = eval_protocols({"n_way": [5, 20], "k_shot": 1}, {"n_way": [20, 5, 20]})
    assert [s["n_way"] for s in got] == [20, 5]


def test_data_overrides_parse() -> None:
    ov = parse_sweep(["data=folder:my shapes/x", "data.options.invert=false",
                          "data.options.mean=[0.5]", "eval.k_shot=[1,5]"])
    assert ov["data"] == ["folder:my shapes/x"] and ov["data.options.invert"] == [False]
    assert ov["data.options.mean"] == [[0.5]] and ov["eval.k_shot"] == [1, 5]
    with pytest.raises(ValueError, match=r"unknown override key 'data.root'.*data.options.KEY"):
        parse_sweep(["data.root=x"])


# ----------------------------------------------------------------------- metamem eval
def test_two_runs_share_one_protocol_printed_above_the_table(tmp_path, monkeypatch, capsys) -> None:
    _fake_loader(monkeypatch, {"a": _config("nn"), "b": _config("oracle", protocol="sequence", n_query=0)})
    a, b = _run_dir(tmp_path, "a"), _run_dir(tmp_path, "b")
    out = tmp_path / "res"
    assert main(["eval", str(a), str(b), "device=cpu", "--no-progress", "--no-plots", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("protocol (all rows, same episodes): synthetic split test, 3-way 1-shot, "
                               "2 queries per class, 5 episodes, seed 11")
    assert lines[0].endswith("scoring both")  # the first run's protocol, for both rows
    doc = json.loads((out / "results.json").read_text())
    assert doc["header"] == lines[0]
    assert [set(r["scores"]) for r in doc["results"]] == [{"set", "sequence"}] * 2
    assert len({r["fingerprint"] for r in doc["results"]}) == 1
    assert (out / "results.md").read_text().startswith(lines[0])


def test_a_mix_that_cannot_share_a_protocol_is_refused_naming_rows(tmp_path, monkeypatch, capsys) -> None:
    other = {**DATA, "options": {**DATA["options"], "num_classes": 7}}
    _fake_loader(monkeypatch, {"a": _config("nn"), "b": _config("nn", data=other)})
    a, b = _run_dir(tmp_path, "a"), _run_dir(tmp_path, "b")
    assert main(["eval", str(a), str(b), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "cannot score these runs on one protocol: row nn [b]" in err and "row nn [a]" in err


def test_a_loader_option_typo_is_one_line_naming_its_key_path(tmp_path, monkeypatch, capsys) -> None:
    """Typos in loader options are refused as config typos are (no traceback): from the
    CLI of eval and train, and from Python."""
    _fake_loader(monkeypatch, {"a": _config("nn")})
    a = _run_dir(tmp_path, "a")
    root = tmp_path / "folder"
    for c in ("x", "y"):
        (root / c).mkdir(parents=True)
        Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(root / c / "0.png")
    folder_keys = "root, image_size, channels, invert, name, cache_dir, cache"
    assert main(["eval", str(a), f"data=folder:{root}", "data.options.invrt=false", "--no-progress"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "metamem eval: error: override 'data.options.invrt=false': data.options.invrt: unknown key "
        f"for load_folder; allowed keys: {folder_keys}"]
    assert main(["eval", str(a), "eval.data_options={noize: 0.1}", "--no-progress"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(
        "metamem eval: error: override 'eval.data_options={noize: 0.1}': eval.data_options.noize: "
        "unknown key for make_synthetic; allowed keys: ")
    smoke = str(Path(__file__).resolve().parents[2] / "experiments/smoke/synthetic_lstm.yaml")
    assert main(["train", smoke, "eval.data_options={noize: 0.1}", "--out", str(tmp_path / "t")]) == 1
    assert capsys.readouterr().err.splitlines() == [err[0].replace("metamem eval", "metamem train")]
    assert not (tmp_path / "t").exists()
    run = Run(tmp_path, NearestNeighbourLearner(), config_from_dict(_config("nn")), (1, 5, 5), torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"^Run.dataset\('folder'\): options.invrt: unknown key for load_folder"):
        run.dataset("folder", root=root, invrt=False)
    with pytest.raises(ConfigError, match=r"^Run.evaluate: data_options.noize: unknown key for make_synthetic"):
        run.evaluate(data_options={"noize": 0.1})


def test_eval_output_is_never_overwritten_silently(tmp_path, monkeypatch, capsys) -> None:
    _fake_loader(monkeypatch, {"a": _config("oracle")})
    a = _run_dir(tmp_path, "a")
    args = ["eval", str(a), "device=cpu", "--no-progress"]
    assert main(args) == 0
    first = (a / "eval" / "results.json").read_bytes()
    assert (a / "eval" / "memory_trace_0.png").is_file()
    assert main([*args, "eval.seed=12"]) == 0
    assert (a / "eval" / "results.json").read_bytes() == first  # kept
    subs = [p for p in (a / "eval").iterdir() if p.is_dir()]
    assert len(subs) == 1 and (subs[0] / "results.json").is_file()
    assert f"writing to {subs[0]}" in capsys.readouterr().err
    (a / "eval" / "memory_trace_7.png").write_bytes(b"stale")
    assert main([*args, "eval.seed=13", "--overwrite", "--no-plots"]) == 0
    assert not list((a / "eval").glob("*.png"))  # stale plots removed
    assert json.loads((a / "eval" / "results.json").read_text())["results"][0]["protocol"]["seed"] == 13


def test_run_dataset_applies_preprocessing_and_warns(tmp_path, monkeypatch) -> None:
    """A run trained on dark-background data: a folder of dark strokes on light is inverted
    to match (no warning); asking for no inversion warns about the polarity."""
    root = tmp_path / "shapes"
    for c in range(4):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(3):
            a = np.full((9, 9), 255, dtype=np.uint8)
            a[2 + c, 1:8] = 0
            Image.fromarray(a).save(root / f"c{c}" / f"{i}.png")
    train = _strokes(True, size=6, width=2)  # as much ink as the folder's strokes at 6x6
    train.info["preprocess"] = {"invert": True}
    run = Run(tmp_path, NearestNeighbourLearner(), config_from_dict(_config("nn")), (1, 6, 6), torch.device("cpu"))
    monkeypatch.setattr(run, "training_data", lambda: train)
    assert run.preprocess == {"image_size": 6, "channels": 1, "invert": True, "scale": "pixel / 255"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = run.dataset("folder", root=root, cache=False)
    assert ds.image_shape == (1, 6, 6) and ds.info["preprocess"]["invert"] is True
    with pytest.warns(DataMismatchWarning, match=r"polarity: .* Flip it with invert=True \(CLI: data.options.invert=true\)"):
        run.dataset("folder", root=root, cache=False, invert=False)
    with pytest.raises(DatasetError, match=r"gives images of shape \(1, 9, 9\) but run .* reads \(1, 6, 6\)"):
        run.check_data(metamem.load_dataset("folder", root=root, cache=False))
    res = run.evaluate(ds, n_way=3, k_shot=1, n_query=1, episodes=4, protocol="set")
    assert res.protocol.n_way == 3 and res.source == str(tmp_path)


def _mismatches(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, DataMismatchWarning)]


def test_light_on_dark_data_warns_once_with_the_fix_that_works(tmp_path, monkeypatch) -> None:
    """A run trained on white strokes on black, scored on a folder of white strokes on black:
    the run's preprocessing inverts the folder, and one warning says invert=False (not a
    second one saying the opposite). Data loaded by hand is checked by evaluate() with the
    fix for how it was loaded, and the advice works for from_pairs too."""
    root = tmp_path / "light_on_dark"
    arrays = []
    for c in range(4):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(3):
            a = np.zeros((9, 9), dtype=np.uint8)
            a[2 + c, 1:8] = 255
            Image.fromarray(a).save(root / f"c{c}" / f"{i}.png")
            arrays.append((a, c))
    train = _strokes(True, size=6, width=2)  # as much ink as the folder's strokes at 6x6
    train.info["preprocess"] = {"invert": True}
    run = Run(tmp_path, NearestNeighbourLearner(), config_from_dict(_config("nn")), (1, 6, 6), torch.device("cpu"))
    monkeypatch.setattr(run, "training_data", lambda: train)
    proto = {"n_way": 3, "k_shot": 1, "n_query": 1, "episodes": 4, "protocol": "set"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = run.dataset("folder", root=root, cache=False)
        run.evaluate(ds, **proto)
    msgs = _mismatches(caught)
    assert len(msgs) == 1 and msgs[0].endswith("Flip it with invert=False (CLI: data.options.invert=false)")
    by_hand = metamem.load_dataset("folder", root=root, image_size=6, invert=True, cache=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.evaluate(by_hand, **proto)
    assert [m.rsplit("Flip it with ", 1)[1] for m in _mismatches(caught)] == [
        "invert=False (CLI: data.options.invert=false)"]
    dark_on_light = [(255 - a, c) for a, c in arrays]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.evaluate(metamem.from_pairs(dark_on_light, image_size=6), **proto)
    assert _mismatches(caught)[0].endswith("Flip it with invert=True (CLI: data.options.invert=true)")
    flipped = metamem.from_pairs(dark_on_light, image_size=6, invert=True)  # the advice works
    assert flipped.info["preprocess"]["invert"] is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run.evaluate(flipped, **proto)


def test_plan_with_data_override_uses_every_class(tmp_path, monkeypatch) -> None:
    _fake_loader(monkeypatch, {"a": _config("nn")})
    a = _run_dir(tmp_path, "a")
    plan = plan_sweep([a], parse_sweep(["data=synthetic", "data.options.num_classes=5", "device=cpu"]))
    assert plan.data == ("synthetic", {"num_classes": 5})
    assert [s.get("split", "x") for s in plan.settings] == [None]
    with pytest.raises(ValueError, match=r"data.options.\* overrides need data=NAME"):
        plan_sweep([a], parse_sweep(["data.options.invert=true"]))


def test_a_sweep_is_described_in_the_order_asked(tmp_path, monkeypatch) -> None:
    _fake_loader(monkeypatch, {"a": _config("nn")})
    a = _run_dir(tmp_path, "a")
    plan = plan_sweep([a], parse_sweep(["eval.n_way=[5,20]", "eval.k_shot=[5,1]", "device=cpu"]))
    assert [(s["n_way"], s["k_shot"]) for s in plan.settings] == [(5, 5), (5, 1), (20, 5), (20, 1)]
    assert "split test, [5, 20]-way [5, 1]-shot, 2 queries" in plan.describe()


# ----------------------------------------------------------------------- defaults, devices
def test_python_evaluate_defaults_are_the_cli_defaults() -> None:
    import inspect

    from metamem.config import EvalCfg, config_to_dict
    from metamem.evaluation import evaluate

    cli = config_to_dict(EvalCfg())
    params = inspect.signature(evaluate).parameters
    shared = [k for k in params if k in cli]
    assert set(shared) >= {"n_way", "k_shot", "n_query", "episodes", "seed", "protocol", "batch_size"}
    shared.remove("data_options")  # None (nothing changed) there, {} here: the same
    assert {k: params[k].default for k in shared} == {k: cli[k] for k in shared}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_unavailable_device_is_one_line_in_the_api(tmp_path) -> None:
    ds = _strokes(True)
    for call in (lambda: metamem.EpisodeSampler(ds, n_way=2, k_shot=1, device="cuda"),
                 lambda: metamem.evaluate(NearestNeighbourLearner(), ds, n_way=2, n_query=1, device="cuda")):
        with pytest.raises(RuntimeError) as e:
            call()
        assert str(e.value) == "device='cuda' but CUDA is not available; use device=cpu or device=auto"
    sampler = metamem.EpisodeSampler(ds, n_way=2, k_shot=1, device="auto")
    assert sampler.device == torch.device("cpu")
