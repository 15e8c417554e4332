"""CPU inference path: export a trained artifact to a TensorFlow SavedModel and run it with TF.

Keras 3 models are backend-agnostic, so the trained ``model.keras`` (trained with JAX) is
reloaded with the TensorFlow backend in a subprocess and exported there as a SavedModel of
native TF ops, which TF Serving and any TensorFlow runtime load without this package, with
the same outputs (within 1e-4). On a 2-core CPU (``bench/inference.py``, 2026-11-22) it ran
an EfficientNet-B0 6-8x faster than the JAX path of that day; the JAX path has since become
5-9x faster on CPU (:mod:`mask_keras.jax_backend.cpu_conv`), so re-measure before choosing
one for speed.

Formats (``export_artifact(..., format=...)``):

* ``"tf_saved_model"`` (default): native TF ops, exported by a TensorFlow-backend
  subprocess. Needs nothing beyond the package's dependencies. Fast on CPU.
* ``"jax2tf"``: ``model.export`` from this (JAX) process through ``jax2tf``; the graph holds
  one ``XlaCallModule`` op (the StableHLO program), so TF runs it through XLA again: it
  works and matches, but it is no faster than JAX on CPU. Kept for TF-Serving users who
  want the exact JAX program.

An exported directory (``out_dir``)::

    saved_model/     the SavedModel; signature ``serve(images)``: float32 (N, H, W, 3)
                     RGB pixels in 0..255 -> probabilities (N, C), or a dict
                     {"mask", "gender", "age"} for a multihead model
    config.json      the run's config (preprocessing is re-applied from it)
    export.json      format, task, image size, outputs, source, versions

Use it::

    from mask_keras.export import export_artifact, load_exported
    export_artifact("runs/mask", "exports/mask")             # once
    m = load_exported("exports/mask")
    probs = m.predict_files(paths)                           # files -> probabilities
    probs = m.predict(x)                                     # 0..255 RGB batch -> probabilities

The loader needs TensorFlow only (no JAX, no Keras model code): a serving host can run it.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from . import labels as L
from .config import Config
from .errors import unknown_choice
from .files import atomic_write_text

log = logging.getLogger(__name__)

FORMATS = ("tf_saved_model", "jax2tf")
SAVED_MODEL = "saved_model"
META = "export.json"
TASK_ORDER = L.HEADS


class ExportError(RuntimeError):
    """The export failed or the exported directory is not usable."""


# a TensorFlow-backend process: reload the .keras file and export native TF ops
_TF_EXPORT = r"""
import sys
import keras
import mask_keras  # registers the package's custom objects
assert keras.backend.backend() == "tensorflow", keras.backend.backend()
model = keras.saving.load_model(sys.argv[1], compile=False)
model.export(sys.argv[2], format="tf_saved_model", verbose=False)
"""


def _check_run_dir(run_dir) -> tuple[Path, Config]:
    p = Path(run_dir)
    if p.suffix == ".keras":
        p = p.parent
    if not (p / "model.keras").is_file():
        raise ExportError(f"{p}: no model.keras here; pass a run directory written by `mask-keras train`")
    if not (p / "config.json").is_file():
        raise ExportError(f"{p}: no config.json beside model.keras; the export needs the run's preprocessing")
    return p, Config.load(p / "config.json")


def export_artifact(run_dir, out_dir, format: str = "tf_saved_model", *, verify: bool = False,
                    timeout: float = 1800) -> Path:
    """Export the run directory ``run_dir`` (``model.keras`` + ``config.json``) to ``out_dir``.

    ``format``: ``"tf_saved_model"`` (native TF ops, fast on CPU; exported by a TensorFlow-backend
    subprocess) or ``"jax2tf"`` (in this JAX process; runs through XLA). ``verify``: also run
    the Keras model here and the export on the same random batch and raise
    :class:`ExportError` if they differ by more than 1e-4. ``out_dir`` is replaced only once
    the new export is complete. Returns ``out_dir``.
    """
    if format not in FORMATS:
        raise unknown_choice("export format", format, FORMATS)
    run, cfg = _check_run_dir(run_dir)
    out = Path(out_dir).expanduser().absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    t0 = time.perf_counter()
    try:
        sm = tmp / SAVED_MODEL
        if format == "tf_saved_model":
            env = {**os.environ, "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": "",
                   "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
            proc = subprocess.run([sys.executable, "-c", _TF_EXPORT, str(run / "model.keras"), str(sm)],
                                  env=env, capture_output=True, text=True, timeout=timeout)
            if proc.returncode != 0 or not (sm / "saved_model.pb").is_file():
                raise ExportError(f"export of {run / 'model.keras'} with the TensorFlow backend failed "
                                  f"(exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        else:
            import keras

            if keras.backend.backend() != "jax":
                raise ExportError("format='jax2tf' exports from a JAX-backend process; "
                                  f"this one runs {keras.backend.backend()!r}")
            _load_keras(run).export(str(sm), format="tf_saved_model", verbose=False)
        shutil.copy2(run / "config.json", tmp / "config.json")
        h, w = (int(v) for v in cfg.preprocess.image_size)
        meta = {"format": format, "task": cfg.train.task, "image_size": [h, w],
                "outputs": list(TASK_ORDER) if cfg.train.task == "multihead" else None,
                "source": str(run), "seconds": round(time.perf_counter() - t0, 2),
                "versions": _versions()}
        atomic_write_text(tmp / META, json.dumps(meta, indent=2) + "\n")
        if verify:
            diff = max_abs_difference(run, tmp)
            if diff > 1e-4:
                raise ExportError(f"exported model differs from {run / 'model.keras'} by {diff:.3g} (> 1e-4)")
            meta["verify_max_abs_difference"] = float(diff)  # recorded with the export
            atomic_write_text(tmp / META, json.dumps(meta, indent=2) + "\n")
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s -> %s (%s, %.1f s)", run, out, format, time.perf_counter() - t0)
    return out


def _versions() -> dict:
    import keras

    from ._tf import tf

    return {"keras": keras.__version__, "tensorflow": tf.__version__}


def _load_keras(run: Path):
    import keras

    import mask_keras  # noqa: F401  (registers custom objects)

    return keras.saving.load_model(run / "model.keras", compile=False)


class ExportedModel:
    """An exported directory, loaded with TensorFlow (see :func:`load_exported`)."""

    def __init__(self, path):
        from ._tf import tf

        self.path = Path(path)
        if not (self.path / SAVED_MODEL / "saved_model.pb").is_file():
            raise ExportError(f"{self.path}: no {SAVED_MODEL}/saved_model.pb; export with "
                              f"mask_keras.export.export_artifact first")
        try:
            self.meta = json.loads((self.path / META).read_text())
        except FileNotFoundError:
            raise ExportError(f"{self.path}: no {META}; not written by mask_keras.export") from None
        self.config = Config.load(self.path / "config.json")
        self._loaded = tf.saved_model.load(str(self.path / SAVED_MODEL))
        self._fn = self._loaded.serve

    @property
    def task(self) -> str:
        return self.config.train.task

    @property
    def format(self) -> str:
        return self.meta["format"]

    def _run(self, x):
        from ._tf import tf

        out = self._fn(tf.cast(x, tf.float32))
        if isinstance(out, dict):
            return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
        if isinstance(out, (list, tuple)):
            return dict(zip(TASK_ORDER, (np.asarray(v, dtype=np.float32) for v in out)))
        return np.asarray(out, dtype=np.float32)

    def predict(self, x, batch_size: int = 64):
        """RGB pixels in 0..255 (N, H, W, 3), uint8 or float -> probabilities (N, C), or a dict of heads."""
        x = np.asarray(x, dtype=np.float32)
        parts = [self._run(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        return _concat(parts)

    def predict_files(self, paths, batch_size: int = 64, tta: bool = False, check: str = "fast",
                      progress: bool = False):
        """Image files (or a table with ``path``) -> probabilities, with the run's preprocessing.

        Same contract as :func:`mask_keras.predict.predict_probs`: (N, C), or a dict of heads
        for a multihead model; ``tta`` averages with the horizontally flipped view.
        """
        from . import pipeline
        from .ensemble import tta_mean

        views = []
        for flip in ([False, True] if tta else [False]):
            ds, n = pipeline.make_predict_dataset(paths if isinstance(paths, pd.DataFrame) else list(paths),
                                                  self.config.preprocess, batch_size, flip=flip, check=check,
                                                  progress=progress)
            out = _concat([self._run(x) for x in ds])
            views.append({k: v[:n] for k, v in out.items()} if isinstance(out, dict) else out[:n])
        if isinstance(views[0], dict):
            return {k: tta_mean([v[k] for v in views]) for k in views[0]}
        return tta_mean(views)

    def __repr__(self) -> str:
        return f"ExportedModel({str(self.path)!r}, task={self.task!r}, format={self.format!r})"


def _concat(parts):
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


def load_exported(path) -> ExportedModel:
    """Load a directory written by :func:`export_artifact` (TensorFlow only, on CPU)."""
    return ExportedModel(path)


def max_abs_difference(run_dir, export_dir, n: int = 4, seed: int = 0) -> float:
    """Largest absolute difference between the Keras model of ``run_dir`` (this process'
    backend) and the export in ``export_dir`` on ``n`` random images (0..255 pixels)."""
    run, cfg = _check_run_dir(run_dir)
    h, w = (int(v) for v in cfg.preprocess.image_size)
    x = np.random.default_rng(seed).uniform(0, 255, size=(n, h, w, 3)).astype(np.float32)
    ref = _load_keras(run).predict(x, verbose=0)
    got = ExportedModel(export_dir).predict(x)
    if isinstance(ref, (list, tuple)):
        ref = dict(zip(TASK_ORDER, ref))
    if isinstance(ref, dict):
        return max(float(np.max(np.abs(np.asarray(ref[k]) - got[k]))) for k in ref)
    return float(np.max(np.abs(np.asarray(ref) - got)))
