"""The Examples in public docstrings run (doctest), so the documented API stays true."""
from __future__ import annotations

import doctest
import importlib

import pytest

#: modules whose docstring examples run here (examples that need a trained run or a server
#: are marked ``# doctest: +SKIP`` in place); ``tmp`` is an empty folder in their globals
MODULES = ["mask_keras.models.serving", "mask_keras.models.build", "mask_keras.augment",
           "mask_keras.pipeline.dataset", "mask_keras.cropbox"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False,
                             extraglobs={"tmp": tmp_path})
    assert result.attempted > 0, f"{name}: no docstring examples ran"
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples in {name} failed"
