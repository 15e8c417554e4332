"""``mask-keras``: thin command line over the library (parse, call, print)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from . import labels as L


def _hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH like 128x96, got {text!r}") from None
    return h, w


def _kv(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected section.option=value, got {text!r}")
    k, v = text.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``mask-keras train`` and the recipes."""
    p.add_argument("--config", help="a config.json to start from (e.g. a previous run's)")
    p.add_argument("--data-dir", help="directory holding train/ (and eval/)")
    p.add_argument("--out-dir", help="run directory for the artifact")
    p.add_argument("--task", choices=list(L.TASKS))
    p.add_argument("--backbone")
    p.add_argument("--weights", help="imagenet | a keras-hub preset | a local path | none")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--image-size", type=_hw, help="HEIGHTxWIDTH fed to the model, e.g. 224x224")
    p.add_argument("--max-people", type=int, help="use only this many people (stratified)")
    p.add_argument("--folds", type=int, help="train K models on person-level stratified folds")
    p.add_argument("--devices", choices=["auto", "all"], help="all = data parallel over every local device")
    p.add_argument("--mixed-precision", action="store_true", default=None, help="mixed_bfloat16")
    p.add_argument("--wandb", action="store_true", default=None, help="log to wandb (offline unless --set train.wandb_mode=online)")
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true", default=None,
                   help="continue the run in --out-dir from its newest backup (K-fold: finished folds are "
                        "kept, an interrupted one continues); nothing to resume: starts fresh")
    p.add_argument("--set", type=_kv, action="append", default=[], metavar="SECTION.OPTION=VALUE",
                   help="override any config option, e.g. --set loss.name=focal --set augment.mixup=0.5")


def recipe_parser(description: str) -> argparse.ArgumentParser:
    """A recipe's command line (:mod:`mask_keras.recipe`): ``mask-keras train``'s flags (:func:`add_train_args`).

    Args:
        description: the ``--help`` text (the recipe's module docstring).

    Returns:
        The ``argparse.ArgumentParser``.
    """
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(p)
    return p


