"""Fast start: ``metamem --help`` and ``ls`` answer without importing torch, and the
registry manifest they (and ``validate``) read describes exactly the live registries."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from metamem.config import ConfigError, load_config
from metamem.manifest import REGISTRIES, _spec_from_json, _spec_to_json, spec_of
from metamem.manifest import registry as manifest_registry
from metamem.validate import check_builder_kwargs

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import sys
from metamem.cli.main import main
try:
    rc = main(sys.argv[1:])
except SystemExit as e:  # --help
    rc = e.code
heavy = sorted(m for m in ('torch', 'numpy', 'matplotlib', 'sklearn', 'PIL', 'yaml') if m in sys.modules)
print('HEAVY ' + ' '.join(heavy), file=sys.stderr)
print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)
sys.exit(rc)
"""


def _cli(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "METAMEM_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def test_help_ls_validate_do_not_import_torch(tmp_path: Path) -> None:
    r = _cli(["--help"], tmp_path)
    assert r.returncode == 0 and "eval" in r.stdout and r.stderr.strip().endswith("NO-TORCH")
    r = _cli(["eval", "--help"], tmp_path)
    assert r.returncode == 0 and "data=folder:PATH" in r.stdout and "``" not in r.stdout
    assert r.stderr.strip().endswith("NO-TORCH")
    first = _cli(["ls", "learners"], tmp_path)  # builds the manifest (imports everything once)
    assert first.returncode == 0 and "mann " in first.stdout
    assert list((tmp_path / "manifests").glob("registries-*.json"))
    again = _cli(["ls", "learners"], tmp_path)
    assert again.stdout == first.stdout and again.stderr.strip().endswith("NO-TORCH")
    # validate checks the builders through the manifest and the optimizer by its values
    # (surely_builds), so a sound config is checked without torch; loading the data needs it
    ok = _cli(["validate", "--no-data", "experiments/omniglot/mann_lru.yaml"], tmp_path)
    assert ok.returncode == 0 and ok.stdout.startswith("ok "), ok.stderr
    assert ok.stderr.strip().endswith("NO-TORCH"), ok.stderr
    bad = _cli(["validate", "--no-data", "experiments/omniglot/mann_lru.yaml",
                "learner.slots=x", "train.optimizer.lrr=1"], tmp_path)
    assert bad.returncode == 1 and "learner.slots: expected int, got 'x'" in bad.stderr
    assert bad.stderr.strip().endswith("NO-TORCH")
    # with the data check too: a config error is reported before the data (and torch) load
    bad = _cli(["validate", "experiments/omniglot/mann_lru.yaml", "learner.slots=x"], tmp_path)
    assert bad.returncode == 1 and "learner.slots: expected int, got 'x'" in bad.stderr
    assert bad.stderr.strip().endswith("NO-TORCH")
    # a value torch refuses is still reported by torch itself (the optimizer is built)
    bad = _cli(["validate", "--no-data", "experiments/omniglot/mann_lru.yaml",
                "train.optimizer.betas=[0.9,1.5]"], tmp_path)
    assert bad.returncode == 1, bad.stderr
    assert "train.optimizer: adam refuses {'lr': 0.001, 'betas': [0.9, 1.5]}: " \
        "Invalid beta parameter at index 1: 1.5\n" in bad.stderr
    assert bad.stderr.strip().endswith("TORCH")


def test_help_of_every_command_imports_nothing_heavy(tmp_path: Path) -> None:
    from metamem.cli.main import COMMANDS

    for args in (["--help"], *([c, "--help"] for c in COMMANDS)):
        r = _cli(args, tmp_path)
        assert r.returncode == 0 and "usage: metamem" in r.stdout, (args, r.stderr)
        assert "HEAVY \n" in r.stderr + "\n" and r.stderr.strip().endswith("NO-TORCH"), (args, r.stderr)


def test_validate_no_data_imports_no_torch_numpy_or_plots(tmp_path: Path) -> None:
    """Every shipped experiment is checked without torch (the data aside)."""
    paths = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "experiments").rglob("*.yaml"))]
    assert _cli(["ls", "learners"], tmp_path).returncode == 0  # the manifest, built once
    r = _cli(["validate", "--no-data", *paths], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("ok ") == len(paths) >= 20
    assert "HEAVY yaml\n" in r.stderr and r.stderr.strip().endswith("NO-TORCH"), r.stderr


def _cfg_with(optimizer: dict[str, Any], scheduler: dict[str, Any]) -> Any:
    from metamem.config import config_from_dict

    return config_from_dict({"train": {"steps": 10, "optimizer": optimizer, "scheduler": scheduler}})


_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-3, 3), st.booleans(), st.none(),
    st.sampled_from(["fast", "", "0.1"]),
    st.lists(st.one_of(st.floats(-0.5, 1.5, width=32), st.integers(0, 1)), max_size=3),
)

