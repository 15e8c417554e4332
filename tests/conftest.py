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
