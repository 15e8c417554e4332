"""Training speed: against PyTorch on the same models; compile time (cold vs warm cache), compiles per epoch.

    python bench/train_step.py                              # both parts below
    python bench/train_step.py --part pytorch               # only the comparison with PyTorch
    python bench/train_step.py --part compile --models demo --batch-size 64
    python bench/train_step.py --mixed-precision            # mixed_bfloat16 (GPU)

Part ``pytorch``: images/s of one training step (Adam, cross-entropy, batch 32, float32) and
of inference (eval mode, batch 64), for each of ``--pairs`` (``backbone@HxW``), in three
long-lived worker processes that take turns: ``mask_keras`` (the package's model from
``build_model``, the CPU convolutions of ``mask_keras.jax_backend.cpu_conv`` on), ``stock
XLA`` (the same model with ``MASK_KERAS_CPU_CONV=0``: Keras' convolutions as XLA compiles
them) and ``PyTorch`` (the torchvision model, eager; ``bench/torch_reference.py``; "not
installed" without the ``bench`` extra). Every round runs the same number of steps in each
worker, one worker at a time, so each ratio compares neighbouring minutes of the shared
machine; the goals use the median over rounds of the per-round ratio.

Part ``compile``:

Models: ``demo`` (the demo recipe's model: ``recipes/efficientnet_gender.py`` at demo scale,
EfficientNet-B0 from scratch at 96x64), ``effnet_b0_224`` (EfficientNet-B0, weights None,
224x224, 18 classes), ``tiny`` (the test backbone ``tiny_cnn`` at 128x96).

Each model runs in two fresh processes sharing one new persistent compilation cache
directory: ``cold`` (empty cache) and ``warm`` (the cache the cold one filled). Each process
builds and compiles the model the way ``mask_keras.train`` does, then

* ``first step``: wall time from the start of ``fit`` to the end of its first step (trace +
  compile or cache load + one step); ``XLA compile``: the time JAX reports for building the
  train-step executable;
* ``step``: images/s of ``fit`` fed one in-memory batch over and over (the reference: the
  step with a free input);
* (warm process) ``fit``: images/s of ``model.fit`` fed by the real tf.data pipeline from
  the synthetic 512x384 files (second epoch: uint8 cache), as a ratio to ``step``: 1.0 means
  the input pipeline never starves the step (on a CPU machine both share the cores);
* (warm process) compiles during 2 epochs of ``fit`` with validation on a ragged data set
  (train and validation sizes not multiples of the batch): must be 1 train-step compile
  and 1 eval-step compile.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MODELS = ("demo", "effnet_b0_224", "tiny")
#: part "pytorch": (backbone, (h, w)) pairs; the issue's goals are on these
PAIRS = ("efficientnet_b0@96x64", "efficientnet_b0@128x96", "resnet50@96x64", "tiny_cnn@96x64")
IMPLS = ("mask_keras", "stock_xla", "pytorch")
#: goals against PyTorch (training) per backbone; inference: at least as fast (1.0) everywhere
TRAIN_GOALS = {"efficientnet_b0": 0.7, "resnet50": 0.8}
#: per model: (train steps per timed epoch, timed rounds); EfficientNet-B0 at 224x224 takes
#: seconds per step on a CPU, so it gets fewer (``--fit-steps`` / ``--rounds`` override)
SIZES = {"demo": (6, 2), "tiny": (6, 2), "effnet_b0_224": (2, 1)}


def model_config(name: str, data_dir: str, batch_size: int, mixed: bool):
    from mask_keras import recipe
    from mask_keras.config import Config

    if name == "demo":
        cfg = recipe.recipe_config(common.ROOT / "recipes" / "efficientnet_gender.py", demo=True)
    elif name == "effnet_b0_224":
        cfg = Config().override(**{"train.task": "multi", "model.backbone": "efficientnet_b0", "model.weights": None,
                                   "preprocess.image_size": (224, 224), "preprocess.crop": "center",
                                   "preprocess.crop_size": (400, 300), "augment.preset": "base"})
    elif name == "tiny":
        cfg = Config().override(**{"train.task": "multi", "model.backbone": "tiny_cnn", "model.weights": None,
                                   "preprocess.image_size": (128, 96), "augment.preset": "base"})
    else:
        raise SystemExit(f"unknown model {name!r}; choose from {MODELS}")
    return cfg.override(**{"data.data_dir": data_dir, "train.batch_size": batch_size, "train.verbose": 0,
                           "train.mixed_precision": mixed, "train.cache": "memory", "data.max_people": None})


def worker(a) -> dict:
    import keras
    import numpy as np

    from mask_keras import pipeline
    from mask_keras.jax_backend import distribute
    from mask_keras import train as T
    from mask_keras.models.build import build_model

    distribute.enable_compilation_cache(a.cache_dir)
    cfg = model_config(a.model, a.data, a.batch_size, a.mixed_precision)
    distribute.setup_distribution(a.devices, batch_size=a.batch_size)
    if a.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    b = a.batch_size
    h, w = (int(v) for v in cfg.preprocess.image_size)
    train_all, val_all = T.prepare_tables(cfg)
    n_train = a.fit_steps * b + b // 2 + 1  # ragged: not a multiple of the batch
    n_val = b + b // 3 + 1
    train_t = train_all.iloc[:n_train].reset_index(drop=True)
    val_t = val_all.iloc[:n_val].reset_index(drop=True)

    def fresh_model():
        m = build_model(cfg.model, cfg.train.task, (h, w), augment=cfg.augment.preset, seed=0)
        return T.compile_model(m, cfg, train_t, a.fit_steps)

    model = fresh_model()
    k = T.num_classes(cfg.train.task)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(b, h, w, 3), dtype="uint8")  # what the pipeline ships: uint8 pixels
    y = np.eye(k, dtype="float32")[rng.integers(0, k, b)]
    res = {"model": a.model, "phase": a.phase, "backbone": cfg.model.backbone, "image_size": [h, w],
           "task": cfg.train.task, "batch_size": b, "params": int(model.count_params()),
           "versions": common.versions(), "devices": a.devices, "device_count": distribute.device_count()}
    from mask_keras._tf import tf

    class StepTimer(keras.callbacks.Callback):
        """first step: fit start -> end of its first batch; epoch: begin -> end."""

        def on_train_begin(self, logs=None):
            self.t_begin, self.first = time.perf_counter(), None

        def on_train_batch_end(self, batch, logs=None):
            if self.first is None:
                self.first = time.perf_counter() - self.t_begin

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.last = time.perf_counter() - self.t0

    # compile: the first step of a fresh model (cold or warm persistent cache)
    ref = tf.data.Dataset.from_tensors((x, y)).repeat()  # the reference input: one batch, free
    timer = StepTimer()
    with distribute.CompileCounter() as cc:
        model.fit(ref, steps_per_epoch=1, epochs=1, verbose=0, callbacks=[timer])
    res["first_step_s"] = timer.first
    res["xla_compile_s"] = cc.compile_seconds("train_step")

    # throughput: the same model and compiled step, fed (a) one in-memory batch, (b) the real pipeline;
    # interleaved rounds, best of each (a shared machine gives each round different CPU shares)
    train_ds, train_info = pipeline.make_dataset(train_t, cfg, training=True, verbose=0)
    steps = train_info.num_steps
    model.fit(train_ds, epochs=1, verbose=0)  # cold epoch: fills the uint8 cache
    step_best = fit_best = 0.0
    for _ in range(a.rounds):
        timer = StepTimer()
        model.fit(ref, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer])
        step_best = max(step_best, steps * b / timer.last)
        timer = StepTimer()
        model.fit(train_ds, epochs=1, verbose=0, callbacks=[timer])
        fit_best = max(fit_best, steps * b / timer.last)
    res["step_img_s"], res["fit_img_s"] = step_best, fit_best

    if a.phase == "warm":
        # compiles of a fresh model over 2 epochs with validation, ragged train and validation sets
        val_ds, val_info = pipeline.make_dataset(val_t, cfg, training=False, verbose=0)
        with distribute.CompileCounter() as cc:
            fresh_model().fit(train_ds, validation_data=val_ds, epochs=2, verbose=0)
        res["fit_images"] = {"train": len(train_t), "val": len(val_t), "train_steps": steps,
                             "val_steps": val_info.num_steps}
        res["compiles"] = {"train_step": cc.count("train_step"), "test_step": cc.count("test_step")}
    return res


# --------------------------------------------------------------------------- part "pytorch"
def parse_pair(text: str) -> tuple[str, tuple[int, int]]:
    backbone, _, size = text.partition("@")
    try:
        h, w = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--pairs: expected backbone@HxW (e.g. efficientnet_b0@96x64), got {text!r}") from None
    return backbone, (h, w)


def throughput_worker(a) -> None:
    """Build one model, warm it up, then run ``N`` steps for every ``N`` read from stdin."""
    import numpy as np

    backbone, (h, w) = parse_pair(a.pair)
    b, k = a.batch_size, 18
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(b, h, w, 3), dtype=np.uint8)  # what the pipeline ships
    labels = rng.integers(0, k, size=b)
    if a.impl == "pytorch":
        import torch

        import torch_reference as TR

        threads = TR.set_threads()
        trainer = TR.Trainer(TR.create_model(backbone, k))
        xt, yt = TR.to_tensor(x), torch.from_numpy(labels)

        def run(n: int) -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                trainer.step(xt, yt) if a.mode == "train" else trainer.predict(xt)
            return time.perf_counter() - t0

        info = {"version": f"torch {torch.__version__}, torchvision {__import__('torchvision').__version__}",
                "threads": threads}
    else:
        import mask_keras  # noqa: F401  (JAX backend; MASK_KERAS_CPU_CONV decides the convolutions)
        import keras

        from mask_keras._tf import tf
        from mask_keras.config import ModelConfig
        from mask_keras.jax_backend import cpu_conv
        from mask_keras.models.build import build_model

        keras.utils.set_random_seed(0)
        model = build_model(ModelConfig(backbone=backbone, weights=None), "multi", (h, w))
        model.compile(keras.optimizers.Adam(1e-3), keras.losses.CategoricalCrossentropy())
        y = np.eye(k, dtype=np.float32)[labels]
        train_ds = tf.data.Dataset.from_tensors((x, y)).repeat()
        pred_x = tf.data.Dataset.from_tensors(x).repeat()

        def run(n: int) -> float:
            t0 = time.perf_counter()
            if a.mode == "train":
                model.fit(train_ds, steps_per_epoch=n, epochs=1, verbose=0)
            else:
                model.predict(pred_x.take(n), verbose=0)
            return time.perf_counter() - t0

        info = {"version": f"keras {keras.__version__}, jax {__import__('jax').__version__}",
                "cpu_conv": cpu_conv.installed()}
    first = run(1)  # trace + compile (or cache load) + one step
    steady = run(1)
    common.emit({"ready": True, "first_s": first, "step_s": steady, **info})
    for line in sys.stdin:
        if not line.strip() or line.strip() == "quit":
            break
        n = int(line)
        common.emit({"n": n, "seconds": run(n)})


class _Worker:
    """A long-lived throughput worker; ``measure(n)`` -> images/s of ``n`` steps."""

    def __init__(self, impl: str, pair: str, mode: str, batch_size: int):
        import json
        import os
        import subprocess

        self.json, self.impl, self.batch = json, impl, batch_size
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "jax",
               "MASK_KERAS_CPU_CONV": "0" if impl == "stock_xla" else "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(common.BENCH / "train_step.py"), "--throughput-worker", "--impl", impl,
             "--pair", pair, "--mode", mode, "--batch-size", str(batch_size)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
            cwd=str(common.ROOT))
        self.ready = self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("RESULT "):
                return self.json.loads(line[len("RESULT "):])
        raise RuntimeError(f"{self.impl} worker ended (exit {self.proc.wait()}) without a result")

    def measure(self, n: int) -> float:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return n * self.batch / self._read()["seconds"]

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)
        except Exception:  # noqa: BLE001 - a dead worker is already closed
            self.proc.kill()


def vs_pytorch(pairs, batch_size: int, rounds: int, round_s: float, predict_batch: int) -> list[dict]:
    """Paired rounds of mask_keras / stock XLA / PyTorch for every pair, training and inference."""
    import statistics

    import torch_reference

    missing = torch_reference.available()
    results = []
    for pair in pairs:
        for mode, b in (("train", batch_size), ("predict", predict_batch)):
            impls = [i for i in IMPLS if not (i == "pytorch" and missing)]
            workers = {}
            try:
                for impl in impls:  # one at a time: a compile must not overlap another's rounds
                    print(f"{pair} {mode}: starting {impl} ...", flush=True)
                    workers[impl] = _Worker(impl, pair, mode, b)
                # the same steps in every worker: ~round_s seconds of the fastest
                fastest = min(w.ready["step_s"] for w in workers.values())
                n = max(2, min(50, round(round_s / max(fastest, 1e-3))))
                rates = {i: [] for i in workers}
                for r in range(rounds):
                    order = impls[r % len(impls):] + impls[:r % len(impls)]
                    for impl in order:
                        rates[impl].append(workers[impl].measure(n))
                    print(f"  round {r + 1}: " + ", ".join(f"{i} {rates[i][-1]:.1f}" for i in impls), flush=True)
            finally:
                for w in workers.values():
                    w.close()
            row = {"pair": pair, "mode": mode, "batch": b, "steps_per_round": n, "rounds": rounds,
                   "best": {i: max(v) for i, v in rates.items()},
                   "first_step_s": {i: w.ready["first_s"] for i, w in workers.items()},
                   "versions": {i: w.ready.get("version") for i, w in workers.items()},
                   "pytorch_missing": missing}
            if "pytorch" in rates:
                row["paired_vs_pytorch"] = {i: statistics.median(a / t for a, t in zip(rates[i], rates["pytorch"]))
                                            for i in rates}
            row["paired_vs_stock"] = statistics.median(a / s_ for a, s_ in zip(rates["mask_keras"], rates["stock_xla"]))
            results.append(row)
    return results


def render_vs_pytorch(results, info) -> str:
    rows, goals = [], []
    for r in results:
        backbone, _ = parse_pair(r["pair"])
        for impl in IMPLS:
            if impl == "pytorch" and r["pytorch_missing"]:
                rows.append([r["pair"], r["mode"], "PyTorch eager", r["pytorch_missing"], "-", "-", "-"])
                continue
            vs_pt = r.get("paired_vs_pytorch", {}).get(impl)
            rows.append([r["pair"], r["mode"], {"mask_keras": "mask_keras (JAX, cpu_conv)",
                                                 "stock_xla": "stock XLA (JAX, Keras' convolutions)",
                                                 "pytorch": "PyTorch eager (torchvision; tiny_cnn: "
                                                            "bench/torch_reference.py)"}[impl],
                         round(r["best"][impl], 1), "-" if vs_pt is None else round(vs_pt, 2),
                         round(r["paired_vs_stock"], 2) if impl == "mask_keras" else "-",
                         round(r["first_step_s"][impl], 1)])
        vs = r.get("paired_vs_pytorch", {}).get("mask_keras")
        target = TRAIN_GOALS.get(backbone) if r["mode"] == "train" else 1.0
        if target is not None:
            goals.append(common.check(f"{r['pair']} {r['mode']}: mask_keras >= {target}x PyTorch: "
                                      + ("PyTorch not installed" if vs is None else f"{vs:.2f}x"),
                                      vs is not None and vs >= target))
    headers = ["model", "mode", "implementation", "images/s (best round)", "x PyTorch (paired median)",
               "x stock XLA (paired median)", "first step s (trace + compile + step)"]
    versions = {i: v for r in results for i, v in r["versions"].items() if v}
    return "\n".join([
        f"## Against PyTorch on the same models (train batch {results[0]['batch']}, float32, random init)", "",
        common.machine_line(info) + "; " + "; ".join(f"{k}: {v}" for k, v in versions.items()), "",
        common.table(headers, rows), "", *[f"- {g}" for g in goals]])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="all", choices=["all", "pytorch", "compile"])
    ap.add_argument("--pairs", default=",".join(PAIRS), help="part pytorch: comma-separated backbone@HxW")
    ap.add_argument("--pair-rounds", type=int, default=3, help="part pytorch: paired rounds")
    ap.add_argument("--round-seconds", type=float, default=8.0, help="part pytorch: ~seconds of the fastest per round")
    ap.add_argument("--predict-batch", type=int, default=64)
    ap.add_argument("--models", default="demo,effnet_b0_224", help=f"part compile: comma-separated, from {MODELS}")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--fit-steps", type=int, help="train steps per timed epoch (default: 6; 2 at 224x224)")
    ap.add_argument("--rounds", type=int, help="timed rounds, best kept (default: 2; 1 at 224x224)")
    ap.add_argument("--mixed-precision", action="store_true", help="mixed_bfloat16")
    ap.add_argument("--devices", default="auto", choices=["auto", "all"],
                    help="all = keras.distribution.DataParallel over every device (batch split over them)")
    ap.add_argument("--people", type=int, default=common.DEFAULT_PEOPLE)
    ap.add_argument("--render", metavar="JSON", help="print the table of a saved results file")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--throughput-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", help=argparse.SUPPRESS)
    ap.add_argument("--pair", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        common.emit(worker(a))
        return None
    if a.throughput_worker:
        throughput_worker(a)
        return None
    if a.render:
        import json

        d = json.loads(Path(a.render).read_text())
        return render(d["results"], d["machine"], d.get("batch_size", a.batch_size), d.get("mixed", False),
                      d.get("devices", "auto"))

    info = common.machine()
    if a.part in ("all", "pytorch"):
        pt = vs_pytorch(a.pairs.split(","), a.batch_size, a.pair_rounds, a.round_seconds, a.predict_batch)
        text = render_vs_pytorch(pt, info)
        print(text)
        common.save("train_step_vs_pytorch", text, {"machine": info, "results": pt})
        if a.part == "pytorch":
            return pt
    root = common.ensure_data(a.people)
    results = []
    for name in a.models.split(","):
        with tempfile.TemporaryDirectory(prefix="mask_keras_bench_jax_cache_") as cache:
            steps, rounds = SIZES.get(name, (6, 2))
            args = ["--worker", "--model", name, "--cache-dir", cache, "--data", str(root), "--batch-size",
                    str(a.batch_size), "--rounds", str(a.rounds or rounds), "--fit-steps", str(a.fit_steps or steps)]
            if a.mixed_precision:
                args.append("--mixed-precision")
            args += ["--devices", a.devices]
            for phase in ("cold", "warm"):
                print(f"{name}: {phase} compilation cache ...", flush=True)
                results.append(common.run_worker("train_step.py", args + ["--phase", phase]))

    return render(results, info, a.batch_size, a.mixed_precision, a.devices)


def render(results, info, batch_size, mixed, devices="auto"):
    """The table (also from a saved ``bench/results/train_step*.json``: ``--render FILE``)."""
    rows, goals = [], []
    names = list(dict.fromkeys(r["model"] for r in results))
    for name in names:
        cold = next(r for r in results if r["model"] == name and r["phase"] == "cold")
        warm = next(r for r in results if r["model"] == name and r["phase"] == "warm")
        best = max((cold, warm), key=lambda r: r["step_img_s"])  # same program; ratio within one process
        step_s = batch_size / best["step_img_s"]  # one steady step: what the first step costs anyway
        over_cold, over_warm = cold["first_step_s"] - step_s, warm["first_step_s"] - step_s
        c = warm["compiles"]
        rows.append([f"{name} ({cold['backbone']} {cold['image_size'][0]}x{cold['image_size'][1]}, "
                     f"{cold['params'] / 1e6:.1f}M params)", round(best["step_img_s"], 1),
                     round(best["fit_img_s"], 1), best["fit_img_s"] / best["step_img_s"],
                     over_cold, over_warm, over_cold / max(over_warm, 1e-9),
                     cold["xla_compile_s"], warm["xla_compile_s"], cold["xla_compile_s"] / max(warm["xla_compile_s"], 1e-9),
                     f"{c['train_step']} / {c['test_step']}"])
        goals.append(common.check(f"{name}: 1 train-step and 1 eval-step compile in 2 epochs with ragged data "
                                  f"({warm['fit_images']['train']} train / {warm['fit_images']['val']} val images, "
                                  f"batch {batch_size}): got {c['train_step']} / {c['test_step']}",
                                  c["train_step"] == 1 and c["test_step"] == 1))
    headers = ["model", "step img/s", "fit img/s", "fit / step", "startup s (cold cache)", "startup s (warm)",
               "cold / warm", "XLA compile s (cold)", "XLA compile s (warm)", "cold / warm",
               "compiles train / eval"]
    text = "\n".join([
        f"## Training (batch {batch_size}, {'mixed_bfloat16' if mixed else 'float32'}"
        f"{', data parallel over all devices' if devices == 'all' else ''})", "",
        common.machine_line(info) + f"; {results[0]['versions']}", "",
        common.table(headers, rows), "",
        "startup = first step's wall time (trace + compile or cache load + step) minus one steady step; "
        "XLA compile = the time JAX reports for building the train-step executable (a cache hit: loading it).",
        "", *[f"- {g}" for g in goals]])
    print(text)
    common.save("train_step" + ("_bf16" if mixed else "") + ("_dp" if devices == "all" else ""), text,
                {"machine": info, "results": results, "goals": goals, "batch_size": batch_size, "mixed": mixed,
                 "devices": devices})
    return results


if __name__ == "__main__":
    main()
