"""Export a trained artifact as a self-contained file: a photo in, probabilities out.

The exported graph holds the run's crop and resize (:class:`mask_keras.models.serving.
CropResize`), so a client that has only the file and a runtime sends a full-size photo and
gets the probabilities and the crop box used: no Python crop code to re-implement. Keras 3
models are backend-agnostic: the trained ``model.keras`` (trained with JAX) is reloaded with
the TensorFlow backend in a subprocess and exported there with Keras' own
``model.export(format=...)`` (native TF ops; tf2onnx for ONNX; the LiteRT converter).

Formats (``export_artifact(..., format=...)``, one per output folder):

=================  ==================  ==========================================================
format             file                inputs (N photos of one size per call; any size)
=================  ==================  ==========================================================
``tf_saved_model`` ``saved_model/``    ``serve_bytes(images)``: encoded JPEG/PNG/WebP/GIF/BMP
                                       bytes, string (N,), decoded and cropped exactly as the
                                       package's pipeline does (its own TF ops);
                                       ``serve_image(image)``: uint8 (N, H, W, 3) RGB;
                                       ``serve(images)``: float32 (N, h, w, 3) already cropped
                                       and resized (the model alone, as before)
``onnx``           ``model.onnx``      ``image``: uint8 (N, H, W, 3) RGB (ONNX has no image
                                       decoder: the caller decodes, e.g. with PIL)
``litert``         ``model.tflite``    ``image``: uint8 (N, H, W, 3) RGB, signature
                                       ``serving_default`` (LiteRT has no decoder either)
``jax2tf``         ``saved_model/``    ``serve(images)`` only: the JAX program through
                                       ``jax2tf`` (one XlaCallModule op), for TF-Serving users
                                       who want the exact JAX program
=================  ==================  ==========================================================

Outputs: ``probs`` (N, C) (a multi-head model: ``mask``, ``gender``, ``age``) and
``crop_box`` int32 (N, 4) ``[y0, x0, y1, x1]`` in the photo's pixels. A run trained with
``crop="face"`` takes a second input, ``box`` int32 (N, 4): the face detector cannot live in
any of these graphs, so the caller runs it (the run's margins and fallback:
:func:`mask_keras.detect.detected_crop_boxes`); :func:`load_exported` does. Each export
folder carries a ``README.md`` with its own inputs, outputs, class names and a client
snippet, beside ``config.json`` (the run's) and ``export.json`` (the same facts as data).

``verify=True`` (``mask-keras export --verify``) runs the export's runtime (TensorFlow,
ONNX Runtime, the LiteRT interpreter) and the Keras model in this process on the same real
photos (the run's validation images, else generated ones) and fails above 1e-4; it also
reports the difference from the package's own file path (:func:`mask_keras.predict.
predict_probs`), which decodes JPEGs scaled in the DCT where the caller's decoder does not.

Use it::

    from mask_keras.export import export_artifact, load_exported
    export_artifact("runs/mask", "exports/mask_onnx", format="onnx", verify=True)   # once
    m = load_exported("exports/mask_onnx")
    out = m.predict_images([photo_rgb_uint8])          # {"probs": (1, 3), "crop_box": (1, 4)}
    probs = m.predict_files(paths)                     # files -> probabilities

Or without this package, e.g. ONNX Runtime::

    import numpy as np, onnxruntime
    from PIL import Image
    sess = onnxruntime.InferenceSession("exports/mask_onnx/model.onnx")
    photo = np.asarray(Image.open("photo.jpg").convert("RGB"))[None]
    probs, crop_box = sess.run(["probs", "crop_box"], {"image": photo})
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from PIL import Image

from . import labels as L
from . import pipeline
from ._tf import tf
from .config import Config
from .data.layout import CROP_COLUMNS
from .detect import Detector, detected_crop_boxes
from .detect.geometry import center_crop_boxes
from .ensemble import tta_mean
from .errors import unknown_choice
from .files import atomic_write_text
from .models.serving import build_serving_model
from .predict import load_artifact, predict_probs

log = logging.getLogger(__name__)

FORMATS = ("tf_saved_model", "onnx", "litert", "jax2tf")
#: the file or folder each format writes in the export folder
FILES = {"tf_saved_model": "saved_model", "onnx": "model.onnx", "litert": "model.tflite", "jax2tf": "saved_model"}
#: the extra each runtime needs beyond the package's dependencies
RUNTIMES = {"onnx": ("onnxruntime", "tf2onnx"), "litert": ("ai_edge_litert",)}
SAVED_MODEL = "saved_model"
META = "export.json"
TASK_ORDER = L.HEADS
TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """The export failed or the exported directory is not usable."""


# a TensorFlow-backend process: reload the .keras file and export native TF ops
_TF_EXPORT = r"""
import sys
import keras
assert keras.backend.backend() == "tensorflow", keras.backend.backend()
from mask_keras.export import export_in_this_process
export_in_this_process(*sys.argv[1:])
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


