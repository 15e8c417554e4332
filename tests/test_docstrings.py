"""The Examples in public docstrings run (doctest), so the documented API stays true."""
from __future__ import annotations

import doctest
import importlib

import pytest

#: modules whose docstring examples run here (examples that need a trained run or a server
#: are marked ``# doctest: +SKIP`` in place); ``tmp`` is an empty folder in their globals
MODULES = [
    "mask_keras.models.serving",
    "mask_keras.models.build",
    "mask_keras.augment",
    "mask_keras.pipeline.dataset",
    "mask_keras.cropbox",
    "mask_keras.train",
    "mask_keras.keras_util",
    "mask_keras.bn_stats",
    "mask_keras.kfold",
    "mask_keras.inference.artifacts",
    "mask_keras.inference.images",
    "mask_keras.inference.runners",
    "mask_keras.inference.faces",
    "mask_keras.inference.combine",
    "mask_keras.ensemble",
    "mask_keras.evaluate",
    "mask_keras.groups",
    "mask_keras.inference.answers",
    "mask_keras.recipe",
    "mask_keras.labels",
    "mask_keras.models.heads",
    "mask_keras.metrics",
    "mask_keras.sampling",
    "mask_keras.augment_stages",
    "mask_keras.tune.space",
    "mask_keras.tune.storage",
    "mask_keras.tune.results",
    "mask_keras.models.backbones",
    "mask_keras.models.pretrained",
    "mask_keras.environ",
    "mask_keras.errors",
    "mask_keras.registry",
    "mask_keras.config",
    "mask_keras.data.relabel",
    "mask_keras.data.layout",
    "mask_keras.data.synth.plan",
    "mask_keras.data.synth.render",
    "mask_keras.data.synth.write",
    "mask_keras.detect.cache",
    "mask_keras.detect.worker",
    "mask_keras.detect.crop",
    "mask_keras.data.splits",
    "mask_keras.detect.geometry",
    "mask_keras.jax_backend.cpu_conv",
]
#: modules whose every example is ``+SKIP``, and why (the same calls run in the named tests)
SKIP_ONLY = {
    "mask_keras.callbacks": "callbacks inside a training run (tests/test_train.py)",
    "mask_keras.export": "a TensorFlow-backend export subprocess of a trained run (tests/test_readme.py, test_export.py)",
    "mask_keras.inference.exported": "an export folder (tests/test_readme.py, tests/test_export.py)",
    "mask_keras.inference.engine": "trained members and photos (tests/test_predictor.py)",
    "mask_keras.inference.predictor": "a trained run and a folder of photos (tests/test_predictor.py, test_readme.py)",
    "mask_keras.serving.app": "a served model (tests/test_serve.py)",
    "mask_keras.serving.server": "a served model (tests/test_serve.py)",
    "mask_keras.resume": "a run killed and resumed (tests/test_resume.py)",
}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False,
                             extraglobs={"tmp": tmp_path})
    assert result.attempted > 0, f"{name}: no docstring examples ran"
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples in {name} failed"


def test_every_module_with_examples_is_run_here():
    """A module whose docstrings hold ``>>>`` examples is in MODULES, so none is written and never run."""
    from pathlib import Path

    pkg = Path(importlib.import_module("mask_keras").__file__).parent
    with_examples = {"mask_keras." + ".".join(p.relative_to(pkg).with_suffix("").parts)
                     for p in pkg.rglob("*.py") if ">>> " in p.read_text()}
    assert sorted(with_examples - set(MODULES) - set(SKIP_ONLY)) == []
    assert sorted(set(SKIP_ONLY) & set(MODULES)) == []
