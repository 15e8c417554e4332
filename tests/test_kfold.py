"""K-fold training: K tiny fold models, out-of-fold predictions, OOF F1 = sklearn, folds feed predict."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mask_keras.config import Config, ConfigError

ARGS = ["--backbone", "tiny_cnn", "--weights", "none", "--image-size", "32x24", "--max-people", "20",
        "--epochs", "1", "--task", "multi", "--set", "preprocess.crop=none", "--set", "train.verbose=0",
        "--set", "train.batch_size=32", "--set", "augment.preset=none", "--seed", "3"]


@pytest.fixture(scope="module")
def kfold_run(synth_root, tmp_path_factory):
    from mask_keras.cli import main

    out = tmp_path_factory.mktemp("kfold") / "run"
    assert main(["train", "--data-dir", str(synth_root), "--out-dir", str(out), "--folds", "2", *ARGS]) == 0
    return out


@pytest.mark.slow
def test_kfold_trains_k_models_and_oof_f1_equals_sklearn(kfold_run, synth_root):
    from sklearn.metrics import f1_score

    from mask_keras.data import read_train
    from mask_keras.data.splits import subsample_people

    out = kfold_run
    for f in (0, 1):
        assert (out / f"fold_{f}" / "model.keras").is_file()
        assert Config.load(out / f"fold_{f}").data.fold == f
    summary = json.loads((out / "kfold_summary.json").read_text())
    oof = pd.read_csv(out / "oof_predictions.csv")
    # no image predicted by two folds, and every image of the (subsampled) set predicted once
    assert not oof["path"].duplicated().any()
    table = subsample_people(read_train(synth_root), 20, seed=3)
    assert set(oof["path"]) == set(table["path"]) and len(oof) == len(table) == summary["oof_images"]
    # no person in two validation folds; each fold's predictions come from the model that did not see them
    assert oof.groupby("profile")["fold"].nunique().max() == 1
    for f in (0, 1):
        split = pd.read_csv(out / f"fold_{f}" / "split.csv", dtype=str)
        val = set(split.loc[split["split"] == "val", "profile"])
        assert val == set(oof.loc[oof["fold"] == f, "profile"])
        assert not val & set(split.loc[split["split"] == "train", "profile"])
    assert summary["oof_macro_f1"] == pytest.approx(f1_score(oof["y_true"], oof["y_pred"], average="macro"))
    assert summary["fold_macro_f1"] == [pytest.approx(json.loads((out / f"fold_{f}" / "metrics.json")
                                                                  .read_text())["macro_f1"]) for f in (0, 1)]
    assert {"oof_f1_mask", "oof_f1_gender", "oof_f1_age"} <= set(summary)
    np.testing.assert_array_equal(oof["y_pred"], oof[[f"p{c}" for c in range(18)]].to_numpy().argmax(1))


@pytest.mark.slow
def test_resume_keeps_finished_folds(kfold_run, monkeypatch):
    import mask_keras.train
    from mask_keras.kfold import train_kfold

    cfg = Config.load(kfold_run)
    before = (kfold_run / "fold_0" / "model.keras").stat().st_mtime_ns

    def no_training(cfg, callbacks=None):
        raise AssertionError("a finished fold was trained again")

    monkeypatch.setattr(mask_keras.train, "train", no_training)
    res = train_kfold(cfg, resume=True)
    assert (kfold_run / "fold_0" / "model.keras").stat().st_mtime_ns == before
    assert res.summary["oof_images"] == len(res.oof)
    # the ensemble section says how a recipe combines the folds, not what they are: still finished
    train_kfold(cfg.override(**{"ensemble.vote": "hard", "ensemble.tta": True}), resume=True)
    # a changed config is not "finished": it would train
    with pytest.raises(AssertionError, match="trained again"):
        train_kfold(cfg.override(**{"train.lr": 0.002}), resume=True)


@pytest.mark.slow
def test_fold_models_feed_the_ensemble(kfold_run, synth_root, tmp_path):
    from mask_keras.inference.submission import predict_submission

    res = predict_submission(kfold_dirs=[kfold_run], data_dir=synth_root, out_csv=tmp_path / "s.csv", vote="hard",
                             gt=synth_root / "eval" / "gt.csv", batch_size=32, progress=False)
    assert [p.name for p in res.predictions] == ["run/fold_0", "run/fold_1"]
    assert list(res.table["model"]) == ["run/fold_0", "run/fold_1", "ensemble"]
    assert 0 <= res.metrics["macro_f1"] <= 1 and len(res.submission) == 84


def test_kfold_needs_two_folds(tmp_path):
    from mask_keras.kfold import train_kfold

    with pytest.raises(ConfigError, match="data.folds must be >= 2"):
        train_kfold(Config().override(**{"train.out_dir": str(tmp_path / "x")}))
    with pytest.raises(ConfigError, match=r"folds \[7\] not in 0..2"):
        train_kfold(Config().override(**{"data.folds": 3, "train.out_dir": str(tmp_path / "x")}), folds=[7])
    assert not (tmp_path / "x").exists()


def test_check_oof_catches_a_leaked_split():
    from mask_keras.kfold import check_oof

    ok = pd.DataFrame({"path": ["a", "b", "c"], "profile": ["p1", "p1", "p2"], "fold": [0, 0, 1]})
    check_oof(ok)
    with pytest.raises(RuntimeError, match="image.*predicted by two folds, e.g. a"):
        check_oof(ok.assign(path=["a", "a", "c"]))
    with pytest.raises(RuntimeError, match=r"person p1 is in the validation folds \[0, 1\]"):
        check_oof(ok.assign(fold=[0, 1, 1]))


def test_resume_where_the_chief_kept_a_fold_this_process_cannot_see(tmp_path, monkeypatch):
    """Multi-host resume without shared storage: a clear error, not a deadlock or a retrain."""
    from mask_keras.jax_backend import distribute
    from mask_keras.kfold import train_kfold

    monkeypatch.setattr(distribute, "from_chief", lambda value: 1.0)  # process 0 says: fold done
    cfg = Config().override(**{"data.folds": 2, "train.out_dir": str(tmp_path / "k")})
    with pytest.raises(FileNotFoundError, match=r"fold_0: process 0 kept this finished fold.*shared storage"):
        train_kfold(cfg, folds=[0], resume=True)