def _kv_path(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


def ensemble_parser(description: str, members) -> argparse.ArgumentParser:
    """:func:`recipe_parser` with ``--load``, ``--vote``, ``--level``, ``--tta`` and ``--no-submit``.

    Args:
        description: the ``--help`` text.
        members: the member names (listed in ``--load``'s help).

    Returns:
        The ``argparse.ArgumentParser``.
    """
    from .config import LEVELS, VOTES

    p = recipe_parser(description)
    g = p.add_argument_group("ensemble and submission")
    g.add_argument("--load", type=_kv_path, action="append", default=[], metavar="NAME=DIR",
                   help=f"use an existing run (or K-fold) directory for member NAME instead of training it "
                        f"(members: {', '.join(members)})")
    g.add_argument("--vote", choices=VOTES, help="override the recipe's voting (ensemble.vote)")
    g.add_argument("--level", choices=LEVELS, help="vote per task or on the 18 classes (ensemble.level)")
    g.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time augmentation: average with the flipped view (ensemble.tta)")
    g.add_argument("--no-submit", action="store_true", help="train only; no prediction over eval/")
    return p


def config_from_args(args, base=None):
    """Apply command-line flags on top of ``base`` (a Config)."""
    from .config import Config

    cfg = Config.load(args.config) if getattr(args, "config", None) else (base or Config())
    o = {}
    flags = {"data_dir": "data.data_dir", "out_dir": "train.out_dir", "task": "train.task",
             "backbone": "model.backbone", "weights": "model.weights", "epochs": "train.epochs",
             "batch_size": "train.batch_size", "lr": "train.lr", "image_size": "preprocess.image_size",
             "max_people": "data.max_people", "folds": "data.folds", "devices": "train.devices",
             "mixed_precision": "train.mixed_precision", "wandb": "train.wandb", "seed": "train.seed",
             "resume": "train.resume",
             # the recipes' ensemble flags (ensemble_parser)
             "vote": "ensemble.vote", "level": "ensemble.level", "tta": "ensemble.tta"}
    for attr, key in flags.items():
        v = getattr(args, attr, None)
        if v is not None:
            o[key] = v
    if o.get("model.weights") in ("none", "None", ""):
        o["model.weights"] = None
    for k, v in args.set:
        o[k] = v
    return cfg.override(**o) if o else cfg


def _cmd_synth(a):
    from .data.synth import generate

    s = generate(a.out_dir, people=a.people, eval_people=a.eval_people, seed=a.seed,
                 image_size=a.image_size, workers=a.workers)
    print(json.dumps(s, indent=2, default=str))


def _cmd_inspect(a):
    from .data.inspect import format_report, inspect

    d = inspect(a.data_dir, out_png=a.png, relabel=a.relabel)
    print(format_report(d))


def _cmd_train(a):
    cfg = config_from_args(a)  # checked before the training code (and TensorFlow) is imported
    from .train import train

    if cfg.data.folds and cfg.data.folds > 1:
        from .kfold import train_kfold

        res = train_kfold(cfg, resume=cfg.train.resume)
        print(json.dumps(res.summary, indent=2))
    else:
        res = train(cfg)
        print(json.dumps({"out_dir": str(res.out_dir), **res.metrics}, indent=2))


def _cmd_evaluate(a):
    from .evaluate import cli_json, evaluate, format_report

    d = evaluate(a.gt, a.pred, out_dir=a.out)
    print(cli_json(d) if a.json else format_report(d))


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0.9,1.1, got {text!r}") from None


def _cmd_predict_images(a):
    from .inference import Predictor, answer_summary, write_answers

    paths = list(a.artifacts) + list(a.model) + list(a.kfold_dir) + [d for t in ROLE_TASKS for d in getattr(a, t)]
    with Predictor.load(*paths, vote=a.vote, level=a.level, weights=a.weights, tie=a.tie, combine=a.combine,
                        tta=a.tta or None, crops=a.tta_crops or None, no_face=a.no_face, faces=a.faces,
                        batch_size=a.batch_size) as pred:
        table = pred.predict_files(a.images, progress=not a.json)
    out = write_answers(table, a.out or "predictions.csv")
    n = answer_summary(table)
    if a.json:
        print(json.dumps({"predictions": str(out), **n, "tasks": list(pred.tasks), "models": len(pred.members)}))
        return
    print(f"wrote {out} ({n['rows']} rows for {n['images']} images, answers for {', '.join(pred.tasks)} from "
          f"{len(pred.members)} model(s))" + (f"; faces found in {n['face_found']}, none in {n['no_face']} (see "
                                               f"face_found)" if "face_found" in n else "")
          + (f"; {n['skipped']} row(s) without an answer, see its error column" if n["skipped"] else ""))


ROLE_TASKS = L.TASKS


def _cmd_predict(a):
    from .evaluate import cli_json, format_report
    from .inference.submission import format_table, predict_submission

    if a.images:
        return _cmd_predict_images(a)
    if a.no_face != "center" or a.faces != "largest":
        raise SystemExit("predict: --no-face and --faces go with --images; DATA_DIR/eval is predicted with the data "
                         "set's cached face boxes (mask-keras detect), one answer per image")
    if a.artifacts:
        raise SystemExit("predict: ARTIFACT arguments go with --images PATH ...; to predict DATA_DIR/eval pass "
                         "--model / --kfold-dir / --mask ... DIR")
    roles = {t: getattr(a, t) for t in ROLE_TASKS if getattr(a, t)}
    a.out = a.out or "submission.csv"
    a.vote, a.level = a.vote or "soft", a.level or "auto"
    a.tie, a.combine = a.tie or "mean_prob", a.combine or "product"
    res = predict_submission(a.model, a.data_dir, a.out, kfold_dirs=a.kfold_dir, roles=roles, tta=a.tta,
                             crops=a.tta_crops, vote=a.vote, level=a.level, weights=a.weights, tie=a.tie,
                             combine=a.combine, batch_size=a.batch_size, probs_csv=a.probs, gt=a.gt,
                             progress=not a.json)
    if a.json:
        print(json.dumps({"submission": str(res.out_csv), "rows": len(res.submission), "models": len(res.predictions),
                          "level": res.combined.level, "vote": a.vote,
                          **(json.loads(cli_json(res.metrics)) if res.metrics else {})}))
        return
    print(f"wrote {res.out_csv} ({len(res.submission)} rows) from {len(res.predictions)} model(s), "
          f"{a.vote} vote at the {res.combined.level} level" + (f"; probabilities: {res.probs_csv}" if a.probs else ""))
    if res.metrics:
        print("\n" + format_report(res.metrics) + "\n" + format_table(res.table))


def _cmd_serve(a):
    from .serving import Limits, serve

    serve(a.artifacts, a.host, a.port, max_batch=a.max_batch, max_wait_ms=a.max_wait_ms,
          limits=Limits(max_body_mb=a.max_body_mb, max_images=a.max_images, max_pixels=a.max_pixels,
                        body_timeout_s=a.body_timeout_s, max_in_flight=a.max_in_flight),
          vote=a.vote, level=a.level, weights=a.weights, tie=a.tie, combine=a.combine, tta=a.tta or None,
          crops=a.tta_crops or None, no_face=a.no_face, faces=a.faces)


def _add_vote_args(s) -> None:
    s.add_argument("--tta", action="store_true", help="average with the horizontally flipped view")
    s.add_argument("--tta-crops", type=_floats, default=(), metavar="S1,S2",
                   help="add crop views: the crop region scaled by each factor (e.g. 0.9,1.1)")
    s.add_argument("--vote", choices=["soft", "hard"], default=None, help="default soft (or an ensemble's own)")
    s.add_argument("--level", choices=["auto", "task", "class"], default=None,
                   help="vote per task then combine, or on the 18 classes (auto: class if no per-task model)")
    s.add_argument("--combine", choices=["product", "argmax"], default=None,
                   help="per-task probabilities -> 18 classes (same labels; product also gives probabilities)")
    s.add_argument("--tie", choices=["mean_prob", "lowest", "first_model"], default=None,
                   help="hard-vote tie rule (default mean_prob)")
    s.add_argument("--weights", type=_floats, default=None, metavar="W1,W2,...",
                   help="one weight per model (order: --model, --kfold-dir folds, then --mask/--gender/...)")


def _add_face_args(s) -> None:
    s.add_argument("--no-face", choices=["center", "skip", "error"], default="center",
                   help="a photo without a usable face (face-crop models): answer its centre crop, flagged "
                        "face_found=false (default); skip it (no answer, the reason in error); or refuse")
    s.add_argument("--faces", choices=["largest", "all"], default="largest",
                   help="answer the largest face (default) or every face, one row each (face = 0, 1, ...)")


def _add_serve_parser(sub) -> None:
    s = sub.add_parser("serve", help="an HTTP service: POST /predict, /health, /metadata, /metrics, /docs, a page at /",
                       description="Serve run, K-fold, ensemble or export folders over HTTP (FastAPI on uvicorn). "
                                   "The models are loaded and compiled before the server listens; SIGTERM lets the "
                                   "requests in progress finish.",
                       epilog="example:\n  mask-keras serve runs/efficientnet_gender --port 8000\n"
                              "  curl -F image=@photo.jpg http://127.0.0.1:8000/predict",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help="run, K-fold, ensemble or export folders")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; "
                                                        "0.0.0.0 in a container)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-batch", type=int, default=16, help="images per model call (concurrent requests batched)")
    s.add_argument("--max-wait-ms", type=float, default=0.0,
                   help="how long a batch waits to fill (default 0: an idle service answers at once; under load "
                        "the requests that arrive during a batch form the next)")
    s.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body (413 above)")
    s.add_argument("--max-images", type=int, default=16, help="most images in one request (413 above)")
    s.add_argument("--max-pixels", type=int, default=40_000_000, help="largest image, width x height (413 above)")
    s.add_argument("--body-timeout-s", type=float, default=30.0, help="a body must arrive within this (408 after)")
    s.add_argument("--max-in-flight", type=int, default=64,
                   help="requests in progress at once; more get 503 with Retry-After")
    _add_vote_args(s)
    _add_face_args(s)
    s.set_defaults(func=_cmd_serve)


