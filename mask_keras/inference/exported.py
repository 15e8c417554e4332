"""Load and run an export folder (:mod:`mask_keras.export` writes them), and verify one.

:func:`load_exported` opens any format with its runtime (TensorFlow, ONNX Runtime, the LiteRT
interpreter). :meth:`ExportedModel.predict` runs the model on cropped, resized pixels: what
the inference engine gives every model, so ``Predictor.load(export_dir)`` answers files,
arrays and uploads with an export exactly as with its run (the decode, crop, face detector
and TTA are the engine's). :meth:`ExportedModel.predict_photos` runs the graph's own photo
signature (crop and resize inside the graph), what a deployment without this package calls.
:func:`verify_export` compares an export with the Keras model of its run on real photos.

Example:
    >>> m = load_exported("exports/mask_onnx")                     # doctest: +SKIP
    >>> m.predict(pixels_uint8).shape                              # doctest: +SKIP
    (1, 3)
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from .. import labels as L
from .. import pipeline
from .._tf import tf
from ..config import Config, ConfigError
from ..detect.geometry import center_crop_boxes
from ..errors import ExportError  # defined there (the command line catches it without TF); importable here as before
from ..models.serving import build_serving_model
from .artifacts import ArtifactError, load_artifact, model_outputs
from .engine import Engine, Member
from .images import ImageInput
from .runners import concat_outputs

FORMATS = ("tf_saved_model", "onnx", "litert", "jax2tf")
#: the file or folder each format writes in the export folder
FILES = {"tf_saved_model": "saved_model", "onnx": "model.onnx", "litert": "model.tflite", "jax2tf": "saved_model"}
#: the extra each runtime needs beyond the package's dependencies
RUNTIMES = {"onnx": ("onnxruntime", "tf2onnx"), "litert": ("ai_edge_litert",)}
SAVED_MODEL = "saved_model"
META = "export.json"
TASK_ORDER = L.HEADS
TOLERANCE = 1e-4


def check_run_dir(run_dir) -> tuple[Path, Config]:
    """The run directory of ``run_dir`` (or of its ``model.keras``) and its config, checked as
    :func:`mask_keras.inference.artifacts.load_artifact` checks it; :class:`ExportError` if not one.

    Args:
        run_dir: a run directory written by ``mask-keras train``, or its ``model.keras``.

    Returns:
        ``(run directory Path, its Config)``.
    """
    try:
        art = load_artifact(run_dir)
    except ArtifactError as e:
        raise ExportError(str(e)) from e
    return art.path, art.config


def check_runtime(format: str) -> None:
    """:class:`ExportError` naming the extra to install when ``format``'s runtime is missing.

    Args:
        format: one of :data:`FORMATS` (only ``onnx`` and ``litert`` need extras, :data:`RUNTIMES`).
    """
    missing = [m for m in RUNTIMES.get(format, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"format={format!r} needs {', '.join(missing)}: pip install 'mask_keras[export]'")


def load_keras(run: Path):
    """The run's model.keras (the package's custom objects are registered by importing it).

    Args:
        run: the run directory (a ``Path``).

    Returns:
        The ``keras.Model``, not compiled.
    """
    return keras.saving.load_model(run / "model.keras", compile=False)


class ExportedModel:
    """An export folder, loaded with its runtime (see :func:`load_exported`).

    Args:
        path: a folder written by :func:`export_artifact`.

    Example:
        >>> m = ExportedModel("exports/mask")                            # doctest: +SKIP
        >>> m.predict_images([photo])["probs"].shape                     # doctest: +SKIP
        (1, 3)
    """

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.meta = json.loads((self.path / META).read_text())
        except FileNotFoundError:
            raise ExportError(f"{self.path}: no {META}; not written by mask_keras.export "
                              f"(export with mask_keras.export.export_artifact first)") from None
        fmt = self.meta.get("format")
        if fmt not in FORMATS:
            raise ExportError(f"{self.path / META}: unknown format {fmt!r}; re-export with this version")
        f = self.path / FILES[fmt]
        if not (f / "saved_model.pb" if fmt in ("tf_saved_model", "jax2tf") else f).exists():
            raise ExportError(f"{self.path}: {FILES[fmt]} is missing (export.json says {fmt}); export again")
        try:
            self.config = Config.load(self.path / "config.json")
        except ConfigError as e:  # the export's copy of the run's config: its preprocessing and classes
            raise ExportError(f"{self.path}: the export's config.json is unusable ({e}); export the run again "
                              f"(it copies the run's config.json)") from e
        if fmt in ("tf_saved_model", "jax2tf"):
            self._loaded = tf.saved_model.load(str(f))
        elif fmt == "onnx":
            check_runtime(fmt)
            import onnxruntime  # the optional `export` extra

            self._session = onnxruntime.InferenceSession(str(f), providers=["CPUExecutionProvider"])
            self._out_names = [o.name for o in self._session.get_outputs()]
        else:
            check_runtime(fmt)
            from ai_edge_litert.interpreter import (
                Interpreter,  # the optional `export` extra
            )

            self._interpreter = Interpreter(str(f))
            self._runner = self._interpreter.get_signature_runner()

    @property
    def task(self) -> str:
        """The run's task (``config.train.task``)."""
        return self.config.train.task

    @property
    def format(self) -> str:
        """The export's format, one of :data:`FORMATS` (from ``export.json``)."""
        return self.meta["format"]

    @property
    def takes_photos(self) -> bool:
        """Whether the graph crops and resizes itself (every format but ``jax2tf``)."""
        return self.format != "jax2tf"

    def _run_pixels(self, x):
        return model_outputs(self._loaded.serve(tf.cast(x, tf.float32)))

    def predict_photos(self, x, boxes=None) -> dict:
        """The graph's own photo signature: uint8 ``(N, H, W, 3)`` photos of one size (and, for a
        ``crop="face"`` run, ``(N, 4)`` ``[y0, x0, y1, x1]`` crop boxes) -> its outputs.

        The crop and resize run inside the graph (what a deployment without this package
        calls); every format but ``jax2tf``.

        Args:
            x: the photos.
            boxes: the face crop boxes (``crop="face"`` runs only).

        Returns:
            A dict of numpy arrays: ``probs`` (or the heads) and ``crop_box``.
        """
        feed = {"image": np.ascontiguousarray(x, dtype=np.uint8)}
        if self.config.preprocess.crop == "face":
            feed["box"] = np.asarray(boxes, dtype=np.int32).reshape(len(x), 4)
        if self.format == "tf_saved_model":
            out = self._loaded.serve_image(**{k: tf.constant(v) for k, v in feed.items()})
        elif self.format == "onnx":
            out = dict(zip(self._out_names, self._session.run(None, feed)))
        elif self.format == "litert":
            out = self._runner(**feed)
        else:
            raise ExportError(f"{self.path}: a jax2tf export takes cropped pixels only (predict), not photos")
        return {k: np.asarray(v) for k, v in out.items()}

    def predict(self, x, batch_size: int = 64):
        """Cropped and resized pixels ``(N, h, w, 3)`` (uint8 or float 0..255) -> probabilities
        (N, C), or a dict of heads for a multi-head model (the model alone, no crop).

        Args:
            x: the pixels, ``(h, w)`` the run's ``preprocess.image_size`` (ONNX and LiteRT
                round and clip them to uint8).
            batch_size: images per runtime call.

        Returns:
            float32 (N, C), or ``{head: (N, C)}`` for a multi-head model.

        Raises:
            ValueError: ONNX/LiteRT pixels not of the run's image size.
        """
        x = np.asarray(x)
        if self.format in ("tf_saved_model", "jax2tf"):
            parts = [self._run_pixels(x[i:i + batch_size].astype(np.float32)) for i in range(0, len(x), batch_size)]
            return concat_outputs(parts)
        h, w = self.config.preprocess.image_size
        if x.shape[1:3] != (h, w):
            raise ValueError(f"predict takes pixels already resized to {h}x{w}, got {x.shape}; "
                             f"use predict_images for photos")
        whole = np.tile(np.array([[0, 0, h, w]], np.int32), (len(x), 1))  # the crop of an h x w image is itself
        parts = [self.predict_photos(np.clip(np.round(x[i:i + batch_size]), 0, 255).astype(np.uint8), whole[i:i + batch_size])
                 for i in range(0, len(x), batch_size)]
        return self._probs(concat_outputs(parts))

    def _probs(self, out: dict):
        if self.task == "multihead":
            return {k: out[k].astype(np.float32) for k in TASK_ORDER}
        return out["probs"].astype(np.float32)

    def close(self) -> None:
        """Release the runtime (nothing to stop: the face detector is the engine's)."""

    def __repr__(self) -> str:
        return f"ExportedModel({str(self.path)!r}, task={self.task!r}, format={self.format!r})"


