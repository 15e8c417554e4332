"""Inference from files: the JAX path (``mask_keras.predict``) against the exported TF SavedModel.

    python bench/inference.py                         # demo model + EfficientNet-B0 224x224
    python bench/inference.py --models demo --images 700 --jax2tf

End to end from the eval folder of the synthetic 512x384 set: read, decode, crop, resize
(uint8 pixels), run the model, probabilities in memory. Rows (one process, interleaved rounds,
best of each):

* ``JAX (keras .keras)``: ``predict.predict_probs(load_artifact(run), paths)`` - the
  package's inference, XLA on CPU (the reference);
* ``TF SavedModel``: ``export.load_exported(export_artifact(run, out)).predict_files(paths)``
  - the CPU inference path (native TF ops, oneDNN kernels);
* ``ONNX Runtime`` and ``LiteRT`` (``--formats``; when their runtimes are installed, the
  ``export`` extra): the self-contained exports, which take the decoded full-size photo
  and crop and resize in their graph (the loader decodes with TF, without the DCT-scaled
  JPEG decode of the package's pipeline, so their difference from JAX includes that);
* ``jax2tf SavedModel`` (``--jax2tf``): the JAX program inside a SavedModel (XlaCallModule).

The models are untrained (speed does not depend on the weights); the outputs of every path
are compared with the JAX path (max absolute difference). The export time is shown too.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from train_step import MODELS, model_config  # noqa: E402

from mask_keras.export import RUNTIMES  # noqa: E402


def _flat(p):
    import numpy as np

    return np.concatenate([p[k] for k in sorted(p)], axis=1) if isinstance(p, dict) else p


def worker(a) -> dict:
    import numpy as np

    from mask_keras import predict
    from mask_keras.data import read_eval
    from mask_keras.export import export_artifact, load_exported
    from mask_keras.models.build import build_model

    cfg = model_config(a.model, a.data, a.batch_size, False)
    h, w = (int(v) for v in cfg.preprocess.image_size)
    paths = read_eval(a.data)["path"].astype(str).tolist()[:a.images]
    for p in paths:
        Path(p).read_bytes()  # page cache
    res = {"model": a.model, "backbone": cfg.model.backbone, "image_size": [h, w], "images": len(paths),
           "batch_size": a.batch_size, "versions": common.versions()}
    with tempfile.TemporaryDirectory(prefix="mask_keras_bench_infer_") as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        import keras

        keras.utils.set_random_seed(0)
        model = build_model(cfg.model, cfg.train.task, (h, w))
        model.save(run / "model.keras")
        cfg.save(run / "config.json")
        del model
        paths_run = {"JAX (keras .keras, XLA CPU)": None}
        exports = {"TF SavedModel (export.py, native TF)": "tf_saved_model"}
        names = {"onnx": "ONNX Runtime (model.onnx, photo in)", "litert": "LiteRT (model.tflite, photo in)"}
        for fmt in a.formats.split(","):
            if fmt in names and all(importlib.util.find_spec(m) for m in RUNTIMES[fmt]):
                exports[names[fmt]] = fmt
        if a.jax2tf:
            exports["jax2tf SavedModel (XlaCallModule)"] = "jax2tf"
        res["export_s"] = {}
        for name, fmt in exports.items():
            with common.Timer() as t:
                paths_run[name] = load_exported(export_artifact(run, Path(tmp) / fmt, format=fmt))
            res["export_s"][name] = t.seconds
        art = predict.load_artifact(run)

        def infer(name, some):
            m = paths_run[name]
            if m is None:
                return predict.predict_probs(art, some, batch_size=a.batch_size)
            return m.predict_files(some, batch_size=a.batch_size)

        outs = {}
        for name in paths_run:  # warm-up: compile / first call at the same (padded) batch shape
            infer(name, paths[:8])
        best = {}
        for _ in range(a.rounds):
            for name in paths_run:
                with common.Timer() as t:
                    outs[name] = _flat(infer(name, paths))
                best[name] = max(best.get(name, 0.0), len(paths) / t.seconds)
        ref = outs["JAX (keras .keras, XLA CPU)"]
        res["img_s"] = best
        res["max_abs_diff"] = {k: float(np.max(np.abs(v - ref))) for k, v in outs.items()}
        res["output_std"] = float(np.mean(np.std(ref, axis=0)))  # ~0: a saturated untrained model, diff uninformative
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="demo,effnet_b0_224", help=f"comma-separated, from {MODELS}")
    ap.add_argument("--images", type=int, default=0, help="eval images (default: 700 for demo/tiny, 192 for 224x224)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--jax2tf", action="store_true", help="also the jax2tf SavedModel")
    ap.add_argument("--formats", default="onnx,litert", help="self-contained exports to add (installed runtimes only)")
    ap.add_argument("--people", type=int, default=common.DEFAULT_PEOPLE)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        common.emit(worker(a))
        return None

    root = common.ensure_data(a.people)
    info = common.machine()
    results, rows = [], []
    for name in a.models.split(","):
        n = a.images or (192 if name == "effnet_b0_224" else 700)
        print(f"{name}: {n} images ...", flush=True)
        args = ["--worker", "--model", name, "--data", str(root), "--images", str(n), "--batch-size",
                str(a.batch_size), "--rounds", str(a.rounds), "--formats", a.formats] + (["--jax2tf"] if a.jax2tf else [])
        r = common.run_worker("inference.py", args)
        results.append(r)
        ref = r["img_s"]["JAX (keras .keras, XLA CPU)"]
        for k, v in r["img_s"].items():
            rows.append([f"{name} ({r['backbone']} {r['image_size'][0]}x{r['image_size'][1]})", k, r["images"],
                         round(v, 1), v / ref, f"{r['max_abs_diff'][k]:.1e} (spread {r['output_std']:.1e})",
                         f"{r['export_s'].get(k, 0):.1f}" if k in r["export_s"] else "-"])
    headers = ["model", "path", "images", "images/s", "x JAX", "max abs diff vs JAX", "export s"]
    text = "\n".join([f"## Inference from files (batch {a.batch_size}, end to end: read, decode, crop, resize, model)",
                      "", common.machine_line(info) + f"; {results[0]['versions']}", "", common.table(headers, rows),
                      "", "Untrained models (speed does not depend on the weights). spread = mean over classes of "
                      "the std of the JAX probabilities across images: near 0 the untrained model is saturated and "
                      "the difference says little; tests/test_export.py checks 1e-4 on a model whose outputs vary."])
    print(text)
    common.save("inference", text, {"machine": info, "results": results})
    return results


if __name__ == "__main__":
    main()
