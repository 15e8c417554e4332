"""Data-parallel training over two (forced) CPU devices matches one-device training.

``XLA_FLAGS=--xla_force_host_platform_device_count=2`` must be set before JAX is imported,
so the training runs in a subprocess; this process (one device) then reloads the artifact.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mask_keras.config import ConfigError

# 20 people, 4 of them (28 images) for validation: not a multiple of the batch (padded last batch)
FAST = {"model.backbone": "tiny_cnn", "model.weights": None, "preprocess.image_size": (32, 24),
        "preprocess.crop": "none", "train.batch_size": 16, "train.lr": 3e-3, "train.verbose": 0,
        "augment.preset": "none", "train.task": "mask", "train.epochs": 2, "data.max_people": 20,
        "train.save_last": False}

_CHILD = r"""
import json, sys
import numpy as np
import jax, keras
import mask_keras
from mask_keras.config import Config
from mask_keras.train import train, prepare_tables
from mask_keras import pipeline

root, out, over = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
assert jax.device_count() == 2, jax.devices()


class ClassCount(keras.metrics.Metric):
    # weighted count of every class: padded rows (weight 0) add nothing
    def __init__(self, k, name="class_count"):
        super().__init__(name=name)
        self.k = k
        self.total = self.add_variable(shape=(k,), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        w = keras.ops.ones_like(y_true[:, 0]) if sample_weight is None else sample_weight
        self.total.assign_add(keras.ops.sum(y_true * keras.ops.expand_dims(w, 1), axis=0))

    def result(self):
        return keras.ops.convert_to_tensor(self.total)


res = {}
for dev in ("auto", "all"):
    cfg = Config().override(**{**over, "data.data_dir": root, "train.out_dir": f"{out}/{dev}",
                               "train.devices": dev})
    r = train(cfg)
    res[dev] = {"loss": r.history["loss"], "val_loss": r.history["val_loss"],
                "val_macro_f1": r.history["val_macro_f1"], "metrics": r.metrics}

# evaluation under the 2-device distribution: every validation image counted exactly once
cfg = Config().override(**{**over, "data.data_dir": root})
train_t, val_t = prepare_tables(cfg)
val_ds, val_ds_info = pipeline.make_dataset(val_t, cfg, training=False, verbose=0)
keras.distribution.set_distribution(keras.distribution.DataParallel(devices=keras.distribution.list_devices()))
m = keras.saving.load_model(f"{out}/all/model.keras")
m.compile(loss="categorical_crossentropy", weighted_metrics=[ClassCount(3)])
ev = m.evaluate(val_ds, return_dict=True, verbose=0)
res["counts"] = [float(v) for v in np.asarray(ev["class_count"])]
res["expected"] = np.bincount(val_t["mask"].to_numpy(), minlength=3).tolist()
res["val_images"] = len(val_t)
res["steps"] = val_ds_info.num_steps
print("RESULT" + json.dumps(res))
"""


def test_batch_must_split_evenly_over_devices():
    from mask_keras.jax_backend.distribute import check_batch_size

    check_batch_size(32, n_devices=4, n_processes=1)
    check_batch_size(7, n_devices=1, n_processes=1)
    with pytest.raises(ConfigError, match=r"train.batch_size 30 .* 4 devices .* divisible by 4; use e.g. 28 or 32"):
        check_batch_size(30, n_devices=4, n_processes=1)
    with pytest.raises(ConfigError, match="2 processes"):
        check_batch_size(9, n_devices=1, n_processes=2)


def test_setup_distribution_choices(monkeypatch):
    from mask_keras.jax_backend.distribute import multihost_requested, setup_distribution

    assert setup_distribution("auto") is None
    with pytest.raises(ConfigError, match="unknown train.devices 'al'.*did you mean 'all'"):
        setup_distribution("al")
    for k in ("KERAS_DISTRIBUTION_NUM_PROCESSES", "MASK_KERAS_MULTIHOST", "KERAS_DISTRIBUTION_JOB_ADDRESSES"):
        monkeypatch.delenv(k, raising=False)
    assert not multihost_requested()
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "1")
    assert not multihost_requested()
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "4")
    assert multihost_requested()


def test_all_devices_in_a_one_device_process():
    """One device here: any batch divides; the distribution is set, and undone by the caller."""
    import keras

    from mask_keras.jax_backend.distribute import setup_distribution

    try:
        dist = setup_distribution("all", batch_size=5)  # 1 CPU device in this process: fine
        assert dist is not None and len(dist.device_mesh.devices.ravel()) == 1
    finally:
        keras.distribution.set_distribution(None)


@pytest.mark.slow
def test_two_devices_match_one_device_and_reload_on_one(synth_root, tmp_path):
    env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") +
                                       " --xla_force_host_platform_device_count=2").strip(),
           "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(synth_root), str(tmp_path), json.dumps(FAST)],
                          env=env, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(lines[-1][len("RESULT"):])
    one, two = res["auto"], res["all"]

    # same seed, same data order, no augmentation: the same training, up to summation order
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=2e-3)
    np.testing.assert_allclose(two["val_loss"], one["val_loss"], rtol=2e-3)
    assert two["metrics"]["val_images"] == one["metrics"]["val_images"] == res["val_images"]

    # evaluation over 2 devices: the validation set is ragged and padded, every image counted once
    assert res["val_images"] % FAST["train.batch_size"] != 0
    np.testing.assert_allclose(res["counts"], res["expected"], atol=1e-6)

    # the 2-device artifact loads here (one device) and predicts what the 2-device run reported
    import keras

    from mask_keras import pipeline
    from mask_keras.config import Config

    out = tmp_path / "all"
    preds = pd.read_csv(out / "val_predictions.csv")
    assert len(preds) == res["val_images"] and not preds["path"].duplicated().any()
    cfg = Config.load(out)
    ds, n = pipeline.make_predict_dataset(preds["path"].tolist(), cfg.preprocess, 16, progress=False)
    model = keras.saving.load_model(out / "model.keras")
    p = model.predict(ds, verbose=0)[:n]
    np.testing.assert_allclose(p, preds[["p0", "p1", "p2"]].to_numpy(), atol=1e-4)
    assert json.loads((out / "metrics.json").read_text())["macro_f1"] == pytest.approx(
        two["metrics"]["macro_f1"])


# one process of a two-process ("multi-host") job on this machine; JAX's CPU collectives use gloo.
# K-fold (fold 0 of 2) into this process's own folder, then twice with resume into the chief's
# folder, as on shared storage: once as it is (finished: kept), once with one more epoch
# (every process restores the chief's backup and trains on)
_HOST = r"""
import json, sys
import jax
import mask_keras
from mask_keras import resume
from mask_keras.config import Config
from mask_keras.kfold import train_kfold

root, own, shared, over = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
kcfg = Config().override(**{**over, "data.data_dir": root, "train.devices": "all", "data.folds": 2})
k1 = train_kfold(kcfg.override(**{"train.out_dir": own}), folds=[0]).summary
kcfg = kcfg.override(**{"train.out_dir": shared})
first = resume.iterations(resume.load_latest(f"{shared}/fold_0").arrays)
k2 = train_kfold(kcfg, folds=[0], resume=True).summary
k3 = train_kfold(kcfg.override(**{"train.epochs": 2}), folds=[0], resume=True).summary
b = resume.load_latest(f"{shared}/fold_0")
print("RESULT" + json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                             "devices": jax.device_count(), "kfold": [k1, k2, k3],
                             "resumed": {"epochs": b.epochs, "steps": resume.iterations(b.arrays), "first": first}}))
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_like_one_and_only_the_chief_writes(synth_root, tmp_path):
    """A two-process job (what two hosts run) over the multi-host environment variables.

    Multi-head, so the per-epoch 18-class F1 callback predicts inside the job too. Each
    process is given its own out_dir for a K-fold run (one fold): the non-chief's must stay
    uncreated, and the chief's must hold what one process on one device would have trained.
    Then both resume K-fold in the chief's folder, as on shared storage: the finished fold is
    kept (the chief decides, both report it); with one more epoch both restore the chief's
    backup and train on from it.
    """
    over = {**FAST, "train.task": "multihead", "train.epochs": 1}
    port = _free_port()
    chief_dir = tmp_path / "kfold"
    procs = []
    for pid, own in enumerate((chief_dir, tmp_path / "worker")):
        env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3",
               "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
               "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": str(pid)}
        env.pop("XLA_FLAGS", None)
        procs.append(subprocess.Popen([sys.executable, "-c", _HOST, str(synth_root), str(own), str(chief_dir),
                                       json.dumps(over)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    res = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=600)
            lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT")]
            assert p.returncode == 0 and lines, stdout[-3000:] + stderr[-5000:]
            assert "ran out of data" not in stderr  # the sharded datasets keep their length
            res.append(json.loads(lines[-1][len("RESULT"):]))
    finally:
        for p in procs:
            p.kill()
    chief, worker = res
    assert (chief["process"], worker["process"], chief["processes"], chief["devices"]) == (0, 1, 2, 2)
    # both processes took the same decisions from the same numbers, and report the same results
    def same(k):  # a K-fold summary, less where its folds are (each process had its own folder first)
        return {n: v for n, v in k.items() if n != "fold_dirs"}

    assert [same(k) for k in worker["kfold"]] == [same(k) for k in chief["kfold"]]
    assert worker["kfold"][1:] == chief["kfold"][1:] and worker["resumed"] == chief["resumed"]
    k1, k2, k3 = chief["kfold"]
    assert k2 == k1  # resumed as it was: the finished fold kept
    # only the chief wrote (the worker's own folder was never created), and wrote everything
    assert not (tmp_path / "worker").exists()
    fold = chief_dir / "fold_0"
    for name in ("model.keras", "config.json", "split.csv", "history.csv", "metrics.json", "val_predictions.csv",
                 "confusion_matrix.png", "history.png", "per_class_f1.csv"):
        assert (fold / name).is_file(), name
    assert not list(chief_dir.rglob(".*tmp*"))  # no temp file of an interrupted or raced write left behind

    # the first epoch is the training of one process on one device (same seed, no augmentation)
    from mask_keras.config import Config
    from mask_keras.train import train

    one = train(Config().override(**{**over, "data.data_dir": str(synth_root), "data.folds": 2, "data.fold": 0,
                                     "train.out_dir": str(tmp_path / "one")}))
    hist = pd.read_csv(fold / "history.csv")
    np.testing.assert_allclose(hist["loss"][:1], one.history["loss"], rtol=2e-3)
    np.testing.assert_allclose(hist["val_loss"][:1], one.history["val_loss"], rtol=2e-3)
    # resumed with a second epoch on both processes: one more epoch of steps, the history continued
    assert len(hist) == 2 and chief["resumed"]["epochs"] == 2
    assert chief["resumed"]["steps"] == 2 * chief["resumed"]["first"] > 0

    # the artifact loads in this single-device process and predicts what the job reported
    import keras

    from mask_keras import pipeline
    from mask_keras.ensemble import combine_tasks, from_multihead

    preds = pd.read_csv(fold / "val_predictions.csv")
    assert not preds["path"].duplicated().any() and len(preds) == one.metrics["val_images"]
    cfg = Config.load(fold)
    ds, n = pipeline.make_predict_dataset(preds["path"].tolist(), cfg.preprocess, 16, progress=False)
    probs = combine_tasks(*from_multihead(keras.saving.load_model(fold / "model.keras").predict(ds, verbose=0)))[:n]
    np.testing.assert_allclose(probs, preds[[f"p{c}" for c in range(18)]].to_numpy(), atol=1e-4)
    metrics = json.loads((fold / "metrics.json").read_text())
    assert json.loads((chief_dir / "kfold_summary.json").read_text()) == k3
    oof = pd.read_csv(chief_dir / "oof_predictions.csv")
    assert len(oof) == k3["oof_images"] == len(preds) and set(oof["fold"]) == {0}
    assert k3["oof_macro_f1"] == pytest.approx(metrics["macro_f1"])  # one fold: its validation is the OOF


def test_a_job_environment_with_devices_auto_warns(monkeypatch, caplog):
    from mask_keras.jax_backend.distribute import setup_distribution

    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    with caplog.at_level("WARNING", logger="mask_keras.jax_backend.distribute"):
        assert setup_distribution("auto") is None  # this process stays alone, JAX untouched
    assert "train.devices is 'auto'" in caplog.text and "--devices all" in caplog.text