_PLAUSIBLE = st.sampled_from([0.0, 0.5, 0.9, 1e-3, 1, 2, 100, -1, True, False, None, [0.9, 0.99], [0.0, 0.5],
                              [0.9, 1], [0, 0.5], [1.0, 0.5], [0.5, 0.99, 0.9],
                              1e9, 0.999])


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_what_surely_builds_does_build(data: st.DataObject) -> None:
    """The fast check (no torch) never accepts what torch's constructors refuse: each accepted
    draw of optimizer and scheduler settings is built for real."""
    from metamem.optim import build_optimizer, build_scheduler
    from metamem.validate import SURE_OPTIMIZERS, SURE_SCHEDULERS, surely_builds

    opt = data.draw(st.sampled_from(sorted(SURE_OPTIMIZERS)))
    sched = data.draw(st.sampled_from(sorted(SURE_SCHEDULERS)))
    okeys = [*SURE_OPTIMIZERS[opt][1], "fused"]
    skeys = [*SURE_SCHEDULERS[sched][1], "bogus"]
    values = st.one_of(_PLAUSIBLE, _PLAUSIBLE, _PLAUSIBLE, _VALUES)
    okw = data.draw(st.dictionaries(st.sampled_from(okeys), values, max_size=2))
    skw = data.draw(st.dictionaries(st.sampled_from(skeys), values, max_size=2))
    cfg = _cfg_with({"name": opt, **okw}, {"name": sched, **skw})
    event(f"surely builds: {surely_builds(cfg)}")
    if surely_builds(cfg):
        import torch

        o = build_optimizer([torch.nn.Parameter(torch.zeros(2))], opt, **okw)
        build_scheduler(o, sched, total_steps=cfg.train.steps, **skw)


def test_surely_builds_takes_the_usual_settings_and_leaves_the_rest_to_torch() -> None:
    from metamem.validate import surely_builds

    assert surely_builds(_cfg_with({"name": "adam", "lr": 0.001, "weight_decay": 0.0}, {"name": "none"}))
    assert surely_builds(_cfg_with({"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
                                   {"name": "step", "step_size": 100, "gamma": 0.5}))
    assert surely_builds(_cfg_with({"name": "adamw", "betas": [0.5, 0.9]}, {"name": "cosine"}))
    for opt, sched in (
        ({"name": "adam", "lr": -1}, {"name": "none"}),  # torch refuses
        ({"name": "adam", "betas": [0.9, 1]}, {"name": "none"}),  # int beta: torch refuses
        ({"name": "sgd", "nesterov": True}, {"name": "none"}),  # no momentum: torch refuses
        ({"name": "adam", "fused": True}, {"name": "none"}),  # not known: built
        ({"name": "adam"}, {"name": "step", "step_size": 5, "last_epoch": 3}),  # torch refuses
    ):
        assert not surely_builds(_cfg_with(opt, sched)), (opt, sched)


@pytest.mark.parametrize("what", list(REGISTRIES))
def test_manifest_specs_match_the_live_builders(what: str) -> None:
    module, attr = REGISTRIES[what]
    live = getattr(importlib.import_module(module), attr)
    assert manifest_registry(what) is live  # once imported, the live registry is used
    assert live.names()
    for name in live.names():
        spec = spec_of(name, live.get(name))
        back = _spec_from_json(name, _spec_to_json(spec))
        assert [(p.name, p.kind, p.default is p.empty) for p in back.signature.parameters.values()] == [
            (p.name, p.kind, p.default is p.empty) for p in spec.signature.parameters.values()
        ]
        for key, tp in back.hints.items():
            assert tp == spec.hints[key], (name, key)
        assert back.doc == spec.doc
        assert back.limited_ways == spec.limited_ways
    if what == "learners":  # LimitedWays learners (validate refuses more eval ways)
        assert {n for n in live.names() if spec_of(n, live.get(n)).limited_ways} >= {"mann", "lstm", "metanet"}
        assert not spec_of("protonet", live.get("protonet")).limited_ways


def test_manifest_spec_and_live_builder_give_the_same_errors() -> None:
    live = importlib.import_module("metamem.learners").LEARNERS.get("mann")
    spec = _spec_from_json("mann", _spec_to_json(spec_of("mann", live)))
    for kwargs in ({"slots": "x"}, {"bogus": 1}, {"policy": 3}, {"top_k": None}):
        errors = []
        for builder in (live, spec):
            try:
                check_builder_kwargs(builder, kwargs, section="learner", source="f.yaml",
                                     injected={"n_way": 5, "image_shape": (1, 1, 1)})
                errors.append(None)
            except ConfigError as e:
                errors.append(str(e))
        assert errors[0] == errors[1], kwargs
    assert load_config(ROOT / "experiments/omniglot/mann_lru.yaml").learner is not None


def test_output_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    """``metamem ls learners | head -1``: no traceback when the reader leaves early."""
    env = {**os.environ, "METAMEM_CACHE": str(tmp_path), "PYTHONPATH": str(ROOT)}
    for args in (["--help"], ["ls", "learners"]):
        p = subprocess.Popen([sys.executable, "-m", "metamem", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, cwd=ROOT)
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()  # before anything is written
        err = p.stderr.read().decode()
        rc = p.wait(timeout=300)
        assert err == "" and rc == (141 if args[0] == "ls" else 0), (args, rc, err)


def test_validate_reports_a_data_error_in_one_line(tmp_path: Path) -> None:
    r = _cli(["validate", "experiments/omniglot/mann_lru.yaml", f"data.options.root={tmp_path}",
              "data.train_split=background"], tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"FAIL experiments/omniglot/mann_lru.yaml: omniglot split 'background' needs images_background.zip, not found in {tmp_path}" in r.stderr
