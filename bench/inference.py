"""Inference from files: the Predictor (the inference engine) against decode-and-model, and the exports.

    python bench/inference.py                         # demo model, 1,000 photos
    python bench/inference.py --quick                 # 100 photos
    python bench/inference.py --models demo,effnet_b0_224 --images 300 --jax2tf
    python bench/inference.py --breakdown             # also where the Predictor's time goes

End to end from a folder of N photos (512x384 JPEGs: ``data/default/eval/images`` when it is
there, else the eval folder of the synthetic 512x384 set; copied, and repeated as needed, into
a temporary folder of exactly N files): read, decode, crop, resize (uint8 pixels), run the
model, probabilities in memory. Rows (one process, interleaved rounds, best of each):

* ``decode + model``: ``pipeline.load_images(batch, cfg.preprocess)`` (the validation
  pipeline's parallel tf.data decode) then ``model.predict_on_batch`` per batch of
  ``--batch-size`` files: the reference, what the model costs with the package's fastest
  decode and nothing else (no answers, no per-image checks);
* ``Predictor.load(run).predict_files(folder)``: the package's inference on the same files
  (find the images, read each header, decode once in memory, crop, one compiled model call
  per batch in a static bucket, answer rows, the table). ``x decode+model`` of this row is
  the issue's ratio (goal: at least 0.8);
* ``Predictor.load(export)`` for each export format: the same engine, the model run by the
  export's runtime on the engine's pixels (``TF SavedModel``; ``ONNX Runtime`` and ``LiteRT``
  with ``--formats``, when their runtimes are installed (the ``export`` extra); ``jax2tf
  SavedModel`` with ``--jax2tf``, the JAX program inside a SavedModel).

The models are untrained (speed does not depend on the weights); every row's probabilities
are compared with the reference (max absolute difference). The export time is shown too.
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from train_step import MODELS, model_config  # noqa: E402

from mask_keras.export import RUNTIMES  # noqa: E402

REF = "decode + model (load_images + predict_on_batch)"
PREDICTOR = "Predictor.load(run).predict_files(folder)"
#: real photos at the data set's size, when the data set is there
DEFAULT_PHOTOS = common.ROOT / "data" / "default" / "eval" / "images"


def photo_folder(source: Path, n: int, dest: Path) -> list[str]:
    """``n`` photos in ``dest``: the images of ``source`` (sorted), repeated as needed."""
    from mask_keras.inference import find_images

    src = find_images([source])
    dest.mkdir(parents=True)
    files = []
    for i in range(n):
        f = Path(src[i % len(src)])
        files.append(str(dest / f"{i:05d}{f.suffix.lower()}"))
        shutil.copyfile(f, files[-1])
    return files


def reference_probs(model, files, preprocess_cfg, batch_size: int):
    """The reference: the pipeline's decode then the model, batch by batch (raw outputs, flat)."""
    from mask_keras import pipeline
    from mask_keras.inference.artifacts import model_outputs

    parts = [_flat(model_outputs(model.predict_on_batch(pipeline.load_images(files[s:s + batch_size], preprocess_cfg))))
             for s in range(0, len(files), batch_size)]
    import numpy as np

    return np.concatenate(parts)


def _flat(p):
    """Raw model outputs as one (N, C) array: the heads in mask, gender, age order."""
    import numpy as np

    from mask_keras import labels as L

    return np.concatenate([p[k] for k in L.HEADS], axis=1) if isinstance(p, dict) else p


def table_probs(table, task: str):
    """The answer table's probabilities laid out as :func:`_flat` lays out the model's outputs."""
    from mask_keras import labels as L

    if task == "multi":
        cols = [f"p{c}" for c in range(L.NUM_CLASSES)]
    else:
        tasks = L.HEADS if task == "multihead" else (task,)
        cols = [f"p_{t}_{name}" for t in tasks for name in L.CLASS_NAMES[t]]
    return table[cols].to_numpy(float)


