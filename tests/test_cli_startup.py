"""Fast start: ``metamem --help`` and ``ls`` answer without importing torch, and the
registry manifest they (and ``validate``) read describes exactly the live registries."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    # validate checks the builders through the manifest (it does import torch: it dry-builds
    # the optimizer and loads the splits)
    ok = _cli(["validate", "--no-data", "experiments/omniglot/mann_lru.yaml"], tmp_path)
    assert ok.returncode == 0, ok.stderr
    bad = _cli(["validate", "--no-data", "experiments/omniglot/mann_lru.yaml",
                "learner.slots=x", "train.optimizer.lrr=1"], tmp_path)
    assert bad.returncode == 1 and "learner.slots: expected int, got 'x'" in bad.stderr


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
