"""Model quality: named configurations trained at a fixed budget, scored on held-out evaluation images.

    python bench/quality.py                          # suite "headline": plain (and BN variants) vs PyTorch
    python bench/quality.py --suite ablation         # what each team method is worth, against plain
    python bench/quality.py --configs plain,age58 --seeds 0 --people 300 --eval-people 100 \\
        --image-size 96x64 --epochs 6 --batch-size 32
    python bench/quality.py --render bench/results/quality_headline.json

Data: synthetic sets in the competition layout at the real 512x384 size, one per ``--seeds``
value (``mask_keras.data.synth.generate``; generated once under ``bench/.data/``). Each
configuration trains from scratch (``model.weights`` None: no downloads here) on the
``train/`` people with the package's person-level hold-out for checkpoint selection, then
predicts every ``eval/`` image (``mask_keras.inference.submission.predict_submission``),
scored against ``eval/gt.csv``: macro F1 over the 18 classes (the competition's score),
accuracy and the macro F1 of each task decoded from the 18 classes.

The reference: PyTorch (torchvision's model of the same name, random init, ``bench/
torch_reference.py``) trained with a plain cross-entropy loop on the same training images
(decoded, cropped and resized by the package's pipeline, so the pixels are identical), the
same hold-out, epochs, batch, optimizer and learning rate (held constant: the plain loop has no
schedule), no augmentation, the best epoch by validation macro F1 (the package's rule), in its
own process. ``plain`` is what issue 16's command line gets: the package's defaults (precise
BN, the ``base`` augmentation, the from-scratch init, cosine decay) with Adam 1e-3;
``constant`` holds its rate constant, as the reference does. "not installed" without the
``bench`` extra (``pip install -e '.[bench]'``).

Every number is a mean over the seeds with the range (min-max); ``x PyTorch`` is the mean of
the per-seed ratios (same data, same budget, same minute).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

#: people, eval people, (h, w), epochs, batch, backbone: "headline" is the scale of issue 16's
#: measurement; "ablation" trains tiny_cnn (a few seconds an epoch here) so that its 12
#: configurations (kfold5 alone is 5 models) fit on two seeds and two data sizes in about an hour
#: on 2 CPU cores: it measures the methods, not the backbone (the headline measures EfficientNet-B0)
#: ``overrides`` (optional) apply to every configuration at that scale: the ablation's methods were
#: all measured against a plain run at a constant rate (2026-12-02), so its scale keeps one
SCALES = {
    "headline": dict(people=600, eval_people=200, image_size=(128, 96), epochs=8, batch_size=64,
                     backbone="efficientnet_b0"),
    "ablation": dict(people=200, eval_people=60, image_size=(64, 48), epochs=10, batch_size=32, backbone="tiny_cnn",
                     overrides={"train.schedule": "constant"}),
    "smoke": dict(people=40, eval_people=12, image_size=(48, 32), epochs=1, batch_size=16, backbone="efficientnet_b0"),
}
#: what issue 16's command line sets (``mask-keras train --task multi --weights none --lr 1e-3 ...``);
#: everything else is the package's default, the learning-rate schedule (cosine) included
BASE = {"train.task": "multi", "model.weights": None,
        "preprocess.crop": "center", "preprocess.crop_size": (400, 200), "train.optimizer": "adam",
        "train.lr": 1e-3, "loss.name": "ce", "train.verbose": 0}


@dataclass(frozen=True)
class Spec:
    """One configuration: overrides on the plain one, and how its answer is made."""

    what: str
    overrides: dict = field(default_factory=dict)
    kind: str = "single"  # single | tasks3 (mask, gender, age models combined) | kfold (K models, hard vote)
    tta: bool = False
    folds: int = 0


CONFIGS = {
    "plain": Spec("one 18-way model, cross-entropy, the package's defaults"),
    "bn_ema": Spec("plain without precise BN: validation uses Keras' moving averages (momentum 0.99)",
                   {"train.precise_bn": 0}),
    "bn_ema_m09": Spec("plain without precise BN, BatchNorm momentum 0.9 (PyTorch's 0.1)",
                       {"train.precise_bn": 0, "model.bn_momentum": 0.9}),
    "constant": Spec("plain at a constant learning rate, as the PyTorch reference (the package's default decays "
                     "it: cosine to 1%)", {"train.schedule": "constant"}),
    "keras_init": Spec("plain with Keras' own from-scratch init (depthwise fan k*k, BatchNorm epsilon 1e-3), "
                       "the package's init before 2026-12-02", {"model.scratch_init": "keras"}),
    "noaug": Spec("plain without augmentation (the PyTorch reference's input: no flip, no colour change)",
                  {"augment.preset": "none"}),
    "old_x3": Spec("60+ people repeated 3x per epoch (team 000)", {"sampling.old_factor": 3.0}),
    "balanced": Spec("class-balanced sampling of the 18 classes (team 001)", {"sampling.balance": "class"}),
    "class_weights": Spec("loss weighted by inverse class frequency (teams 001, 004)",
                          {"sampling.class_weights": True}),
    "f1_focal": Spec("loss 0.4 F1 + 0.6 focal (team 001)", {"loss.terms": (("f1", 0.4), ("focal", 0.6))}),
    "age58": Spec("training age threshold 58 (team 001; scored at 60)", {"data.age_upper": 58}),
    "age59": Spec("training age threshold 59", {"data.age_upper": 59}),
    "mixup_old": Spec("MixUp on pairs with a 60+ face, half the batches (team 004)",
                      {"augment.mixup": 0.5, "augment.mix_old_only": True}),
    "tasks3": Spec("three per-task models (mask, gender, age) combined (team 000)", kind="tasks3"),
    "multihead": Spec("one model, three heads 3+2+3 (team 001)", {"train.task": "multihead"}),
    "tta": Spec("plain, predicted with horizontal-flip TTA", tta=True),
    "kfold5": Spec("5 fold models (stratified by person), hard vote (teams 002, 004)", kind="kfold", folds=5),
}
SUITES = {"headline": ("plain", "constant", "bn_ema", "bn_ema_m09"),
          "ablation": ("plain", "old_x3", "balanced", "class_weights", "f1_focal", "age58", "age59", "mixup_old",
                       "tasks3", "multihead", "tta", "kfold5")}
SCORES = ("macro_f1", "accuracy", "f1_mask", "f1_gender", "f1_age")


def data_root(people: int, eval_people: int, seed: int) -> Path:
    root = common.DATA / f"quality-{people}-{eval_people}-s{seed}"
    if not (root / "eval" / "gt.csv").is_file():
        from mask_keras.data.synth import generate

        print(f"generating {root} ({people} + {eval_people} people at 512x384, once) ...", flush=True)
        generate(root, people=people, eval_people=eval_people, seed=seed, image_size=(512, 384), progress=False)
    return root


def base_config(root: Path, scale: dict, seed: int, out: Path):
    from mask_keras.config import Config

    h, w = scale["image_size"]
    return Config().override(**{**BASE, **scale.get("overrides", {}), "model.backbone": scale["backbone"],
                                "data.data_dir": str(root),
                                "preprocess.image_size": (h, w),
                                "train.epochs": scale["epochs"], "train.batch_size": scale["batch_size"],
                                "train.seed": seed, "train.out_dir": str(out)})


def run_config(name: str, root: Path, scale: dict, seed: int, work: Path) -> dict:
    """Train ``name`` on ``root`` and score it on the evaluation images."""
    from mask_keras.kfold import train_kfold
    from mask_keras.inference.submission import predict_submission
    from mask_keras.train import train

    spec = CONFIGS[name]
    out = work / f"{name}-s{seed}"
    cfg = base_config(root, scale, seed, out).override(**spec.overrides)
    t0 = time.perf_counter()
    models, kfold_dirs, vote = [], [], "soft"
    if spec.kind == "tasks3":
        for task in ("mask", "gender", "age"):
            models.append(train(cfg.override(**{"train.task": task, "train.out_dir": str(out / task)})).out_dir)
    elif spec.kind == "kfold":
        train_kfold(cfg.override(**{"data.folds": spec.folds}))
        kfold_dirs, vote = [out], "hard"
    else:
        models.append(train(cfg).out_dir)
    trained = time.perf_counter() - t0
    res = predict_submission(models, root, work / f"{name}-s{seed}.csv", kfold_dirs=kfold_dirs, tta=spec.tta,
                             vote=vote, gt=root / "eval" / "gt.csv", progress=False)
    history = []
    if spec.kind == "single":  # the epochs' training loss and validation macro F1, as the reference records
        import pandas as pd

        h = pd.read_csv(Path(models[0]) / "history.csv")
        history = [{"epoch": int(r.epoch), "loss": float(r.loss), "val_macro_f1": float(r.val_macro_f1)}
                   for r in h.itertuples()]
    return {"config": name, "seed": seed, **{k: float(res.metrics[k]) for k in SCORES},
            "train_minutes": trained / 60, "minutes": (time.perf_counter() - t0) / 60, "history": history}


# --------------------------------------------------------------------------- the PyTorch reference
def torch_worker(a) -> dict:
    """Train the torchvision model on the package's split and pixels; score it like the package."""
    import numpy as np
    import torch
    import torchvision  # noqa: F401  (before TensorFlow: torchvision's triton import segfaults after it)

    import torch_reference as TR
    from mask_keras import labels as L
    from mask_keras import pipeline
    from mask_keras.evaluate import metrics_from_labels, read_answers, task_scores
    from mask_keras.train import prepare_tables

    scale = json.loads(a.scale_json)
    root = Path(a.data)
    cfg = base_config(root, scale, a.seed, Path(a.work) / "torch")
    TR.set_threads()
    train_t, val_t = prepare_tables(cfg)
    pcfg = cfg.preprocess
    xs = {k: pipeline.load_images(t["path"].tolist(), pcfg) for k, t in (("train", train_t), ("val", val_t))}
    ys = {"train": train_t["label"].to_numpy(), "val": val_t["label"].to_numpy()}
    model = TR.create_model(cfg.model.backbone, L.NUM_CLASSES, seed=a.seed)
    trainer = TR.Trainer(model, lr=cfg.train.lr)
    b, rng = cfg.train.batch_size, np.random.default_rng(a.seed)
    t0 = time.perf_counter()

    def predict(x):
        return np.concatenate([trainer.predict(TR.to_tensor(x[i:i + 256])).numpy() for i in range(0, len(x), 256)])

    best, best_state, history = -1.0, None, []
    for epoch in range(cfg.train.epochs):
        order, losses = rng.permutation(len(xs["train"])), []
        for i in range(0, len(order) - b + 1, b):  # static batches, the remainder dropped (as the package)
            idx = order[i:i + b]
            losses.append(trainer.step(TR.to_tensor(xs["train"][idx]), torch.from_numpy(ys["train"][idx])))
        f1 = task_scores(ys["val"], predict(xs["val"]).argmax(1), "multi")["macro_f1"]
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_macro_f1": float(f1)})
        if f1 > best:
            best, best_state = f1, {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    trained = time.perf_counter() - t0
    gt = read_answers(root / "eval" / "gt.csv")
    paths = [str(root / "eval" / "images" / i) for i in gt.index]
    pred = predict(pipeline.load_images(paths, pcfg)).argmax(1)
    m = metrics_from_labels(gt.to_numpy(), pred)
    return {"config": "pytorch", "seed": a.seed, **{k: float(m[k]) for k in SCORES},
            "train_minutes": trained / 60, "minutes": (time.perf_counter() - t0) / 60, "history": history}


def run_torch(root: Path, scale: dict, seed: int, work: Path) -> dict:
    """The PyTorch reference in its own process (callers check ``torch_reference.available()`` first)."""
    return common.run_worker("quality.py", ["--torch-worker", "--data", str(root), "--scale-json", json.dumps(scale),
                                            "--seed", str(seed), "--work", str(work)], timeout=6 * 3600)


# --------------------------------------------------------------------------- report
def summarise(results: list[dict]) -> dict:
    """Per config: mean, min and max of every score over seeds; x PyTorch (mean of per-seed ratios)."""
    out = {}
    ref = {r["seed"]: r for r in results if r["config"] == "pytorch"}
    plain = {r["seed"]: r for r in results if r["config"] == "plain"}
    for name in dict.fromkeys(r["config"] for r in results):
        rows = [r for r in results if r["config"] == name]
        s = {"seeds": [r["seed"] for r in rows], "minutes": statistics.mean(r["minutes"] for r in rows)}
        for k in SCORES:
            v = [r[k] for r in rows]
            s[k] = {"mean": statistics.mean(v), "min": min(v), "max": max(v)}
        for label, base in (("x_pytorch", ref), ("x_plain", plain)):
            ratios = [r["macro_f1"] / base[r["seed"]]["macro_f1"] for r in rows
                      if r["seed"] in base and base[r["seed"]]["macro_f1"] > 0]
            if ratios and name not in (("pytorch",) if label == "x_pytorch" else ("plain",)):
                s[label] = statistics.mean(ratios)
        s["d_age_f1"] = (statistics.mean(r["f1_age"] - plain[r["seed"]]["f1_age"] for r in rows if r["seed"] in plain)
                         if name != "plain" and any(r["seed"] in plain for r in rows) else None)
        out[name] = s
    return out


def render(results: list[dict], info: dict, scale: dict, suite: str, torch_note: str | None) -> str:
    summ = summarise(results)

    def cell(s, k):
        v = s[k]
        return f"{v['mean']:.3f} ({v['min']:.3f}-{v['max']:.3f})" if v["min"] != v["max"] else f"{v['mean']:.3f}"

    rows = []
    for name, s in summ.items():
        what = "PyTorch eager, torchvision model, plain cross-entropy, no augmentation" if name == "pytorch" \
            else CONFIGS[name].what
        rows.append([name, what, cell(s, "macro_f1"), cell(s, "accuracy"), cell(s, "f1_mask"), cell(s, "f1_gender"),
                     cell(s, "f1_age"), f"{s['x_pytorch']:.2f}" if "x_pytorch" in s else "-",
                     f"{s['x_plain']:.2f}" if "x_plain" in s else "-",
                     "-" if s.get("d_age_f1") is None else f"{s['d_age_f1']:+.3f}", f"{s['minutes']:.1f}"])
    if torch_note:
        rows.append(["pytorch", torch_note] + ["-"] * 9)
    h, w = scale["image_size"]
    seeds = sorted({r["seed"] for r in results})
    overrides = "".join(f", {k}={v}" for k, v in scale.get("overrides", {}).items())
    headers = ["config", "what", "macro F1", "accuracy", "F1 mask", "F1 gender", "F1 age", "x PyTorch",
               "x plain", "age F1 - plain", "minutes"]
    goals = []
    if "plain" in summ and "x_pytorch" in summ["plain"]:
        goals.append(common.check(f"plain >= 1.0x the PyTorch reference's macro F1: {summ['plain']['x_pytorch']:.2f}x",
                                  summ["plain"]["x_pytorch"] >= 1.0))
    return "\n".join([
        f"## Quality, suite {suite}: {scale.get('backbone', 'efficientnet_b0')} from scratch, {h}x{w}, "
        f"{scale['epochs']} epochs, batch "
        f"{scale['batch_size']}, Adam 1e-3{overrides}; {scale['people']} train / {scale['eval_people']} eval people "
        f"per set, data seeds {seeds}", "",
        common.machine_line(info), "",
        "Mean over seeds (range in brackets). Scored on the evaluation images (18-class macro F1, the "
        "competition's score). x PyTorch / x plain: mean of the per-seed macro F1 ratios.", "",
        common.table(headers, rows), "", *[f"- {g}" for g in goals]])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="headline", choices=sorted(SUITES))
    ap.add_argument("--configs", help=f"comma-separated, instead of the suite's; from {sorted(CONFIGS)}")
    ap.add_argument("--seeds", default="0,1", help="data (and training) seeds, comma-separated")
    ap.add_argument("--scale", choices=sorted(SCALES), help="default: the suite's name (headline / ablation)")
    ap.add_argument("--people", type=int)
    ap.add_argument("--eval-people", type=int)
    ap.add_argument("--image-size", help="HxW")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--backbone", help="a registered backbone (default: the scale's)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    ap.add_argument("--work", help="where runs go (default: a folder under bench/.data)")
    ap.add_argument("--render", metavar="JSON", nargs="+",
                    help="print the table of saved results files (several: one table, e.g. two seeds run apart)")
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--scale-json", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.torch_worker:
        common.emit(torch_worker(a))
        return None
    if a.render:
        files = [json.loads(Path(f).read_text()) for f in a.render]
        d = files[0]
        if any(f["scale"] != d["scale"] for f in files):
            raise SystemExit(f"the files in --render were measured at different scales: {[f['scale'] for f in files]}")
        d["results"] = [r for f in files for r in f["results"]]
        text = render(d["results"], d["machine"], d["scale"], d["suite"], d.get("torch_note"))
        print(text)
        return d
    scale = dict(SCALES[a.scale or a.suite])
    for k in ("people", "eval_people", "epochs", "batch_size", "backbone"):
        if getattr(a, k) is not None:
            scale[k] = getattr(a, k)
    if a.image_size:
        scale["image_size"] = tuple(int(v) for v in a.image_size.lower().split("x"))
    names = a.configs.split(",") if a.configs else list(SUITES[a.suite])
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown config(s) {unknown}; choose from {sorted(CONFIGS)}")
    seeds = [int(s) for s in a.seeds.split(",")]
    import mask_keras  # noqa: F401  (JAX backend)
    import torch_reference

    info = common.machine()
    torch_note = None if a.no_torch else torch_reference.available()
    if not a.no_torch and not torch_note and scale["backbone"] not in (*torch_reference.TORCHVISION, "tiny_cnn"):
        torch_note = f"no PyTorch model for {scale['backbone']}"
    # one results file per suite and data size (the ablation runs at two sizes)
    default_people = SCALES[a.scale or a.suite]["people"]
    tag = (f"{a.suite}" + (f"_{a.scale}" if a.scale and a.scale != a.suite else "")
           + ("" if not a.configs else "_custom")
           + ("" if scale["people"] == default_people else f"_{scale['people']}p"))
    results = []
    for seed in seeds:
        root = data_root(scale["people"], scale["eval_people"], seed)
        work = Path(a.work) if a.work else common.DATA / "quality-runs" / tag
        work.mkdir(parents=True, exist_ok=True)
        if not a.no_torch and not torch_note:
            print(f"seed {seed}: pytorch reference ...", flush=True)
            r = run_torch(root, scale, seed, work)
            results.append(r)
            print(f"  pytorch: macro F1 {r['macro_f1']:.4f} ({r['minutes']:.1f} min)", flush=True)
        for name in names:
            print(f"seed {seed}: {name} ...", flush=True)
            r = run_config(name, root, scale, seed, work)
            results.append(r)
            print(f"  {name}: macro F1 {r['macro_f1']:.4f}, accuracy {r['accuracy']:.4f}, age F1 {r['f1_age']:.4f} "
                  f"({r['minutes']:.1f} min)", flush=True)
            common.save(f"quality_{tag}", render(results, info, scale, a.suite, torch_note),
                        {"machine": info, "scale": scale, "suite": a.suite, "results": results,
                         "torch_note": torch_note})
    text = render(results, info, scale, a.suite, torch_note)
    print(text)
    common.save(f"quality_{tag}", text, {"machine": info, "scale": scale, "suite": a.suite, "results": results,
                                         "torch_note": torch_note})
    return results


if __name__ == "__main__":
    main()
