"""The generic registry: registration, lookup errors, listing."""

from __future__ import annotations

import pytest

from metamem.registry import Registry, UnknownNameError


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
