"""What every recipe shares: flags, the embedded default data, demo vs full scale.

A recipe is a short script: it states its team's full-scale :class:`Config`, the
few overrides that make a demo finish in minutes on 2 CPU cores, and calls
:func:`run`. Without ``--data-dir`` the recipe runs at demo scale on the embedded
synthetic set (generated under ``data/default`` on first use); with ``--data-dir``
it runs at full scale with the team's settings. Flags override both.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .config import Config

log = logging.getLogger(__name__)

REPO_DATA = Path(__file__).resolve().parents[1] / "data"
DEFAULT_DATA_DIR = REPO_DATA / "default"
#: the embedded default: a synthetic set at the real image size (512 x 384)
DEFAULT_SYNTH = dict(people=150, eval_people=40, seed=0, image_size=(512, 384))
#: demo scale: small images, few people and epochs, no downloads
DEMO = {"preprocess.image_size": (96, 64), "data.max_people": 150, "train.epochs": 3,
        "train.batch_size": 32, "model.weights": None, "train.lr": 1e-3}


def ensure_default_data(data_dir=DEFAULT_DATA_DIR, **synth) -> Path:
    """Generate the synthetic default set at ``data_dir`` unless it is already there."""
    data_dir = Path(data_dir)
    if (data_dir / "train" / "train.csv").is_file():
        return data_dir
    from .data.synth import generate

    kw = {**DEFAULT_SYNTH, **synth}
    log.info("no data at %s: generating the synthetic default set (%s)", data_dir, kw)
    generate(data_dir, **kw)
    return data_dir


def parser(description: str) -> argparse.ArgumentParser:
    from .cli import add_train_args

    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(p)
    return p


def resolve(full: Config, demo: dict | None = None, argv=None, description: str = "") -> Config:
    """The config a recipe runs: full scale with ``--data-dir``, else demo scale on the default data."""
    from .cli import config_from_args

    args = parser(description).parse_args(argv)
    if args.data_dir is None and args.config is None:
        data_dir = ensure_default_data()
        base = full.override(**{**DEMO, **(demo or {}), "data.data_dir": str(data_dir)})
        log.info("demo scale on the synthetic default set %s (pass --data-dir for full scale)", data_dir)
    else:
        base = full
    return config_from_args(args, base)


def run(full: Config, demo: dict | None = None, argv=None, description: str = ""):
    """Resolve the config, train, print the validation result; returns the TrainResult."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = resolve(full, demo, argv, description)
    if cfg.data.folds and cfg.data.folds > 1:
        from .kfold import train_kfold

        res = train_kfold(cfg)
        print(json.dumps(res.summary, indent=2))
        return res
    from .train import train

    res = train(cfg)
    print(f"\n{cfg.train.task}: validation macro F1 = {res.metrics['macro_f1']:.4f}, "
          f"accuracy = {res.metrics['accuracy']:.4f}\nartifact: {res.model_path}")
    return res