def load_exported(path) -> ExportedModel:
    """Load a folder written by :func:`export_artifact` with its runtime (TensorFlow, ONNX
    Runtime or the LiteRT interpreter; no JAX, no Keras model code).

    Args:
        path: the export folder (``export.json``, ``config.json`` and the format's file).

    Returns:
        An :class:`ExportedModel`; :class:`ExportError` when the folder is not a usable export.
    """
    return ExportedModel(path)


def verification_images(run_dir, n: int = 6, seed: int = 0) -> tuple[list, str]:
    """Up to ``n`` real photos to verify an export on: the run's validation images
    (``val_predictions.csv``), else generated ones (512x384 noise, then 300x200). Returns the
    paths (None for generated ones) with the decoded uint8 arrays, and a description.

    Args:
        run_dir: the run directory.
        n: at most this many photos (exactly ``n`` when generated).
        seed: seeds the generated photos.

    Returns:
        ``([(path or None, uint8 (H, W, 3) array), ...], description)``.
    """

    run = Path(run_dir)
    paths: list = []
    vp = run / "val_predictions.csv"
    if vp.is_file():
        try:
            col = pd.read_csv(vp, usecols=["path"])["path"]
            paths = [p for p in col.tolist() if Path(p).is_file()][:n]
        except (ValueError, KeyError):
            paths = []
    if paths:
        imgs = [pipeline.decode_image(tf.io.read_file(p)).numpy() for p in paths]
        return list(zip(paths, imgs)), f"{len(paths)} validation image(s) of the run"
    rng = np.random.default_rng(seed)
    sizes = [(512, 384)] * (n - n // 2) + [(300, 200)] * (n // 2)
    imgs = [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for hw in sizes]
    return [(None, im) for im in imgs], f"{n} generated image(s) (the run's validation images were not found)"


def verify_export(run_dir, export_dir, n: int = 6, seed: int = 0) -> dict:
    """Compare an export with the Keras model of ``run_dir`` on the same photos.

    ``max_abs_difference``: the export's runtime against the Keras serving model (the same
    graph: :func:`mask_keras.models.serving.build_serving_model`) run here, on the decoded
    photos (a SavedModel also through ``serve_bytes`` against the package's file path, the
    same TF decode and crop ops); what ``verify=True`` holds to 1e-4.
    ``vs_package_files``: the export on the photos against the package's path on the files
    (the inference engine: :func:`package_probs`; JPEGs decoded scaled in the DCT there);
    reported, not held to 1e-4 for formats that take decoded photos.

    Args:
        run_dir: the run directory the export was made from.
        export_dir: the export folder.
        n: photos to compare on (:func:`verification_images`; random pixel batches for jax2tf).
        seed: of the generated photos when the run's are not found.

    Returns:
        A dict: ``max_abs_difference``, ``vs_package_files`` (None without real files),
        ``images`` (what was compared).
    """
    run, cfg = check_run_dir(run_dir)
    exp = ExportedModel(export_dir)
    pairs, what = verification_images(run, n, seed)
    imgs = [im for _, im in pairs]
    p = cfg.preprocess
    model = load_keras(run)
    if not exp.takes_photos:  # jax2tf: the model alone, on cropped pixels
        h, w = p.image_size
        x = np.random.default_rng(seed).uniform(0, 255, size=(n, h, w, 3)).astype(np.float32)
        diff = _max_diff(_as_heads(model.predict(x, verbose=0)), exp.predict(x))
        return {"max_abs_difference": diff, "vs_package_files": None, "images": f"{n} random pixel batches"}
    serving = build_serving_model(model, p, cfg.train.task)
    boxes = None
    if p.crop == "face":  # the centre fallback box: any valid box checks the graph
        hw = np.array([im.shape[:2] for im in imgs])
        boxes = center_crop_boxes(hw[:, 0], hw[:, 1], p.face_fallback).astype(np.int32)
    diff, answers = 0.0, []
    for i, im in enumerate(imgs):  # one photo a call: the photos may differ in size
        feed = {"image": im[None], **({"box": boxes[i:i + 1]} if boxes is not None else {})}
        ref = {k: np.asarray(v) for k, v in serving(feed).items()}
        answers.append(exp.predict_photos(im[None], None if boxes is None else boxes[i:i + 1]))
        diff = max(diff, _max_diff(ref, answers[-1]))
    files = [f for f, _ in pairs if f is not None]
    vs_files = None
    if files and p.crop != "face":  # the files are the photos above, in order
        want = _as_heads(package_probs(run, files))
        if exp.format == "tf_saved_model":
            got = exp._loaded.serve_bytes(tf.constant([Path(f).read_bytes() for f in files]))
            got = {k: np.asarray(v) for k, v in got.items()}
            diff = max(diff, _max_diff(want, got))  # the same TF ops: held to 1e-4 too
        else:
            got = {k: np.concatenate([a[k] for a in answers]) for k in answers[0]}
        vs_files = _max_diff(want, got)
    return {"max_abs_difference": float(diff), "vs_package_files": vs_files, "images": what}


def package_probs(run_dir, files):
    """The run's Keras model on image files through the inference engine (no TTA): its raw outputs.

    Args:
        run_dir: the run directory.
        files: image files.

    Returns:
        float32 (N, C), or ``{head: (N, C)}`` for a multi-head model.
    """
    art = load_artifact(run_dir)
    member = Member.from_artifact(art, 8)
    engine = Engine([member])
    try:
        prepared = engine.prepare([ImageInput.from_bytes(str(f), Path(f).read_bytes()) for f in files], "raise")
    finally:
        engine.close()
    px = prepared.pixels[0][:, 0]
    return model_outputs(member.runner(px))


def _as_heads(out) -> dict:
    """Model outputs keyed as the export's: the heads, or ``probs`` for a single output."""
    out = model_outputs(out)
    return out if isinstance(out, dict) else {"probs": out}


def _max_diff(ref: dict, got) -> float:
    got = got if isinstance(got, dict) else {"probs": got}
    keys = [k for k in ref if k in got]
    if not keys:
        raise ExportError(f"the export's outputs {sorted(got)} share no name with the model's {sorted(ref)}")
    return max(float(np.max(np.abs(np.asarray(ref[k], np.float64) - np.asarray(got[k], np.float64)))) for k in keys)


def max_abs_difference(run_dir, export_dir, n: int = 4, seed: int = 0) -> float:
    """Largest absolute difference between the Keras model of ``run_dir`` and the export in
    ``export_dir`` (:func:`verify_export`'s ``max_abs_difference``).

    Args:
        run_dir: the run directory the export was made from.
        export_dir: the export folder.
        n: photos to compare on.
        seed: of the generated photos when the run's are not found.

    Returns:
        The difference (float), over every output and photo.
    """
    return verify_export(run_dir, export_dir, n=n, seed=seed)["max_abs_difference"]
