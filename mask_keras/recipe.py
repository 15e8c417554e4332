"""What every recipe shares: flags, the embedded default data, demo vs full scale.

A recipe (``recipes/<name>.py``) reads like a big_vision config: ``get_config(demo=False)``
builds its team's full-scale :class:`Config` field by field, with the demo scale (the
settings that make it finish in minutes on 2 CPU cores) as a branch of the same function,
and ``main`` hands ``get_config`` to :func:`run` or :func:`run_ensemble`. Without
``--data-dir`` the recipe runs at demo scale (``get_config(demo=True)``) on the embedded
synthetic set (generated under ``data/default`` on first use); with ``--data-dir`` at full
scale (``get_config()``) with the team's settings. Flags (``--epochs``, ``--set
section.option=value``, ...) override both. The shape of a recipe file::

    '''Team 002: EfficientNet-B2, F1 loss, 5 fold models hard-vote. Full scale: --data-dir DIR.'''
    from mask_keras import recipe
    from mask_keras.config import Config


    def get_config(demo: bool = False) -> Config:
        c = Config()
        c.train.task = "multi"
        c.model.backbone = "efficientnet_b2"
        c.loss.name = "f1"
        c.data.folds = 5
        c.train.out_dir = "runs/efficientnet_b2_f1"
        c.ensemble.vote = "hard"  # the fold models vote with their answers
        if demo:
            recipe.apply_demo(c)  # tiny_cnn from scratch at 96x64, 4 epochs, ...
            c.data.folds = 3  # five folds take too long on CPU
        return c


    def main(argv=None):
        return recipe.run_ensemble(get_config, argv, __doc__)


    if __name__ == "__main__":
        main()

Two entry points, both ``(get_config, argv, description)``:

* :func:`run` -- one model (or K fold models with ``data.folds``): train and print the
  validation result (the team 000 per-task recipes).
* :func:`run_ensemble` -- one or more *members* (a model, or K fold models), trained or
  loaded (``--load NAME=DIR``), then predicted over ``eval/`` and combined into
  ``<out>/submission.csv`` as the config's ``ensemble`` section says (soft or hard voting,
  per task or on 18 classes, optional TTA; ``--vote``/``--level``/``--tta`` override it);
  when ``eval/gt.csv`` exists (the synthetic sets) the submission is scored and the
  ensemble is compared with each model. The members are ``ensemble.members``: other
  recipes, each with its own ``get_config(demo)`` (``recipes/three_task_ensemble.py``), or,
  when empty, the recipe's own config (its K fold models with ``data.folds >= 2``). Every
  team recipe that ends in a submission uses it; the recipe only states its config.

Tests and quick checks shrink any recipe with flags, e.g. ``--data-dir D --epochs 1
--image-size 32x24 --max-people 20 --set model.backbone=tiny_cnn --set model.weights=null
--out-dir tmp``.
"""
from __future__ import annotations

import copy
import importlib.util
import inspect
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from . import labels as L
from . import train as training  # called as training.train: tests replace it
from .cli import config_from_args, ensemble_parser, recipe_parser
from .config import Config, ConfigError, EnsembleConfig
from .data.layout import read_train
from .data.synth import generate
from .evaluate import evaluate, format_report
from .files import atomic_write_text
from .kfold import train_kfold
from .inference.artifacts import write_manifest
from .inference.submission import format_table, predict_submission

log = logging.getLogger(__name__)

REPO_DATA = Path(__file__).resolve().parents[1] / "data"
DEFAULT_DATA_DIR = REPO_DATA / "default"
#: the embedded default: a synthetic set at the real image size (512 x 384); 300 people (2,100
#: training images, ~20 s to generate on 2 cores): from scratch, 120 training people were
#: memorised within 5 epochs, 240 people generalise
DEFAULT_SYNTH = dict(people=300, eval_people=40, seed=0, image_size=(512, 384))