def breakdown(pred, folder, files) -> dict:
    """Seconds of each step of ``predict_files``, one after another (no overlap): find the
    files, read them and their headers, prepare (decode, crop), run (models, combine, rows)
    and the table."""
    from mask_keras.inference import ImageInput, find_images
    from mask_keras.inference.answers import answer_table

    out, bs = {}, pred.batch_size
    with common.Timer() as t:
        found = find_images([folder])
    out["find_images"] = t.seconds
    with common.Timer() as t:
        inputs = [ImageInput.from_bytes(f, Path(f).read_bytes()) for f in found]
    out["read + header"] = t.seconds
    with common.Timer() as t:
        prepared = [pred.engine.prepare(inputs[s:s + bs]) for s in range(0, len(inputs), bs)]
    out["prepare (decode, crop)"] = t.seconds
    eng = pred.engine
    with common.Timer() as t:
        preds = [eng.predictions([b]) for b in prepared]
    out["model calls"] = t.seconds
    rows = []
    with common.Timer() as t:
        for b in prepared:
            rows.extend(r for rs in eng.run([b]) for r in rs)
    out["model calls + combine + rows (run)"] = t.seconds
    with common.Timer() as t:
        answer_table(rows, files, "path")
    out["table"] = t.seconds
    del preds
    return out


