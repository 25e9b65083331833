"""One source of defaults: :class:`metamem.config.EvalCfg`. Everything else reads it."""

from __future__ import annotations

import dataclasses
import inspect

import metamem
from metamem.config import EVAL_DEFAULTS, PROTOCOL_NAMES, EvalCfg, config_to_dict
from metamem.evaluation import Protocol
from metamem.evaluation.scoring import SCORINGS
from metamem.evaluation.sweeps import DEFAULT_EVAL, OVERRIDE_KEYS
from metamem.validate import EVAL_PROTOCOLS


def test_evaluation_defaults_are_the_eval_config() -> None:
    want = config_to_dict(EvalCfg())
    assert config_to_dict(EVAL_DEFAULTS) == want
    params = inspect.signature(metamem.evaluate).parameters
    # every protocol key but split; data_options there only records what loaded the split
    shared = [k for k in want if k in params and k != "data_options"]
    assert len(shared) == 10
    assert {k: params[k].default for k in shared} == {k: want[k] for k in shared}
    proto = {f.name: f.default for f in dataclasses.fields(Protocol)
             if f.name in want and f.default is not dataclasses.MISSING}
    assert proto == {k: want[k] for k in proto} and len(proto) == 6
    assert DEFAULT_EVAL == want
    assert OVERRIDE_KEYS == tuple(f"eval.{k}" for k in want) + ("device", "data")


def test_protocol_names_are_defined_once() -> None:
    assert PROTOCOL_NAMES == ("set", "sequence", "both")
    assert SCORINGS is PROTOCOL_NAMES and EVAL_PROTOCOLS is PROTOCOL_NAMES
    assert EvalCfg.__dataclass_fields__["protocol"].default in PROTOCOL_NAMES


def test_one_device_resolver_and_one_atomic_writer() -> None:
    import metamem.data.cache as cache
    import metamem.evaluation.report as report
    import metamem.training.distributed as distributed
    from metamem import files
    from metamem.evaluation import sweeps

    assert not hasattr(distributed, "resolve_device")
    assert sweeps.resolve_device.__module__ == "metamem.device"
    assert cache.atomic_write_bytes is files.atomic_write
    assert report.atomic_write_text is files.write_text


def test_one_run_type_and_one_loader() -> None:
    import metamem.runs
    import metamem.training
    from metamem.evaluation import inspect_memory, sweeps, trained_run

    assert metamem.load_run is trained_run.load_run and metamem.Run is trained_run.Run
    assert sweeps.load_run is metamem.load_run and inspect_memory.load_run is metamem.load_run
    for module in (metamem.runs, metamem.training, sweeps):
        assert not hasattr(module, "load_learner") and "load_run" not in getattr(module, "__all__", ())
    assert not hasattr(metamem.training, "Run")  # training's state is TrainState
    assert inspect.signature(metamem.load_run).parameters["device"].default == "auto"
    assert dataclasses.fields(metamem.Run)[2].type in ("ExperimentCfg", metamem.config.ExperimentCfg)
