"""Shared fixtures: tiny synthetic sets built once per session.

Training tests use the package's persistent JAX compilation cache (~/.cache/mask_keras/jax),
so a second run of the suite skips most XLA compiles."""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """60 train people + 12 eval people at 128x96: small, but every quirk of the real layout."""
    from mask_keras.data.synth import generate

    root = tmp_path_factory.mktemp("synth") / "data"
    generate(root, people=60, eval_people=12, seed=0, image_size=(128, 96), workers=2, progress=False)
    return root


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the marks into the node ids
def pytest_collection_modifyitems(config, items):
    """Under ``pytest -n N --dist loadgroup`` (``make test``): the tests of a module that share a
    module-scoped fixture (a trained model, a built data set) run in one worker, so the fixture
    is built once; every other test goes to whichever worker is free."""
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)  # pytest's per-test fixture closure
        if defs is not None and any(d and d[-1].scope == "module" for d in defs.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