def worker(a) -> dict:
    import numpy as np

    from mask_keras.export import export_artifact
    from mask_keras.inference import Predictor
    from mask_keras.inference.artifacts import load_artifact
    from mask_keras.models.build import build_model

    cfg = model_config(a.model, a.data, a.batch_size, False)
    h, w = (int(v) for v in cfg.preprocess.image_size)
    res = {"model": a.model, "backbone": cfg.model.backbone, "task": cfg.train.task, "image_size": [h, w],
           "images": a.images, "photos": a.photos, "batch_size": a.batch_size, "versions": common.versions()}
    with tempfile.TemporaryDirectory(prefix="mask_keras_bench_infer_") as tmp:
        folder = Path(tmp) / "photos"
        files = photo_folder(Path(a.photos), a.images, folder)
        for p in files:
            Path(p).read_bytes()  # page cache
        run = Path(tmp) / "run"
        run.mkdir()
        import keras

        keras.utils.set_random_seed(0)
        model = build_model(cfg.model, cfg.train.task, (h, w))
        model.save(run / "model.keras")
        cfg.save(run / "config.json")
        del model
        exports = {"Predictor.load(export): TF SavedModel": "tf_saved_model"}
        names = {"onnx": "Predictor.load(export): ONNX Runtime", "litert": "Predictor.load(export): LiteRT"}
        for fmt in a.formats.split(","):
            if fmt in names and all(importlib.util.find_spec(m) for m in RUNTIMES[fmt]):
                exports[names[fmt]] = fmt
        if a.jax2tf:
            exports["Predictor.load(export): jax2tf SavedModel"] = "jax2tf"
        res["export_s"] = {}
        predictors = {PREDICTOR: Predictor.load(run, batch_size=a.batch_size)}
        for name, fmt in exports.items():
            with common.Timer() as t:
                out = export_artifact(run, Path(tmp) / fmt, format=fmt)
            res["export_s"][name] = t.seconds
            predictors[name] = Predictor.load(out, batch_size=a.batch_size)
        model = load_artifact(run).model

        def infer(name, some, where):
            if name == REF:
                return reference_probs(model, some, cfg.preprocess, a.batch_size)
            return table_probs(predictors[name].predict_files([where]), cfg.train.task)

        # warm-up: every shape each path compiles (the reference: a full and the ragged last
        # batch; the runners pad to their buckets), and the decode functions' first traces
        warm = Path(tmp) / "warm"
        warm.mkdir()
        for f in files[:a.batch_size]:
            shutil.copyfile(f, warm / Path(f).name)
        rest = len(files) % a.batch_size
        for name in [REF, *predictors]:
            infer(name, files[:a.batch_size], warm)
            if name == REF and rest:
                infer(name, files[:rest], warm)
        outs, best, cpu = {}, {}, {}
        for _ in range(a.rounds):
            for name in [REF, *predictors]:
                with common.Timer() as t:
                    outs[name] = infer(name, files, folder)
                if len(files) / t.seconds > best.get(name, 0.0):
                    best[name], cpu[name] = len(files) / t.seconds, t.cpu_seconds / len(files) * 1000
        ref = outs[REF]
        res["img_s"] = best
        res["cpu_ms_per_img"] = cpu
        res["max_abs_diff"] = {k: float(np.max(np.abs(v - ref))) for k, v in outs.items()}
        res["output_std"] = float(np.mean(np.std(ref, axis=0)))  # ~0: a saturated untrained model, diff uninformative
        if a.breakdown:
            res["breakdown_s"] = breakdown(predictors[PREDICTOR], folder, files)
            from mask_keras import pipeline

            with common.Timer() as t:
                for s in range(0, len(files), a.batch_size):
                    pipeline.load_images(files[s:s + a.batch_size], cfg.preprocess)
            res["breakdown_s"]["reference: load_images alone"] = t.seconds
        for p in predictors.values():
            p.close()
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="demo", help=f"comma-separated, from {MODELS}")
    ap.add_argument("--images", type=int, default=0, help="photos (default: 1000; 100 with --quick)")
    ap.add_argument("--quick", action="store_true", help="100 photos")
    ap.add_argument("--photos", default="", help=f"a folder of photos to repeat up to --images "
                    f"(default: {DEFAULT_PHOTOS.relative_to(common.ROOT)} if there, else the synthetic eval set)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--jax2tf", action="store_true", help="also the jax2tf SavedModel")
    ap.add_argument("--formats", default="onnx,litert", help="self-contained exports to add (installed runtimes only)")
    ap.add_argument("--breakdown", action="store_true", help="also time predict_files' steps one after another")
    ap.add_argument("--people", type=int, default=common.DEFAULT_PEOPLE)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        common.emit(worker(a))
        return None

    n = a.images or (100 if a.quick else 1000)
    if a.photos:
        photos, data = Path(a.photos), Path(a.photos)
    elif DEFAULT_PHOTOS.is_dir():
        photos, data = DEFAULT_PHOTOS, DEFAULT_PHOTOS.parent.parent
    else:
        data = common.ensure_data(a.people)
        photos = data / "eval" / "images"
    info = common.machine()
    results, rows = [], []
    for name in a.models.split(","):
        print(f"{name}: {n} photos from {photos} ...", flush=True)
        args = ["--worker", "--model", name, "--data", str(data), "--photos", str(photos), "--images", str(n),
                "--batch-size", str(a.batch_size), "--rounds", str(a.rounds), "--formats", a.formats]
        args += (["--jax2tf"] if a.jax2tf else []) + (["--breakdown"] if a.breakdown else [])
        r = common.run_worker("inference.py", args)
        results.append(r)
        ref = r["img_s"][REF]
        for k, v in r["img_s"].items():
            rows.append([f"{name} ({r['backbone']} {r['image_size'][0]}x{r['image_size'][1]})", k, r["images"],
                         round(v, 1), v / ref, round(r["cpu_ms_per_img"][k], 1),
                         f"{r['max_abs_diff'][k]:.1e} (spread {r['output_std']:.1e})",
                         f"{r['export_s'][k]:.1f}" if k in r["export_s"] else "-"])
    headers = ["model", "path", "images", "images/s", "x decode+model", "CPU ms/img", "max abs diff", "export s"]
    lines = [f"## Inference from files (batch {a.batch_size}, end to end: read, decode, crop, resize, model)",
             "", common.machine_line(info) + f"; {results[0]['versions']}", "", common.table(headers, rows), "",
             ("Untrained models (speed does not depend on the weights). spread = mean over classes of the std of "
              "the reference probabilities across images: near 0 the untrained model is saturated and the "
              "difference says little; tests/test_export.py checks 1e-4 on a model whose outputs vary.")]
    for r in results:
        ratio = r["img_s"][PREDICTOR] / r["img_s"][REF]
        lines += ["", common.check(f"{r['model']}: Predictor.predict_files at least 0.8x decode + model "
                                   f"({ratio:.2f}x: {r['img_s'][PREDICTOR]:.1f} against {r['img_s'][REF]:.1f} "
                                   f"images/s)", ratio >= 0.8)]
        if "breakdown_s" in r:
            lines += ["", (f"{r['model']}: where predict_files' time goes (steps one after another, "
                           f"{r['images']} photos; seconds):"), ""]
            lines += [common.table(["step", "s", "ms/img"],
                                   [[k, round(v, 2), round(v / r["images"] * 1000, 2)]
                                    for k, v in r["breakdown_s"].items()])]
    text = "\n".join(lines)
    print(text)
    common.save("inference", text, {"machine": info, "results": results})
    return results


if __name__ == "__main__":
    main()
