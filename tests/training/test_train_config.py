"""Experiment configs: extends, overrides, typed sections, errors, and every shipped YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from metamem.cli.main import main
from metamem.config import ConfigError, config_to_dict, load_config, parse_overrides
from metamem.validate import validate_config


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def files(tmp_path: Path) -> Path:
    write(tmp_path / "base" / "b.yaml", {
        "seed": 3,
        "data": {"name": "synthetic", "options": {"image_size": 8}},
        "learner": {"name": "mann", "slots": 16, "policy_options": {"gamma": 0.9}},
        "train": {"steps": 10, "optimizer": {"name": "adam", "lr": 0.01}},
    })
    return write(tmp_path / "exp" / "e.yaml", {
        "extends": "../base/b.yaml",
        "learner": {"read_heads": 2},
        "train": {"steps": 20},
    })


def test_extends_merges_one_level(files: Path) -> None:
    cfg = load_config(files)
    assert cfg.seed == 3 and cfg.train.steps == 20
    assert cfg.learner.name == "mann"
    assert cfg.learner.kwargs == {"slots": 16, "policy_options": {"gamma": 0.9}, "read_heads": 2}
    assert cfg.train.optimizer.kwargs == {"lr": 0.01}
    assert cfg.data.options == {"image_size": 8}
    validate_config(cfg, source=str(files))


def test_other_learner_name_replaces_base_kwargs(files: Path) -> None:
    cfg = load_config(files, ["learner.name=lstm", "learner.controller_size=8"])
    assert cfg.learner.kwargs == {"controller_size": 8}  # mann's kwargs are dropped
    write(files, {"extends": "../base/b.yaml", "learner": {"name": "lstm"}})
    assert load_config(files).learner.kwargs == {}


def test_overrides_are_yaml_values(files: Path) -> None:
    cfg = load_config(files, ["train.steps=7", "eval.n_way=[5,20]", "train.grad_clip=null",
                              "device=cpu", "learner.policy_options.gamma=0.5", "train.amp=true"])
    assert cfg.train.steps == 7 and cfg.eval.n_way == [5, 20] and cfg.train.grad_clip is None
    assert cfg.device == "cpu" and cfg.train.amp is True
    assert cfg.learner.kwargs["policy_options"] == {"gamma": 0.5}
    assert parse_overrides(["a.b=1.5"]) == [(("a", "b"), 1.5)]
    assert load_config(files, ["train.grad_clip=2"]).train.grad_clip == 2.0  # int -> float


@pytest.mark.parametrize("override, match", [
    ("train.stepz=3", r"override 'train.stepz=3': train.stepz: unknown key; allowed keys: steps, optimizer"),
    ("train.steps=abc", r"train.steps: expected int, got 'abc'"),
    ("train.steps=true", r"train.steps: expected int, got True"),
    ("eval.n_way=[5,x]", r"eval.n_way: expected int \| list\[int\]"),
    ("device=gpu", r"device: expected auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("train.steps", r"expected KEY.PATH=VALUE"),
    ("train.steps.x=1", r"train.steps is a value, not a section"),
])
def test_override_errors(files: Path, override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(files, [override])


def test_unknown_key_in_file_names_file_and_allowed_keys(files: Path) -> None:
    write(files, {"extends": "../base/b.yaml", "episodes": {"n_ways": 5}})
    with pytest.raises(ConfigError, match=r"e\.yaml: episodes\.n_ways: unknown key; allowed keys: "
                                          r"n_way, k_shot, n_query, batch_size, within_group"):
        load_config(files)


def test_wrong_type_from_base_names_the_base(files: Path) -> None:
    write(files.parent.parent / "base" / "b.yaml", {"train": {"log_every": "often"}})
    with pytest.raises(ConfigError, match=r"b\.yaml: train\.log_every: expected int"):
        load_config(files)


def test_two_extends_levels_are_rejected(files: Path) -> None:
    write(files.parent.parent / "base" / "b.yaml", {"extends": "c.yaml"})
    with pytest.raises(ConfigError, match=r"itself has 'extends'; only one level is allowed"):
        load_config(files)
    write(files, {"extends": "missing.yaml"})
    with pytest.raises(ConfigError, match=r"extends: base file 'missing.yaml' not found"):
        load_config(files)


@pytest.mark.parametrize("override, match", [
    ("learner.slotz=3", r"learner\.slotz: unknown key for build_mann; allowed keys: "
                               r"max_way, controller_size, slots"),
    ("learner.slots=big", r"learner\.slots: expected int, got 'big'"),
    ("learner.n_way=3", r"learner\.n_way: set by the framework from episodes\.n_way; remove it"),
    ("learner.name=manm", r"learner\.name: unknown learner 'manm' \(did you mean 'mann'\?\)"),
    ("data.name=omniglott", r"data\.name: unknown dataset 'omniglott'"),
    ("data.options.size=3", r"data\.options\.size: unknown key for make_synthetic; allowed keys: "),
    ("train.optimizer.name=adamm", r"train\.optimizer\.name: unknown optimizer 'adamm'"),
    ("train.optimizer.momentun=0.9", r"train\.optimizer\.momentun: unknown key for Adam; allowed keys: lr"),
    ("train.scheduler={name: step}", r"train\.scheduler: missing a required argument: 'step_size'"),
    ("episodes.k_shot=0", r"episodes\.k_shot: must be >= 1, got 0"),
    # linear_probe's annotations resolve (Literal is imported), so its keys are type-checked
    ("learner={name: linear_probe, num_train_classes: 8, probe: ridge}", r"learner\.probe: expected one of logistic, centroid, got 'ridge'"),
    ("learner={name: linear_probe, num_train_classes: 8, c: high}", r"learner\.c: expected float, got 'high'"),
])
def test_validate_against_builders(files: Path, override: str, match: str) -> None:
    cfg = load_config(files, [override])
    with pytest.raises(ConfigError, match=match):
        validate_config(cfg, source=str(files))


def test_every_builder_annotation_resolves() -> None:
    # a missing import in a builder's annotations would leave its config unchecked: all resolve
    import metamem.data  # noqa: F401  (fill the registries)
    from metamem.manifest import REGISTRIES, registry
    from metamem.registry import builder_hints

    for what in REGISTRIES:
        reg = registry(what)
        for name in reg.names():
            builder_hints(reg.get(name))  # raises TypeError naming the builder if not


def test_unresolvable_annotation_is_an_error_naming_the_builder() -> None:
    from metamem.registry import builder_hints
    from metamem.validate import check_builder_kwargs

    def build_broken(*, mode: Literall[a] = "a") -> None:  # noqa: F821  (the bug under test)
        """A builder whose module forgot an import."""

    with pytest.raises(TypeError, match=r"build_broken: its type annotations do not resolve .*Literall"):
        builder_hints(build_broken)
    with pytest.raises(TypeError, match=r"build_broken"):
        check_builder_kwargs(build_broken, {"mode": "b"}, section="learner", source="x.yaml")


def test_protocol_names_are_checked_when_loading(files: Path) -> None:
    # the protocol names are one Literal (metamem.config.ProtocolName): typed at load time
    with pytest.raises(ConfigError, match=r"override 'eval.protocol=seq': eval\.protocol: expected "
                                          r"one of set, sequence, both, got 'seq'"):
        load_config(files, ["eval.protocol=seq"])
    assert load_config(files, ["eval.protocol=sequence"]).eval.protocol == "sequence"


def test_resolved_config_round_trips(files: Path) -> None:
    cfg = load_config(files, ["eval.k_shot=[1,5]"])
    again = load_config(write(files.parent / "resolved.yaml", config_to_dict(cfg)))
    assert config_to_dict(again) == config_to_dict(cfg)


def every_experiment(repo_root: Path) -> list[Path]:
    return sorted((repo_root / "experiments").rglob("*.yaml"))


def test_every_shipped_experiment_validates(repo_root: Path) -> None:
    paths = every_experiment(repo_root)
    assert len(paths) >= 8
    for path in paths:
        cfg = load_config(path)
        validate_config(cfg, source=str(path), require_learner=path.parent.name != "base")


def test_validate_cli(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(files), "train.steps=5"]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["validate", str(files), "learner.slotz=3"]) == 1
    assert "learner.slotz: unknown key" in capsys.readouterr().err


def test_one_split_resolver(files: Path) -> None:
    # train/val/test mean data.<x>_split everywhere; a null one is an error, not a split named "val"
    from metamem.config import DataCfg
    from metamem.validate import check_experiment

    data = DataCfg(train_split="background", val_split=None, test_split="evaluation")
    assert [data.split_name(s) for s in ("train", "val", "test", "other")] == ["background", None, "evaluation", "other"]
    cfg = load_config(files, ["data.val_split=null", "eval.split=val", "train.val_every=0"])
    with pytest.raises(ConfigError, match=r"eval\.split: val names data\.val_split, which is null; set eval\.split"):
        check_experiment(cfg, source=str(files))