def _add_predict_parser(sub) -> None:
    s = sub.add_parser("predict", help="predict eval/ (a submission CSV) or any images with one or more models "
                                       "(ensembles, K-fold, TTA)",
                       description="Run artifacts over DATA_DIR/eval and write ImageID,ans in info.csv order, or, "
                                   "with --images, over any image files and folders and write one row per file "
                                   "(per face: face_found, face box, crop box, the answers of the tasks the models cover, probabilities). Per-task models are combined "
                                   "into the 18 classes (mask*6 + gender*3 + age).",
                       epilog="examples:\n  mask-keras predict runs/efficientnet_gender --images photos/ "
                              "--out answers.jsonl\n  mask-keras predict --data-dir data/default --mask runs/mask "
                              "--gender runs/gender --age runs/age --tta",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("artifacts", nargs="*", metavar="ARTIFACT",
                   help="with --images: run, K-fold, ensemble (recipe output) or export folders")
    s.add_argument("--images", nargs="+", metavar="PATH",
                   help="image files (JPEG, PNG, WebP, ...) and folders (searched recursively) to predict")
    s.add_argument("--data-dir", default="data/default", help="directory holding eval/ (info.csv, images/)")
    s.add_argument("--model", action="append", default=[], metavar="DIR",
                   help="a run directory (model.keras + config.json), any task; repeat for an ensemble")
    s.add_argument("--kfold-dir", action="append", default=[], metavar="DIR",
                   help="a `train --folds K` directory: all its fold_* models vote")
    for t in ROLE_TASKS:
        s.add_argument(f"--{t}", action="append", default=[], metavar="DIR",
                       help=f"a run (or K-fold) directory that must be a {t!r} model")
    s.add_argument("--out", help="the submission CSV (default submission.csv), or with --images the answers: CSV, "
                                 "JSON lines for .jsonl, one JSON array for .json (default predictions.csv); "
                                 "written atomically, at the end")
    s.add_argument("--probs", help="also write ImageID,p0..p17 (soft 18-class probabilities) here")
    _add_vote_args(s)
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--gt", help="truth CSV ImageID,ans: print the score and the ensemble against each model")
    _add_face_args(s)
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=_cmd_predict)


