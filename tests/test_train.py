"""End-to-end training on a tiny synthetic set: every task, artifacts, reload, bad configs."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mask_keras.config import Config, ConfigError

# small inputs, real code paths: the fast CPU backbone at 48x36 on the 128x96 synthetic set
# (measured: every task clears its bar below with at least twice the margin asked);
# precise BN over 2 batches (its default, 1024 images, is the whole tiny training set here: one
# more forward epoch per epoch; tests/test_bn_stats.py covers what it does)
FAST = {"model.backbone": "tiny_cnn", "model.weights": None, "preprocess.image_size": (48, 36),
        "preprocess.crop": "none", "train.batch_size": 32, "train.lr": 3e-3, "train.verbose": 0,
        "augment.preset": "none", "train.precise_bn": 64, "train.save_last": False}


def _cfg(root, out, **over):
    return Config().override(**{**FAST, "data.data_dir": str(root), "train.out_dir": str(out), **over})


@pytest.fixture(scope="module")
def mask_run(synth_root, tmp_path_factory):
    from mask_keras.train import train

    out = tmp_path_factory.mktemp("runs") / "mask"
    return train(_cfg(synth_root, out, **{"train.task": "mask", "train.epochs": 12}))


@pytest.mark.slow
def test_mask_model_learns_and_writes_the_artifact(mask_run):
    out = mask_run.out_dir
    assert mask_run.metrics["macro_f1"] > 0.9, mask_run.metrics
    for name in ("model.keras", "config.json", "history.csv", "metrics.json", "confusion_matrix.png",
                 "per_class_f1.csv", "val_predictions.csv", "split.csv", "history.png"):
        assert (out / name).is_file(), name
    # the checkpoint is the best epoch by validation macro F1, and metrics.json re-measures it
    hist = pd.read_csv(out / "history.csv")
    assert mask_run.metrics["macro_f1"] == pytest.approx(hist["val_macro_f1"].max(), abs=1e-6)
    assert Config.load(out).train.task == "mask"
    split = pd.read_csv(out / "split.csv")
    assert not split.duplicated("profile").any()  # a person is in train or val, never both
    preds = pd.read_csv(out / "val_predictions.csv")
    np.testing.assert_allclose(preds[["p0", "p1", "p2"]].sum(axis=1), 1.0, atol=1e-4)


@pytest.mark.slow
def test_reloads_in_a_fresh_process_and_predicts_the_same(mask_run, synth_root):
    import keras

    from mask_keras import pipeline

    cfg = Config.load(mask_run.out_dir)
    paths = pd.read_csv(mask_run.out_dir / "val_predictions.csv")["path"].tolist()[:20]
    ds, n = pipeline.make_predict_dataset(paths, cfg.preprocess, 8, progress=False)
    x = np.concatenate([b for b in ds.as_numpy_iterator()])
    here = keras.saving.load_model(mask_run.model_path).predict(x, verbose=0)
    np.save(mask_run.out_dir / "x.npy", x)
    code = ("import sys, numpy as np, mask_keras, keras; "
            "m = keras.saving.load_model(sys.argv[1]); "
            "np.save(sys.argv[3], m.predict(np.load(sys.argv[2]), verbose=0))")
    out_npy = mask_run.out_dir / "fresh.npy"
    subprocess.run([sys.executable, "-c", code, str(mask_run.model_path), str(mask_run.out_dir / "x.npy"),
                    str(out_npy)], check=True, capture_output=True)
    np.testing.assert_allclose(np.load(out_npy), here, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("task,extra", [
    ("gender", {}),
    ("age", {"sampling.old_factor": 3.0, "augment.mixup": 0.5, "data.age_upper": 58}),
    ("multi", {"loss.terms": (("f1", 0.4), ("focal", 0.6))}),
    ("multihead", {"model.head": "shallow"}),
])
def test_every_task_learns_above_chance(task, extra, synth_root, tmp_path):
    from sklearn.metrics import f1_score

    from mask_keras.train import train

    res = train(_cfg(synth_root, tmp_path / task, **{"train.task": task, "train.epochs": 6, **extra}))
    m = json.loads((tmp_path / task / "metrics.json").read_text())
    assert m["task"] == task and res.model_path.is_file()
    preds = pd.read_csv(tmp_path / task / "val_predictions.csv")
    # chance: the best constant answer (every validation image gets the same class)
    chance = max(f1_score(preds["y_true"], np.full(len(preds), c), average="macro")
                 for c in np.unique(preds["y_true"]))
    margin = 0.05 if task in ("multi", "multihead") else 0.1  # 18 classes from 48 people: a harder climb
    assert m["macro_f1"] > chance + margin, (m, chance)
    if task in ("multi", "multihead"):
        assert {"f1_mask", "f1_gender", "f1_age"} <= set(m)
        assert len(m["per_class_f1"]) == 18


@pytest.mark.parametrize("over,match", [
    ({"model.backbone": "resnet9000"}, "unknown backbone"),
    ({"train.task": "colour"}, "unknown task"),
    ({"loss.name": "hinge"}, "unknown loss"),
    ({"augment.preset": "extreme"}, "unknown augmentation preset"),
    ({"preprocess.crop": "center", "preprocess.crop_size": (100, 80), "preprocess.image_size": (128, 96)},
     "does not fit the centre crop"),
])
def test_bad_configs_fail_before_training(over, match, tmp_path):
    from mask_keras.train import train

    with pytest.raises(ConfigError, match=match):
        train(_cfg(tmp_path / "nodata", tmp_path / "run", **over))
    assert not (tmp_path / "run").exists()  # nothing written, no data read


def test_batch_larger_than_the_data_is_a_clear_error(synth_root, tmp_path):
    from mask_keras.train import train

    with pytest.raises(ConfigError, match="batch_size"):
        train(_cfg(synth_root, tmp_path / "run", **{"train.task": "mask", "train.batch_size": 4096,
                                                    "train.epochs": 1}))


@pytest.mark.slow
def test_training_options_together(synth_root, tmp_path, monkeypatch):
    """mixed_bfloat16, gradient accumulation, step LR with warm-up, AdamW, early stopping,
    melting (freeze then unfreeze) and the offline wandb logger in one short run."""
    import keras

    from mask_keras.train import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = _cfg(synth_root, tmp_path / "run", **{
        "train.task": "gender", "train.epochs": 2, "train.mixed_precision": True, "train.grad_accum": 2,
        "train.optimizer": "adamw", "train.schedule": "step", "train.step_epochs": 1, "train.warmup_epochs": 0.5,
        "train.early_stopping": 1, "train.wandb": True, "model.freeze_epochs": 1,
        "model.weights": None})
    res = train(cfg)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    hist = pd.read_csv(tmp_path / "run" / "history.csv")
    assert 1 <= len(hist) <= 3 and list(hist["epoch"]) == list(range(len(hist)))
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*")), "wandb offline run missing"
    m = keras.saving.load_model(res.model_path)
    assert m.get_layer("probs").dtype_policy.name in ("float32", "mixed_bfloat16")


@pytest.mark.parametrize("monitor, values, stops_at", [("val_loss", [1.0, 0.9, 1.1, 1.2, 0.5], 3),
                                                       ("val_macro_f1", [0.2, 0.5, 0.4, 0.45, 0.9], 3),
                                                       ("val_loss", [1.0, 0.9, 0.8, 0.7, 0.6], None)])
def test_early_stopping_watches_the_configured_metric(tmp_path, monitor, values, stops_at):
    """Patience 2: stops after two epochs without improving on the best (lower val_loss,
    higher val_macro_f1); the best checkpoint still watches val macro F1."""
    import keras

    from mask_keras.callbacks import AtomicBestCheckpoint
    from mask_keras.config import Config
    from mask_keras.train import _callbacks

    cfg = Config().override(**{"train.early_stopping": 2, "train.early_stopping_monitor": monitor})
    cfg.validate()
    cbs, _ = _callbacks(cfg, tmp_path, None, multihead=False, chief=False)
    (es,) = [c for c in cbs if isinstance(c, keras.callbacks.EarlyStopping)]
    (ckpt,) = [c for c in cbs if isinstance(c, AtomicBestCheckpoint)]
    assert ckpt.monitor == "val_macro_f1"
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.stop_training = False  # what fit sets before the first epoch
    es.set_model(model)
    es.on_train_begin()
    stopped = None
    for epoch, v in enumerate(values):
        es.on_epoch_end(epoch, {monitor: v, "val_loss" if monitor != "val_loss" else "val_macro_f1": 0.0})
        if model.stop_training:
            stopped = epoch
            break
    assert stopped == stops_at


def test_unknown_early_stopping_monitor_is_rejected():
    from mask_keras.config import Config, ConfigError

    with pytest.raises(ConfigError, match="did you mean 'val_loss'"):
        Config().override(**{"train.early_stopping_monitor": "val_los"}).validate()
