"""The shared name -> component registry."""

import pytest

from ebmlab.registry import Registry


def test_register_get_and_list():
    reg = Registry("widget")

    def a():
        pass

    def b():
        pass

    assert reg.add("b", b) is b and reg.add("a", a) is a
    assert reg.add("a", a) is a  # the same component again is a no-op
    assert reg.get("a") is a and reg.names() == ["a", "b"] and "b" in reg and "c" not in reg
    with pytest.raises(ValueError, match=r"a widget named 'a' already exists \(a\)"):
        reg.add("a", b)
    with pytest.raises(ValueError, match="unknown widget 'c'; choose one of a, b"):
        reg.get("c")
    with pytest.raises(ValueError, match="non-empty string"):
        reg.add("", a)
