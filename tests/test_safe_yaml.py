"""Configs and dataset cards: duplicate keys, alias bombs (also inside lists) and
self-referencing aliases are one-line errors, found before anything is expanded."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from metamem.config import ConfigError, load_config
from metamem.data.base import DatasetError
from metamem.data.folder import read_card
from metamem.safe_yaml import MAX_MESSAGE, YamlError, load_file, safe_load


def _list_bomb(depth: int) -> str:
    """Anchors defined inside one list, each a list of nine aliases of the one before:
    a few hundred bytes that expand to 9**depth values."""
    items = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    items += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, depth + 1)]
    return "eval:\n  n_way: [" + ", ".join(items) + "]\n"


def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path) -> None:
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("learner: {name: mann}\nseed: 1\nlearner: {name: lstm}\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: line 3: duplicate key 'learner' \(first given on line 1\)"):
        load_config(cfg)
    nested = tmp_path / "nested.yaml"
    nested.write_text("train:\n  steps: 5\n  steps: 6\n")
    with pytest.raises(ConfigError, match=r"line 3: duplicate key 'steps'"):
        load_config(nested)
    with pytest.raises(YamlError, match=r"line 1: duplicate key 'a'"):
        safe_load("{a: 1, a: 2}")


def test_merge_keys_may_still_be_overridden() -> None:
    assert safe_load("b: &b {x: 1, y: 2}\nc:\n  <<: *b\n  x: 3\n") == {
        "b": {"x": 1, "y": 2}, "c": {"x": 3, "y": 2}}


def test_duplicate_key_in_an_override_and_a_card(tmp_path: Path) -> None:
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("seed: 1\n")
    with pytest.raises(ConfigError, match=r"override .*duplicate key 'a'"):
        load_config(cfg, ["learner={name: mann, a: 1, a: 2}"])
    (tmp_path / "card.yaml").write_text("name: pets\nchannels: 1\nchannels: 3\n")
    with pytest.raises(DatasetError, match=r"card.yaml: line 3: duplicate key 'channels'"):
        read_card(tmp_path)


def test_alias_bomb_inside_a_list_is_refused_fast_with_a_short_message(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_list_bomb(8))  # 457 bytes, 9**8 = 43 million values
    assert len(bomb.read_bytes()) < 500
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(bomb)
    assert time.perf_counter() - t0 < 2.0
    msg = str(info.value)
    assert "bomb.yaml" in msg and "more than 100000 values" in msg
    assert len(msg) < 400 and "\n" not in msg


def test_a_value_that_expands_under_the_limit_gives_a_short_type_error(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(_list_bomb(4))  # 9**4 values: allowed by size, wrong type for n_way
    with pytest.raises(ConfigError, match=r"eval.n_way: expected int \| list\[int\]") as info:
        load_config(big)
    assert len(str(info.value)) < MAX_MESSAGE


def test_self_reference_in_a_list_is_refused() -> None:
    with pytest.raises(YamlError, match=r"alias refers to itself"):
        safe_load("a: &a [1, *a]\n")


def test_plain_yaml_loads_as_safe_load_does() -> None:
    import yaml

    text = "a: [1, 2.5, null, true, '3']\nb: {c: &x {d: 1}, e: *x}\nf: 2026-12-07\n"
    assert safe_load(text) == yaml.safe_load(text)
    assert safe_load("") is None


def test_load_file_names_the_file_in_every_error_config_and_card_alike(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("a: 1\n", encoding="utf-8")
    assert load_file(good) == {"a": 1}
    cases = {
        "latin1": (b"name: caf\xe9\n", r"not UTF-8 text \(byte 9\); save the file as UTF-8"),
        "broken": (b"a: [1, 2\n", r"not valid YAML: "),
        "dup": (b"a: 1\na: 2\n", r"line 2: duplicate key 'a'"),
    }
    for name, (raw, msg) in cases.items():
        (tmp_path / f"{name}.yaml").write_bytes(raw)
        with pytest.raises(YamlError, match=rf"{name}\.yaml: {msg}"):
            load_file(tmp_path / f"{name}.yaml")
        with pytest.raises(ConfigError, match=rf"{name}\.yaml: {msg}"):
            load_config(tmp_path / f"{name}.yaml")
        (tmp_path / name).mkdir()
        (tmp_path / name / "card.yaml").write_bytes(raw)
        with pytest.raises(DatasetError, match=rf"{name}/card\.yaml: {msg}"):
            read_card(tmp_path / name)
