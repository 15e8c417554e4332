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
    """60 train people + 12 eval people at 128x96: small, but every quirk of the real layout.

    Built once per run: under xdist the first worker to get here generates it into the run's
    shared temporary folder and the others wait for it (generating it twice at once took
    each worker twice as long). Tests only read it."""
    import time

    from mask_keras.data.synth import generate

    shared = os.environ.get("PYTEST_XDIST_WORKER") is not None
    base = tmp_path_factory.getbasetemp().parent if shared else tmp_path_factory.getbasetemp()
    root, done = base / "synth60" / "data", base / "synth60.done"
    try:
        os.close(os.open(base / "synth60.lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:  # another worker is generating it
        deadline = time.monotonic() + 600
        while not done.is_file():
            if (base / "synth60.failed").is_file():
                raise RuntimeError(f"{root}: generating it failed in another test worker (see its error)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{root}: another test worker did not finish generating it in 10 minutes")
            time.sleep(0.2)
        return root
    try:
        # one process: 1.3 s here; a pool of 2 starts processes for longer than the whole job takes
        generate(root, people=60, eval_people=12, seed=0, image_size=(128, 96), workers=1, progress=False)
    except BaseException:
        (base / "synth60.failed").touch()
        raise
    done.touch()
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
