"""The method registry: discovery without import, lazy loading, duplicate and unknown names."""

import pytest

from methods import registry
from methods.registry import Method
from suite.errors import DuplicateMethodError, UnknownMethodError


def test_discover_lists_the_builtin_methods():
    names = registry.discover()
    assert {"zeroshot", "full", "lora"} <= set(names)
    assert "base" not in names and "registry" not in names


def test_unknown_method_names_the_valid_ones():
    with pytest.raises(UnknownMethodError, match="valid: .*lora"):
        registry.get("no-such-method")


def test_duplicate_registration_is_refused():
    lora = registry.get("lora")
    clash = Method(name="lora", description="", reference="", config_cls=lora.config_cls,
                   build=lora.build)
    with pytest.raises(DuplicateMethodError):
        registry.register(clash)
    assert registry.get("lora") is lora


def test_unknown_method_option_is_an_error_naming_valid_options():
    with pytest.raises(ValueError, match="valid: rank"):
        registry.get("lora").make_config("ViT-B-32", 12, {"rnak": 4})