def apply_demo(c: Config) -> Config:
    """Demo scale, shared by every recipe (in place; returns ``c``): small images, a few epochs,
    no downloads, every recipe's method (task, loss, sampling, folds, voting, TTA) on ``tiny_cnn``.

    Without pretrained weights the teams' backbones learn little in the minutes a CPU demo has
    (measured on the default set, gender, validation macro F1 against 0.38 for a constant
    answer: EfficientNet-B0 0.40 after one epoch and 0.68-0.72 after 3-4; tiny_cnn 0.79 after
    one; 18 classes, ResNet50 3 epochs: 0.004); a recipe's demo branch may name another backbone
    after calling this.

    Args:
        c: the recipe's config, changed in place.

    Returns:
        ``c``.

    Example:
        >>> c = apply_demo(Config())
        >>> c.model.backbone, c.preprocess.image_size, c.train.epochs, c.model.weights
        ('tiny_cnn', (96, 64), 4, None)
    """
    c.preprocess.image_size = (96, 64)
    c.data.max_people = 300
    c.train.epochs = 4
    c.train.batch_size = 32
    c.model.weights = None
    c.model.backbone = "tiny_cnn"
    c.train.mixed_precision = False  # CPUs gain nothing from bfloat16
    c.train.lr = 3e-3
    c.train.warmup_epochs = 0.5
    c.model.bn_momentum = 0.9  # from scratch on ~200 steps: BatchNorm statistics must settle fast for validation
    return c


def ensure_default_data(data_dir=DEFAULT_DATA_DIR, **synth) -> Path:
    """Generate the synthetic default set at ``data_dir`` unless it is already there.

    Args:
        data_dir: the data root; kept as is when ``train/train.csv`` exists.
        **synth: :func:`mask_keras.data.synth.generate` arguments over :data:`DEFAULT_SYNTH`.

    Returns:
        ``Path(data_dir)``.
    """
    data_dir = Path(data_dir)
    if (data_dir / "train" / "train.csv").is_file():
        return data_dir

    kw = {**DEFAULT_SYNTH, **synth}
    log.info("no data at %s: generating the synthetic default set (%s)", data_dir, kw)
    generate(data_dir, **kw)
    return data_dir


def _is_demo(args) -> bool:
    """Demo scale unless the data (``--data-dir``) or a whole config (``--config``) is given."""
    return args.data_dir is None and args.config is None


def _scaled(get_config, demo: bool, data_dir=None, member: str | None = None) -> Config:
    """``get_config(demo=demo)`` (``member=`` too when given), reading ``data_dir`` at demo scale."""
    cfg = get_config(demo=demo) if member is None else get_config(demo=demo, member=member)
    if not isinstance(cfg, Config):
        raise ConfigError(f"{getattr(get_config, '__qualname__', get_config)} returned "
                          f"{type(cfg).__name__}, not a Config")
    if demo and data_dir is not None:
        cfg.data.data_dir = str(data_dir)
    return cfg


def resolve(get_config, argv=None, description: str = "") -> Config:
    """The config a recipe runs: full scale with ``--data-dir``, else demo scale on the default
    data; then the flags.

    Args:
        get_config: the recipe's ``get_config(demo=False) -> Config``.
        argv: the command line (None: ``sys.argv[1:]``).
        description: the ``--help`` text.

    Returns:
        The resolved :class:`~mask_keras.config.Config`.
    """

    args = recipe_parser(description).parse_args(argv)
    demo = _is_demo(args)
    data_dir = ensure_default_data() if demo else None
    if demo:
        log.info("demo scale on the synthetic default set %s (pass --data-dir for full scale)", data_dir)
    return config_from_args(args, _scaled(get_config, demo, data_dir))


