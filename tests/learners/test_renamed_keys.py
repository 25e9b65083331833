"""Renamed learner keywords: the memory's words (``slots``, ``width``, ``policy``) are the
learner config keys; the old ones (``memory_slots``, ``memory_width``, ``write_policy``)
still load with a one-line :class:`RenamedKeyWarning`, and both at once are a one-line error.
Run directories committed before the rename still load and score."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml

from metamem import load_run
from metamem.config import ConfigError, config_to_dict, load_config
from metamem.learners import LEARNERS, build_learner
from metamem.manifest import _spec_from_json, _spec_to_json, spec_of
from metamem.registry import RenamedKeyError, RenamedKeyWarning, renamed_keys, renames_of
from metamem.runs import check_compatible
from metamem.validate import validate_config

REPO = Path(__file__).resolve().parents[2]
COMMITTED_RUN = REPO / "results" / "omniglot_paper" / "mann_lru_900k"  # rewritten in the old words below
TINY = dict(n_way=3, image_shape=(1, 8, 8), controller_size=5, read_heads=1)


def _one_warning(record: list[warnings.WarningMessage]) -> str:
    msgs = [str(w.message) for w in record if issubclass(w.category, RenamedKeyWarning)]
    assert len(msgs) == 1, msgs
    assert "\n" not in msgs[0]
    return msgs[0]


def test_old_mann_keys_build_the_same_learner_with_one_warning_each() -> None:
    torch.manual_seed(0)
    new = build_learner("mann", **TINY, slots=6, width=4, policy="usage")
    with pytest.warns(RenamedKeyWarning) as rec:
        old = build_learner("mann", **TINY, memory_slots=6, memory_width=4, write_policy="usage")
    msgs = sorted(str(w.message) for w in rec if issubclass(w.category, RenamedKeyWarning))
    assert len(msgs) == 3 and all("\n" not in m for m in msgs)
    assert "memory_slots is deprecated, renamed slots" in " ".join(msgs)
    assert "write_policy is deprecated, renamed policy" in " ".join(msgs)
    assert old.core.memory.slots == 6 and old.core.memory.width == 4
    assert type(old.core.memory.policy) is type(new.core.memory.policy)
    assert {k: v.shape for k, v in old.state_dict().items()} == {k: v.shape for k, v in new.state_dict().items()}


def test_memory_matching_old_keys_load() -> None:
    kw = dict(n_way=3, image_shape=(1, 16, 16), backbone_channels=4, key_dim=8, context_hidden=4)
    with pytest.warns(RenamedKeyWarning) as rec:
        model = build_learner("memory_matching", **kw, memory_slots=5, write_policy="uniform")
    assert sorted(str(w.message) for w in rec) == [
        "build_memory_matching: memory_slots is deprecated, renamed slots (the old name still loads)",
        "build_memory_matching: write_policy is deprecated, renamed policy (the old name still loads)",
    ]
    assert model.memory.slots == 5 and type(model.memory.policy).__name__ == "UniformWrite"


@pytest.mark.parametrize("name, old, new", [
    ("mann", "memory_slots", "slots"), ("memory_matching", "write_policy", "policy"),
])
def test_old_and_new_name_together_is_a_one_line_error(name: str, old: str, new: str) -> None:
    value = 4 if new == "slots" else "lru"
    msg = f"{old} is the old name of {new} and both are given; keep {new} only"
    with pytest.raises(RenamedKeyError, match=msg) as e:
        build_learner(name, n_way=3, image_shape=(1, 16, 16), **{old: value, new: value})
    assert "\n" not in str(e.value)


def _old_config(tmp_path: Path, **extra: object) -> Path:
    cfg = {
        "learner": {"name": "mann", "controller_size": 8, "memory_slots": 6, "memory_width": 4,
                    "write_policy": "lru", **extra},
        "data": {"name": "synthetic", "options": {"image_size": 8}},
        "episodes": {"n_way": 3, "k_shot": 1, "n_query": 1, "batch_size": 2},
        "train": {"steps": 1},
        "eval": {"n_way": 3},
    }
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_validate_accepts_old_keys_with_a_warning_naming_the_file(tmp_path: Path) -> None:
    path = _old_config(tmp_path)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        validate_config(load_config(path), source=str(path))
    msgs = [str(w.message) for w in rec if issubclass(w.category, RenamedKeyWarning)]
    assert len(msgs) == 3
    assert any(m.startswith(f"{path}: ") and "learner.memory_slots is deprecated, renamed learner.slots" in m
               for m in msgs), msgs


def test_validate_rejects_both_names_naming_the_file_and_keys(tmp_path: Path) -> None:
    path = _old_config(tmp_path)
    with pytest.raises(ConfigError) as e:
        validate_config(load_config(path, ["learner.slots=6"]), source=str(path))
    msg = str(e.value)
    assert "learner.memory_slots is the old name of learner.slots and both are given" in msg
    assert msg.startswith(str(path)) and "\n" not in msg


def test_manifest_keeps_the_renames() -> None:
    spec = _spec_from_json("mann", _spec_to_json(spec_of("mann", LEARNERS.get("mann"))))
    assert renames_of(spec) == {"memory_slots": "slots", "memory_width": "width", "write_policy": "policy"}
    assert "slots" in spec.signature.parameters and "memory_slots" not in spec.signature.parameters


def test_renamed_keys_refuses_a_table_that_does_not_fit_the_signature() -> None:
    def build(*, slots: int = 1) -> int:
        return slots

    with pytest.warns(RenamedKeyWarning, match="build: size is deprecated, renamed slots"):
        assert renamed_keys(size="slots")(build)(size=3) == 3
    with pytest.raises(ValueError, match="needs 'width'"):
        renamed_keys(memory_width="width")(build)


def test_a_run_committed_with_the_old_keys_loads_and_scores(tmp_path: Path) -> None:
    if not (COMMITTED_RUN / "checkpoints" / "last.pt").is_file():
        pytest.skip(f"{COMMITTED_RUN} not in this checkout")
    import shutil

    # a run directory as metamem wrote it before the rename: config.yaml in the old words
    OLD_RUN = tmp_path / "old_run"
    shutil.copytree(COMMITTED_RUN / "checkpoints", OLD_RUN / "checkpoints")
    conf = yaml.safe_load((COMMITTED_RUN / "config.yaml").read_text())
    old_words = {"slots": "memory_slots", "width": "memory_width", "policy": "write_policy"}
    conf["learner"] = {old_words.get(k, k): v for k, v in conf["learner"].items()}
    (OLD_RUN / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    ckpt = torch.load(OLD_RUN / "checkpoints" / "last.pt", weights_only=True)  # and the copy it holds
    ckpt["config"]["learner"] = dict(conf["learner"])
    torch.save(ckpt, OLD_RUN / "checkpoints" / "last.pt")
    assert "memory_slots" in yaml.safe_load((OLD_RUN / "config.yaml").read_text())["learner"]
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        run = load_run(OLD_RUN, device="cpu")  # the weights load strictly into the renamed learner
    model, cfg = run.learner, config_to_dict(run.config)
    assert "memory_slots" in _one_warning([w for w in rec if "memory_slots" in str(w.message)])
    assert model.core.memory.slots == 128 and model.core.memory.width == 40
    # a resume with the config rewritten in the new words is the same learner
    renamed = {**cfg, "learner": {("slots" if k == "memory_slots" else k): v for k, v in cfg["learner"].items()}}
    check_compatible({"config": cfg}, renamed)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 5 * 2, 1, 20, 20, generator=g)
    y = torch.arange(5).repeat(2).expand(2, -1)
    with torch.no_grad():
        logits = model.predict(x[:, :5], y[:, :5], x[:, 5:], n_way=5)
    assert logits.shape == (2, 5, 5) and torch.isfinite(logits).all()


def test_cli_names_each_old_key_in_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    path = _old_config(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "METAMEM_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "metamem", "validate", str(path), "--no-data"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert f"warning: {path}: build_mann: learner.memory_slots is deprecated, renamed learner.slots " \
           "(the old name still loads)" in lines, r.stderr
    assert sum("is deprecated, renamed" in line for line in lines) == 3 and len(lines) == 3, r.stderr


def test_metamem_eval_rescores_an_old_key_mann_run_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run directory whose config says memory_slots/memory_width/write_policy scores, through
    ``metamem eval``, exactly what the same weights score in a learner built with the new keys."""
    import json

    import metamem
    from metamem.cli.main import main

    sizes = dict(controller_size=6, read_heads=1)
    old = {"name": "mann", **sizes, "memory_slots": 5, "memory_width": 4, "write_policy": "usage"}
    torch.manual_seed(0)
    learner = build_learner("mann", n_way=3, image_shape=(1, 8, 8), **sizes, slots=5, width=4, policy="usage")
    data = {"name": "synthetic", "train_split": "train", "val_split": "val", "test_split": "test",
            "options": {"num_classes": 9, "per_class": 5, "image_size": 8}}
    ev = {"split": "test", "n_way": 3, "k_shot": 1, "n_query": 2, "episodes": 24, "seed": 5, "protocol": "both"}
    config = {"learner": old, "seed": 0, "data": data, "episodes": {"n_way": 3, "k_shot": 1, "n_query": 1},
              "eval": ev}
    run = tmp_path / "old_mann"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save({"format": "metamem-checkpoint", "version": 1, "config": config, "learner": "mann",
                "image_shape": [1, 8, 8], "step": 1, "model": learner.state_dict()},
               run / "checkpoints" / "last.pt")
    assert main(["eval", str(run), "device=cpu", "--out", str(tmp_path / "out"), "--no-progress",
                 "--no-plots"]) == 0
    assert "warning: build_mann: memory_slots is deprecated, renamed slots" in capsys.readouterr().err
    (got,) = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    test_split = metamem.load_dataset("synthetic", split="test", **data["options"])
    want = metamem.evaluate(learner.eval(), test_split, **{k: v for k, v in ev.items() if k != "split"})
    assert got["fingerprint"] == want.fingerprint
    for scoring in ("set", "sequence"):
        assert got["scores"][scoring]["mean"] == want.scores[scoring].mean
    torch.manual_seed(1)  # other weights score otherwise: the comparison above can fail
    other = build_learner("mann", n_way=3, image_shape=(1, 8, 8), **sizes, slots=5, width=4, policy="usage")
    other_scores = metamem.evaluate(other.eval(), test_split, **{k: v for k, v in ev.items() if k != "split"}).scores
    assert any(other_scores[s].mean != want.scores[s].mean for s in ("set", "sequence"))
