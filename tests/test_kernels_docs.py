"""The calls shown in the kernel modules' docstrings run and print what they show."""
import doctest
import importlib

import pytest

MODULES = ["functional", "launch"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"curatedloader.kernels.{name}")
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