def run(get_config, argv=None, description: str = ""):
    """Resolve the config, train, print the validation result.

    Args:
        get_config: the recipe's ``get_config(demo=False) -> Config``.
        argv: the command line (None: ``sys.argv[1:]``).
        description: the ``--help`` text.

    Returns:
        The ``TrainResult`` (a :class:`~mask_keras.kfold.KFoldResult` with ``data.folds >= 2``).
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = resolve(get_config, argv, description)
    if cfg.data.folds and cfg.data.folds > 1:
        res = train_kfold(cfg, resume=cfg.train.resume)
        print(json.dumps(res.summary, indent=2))
        return res

    res = training.train(cfg)
    print(summary_line(res.metrics) + f"\nartifact: {res.model_path}")
    return res


def summary_line(metrics: dict) -> str:
    """The validation result as one line, after a newline.

    Args:
        metrics: a run's metrics (``task``, ``macro_f1``, ``accuracy``; ``constant_class``,
            ``constant_macro_f1`` and ``constant_accuracy`` add the constant answer's score; ``ci``
            its interval; ``groups``, ``worst_group`` and ``group_gap`` a line on the worst group).

    Returns:
        The line, after a ``"\\n"``; the constant answer's score in brackets when given.

    Example:
        >>> print(summary_line({"task": "gender", "macro_f1": 0.8123, "accuracy": 0.831, "constant_class": "female",
        ...                     "constant_macro_f1": 0.375, "constant_accuracy": 0.6}).strip())
        gender: validation macro F1 = 0.8123, accuracy = 0.8310 (answering 'female' for every face: 0.3750 / 0.6000)
    """
    m = metrics
    line = f"\n{m['task']}: validation macro F1 = {m['macro_f1']:.4f}"
    if m.get("ci"):
        line += f" (95% interval {m['ci']['macro_f1'][0]:.2f}-{m['ci']['macro_f1'][1]:.2f})"
    line += f", accuracy = {m['accuracy']:.4f}"
    if "constant_macro_f1" in m:
        line += (f" (answering {m['constant_class']!r} for every face: {m['constant_macro_f1']:.4f} / "
                 f"{m['constant_accuracy']:.4f})")
    if m.get("worst_group"):
        w = m["groups"][m["worst_group"]]
        line += (f"\nworst group: {m['worst_group']} (accuracy {w['accuracy']:.4f} on {w['n']} images; "
                 f"largest gap between groups {m['group_gap']:.4f})")
    return line


# --------------------------------------------------------------------------- ensembles
def load_recipe(path):
    """Import a recipe file (``recipes/<name>.py``) as a module, e.g. to reuse its ``get_config``.

    Args:
        path: the recipe file (FileNotFoundError when missing).

    Returns:
        The module, named ``_recipe_<stem>`` (not added to ``sys.modules``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: recipe not found")
    spec = importlib.util.spec_from_file_location(f"_recipe_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # recipes run only under `if __name__ == "__main__"`
    return mod


def recipe_config(path, demo: bool = False, member: str | None = None) -> Config:
    """The config a recipe file states: its ``get_config(demo=demo)`` (with ``member=`` when given).

    Args:
        path: the recipe file.
        demo: demo scale.
        member: passed to ``get_config`` as ``member=`` when not None.

    Returns:
        The :class:`~mask_keras.config.Config` (ConfigError when the file has no ``get_config``).
    """
    mod = load_recipe(path)
    if not callable(getattr(mod, "get_config", None)):
        raise ConfigError(f"{path}: defines no get_config(demo=False)")
    return _scaled(mod.get_config, demo, member=member)


def member_configs(get_config, demo: bool = False, cfg: Config | None = None) -> dict:
    """``{name: Config}``: the members of the recipe whose ``get_config`` this is, at that scale,
    before flags.

    ``cfg`` (default ``get_config(demo=demo)``) names them in ``cfg.ensemble.members``: each
    ``(name, "recipe")`` is ``recipes/<recipe>.py``'s ``get_config(demo)`` (the folder of
    ``get_config``'s own file), ``(name, "recipe:m")`` its ``get_config(demo, member="m")``. No
    members: the recipe's own config is the one member, named after its full-scale backbone.

    Args:
        get_config: the recipe's ``get_config``.
        demo: demo scale.
        cfg: the config whose ``ensemble.members`` are read.

    Returns:
        ``{member name: Config}`` (ConfigError for a member recipe that does not exist).
    """
    cfg = _scaled(get_config, demo) if cfg is None else cfg
    if not cfg.ensemble.members:
        return {get_config().model.backbone: _scaled(get_config, demo)}
    here = Path(inspect.getfile(get_config)).resolve().parent
    out = {}
    for name, ref in cfg.ensemble.members:
        stem, _, member = ref.partition(":")
        path = here / f"{stem}.py"
        if not path.is_file():
            raise ConfigError(f"ensemble.members: member {name!r} names the recipe {ref!r}, but {path} does not exist")
        out[name] = recipe_config(path, demo, member or None)
    return out


@dataclass
class EnsembleResult:
    """What :func:`run_ensemble` returns.

    Attributes:
        out_dir: the ensemble directory.
        configs: member name -> resolved Config.
        runs: member name -> TrainResult | KFoldResult | loaded Path.
        prediction: the :class:`mask_keras.inference.submission.PredictResult` (None with ``--no-submit``).
        ensemble: how the members were combined (the recipe's, after flags).
    """

    out_dir: Path
    configs: dict
    runs: dict = field(default_factory=dict)
    prediction: object = None
    ensemble: EnsembleConfig | None = None

    @property
    def metrics(self):
        """The submission's metrics (None without a prediction or ``eval/gt.csv``)."""
        return None if self.prediction is None else self.prediction.metrics


def run_ensemble(get_config, argv=None, description: str = "") -> EnsembleResult:
    """Train (or load) every member, predict ``eval/``, combine, write and score the submission.

    ``get_config(demo=False)``: the recipe's config. Its ``ensemble`` section says how the
    models are combined (vote, level, tta, crops: see :mod:`mask_keras.inference.combine`; the flags
    ``--vote``/``--level``/``--tta`` override it) and which they are
    (:func:`member_configs`); a member with ``data.folds >= 2`` is K fold models, all of
    which vote. The ensemble directory is the recipe's ``train.out_dir`` (``--out-dir``);
    members go to ``<out_dir>/<name>``, a single member *is* ``out_dir``. The flags apply to
    every member's config.

    Writes ``<out_dir>/submission.csv``, ``probs.csv``, ``ensemble.json`` and, when
    ``eval/gt.csv`` exists, ``eval/`` (report, metrics, confusion PNGs) and
    ``comparison.csv`` (the ensemble against each model).

    Args:
        get_config: the recipe's ``get_config(demo=False)``.
        argv: the command line (None: ``sys.argv[1:]``).
        description: the ``--help`` text.

    Returns:
        An :class:`EnsembleResult`.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    full = _scaled(get_config, False)
    args = ensemble_parser(description, [n for n, _ in full.ensemble.members] or [full.model.backbone]).parse_args(argv)
    demo = _is_demo(args)
    data_dir = ensure_default_data() if demo else None
    # the recipe's own config with the flags: the ensemble settings and out_dir (--config sets a member's
    # config, not the ensemble's)
    own_args = copy.copy(args)
    own_args.config = None
    own = config_from_args(own_args, _scaled(get_config, demo, data_dir)).validate()
    members = member_configs(get_config, demo, own)
    loads = dict(args.load)
    unknown = sorted(set(loads) - set(members))
    if unknown:
        raise ConfigError(f"--load: unknown member(s) {unknown}; members: {', '.join(members)}")
    if args.config is not None and len(members) > 1:
        raise ConfigError("--config sets one model's config; this recipe has members "
                          f"{', '.join(members)}: use --set section.option=value instead")
    single = len(members) == 1
    root = Path(own.train.out_dir)
    args.out_dir = None  # members get their own folders under root
    configs = {}
    for name, base in members.items():
        if demo:
            base.data.data_dir = str(data_dir)
        cfg = config_from_args(args, base)
        configs[name] = cfg.override(**{"train.out_dir": str(root if single else root / name)}).validate()
    if demo:
        log.info("demo scale on the synthetic default set %s (pass --data-dir for full scale)", data_dir)
    data_dirs = {c.data.data_dir for c in configs.values()}
    if len(data_dirs) != 1:
        raise ConfigError(f"members read different data directories {sorted(data_dirs)}; give one --data-dir")
    res = EnsembleResult(root, configs, ensemble=own.ensemble)
    for name, cfg in configs.items():
        if name in loads:
            res.runs[name] = Path(loads[name])
            print(f"{name}: using {loads[name]}")
        elif cfg.data.folds and cfg.data.folds > 1:
            r = res.runs[name] = train_kfold(cfg, resume=cfg.train.resume)
            print(f"\n{name} ({cfg.train.task}, {cfg.data.folds} folds): OOF macro F1 = "
                  f"{r.summary['oof_macro_f1']:.4f}, accuracy = {r.summary['oof_accuracy']:.4f} -> {r.out_dir}")
        else:
            r = res.runs[name] = training.train(cfg)
            print(f"\n{name} ({cfg.train.task}): validation macro F1 = {r.metrics['macro_f1']:.4f}, "
                  f"accuracy = {r.metrics['accuracy']:.4f} -> {r.out_dir}")
    if args.no_submit:
        return res
    res.prediction = _submit(res, data_dirs.pop(), own.ensemble)
    return res


def _constant_answer(data_dir, submission) -> dict:
    """The eval score of answering the training set's most frequent class for every image: what
    a model that learned nothing gets (macro F1 rewards every class, so this is the bar)."""

    label = int(read_train(data_dir, on_error="skip")["label"].value_counts().idxmax())
    m = evaluate(Path(data_dir) / "eval" / "gt.csv", submission.assign(ans=label))
    return {"class": L.class_name(label), "label": label, "macro_f1": m["macro_f1"], "accuracy": m["accuracy"]}


def _submit(res: EnsembleResult, data_dir, ens: EnsembleConfig):
    roles: dict[str, list] = {}
    for name, cfg in res.configs.items():
        run = res.runs[name]
        d = run if isinstance(run, Path) else run.out_dir  # a K-fold directory expands to its folds
        roles.setdefault(cfg.train.task, []).append(d)
    gt = Path(data_dir) / "eval" / "gt.csv"
    gt = gt if gt.is_file() else None
    vote, tta, crops = ens.vote, ens.tta, tuple(ens.crops)
    out = res.out_dir
    pred = predict_submission(data_dir=data_dir, out_csv=out / "submission.csv", roles=roles, tta=tta, crops=crops,
                              vote=vote, level=ens.level, probs_csv=out / "probs.csv", gt=gt,
                              batch_size=max(c.train.batch_size for c in res.configs.values()))
    members = {}
    for n, c in res.configs.items():
        loaded = isinstance(res.runs[n], Path)
        d = res.runs[n] if loaded else res.runs[n].out_dir
        if loaded:  # describe what was loaded, not what the recipe would have trained
            c = Config.load(d)
        members[n] = {"task": c.train.task, "backbone": c.model.backbone, "folds": c.data.folds, "dir": str(d),
                      "loaded": loaded}
    summary = {"members": members,
               "models": [str(p.artifact.path) for p in pred.predictions], "vote": vote,
               "level": pred.combined.level, "tta": bool(tta), "crops": list(crops),
               "submission": str(pred.out_csv), "data_dir": str(data_dir)}
    print(f"\nsubmission: {pred.out_csv} ({len(pred.submission)} images, {len(pred.predictions)} model(s), "
          f"{vote} vote at the {pred.combined.level} level{', TTA' if tta else ''})")
    if gt is not None:
        evaluate(gt, pred.submission, out_dir=out / "eval")
        atomic_write_text(out / "comparison.csv", pred.table.to_csv(index=False))
        summary["score"] = {k: pred.metrics[k] for k in ("macro_f1", "accuracy", "f1_mask", "f1_gender", "f1_age")}
        constant = _constant_answer(data_dir, pred.submission)
        summary["constant_answer"] = constant
        print(f"score against {gt}:\n{format_report(pred.metrics)}")
        print("ensemble against each model (eval set):\n" + format_table(pred.table))
        print(f"\nsubmission: macro F1 = {pred.metrics['macro_f1']:.4f}, accuracy = {pred.metrics['accuracy']:.4f} "
              f"(answering {constant['class']!r} for every image: {constant['macro_f1']:.4f} / "
              f"{constant['accuracy']:.4f})")
    atomic_write_text(out / "ensemble.json", json.dumps(summary, indent=2) + "\n")
    write_manifest(out, "ensemble", task="multi", members=[p.artifact.path for p in pred.predictions])
    return pred
