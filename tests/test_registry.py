"""The generic registry: registration, lookup errors, listing."""

from __future__ import annotations

import pytest

from metamem.registry import Registry, UnknownNameError, forwards_to


def test_register_get_build_and_list() -> None:
    reg: Registry = Registry("widget")

    @reg.register("beta")
    def build_beta(*, size: int = 2) -> tuple[str, int]:
        """Beta widgets.

        More text."""
        return ("beta", size)

    @reg.register("alpha")
    def build_alpha() -> str:
        return "alpha"

    assert reg.names() == ["alpha", "beta"]
    assert reg.build("beta", size=5) == ("beta", 5)
    assert reg.get("alpha") is build_alpha
    assert "beta" in reg and "gamma" not in reg and len(reg) == 2
    assert reg.describe() == [("alpha", ""), ("beta", "Beta widgets.")]


def test_unknown_name_lists_valid_names_and_suggests() -> None:
    reg: Registry = Registry("widget")
    reg.register("protonet")(lambda: 1)
    reg.register("maml")(lambda: 2)
    with pytest.raises(UnknownNameError, match=r"unknown widget 'protonett' \(did you mean 'protonet'\?\); valid widgets: maml, protonet"):
        reg.get("protonett")
    with pytest.raises(ValueError):  # also a ValueError, so the CLI prints it in one line
        reg.get("x")


def test_duplicate_registration_is_refused() -> None:
    reg: Registry = Registry("widget")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.register("a")(lambda: 2)


class Model:
    def __init__(self, trunk: object, *, width: int = 8, mode: str = "a") -> None:
        self.trunk, self.width, self.mode = trunk, width, mode


@forwards_to(Model, drop=("trunk",))
def build(*, depth: int = 2, **options: object) -> Model:
    return Model(depth, **options)


def test_forwards_to_gives_the_builder_the_target_signature_and_defaults() -> None:
    # a builder that makes one part and forwards the rest: every key is seen, defaults once
    import inspect

    from metamem.registry import builder_hints

    sig = inspect.signature(build)
    assert list(sig.parameters) == ["depth", "width", "mode"]
    assert sig.parameters["width"].default == 8 and sig.parameters["mode"].kind is inspect.Parameter.KEYWORD_ONLY
    assert builder_hints(build) == {"depth": int, "width": int, "mode": str, "return": Model}
    m = build(width=3)
    assert (m.trunk, m.width, m.mode) == (2, 3, "a")
    with pytest.raises(ValueError, match=r"needs \*\*options"):
        forwards_to(Model)(lambda *, depth=2: None)


def test_learner_builders_forward_to_their_class_defaults() -> None:
    # maml, memory_matching, mann, lstm: the builder's defaults are the class's, written once
    import inspect

    from metamem.learners import LEARNERS
    from metamem.learners.lstm import LSTMLearner
    from metamem.learners.maml import MAML
    from metamem.learners.mann import MANN
    from metamem.learners.memory_matching import MemoryMatchingNet

    for name, cls in (("maml", MAML), ("memory_matching", MemoryMatchingNet), ("mann", MANN), ("lstm", LSTMLearner)):
        builder = LEARNERS.get(name)
        code = inspect.unwrap(builder).__code__  # the parameters the builder's own def names
        own = set(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])
        bp = inspect.signature(builder).parameters
        for p in inspect.signature(cls).parameters.values():
            if p.default is not p.empty:
                assert p.name not in own, f"{name}: {p.name}'s default is written twice"
                assert bp[p.name].default == p.default, (name, p.name)


def test_resolved_options_fill_scalar_defaults_after_the_given_ones(monkeypatch) -> None:
    import enum

    from metamem.learners import LEARNERS
    from metamem.learners.base import resolved_options
    from metamem.registry import renamed_keys

    class Mode(str, enum.Enum):
        A = "a"

    @renamed_keys(old_width="width")
    def toy(*, n_way: int, image_shape: tuple[int, int, int], width: int = 8, scale: float = 1.5,
            name_of: str | None = None, shape: tuple[int, int] = (2, 3), mode: Mode = Mode.A,
            flag: bool = False) -> None:
        """A toy learner."""

    monkeypatch.setitem(LEARNERS._items, "toy_defaults", toy)
    got = resolved_options("toy_defaults", {"flag": True, "scale": 2.0})
    # given first, in their order; then scalar defaults in the builder's order; the tuple and
    # the str enum are not YAML scalars; the framework's n_way and image_shape never appear
    assert list(got.items()) == [("flag", True), ("scale", 2.0), ("width", 8), ("name_of", None)]
    # an old spelling counts as given: its new name is not filled in beside it
    assert resolved_options("toy_defaults", {"old_width": 4}) == {
        "old_width": 4, "scale": 1.5, "name_of": None, "flag": False}
    with pytest.raises(UnknownNameError, match="unknown learner 'toy_nope'"):
        resolved_options("toy_nope", {})
    assert resolved_options("protonet", {}) == {"backbone": "conv4", "distance": "euclidean"}


def test_every_shipped_learner_builds_the_same_from_its_resolved_options() -> None:
    import torch

    from metamem.learners import LEARNERS, build_learner
    from metamem.learners.base import resolved_options

    for name in LEARNERS.names():
        given = {"num_train_classes": 7} if name == "linear_probe" else {}
        torch.manual_seed(0)
        plain = build_learner(name, n_way=5, image_shape=(1, 28, 28), **given).state_dict()
        torch.manual_seed(0)
        filled = build_learner(name, n_way=5, image_shape=(1, 28, 28),
                               **resolved_options(name, given)).state_dict()
        assert plain.keys() == filled.keys() and all(torch.equal(plain[k], filled[k]) for k in plain), name
