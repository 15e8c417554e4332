"""Export a trained artifact as a self-contained file: a photo in, probabilities out.

The exported graph holds the run's crop and resize (:class:`mask_keras.models.serving.
CropResize`), so a client that has only the file and a runtime sends a full-size photo and
gets the probabilities and the crop box used: no Python crop code to re-implement. Keras 3
models are backend-agnostic: the trained ``model.keras`` (trained with JAX) is reloaded with
the TensorFlow backend in a subprocess and exported there with Keras' own
``model.export(format=...)`` (native TF ops; tf2onnx for ONNX; the LiteRT converter).

Formats (``export_artifact(..., format=...)``, one per output folder;
``export_artifacts`` writes several from one TensorFlow process):

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
reports the difference from the package's own file path (the inference engine:
:func:`mask_keras.inference.exported.package_probs`), which decodes JPEGs scaled in the DCT
where the caller's decoder does not.

The loader and the check live in :mod:`mask_keras.inference.exported` (re-exported here). Use it::

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
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import keras
import numpy as np

from . import labels as L
from . import pipeline
from ._tf import tf
from .config import Config
from .errors import unknown_choice
from .inference.artifacts import write_manifest
from .inference.exported import (  # noqa: F401  (the loader's names, importable from here as before)
    FILES,
    FORMATS,
    META,
    RUNTIMES,
    SAVED_MODEL,
    TASK_ORDER,
    TOLERANCE,
    ExportedModel,
    ExportError,
    check_run_dir,
    check_runtime,
    load_exported,
    load_keras,
    max_abs_difference,
    verify_export,
)
from .files import atomic_write_text
from .models.serving import build_serving_model

log = logging.getLogger(__name__)


#: the formats the TensorFlow-backend process writes (jax2tf is written from this JAX process)
TF_PROCESS_FORMATS = ("tf_saved_model", "onnx", "litert")

_TF_EXPORT = r"""
import sys
import keras
assert keras.backend.backend() == "tensorflow", keras.backend.backend()
from mask_keras.export import export_in_this_process
export_in_this_process(*sys.argv[1:])
"""


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
    return export_artifacts(run_dir, {format: out_dir}, verify=verify, timeout=timeout)[format]


def export_artifacts(run_dir, out_dirs: dict, *, verify: bool = False, timeout: float = 1800) -> dict:
    """Export one run to several formats, each to its own folder, from one TensorFlow-backend
    process (it starts, imports TensorFlow and loads the model once for all of them).

    Every folder is written beside its target and renamed into place only once every format
    is exported (and verified, with ``verify``); on any failure none is replaced.

    Args:
        run_dir: a run directory written by ``mask-keras train`` (or its ``model.keras``).
        out_dirs: ``{format: export folder}``, formats from :data:`FORMATS`, folders distinct.
        verify: as :func:`export_artifact`, for every format.
        timeout: seconds the TensorFlow-backend export process may take.

    Returns:
        ``{format: export folder Path}``.

    Example:
        >>> export_artifacts("runs/mask", {"onnx": "exports/mask_onnx",
        ...                                "litert": "exports/mask_litert"})  # doctest: +SKIP
        {'onnx': PosixPath('exports/mask_onnx'), 'litert': PosixPath('exports/mask_litert')}
    """
    if not out_dirs:
        raise ExportError("no export format given; choose from " + ", ".join(FORMATS))
    for format in out_dirs:
        if format not in FORMATS:
            raise unknown_choice("export format", format, FORMATS)
    outs = {f: Path(d).expanduser().absolute() for f, d in out_dirs.items()}
    if len(set(outs.values())) < len(outs):
        raise ExportError(f"each format needs its own export folder: {({f: str(d) for f, d in outs.items()})}")
    run, cfg = check_run_dir(run_dir)
    for format in outs:
        check_runtime(format)
    if "jax2tf" in outs and keras.backend.backend() != "jax":
        raise ExportError("format='jax2tf' exports from a JAX-backend process; "
                          f"this one runs {keras.backend.backend()!r}")
    t0 = time.perf_counter()
    tmps = {}
    try:
        for format, out in outs.items():
            out.parent.mkdir(parents=True, exist_ok=True)
            tmps[format] = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmps[format].mkdir()
        if "jax2tf" in outs:
            load_keras(run).export(str(tmps["jax2tf"] / FILES["jax2tf"]), format="tf_saved_model", verbose=False)
        in_tf = [f for f in outs if f in TF_PROCESS_FORMATS]
        pairs = [str(a) for f in in_tf for a in (tmps[f] / FILES[f], f)]
        if pairs:  # every other format: one TensorFlow-backend process writes them all
            env = {**os.environ, "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": "",
                   "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
            proc = subprocess.run([sys.executable, "-c", _TF_EXPORT, str(run), *pairs],
                                  env=env, capture_output=True, text=True, timeout=timeout)
            missing = [f for f in in_tf if not (tmps[f] / FILES[f]).exists()]
            if proc.returncode != 0 or missing:
                raise ExportError(f"export of {run / 'model.keras'} to {', '.join(missing or in_tf)} "
                                  f"with the TensorFlow backend failed (exit {proc.returncode}):\n"
                                  f"{proc.stderr[-3000:]}")
        seconds = round(time.perf_counter() - t0, 2)
        for format, tmp in tmps.items():
            shutil.copy2(run / "config.json", tmp / "config.json")
            meta = _describe(cfg, format)
            meta.update(source=str(run), seconds=seconds, versions=_versions(format))
            atomic_write_text(tmp / META, json.dumps(meta, indent=2) + "\n")
            atomic_write_text(tmp / "README.md", _readme(meta))
            write_manifest(tmp, "export", task=cfg.train.task, format=format)
            if verify:
                diffs = verify_export(run, tmp)
                meta["verify"] = diffs
                meta["verify_max_abs_difference"] = diffs["max_abs_difference"]  # the key older readers know
                atomic_write_text(tmp / META, json.dumps(meta, indent=2) + "\n")
                if diffs["max_abs_difference"] > TOLERANCE:
                    raise ExportError(f"{format} export differs from {run / 'model.keras'} by "
                                      f"{diffs['max_abs_difference']:.3g} (> {TOLERANCE:g}) on {diffs['images']}")
        for format, out in outs.items():  # all written (and verified): now into place
            if out.exists():
                old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
                out.rename(old)
                tmps[format].rename(out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmps[format].rename(out)
    finally:
        for tmp in tmps.values():
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s -> %s (%.1f s)", run, ", ".join(f"{d} ({f})" for f, d in outs.items()),
             time.perf_counter() - t0)
    return outs


def export_in_this_process(run_dir, target, format: str, *more) -> None:
    """Write ``format`` of the run to ``target`` from this (TensorFlow-backend) process.

    What :func:`export_artifacts` runs in its subprocess; the SavedModel gets three
    endpoints (bytes, full-size photos, cropped pixels), ONNX and LiteRT the photo one.

    Args:
        run_dir: the run directory (or its ``model.keras``).
        target: where to write: the SavedModel folder or the ``.onnx`` / ``.tflite`` file.
        format: ``tf_saved_model``, ``onnx`` or ``litert`` (:class:`ExportError` otherwise).
        *more: further ``target, format`` pairs, written from the same loaded model.
    """
    if len(more) % 2:
        raise ExportError(f"export_in_this_process takes target, format pairs; got a lone {more[-1]!r}")
    run, cfg = check_run_dir(run_dir)
    model = load_keras(run)
    pairs = [(target, format), *zip(more[0::2], more[1::2])]
    for t, f in pairs:  # every format checked before the first is written
        if f not in TF_PROCESS_FORMATS:
            raise ExportError(f"format={f!r} is not exported by a TensorFlow-backend process")
    for t, f in pairs:
        _export_model(model, cfg, t, f)


def _export_model(model, cfg: Config, target, format: str) -> None:
    p, task = cfg.preprocess, cfg.train.task
    serving = build_serving_model(model, p, task)  # one a format: the exporters trace it their own way
    h, w = (int(v) for v in p.image_size)
    face = p.crop == "face"
    serving({"image": np.zeros((1, h + 2, w + 2, 3), np.uint8),
             **({"box": np.array([[0, 0, h, w]], np.int32)} if face else {})})  # built by a call
    if format in ("onnx", "litert"):
        serving.export(str(target), format=format, verbose=False)
        return

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
