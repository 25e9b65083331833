"""One source of defaults: :class:`metamem.config.EvalCfg`. Everything else reads it."""

from __future__ import annotations

import dataclasses
import inspect

import metamem
from metamem.config import EVAL_DEFAULTS, PROTOCOL_NAMES, EvalCfg, config_to_dict
from metamem.evaluation import Protocol
from metamem.evaluation.runs import DEFAULT_EVAL, OVERRIDE_KEYS
from metamem.evaluation.scoring import SCORINGS
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
    from metamem.evaluation import runs

    assert not hasattr(distributed, "resolve_device")
    assert runs.resolve_device.__module__ == "metamem.device"
    assert cache.atomic_write_bytes is files.atomic_write
    assert report.atomic_write_text is files.write_text