def _cmd_detect(a):
    from .detect import detect_dir, format_summary

    s = detect_dir(a.data_dir, cache_path=a.cache, batch_size=a.batch_size, limit=a.limit, device=a.device)
    print(json.dumps(s, indent=2, default=str) if a.json else format_summary(s))


def _cmd_export(a):
    from .export import export_artifacts

    formats = list(dict.fromkeys(f.strip() for f in a.format.split(",") if f.strip()))
    # one format: out_dir is its folder; several: one subfolder a format under out_dir
    outs = export_artifacts(a.run_dir, {f: Path(a.out_dir) / f if len(formats) > 1 else a.out_dir for f in formats},
                            verify=a.verify)
    for format, out in outs.items():
        print(f"exported {a.run_dir} -> {out} ({format})")
        if a.verify:
            v = json.loads((out / "export.json").read_text())["verify"]
            print(f"verified on {v['images']}: max abs difference from model.keras {v['max_abs_difference']:.3g} "
                  f"(limit 1e-4)")
            if v.get("vs_package_files") is not None:
                print(f"  against the package's own file path (the inference engine; JPEGs decoded scaled in the DCT "
                      f"there): {v['vs_package_files']:.3g}")
        print(f"how to call it: {out / 'README.md'}")


def add_tune_parser(subparsers):
    """Add ``mask-keras tune`` to an argparse sub-parser set (every train flag works)."""
    from .tune import DEFAULT_STORAGE, PRUNERS

    s = subparsers.add_parser(
        "tune", help="distributed hyper-parameter search (Optuna study in SQLite/PostgreSQL)",
        description="Run trials of an Optuna study stored in a database; start the same command "
                    "on any number of processes/machines to search in parallel.")
    add_train_args(s)
    s.add_argument("--space", required=True,
                   help='JSON file: {"train.lr": ["loguniform", 1e-5, 1e-2], '
                        '"loss.name": ["categorical", ["ce", "focal"]], ...}')
    s.add_argument("--trials", type=int, required=True,
                   help="finished trials the whole study should reach (all workers together)")
    s.add_argument("--storage", default=DEFAULT_STORAGE,
                   help=f"database URL (default {DEFAULT_STORAGE}); several machines: "
                        "postgresql://user:pass@host/db (pip install psycopg2-binary)")
    s.add_argument("--study", default="mask_keras", help="study name; workers with the same name cooperate")
    s.add_argument("--pruner", choices=PRUNERS, default="median")
    s.add_argument("--sampler-seed", type=int, default=None, help="seed of the TPE sampler")
    s.add_argument("--timeout", type=float, default=None, help="this worker starts no trial after this many seconds")
    s.add_argument("--heartbeat", type=int, default=30, help="seconds between a running trial's heartbeats")
    s.add_argument("--grace-period", type=int, default=300,
                   help="a trial without heartbeat this long is failed and retried")
    s.add_argument("--max-retry", type=int, default=2, help="retries of a trial whose worker died")
    s.set_defaults(func=_cmd_tune)
    return s