def _check_runtime(format: str) -> None:
    missing = [m for m in RUNTIMES.get(format, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"format={format!r} needs {', '.join(missing)}: pip install 'mask_keras[export]'")


def export_artifact(run_dir, out_dir, format: str = "tf_saved_model", *, verify: bool = False,
                    timeout: float = 1800) -> Path:
    """Export the run directory ``run_dir`` (``model.keras`` + ``config.json``) to ``out_dir``.

    Args:
        run_dir: a run directory written by ``mask-keras train`` (or its ``model.keras``).
        out_dir: the export folder; replaced only once the new export is complete.
        format: one of :data:`FORMATS` (see the module docstring).
        verify: run the export and the Keras model on the same photos and raise
            :class:`ExportError` above 1e-4 (:func:`verify_export`); the differences are
            recorded in ``export.json``.
        timeout: seconds the TensorFlow-backend export process may take.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Example:
        >>> export_artifact("runs/mask", "exports/mask", format="onnx", verify=True)  # doctest: +SKIP
        PosixPath('exports/mask')
    """
    if format not in FORMATS:
        raise unknown_choice("export format", format, FORMATS)
    run, cfg = _check_run_dir(run_dir)
    _check_runtime(format)
    out = Path(out_dir).expanduser().absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    t0 = time.perf_counter()
    try:
        target = tmp / FILES[format]
        if format == "jax2tf":
            if keras.backend.backend() != "jax":
                raise ExportError("format='jax2tf' exports from a JAX-backend process; "
                                  f"this one runs {keras.backend.backend()!r}")
            _load_keras(run).export(str(target), format="tf_saved_model", verbose=False)
        else:
            env = {**os.environ, "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": "",
                   "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
            proc = subprocess.run([sys.executable, "-c", _TF_EXPORT, str(run), str(target), format],
                                  env=env, capture_output=True, text=True, timeout=timeout)
            if proc.returncode != 0 or not target.exists():
                raise ExportError(f"export of {run / 'model.keras'} to {format} with the TensorFlow backend "
                                  f"failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        shutil.copy2(run / "config.json", tmp / "config.json")
        meta = _describe(cfg, format)
        meta.update(source=str(run), seconds=round(time.perf_counter() - t0, 2), versions=_versions(format))
        atomic_write_text(tmp / META, json.dumps(meta, indent=2) + "\n")
        atomic_write_text(tmp / "README.md", _readme(meta))
        if verify:
            diffs = verify_export(run, tmp)
            meta["verify"] = diffs
            meta["verify_max_abs_difference"] = diffs["max_abs_difference"]  # the key older readers know
            atomic_write_text(tmp / META, json.dumps(meta, indent=2) + "\n")
            if diffs["max_abs_difference"] > TOLERANCE:
                raise ExportError(f"exported model differs from {run / 'model.keras'} by "
                                  f"{diffs['max_abs_difference']:.3g} (> {TOLERANCE:g}) on {diffs['images']}")
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


def export_in_this_process(run_dir, target, format: str) -> None:
    """Write ``format`` of the run to ``target`` from this (TensorFlow-backend) process.

    What :func:`export_artifact` runs in its subprocess; the SavedModel gets three
    endpoints (bytes, full-size photos, cropped pixels), ONNX and LiteRT the photo one.
    """
    run, cfg = _check_run_dir(run_dir)
    p, task = cfg.preprocess, cfg.train.task
    model = _load_keras(run)
    serving = build_serving_model(model, p, task)
    h, w = (int(v) for v in p.image_size)
    face = p.crop == "face"
    serving({"image": np.zeros((1, h + 2, w + 2, 3), np.uint8),
             **({"box": np.array([[0, 0, h, w]], np.int32)} if face else {})})  # built by a call
    if format == "onnx":
        serving.export(str(target), format="onnx", verbose=False)
        return
    if format == "litert":
        serving.export(str(target), format="litert", verbose=False)
        return
    if format != "tf_saved_model":
        raise ExportError(f"format={format!r} is not exported by a TensorFlow-backend process")

    def outputs(out):
        return {k: tf.convert_to_tensor(v) for k, v in out.items()}

    def image_size_of(data):  # (height, width) of encoded bytes: the header for JPEGs
        return tf.cond(tf.io.is_jpeg(data), lambda: tf.io.extract_jpeg_shape(data)[:2],
                       lambda: tf.shape(pipeline.decode_image(data))[:2])

    def from_bytes(data, box):
        boxes = tf.cast(box, tf.int32) if face else tf.zeros((tf.shape(data)[0], 4), tf.int32)
        pixels = tf.map_fn(lambda a: pipeline.decode_and_preprocess(a[0], a[1], p), (data, boxes),
                           fn_output_signature=tf.TensorSpec((h, w, 3), tf.uint8))
        hw = tf.map_fn(image_size_of, data, fn_output_signature=tf.TensorSpec((2,), tf.int32))
        window = tf.stack(pipeline.crop_window(hw[:, 0], hw[:, 1], boxes, p), axis=-1)
        out = model(tf.cast(pixels, tf.float32), training=False)
        out = dict(zip(TASK_ORDER, out)) if isinstance(out, (list, tuple)) else (
            out if isinstance(out, dict) else {"probs": out})
        return {**outputs(out), "crop_box": tf.cast(window, tf.int32)}

    archive = keras.export.ExportArchive()
    archive.track(serving)
    archive.add_endpoint("serve", lambda images: model(images, training=False),
                         input_signature=[tf.TensorSpec((None, h, w, 3), tf.float32, name="images")])
    image_spec = tf.TensorSpec((None, None, None, 3), tf.uint8, name="image")
    bytes_spec = tf.TensorSpec((None,), tf.string, name="images")
    box_spec = tf.TensorSpec((None, 4), tf.int32, name="box")
    if face:
        archive.add_endpoint("serve_image", lambda image, box: outputs(serving({"image": image, "box": box})),
                             input_signature=[image_spec, box_spec])
        archive.add_endpoint("serve_bytes", from_bytes, input_signature=[bytes_spec, box_spec])
    else:
        archive.add_endpoint("serve_image", lambda image: outputs(serving({"image": image})),
                             input_signature=[image_spec])
        archive.add_endpoint("serve_bytes", lambda images: from_bytes(images, None), input_signature=[bytes_spec])
    archive.write_out(str(target), verbose=False)


def _describe(cfg: Config, format: str) -> dict:
    """What a client needs: inputs, outputs, class names, crop (the facts export.json and README.md hold)."""
    p, task = cfg.preprocess, cfg.train.task
    heads = list(TASK_ORDER) if task == "multihead" else ["probs"]
    names = ({t: list(L.CLASS_NAMES[t]) for t in TASK_ORDER} if task == "multihead" else
             {"probs": [L.class_name(c) for c in range(L.NUM_CLASSES)] if task == "multi"
              else list(L.CLASS_NAMES[task])})
    photo = "image: uint8 (N, H, W, 3) RGB photos of one size, any size"
    box = ["box: int32 (N, 4) [y0, x0, y1, x1], the face crop in the photo's pixels (run the detector)"] \
        if p.crop == "face" else []
    if format == "tf_saved_model":
        inputs = {"serve_bytes": ["images: string (N,) encoded JPEG/PNG/WebP/GIF/BMP"] + box,
                  "serve_image": [photo] + box,
                  "serve": [f"images: float32 (N, {p.image_size[0]}, {p.image_size[1]}, 3) cropped and resized, 0..255"]}
    elif format == "jax2tf":
        inputs = {"serve": [f"images: float32 (N, {p.image_size[0]}, {p.image_size[1]}, 3) cropped and resized, 0..255"]}
    else:
        inputs = {"serving_default" if format == "litert" else "model": [photo] + box}
    return {"format": format, "file": FILES[format], "task": task, "image_size": list(p.image_size),
            "crop": p.crop, "crop_size": list(p.crop_size) if p.crop == "center" else None,
            "face_margins": list(p.face_margins) if p.crop == "face" else None,
            "face_fallback": list(p.face_fallback) if p.crop == "face" else None,
            "inputs": inputs, "outputs": heads + ([] if format == "jax2tf" else ["crop_box"]),
            "class_names": names}


def _readme(meta: dict) -> str:
    """The export folder's README.md: how to call this file without the package."""
    lines = [f"# {meta['task']} model, {meta['format']} ({meta['file']})", "",
             f"Exported by mask_keras from `{meta['source']}`.", "", "## Inputs", ""]
    for ep, args in meta["inputs"].items():
        lines.append(f"- `{ep}`: " + "; ".join(f"`{a.split(':')[0]}`:{a.split(':', 1)[1]}" for a in args))
    lines += ["", "## Outputs", ""]
    for k in meta["outputs"]:
        if k == "crop_box":
            lines.append("- `crop_box`: int32 (N, 4) `[y0, x0, y1, x1]`, the crop used, in the photo's pixels")
        else:
            lines.append(f"- `{k}`: float32 (N, {len(meta['class_names'][k])}) probabilities of "
                         + ", ".join(meta["class_names"][k]))
    crop = meta["crop"]
    lines += ["", "## What the graph does, and what the caller does", ""]
    if meta["format"] == "jax2tf":
        lines.append(f"The caller crops ({crop}) and resizes to {meta['image_size']} (see config.json).")
    else:
        lines.append(f"The graph crops ({crop}" + (f" {meta['crop_size']}" if crop == "center" else "")
                     + f") and resizes (antialiased bilinear) to {meta['image_size']}, as training did.")
    if meta["format"] in ("onnx", "litert"):
        lines.append("The caller decodes the photo to RGB uint8 (this runtime has no image decoder), "
                     "e.g. `np.asarray(PIL.Image.open(f).convert('RGB'))`.")
    if crop == "face":
        lines.append(f"The caller runs a face detector (MTCNN in mask_keras) and passes `box`: the face "
                     f"widened by the margins {meta['face_margins']} (left, top, right, bottom), or a centre "
                     f"crop of {meta['face_fallback']} when no confident face is found "
                     f"(`mask_keras.export.load_exported` does both).")
    snippet = {
        "onnx": ['import numpy as np, onnxruntime', 'from PIL import Image',
                 'sess = onnxruntime.InferenceSession("model.onnx")',
                 'photo = np.asarray(Image.open("photo.jpg").convert("RGB"))[None]',
                 'out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": photo'
                 + (', "box": box' if crop == "face" else '') + '})))'],
        "litert": ['import numpy as np', 'from ai_edge_litert.interpreter import Interpreter',
                   'from PIL import Image', 'run = Interpreter("model.tflite").get_signature_runner()',
                   'out = run(image=np.asarray(Image.open("photo.jpg").convert("RGB"))[None]'
                   + (', box=box' if crop == "face" else '') + ')'],
        "tf_saved_model": ['import tensorflow as tf', 'm = tf.saved_model.load("saved_model")',
                           'out = m.serve_bytes(tf.constant([open("photo.jpg", "rb").read()])'
                           + (', box' if crop == "face" else '') + ')'],
        "jax2tf": ['import tensorflow as tf', 'm = tf.saved_model.load("saved_model")',
                   'probs = m.serve(pixels)  # float32 (N, h, w, 3), cropped and resized'],
    }[meta["format"]]
    lines += ["", "## Example", "", "```python", *snippet, "```", ""]
    return "\n".join(lines)


def _versions(format: str) -> dict:
    out = {"keras": keras.__version__, "tensorflow": tf.__version__}
    for dist in {"onnx": ("tf2onnx", "onnxruntime"), "litert": ("ai-edge-litert",)}.get(format, ()):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _load_keras(run: Path):
    """The run's model.keras (the package's custom objects are registered by importing it)."""
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
        self.config = Config.load(self.path / "config.json")
        self._detector = None
        if fmt in ("tf_saved_model", "jax2tf"):
            self._loaded = tf.saved_model.load(str(f))
        elif fmt == "onnx":
            _check_runtime(fmt)
            import onnxruntime  # the optional `export` extra

            self._session = onnxruntime.InferenceSession(str(f), providers=["CPUExecutionProvider"])
            self._out_names = [o.name for o in self._session.get_outputs()]
        else:
            _check_runtime(fmt)
            from ai_edge_litert.interpreter import Interpreter  # the optional `export` extra

            self._interpreter = Interpreter(str(f))
            self._runner = self._interpreter.get_signature_runner()

    @property
    def task(self) -> str:
        return self.config.train.task

    @property
    def format(self) -> str:
        return self.meta["format"]

    @property
    def takes_photos(self) -> bool:
        """Whether the graph crops and resizes itself (every format but ``jax2tf``)."""
        return self.format != "jax2tf"

    def _run_pixels(self, x):
        out = self._loaded.serve(tf.cast(x, tf.float32))
        if isinstance(out, dict):
            return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
        if isinstance(out, (list, tuple)):
            return dict(zip(TASK_ORDER, (np.asarray(v, dtype=np.float32) for v in out)))
        return np.asarray(out, dtype=np.float32)

    def _run_photos(self, x, boxes=None) -> dict:
        """uint8 (N, H, W, 3) photos of one size (+ face boxes) -> the graph's outputs as numpy."""
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
        (N, C), or a dict of heads for a multi-head model (the model alone, no crop)."""
        x = np.asarray(x)
        if self.format in ("tf_saved_model", "jax2tf"):
            parts = [self._run_pixels(x[i:i + batch_size].astype(np.float32)) for i in range(0, len(x), batch_size)]
            return _concat(parts)
        h, w = self.config.preprocess.image_size
        if x.shape[1:3] != (h, w):
            raise ValueError(f"predict takes pixels already resized to {h}x{w}, got {x.shape}; "
                             f"use predict_images for photos")
        whole = np.tile(np.array([[0, 0, h, w]], np.int32), (len(x), 1))  # the crop of an h x w image is itself
        parts = [self._run_photos(np.clip(np.round(x[i:i + batch_size]), 0, 255).astype(np.uint8), whole[i:i + batch_size])
                 for i in range(0, len(x), batch_size)]
        return self._probs(_concat(parts))

    def _probs(self, out: dict):
        if self.task == "multihead":
            return {k: out[k].astype(np.float32) for k in TASK_ORDER}
        return out["probs"].astype(np.float32)

    def predict_images(self, images, boxes=None, batch_size: int = 64) -> dict:
        """Full-size uint8 RGB photos ``(H, W, 3)`` of any sizes -> the graph's outputs.

        Args:
            images: a list (or batch) of uint8 (H, W, 3) arrays.
            boxes: for a ``crop="face"`` run, (N, 4) ``[y0, x0, y1, x1]`` face crops; None
                runs the face detector with the run's margins and fallback.
            batch_size: photos per runtime call (photos of one size share a call).

        Returns:
            A dict of numpy arrays in input order: ``probs`` (or the heads) and ``crop_box``.
        """
        if not self.takes_photos:
            raise ExportError(f"{self.path}: a jax2tf export takes cropped pixels only (predict), not photos")
        imgs = [np.asarray(im) for im in images]
        for i, a in enumerate(imgs):
            if a.ndim != 3 or a.shape[-1] != 3 or a.dtype != np.uint8 or min(a.shape[:2]) < 1:
                raise ValueError(f"images[{i}]: expected a uint8 RGB array (H, W, 3), got {a.dtype} {a.shape}")
        if self.config.preprocess.crop == "face" and boxes is None:
            boxes = self._face_boxes_of_arrays(imgs)
        groups: dict = {}
        for i, a in enumerate(imgs):
            groups.setdefault(a.shape, []).append(i)
        results: list = [None] * len(imgs)
        for idx in groups.values():
            for s in range(0, len(idx), batch_size):
                part = idx[s:s + batch_size]
                out = self._run_photos(np.stack([imgs[i] for i in part]),
                                       None if boxes is None else np.asarray(boxes)[part])
                for j, i in enumerate(part):
                    results[i] = {k: v[j] for k, v in out.items()}
        return {k: np.stack([r[k] for r in results]) for k in results[0]} if results else {}

    def predict_files(self, paths, batch_size: int = 64, tta: bool = False, check: str = "fast",
                      progress: bool = False):
        """Image files (or a table with ``path``) -> probabilities, with the run's preprocessing.

        Same contract as :func:`mask_keras.predict.predict_probs`: (N, C), or a dict of heads
        for a multihead model. A SavedModel goes through the package's pipeline (so JPEGs are
        decoded scaled in the DCT, as in training) and supports ``tta`` (the flipped view);
        ONNX and LiteRT get the decoded photos and crop and resize in their graph.
        """
        table = paths if isinstance(paths, pd.DataFrame) else pd.DataFrame({"path": [str(p) for p in paths]})
        if self.format in ("onnx", "litert"):
            if tta:
                raise ExportError(f"tta with a {self.format} export: not in the graph; use a tf_saved_model "
                                  f"export or mask_keras.predictor.Predictor on the run directory")
            bad = pipeline.check_images(table["path"].tolist(), check, progress=False) if check != "none" else []
            if bad:
                raise pipeline.ImageError(bad, total=len(table))
            boxes = None
            if self.config.preprocess.crop == "face":
                boxes = (table[list(CROP_COLUMNS)].to_numpy(np.int64) if set(CROP_COLUMNS) <= set(table.columns)
                         else self._face_boxes(table["path"].tolist()))
            imgs = [pipeline.decode_image(tf.io.read_file(f)).numpy() for f in table["path"]]
            return self._probs(self.predict_images(imgs, boxes, batch_size=batch_size))
        views = []
        for flip in ([False, True] if tta else [False]):
            ds, n = pipeline.make_predict_dataset(table, self.config.preprocess, batch_size, flip=flip,
                                                  check=check, progress=progress)
            out = _concat([self._run_pixels(x) for x in ds])
            views.append({k: v[:n] for k, v in out.items()} if isinstance(out, dict) else out[:n])
        if isinstance(views[0], dict):
            return {k: tta_mean([v[k] for v in views]) for k in views[0]}
        return tta_mean(views)

    def _face_boxes(self, files: list[str]) -> np.ndarray:
        if self._detector is None:
            self._detector = Detector()
        found = detected_crop_boxes(self._detector.detect(files), self.config.preprocess)
        return found[list(CROP_COLUMNS)].to_numpy(np.int64)

    def _face_boxes_of_arrays(self, imgs) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="mask_keras_faces_") as tmp:
            files = []
            for i, a in enumerate(imgs):
                files.append(str(Path(tmp) / f"{i:06d}.png"))
                Image.fromarray(a).save(files[-1])
            return self._face_boxes(files)

    def close(self) -> None:
        """Stop the face detector, if one was started."""
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def __repr__(self) -> str:
        return f"ExportedModel({str(self.path)!r}, task={self.task!r}, format={self.format!r})"


def _concat(parts):
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


def load_exported(path) -> ExportedModel:
    """Load a folder written by :func:`export_artifact` with its runtime (TensorFlow, ONNX
    Runtime or the LiteRT interpreter; no JAX, no Keras model code)."""
    return ExportedModel(path)


def verification_images(run_dir, n: int = 6, seed: int = 0) -> tuple[list, str]:
    """Up to ``n`` real photos to verify an export on: the run's validation images
    (``val_predictions.csv``), else generated ones (512x384 noise, then 300x200). Returns the
    paths (None for generated ones) with the decoded uint8 arrays, and a description."""

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


def verify_export(run_dir, export_dir, n: int = 6) -> dict:
    """Compare an export with the Keras model of ``run_dir`` on the same photos.

    ``max_abs_difference``: the export's runtime against the Keras serving model (the same
    graph: :func:`mask_keras.models.serving.build_serving_model`) run here, on the decoded
    photos (a SavedModel also through ``serve_bytes`` against the package's file path, the
    same TF decode and crop ops); what ``verify=True`` holds to 1e-4.
    ``vs_package_files``: the export on the photos against :func:`mask_keras.predict.
    predict_probs` on the files (the package's path, where JPEGs are decoded scaled in the
    DCT); reported, not held to 1e-4 for formats that take decoded photos.

    Returns:
        A dict: ``max_abs_difference``, ``vs_package_files`` (None without real files),
        ``images`` (what was compared).
    """
    run, cfg = _check_run_dir(run_dir)
    exp = ExportedModel(export_dir)
    pairs, what = verification_images(run, n)
    imgs = [im for _, im in pairs]
    p = cfg.preprocess
    model = _load_keras(run)
    if not exp.takes_photos:  # jax2tf: the model alone, on cropped pixels
        h, w = p.image_size
        x = np.random.default_rng(0).uniform(0, 255, size=(n, h, w, 3)).astype(np.float32)
        diff = _max_diff(_as_heads(model.predict(x, verbose=0), cfg.train.task), exp.predict(x))
        return {"max_abs_difference": diff, "vs_package_files": None, "images": f"{n} random pixel batches"}
    serving = build_serving_model(model, p, cfg.train.task)
    boxes = None
    if p.crop == "face":  # the centre fallback box: any valid box checks the graph
        hw = np.array([im.shape[:2] for im in imgs])
        boxes = center_crop_boxes(hw[:, 0], hw[:, 1], p.face_fallback).astype(np.int32)
    diff = 0.0
    for i, im in enumerate(imgs):
        feed = {"image": im[None], **({"box": boxes[i:i + 1]} if boxes is not None else {})}
        ref = {k: np.asarray(v) for k, v in serving(feed).items()}
        got = exp.predict_images([im], None if boxes is None else boxes[i:i + 1])
        diff = max(diff, _max_diff(ref, got))
    files = [f for f, _ in pairs if f is not None]
    vs_files = None
    if files and p.crop != "face":
        want = _as_heads(predict_probs(load_artifact(run), files, batch_size=8), cfg.train.task)
        if exp.format == "tf_saved_model":
            got = exp._loaded.serve_bytes(tf.constant([Path(f).read_bytes() for f in files]))
            got = {k: np.asarray(v) for k, v in got.items()}
            diff = max(diff, _max_diff(want, got))  # the same TF ops: held to 1e-4 too
        else:
            got = exp.predict_images(imgs)
        vs_files = _max_diff(want, got)
    return {"max_abs_difference": float(diff), "vs_package_files": vs_files, "images": what}


def _as_heads(out, task: str) -> dict:
    if isinstance(out, (list, tuple)):
        out = dict(zip(TASK_ORDER, out))
    if isinstance(out, dict):
        return {k: np.asarray(v) for k, v in out.items()}
    return {"probs": np.asarray(out)}


def _max_diff(ref: dict, got) -> float:
    got = got if isinstance(got, dict) else {"probs": got}
    keys = [k for k in ref if k in got]
    if not keys:
        raise ExportError(f"the export's outputs {sorted(got)} share no name with the model's {sorted(ref)}")
    return max(float(np.max(np.abs(np.asarray(ref[k], np.float64) - np.asarray(got[k], np.float64)))) for k in keys)


def max_abs_difference(run_dir, export_dir, n: int = 4, seed: int = 0) -> float:
    """Largest absolute difference between the Keras model of ``run_dir`` and the export in
    ``export_dir`` (:func:`verify_export`'s ``max_abs_difference``)."""
    return verify_export(run_dir, export_dir, n=n)["max_abs_difference"]
