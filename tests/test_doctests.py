"""The docstring examples of the core modules run and print what they show."""
import doctest
import importlib

import pytest
import torch

import curatedloader
from curatedloader.curation import Generators
from curatedloader.stats import LoaderStats

MODULES = ["batch", "curation", "distributed", "loader", "rng", "rows", "schedules", "scores", "selection",
           "sources", "stats", "weights"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"curatedloader.{name}")
    names = {k: getattr(curatedloader, k) for k in curatedloader.__all__}
    result = doctest.testmod(module, extraglobs={"torch": torch, "LoaderStats": LoaderStats, "Generators": Generators,
                                                 **names},
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.attempted > 0 and result.failed == 0