def _cmd_tune(args, objective_fn=None):
    from .tune import load_space, summarize, tune

    base = config_from_args(args)
    space = load_space(args.space)
    study = tune(base, space, args.trials, storage=args.storage, study_name=args.study,
                 pruner=args.pruner, seed=args.sampler_seed, timeout=args.timeout,
                 wandb=bool(base.train.wandb), objective_fn=objective_fn,
                 out_dir=getattr(args, "out_dir", None) or None, heartbeat_interval=args.heartbeat,
                 grace_period=args.grace_period, max_retry=args.max_retry)
    print(json.dumps(summarize(study), indent=2, default=str))
    return study


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mask-keras", description=__doc__.split("\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    s = sub.add_parser("synth", help="generate a synthetic data set in the competition layout")
    s.add_argument("out_dir")
    s.add_argument("--people", type=int, default=100, help="train people (7 images each)")
    s.add_argument("--eval-people", type=int, default=20, help="eval people (7 images each)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--image-size", type=_hw, default=(512, 384), help="HEIGHTxWIDTH (real set: 512x384)")
    s.add_argument("--workers", type=int, default=None)
    s.set_defaults(func=_cmd_synth)

    s = sub.add_parser("inspect", help="counts per class/gender/age group and a class-balance PNG")
    s.add_argument("data_dir")
    s.add_argument("--png", help="where to write the class-balance PNG (default DATA_DIR/class_balance.png)")
    s.add_argument("--relabel", choices=["certain", "all"], default=False)
    s.set_defaults(func=_cmd_inspect)

    s = sub.add_parser("train", help="train a model (or K fold models) from a config and flags")
    add_train_args(s)
    s.set_defaults(func=_cmd_train)

    add_tune_parser(sub)

    s = sub.add_parser("evaluate", help="score a submission CSV against ground truth")
    s.add_argument("--gt", required=True, help="CSV ImageID,ans with the true classes")
    s.add_argument("--pred", required=True, help="submission CSV ImageID,ans")
    s.add_argument("--out", help="directory for report.txt, metrics.json and confusion-matrix PNGs")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=_cmd_evaluate)

    _add_predict_parser(sub)
    _add_serve_parser(sub)

    s = sub.add_parser("export", help="export a run as one file a client runs on a photo (SavedModel, ONNX, LiteRT)",
                       description="The export takes a full-size photo (the SavedModel also encoded bytes), does "
                                   "the run's crop and resize in its graph and returns probabilities and the crop "
                                   "box; the folder's README.md says how to call it.",
                       epilog="examples:\n  mask-keras export runs/mask exports/mask_onnx --format onnx --verify\n"
                              "  mask-keras export runs/mask exports/mask --format onnx,litert   "
                              "# exports/mask/onnx, exports/mask/litert",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("run_dir", help="a run directory written by `mask-keras train`")
    s.add_argument("out_dir", help="where the export goes (replaced only once complete); with several formats, "
                                   "one subfolder a format in it")
    s.add_argument("--format", default="tf_saved_model",
                   help="tf_saved_model: native TF ops, bytes or photos in (default); onnx / litert: photos in "
                        "(onnxruntime / ai-edge-litert: the `export` extra); jax2tf: the XLA program, cropped "
                        "pixels in; several, comma-separated (onnx,litert), are written by one TensorFlow process")
    s.add_argument("--verify", action="store_true", help="check the export against the Keras model (1e-4)")
    s.set_defaults(func=_cmd_export)

    s = sub.add_parser("detect", help="detect faces in train/ and eval/ and cache the boxes")
    s.add_argument("data_dir")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--limit", type=int, default=None, help="process at most this many new images")
    s.add_argument("--cache", help="box cache file (default DATA_DIR/face_boxes.parquet)")
    s.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where the detector runs")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(func=_cmd_detect)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from .data.layout import LayoutError
    from .errors import ConfigError, ExportError, WeightsUnavailableError  # light: reported before TF/JAX work

    try:
        args.func(args)
    except (ConfigError, LayoutError, FileNotFoundError, FileExistsError, ValueError, ExportError, WeightsUnavailableError) as e:
        if args.verbose:
            raise
        print(f"mask-keras {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
