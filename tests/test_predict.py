"""Inference: artifacts -> probabilities -> combined 18 classes -> submission; TTA, voting, bad inputs.

The artifacts here are untrained tiny models saved with their config (no training needed to
test inference): every number is checked against the ensemble primitives or sklearn.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mask_keras import ensemble as E
from mask_keras import labels as L
from mask_keras.config import Config

SIZE = (32, 24)


def _artifact(path, task, seed, **over):
    import keras

    from mask_keras.models.build import build_model

    cfg = Config().override(**{"train.task": task, "model.backbone": "tiny_cnn", "model.weights": None,
                               "preprocess.image_size": SIZE, "preprocess.crop": "none",
                               "train.out_dir": str(path), **over})
    keras.utils.set_random_seed(seed)
    model = build_model(cfg.model, task, tuple(cfg.preprocess.image_size))
    path.mkdir(parents=True)
    model.save(path / "model.keras")
    cfg.save(path / "config.json")
    return path


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    d = tmp_path_factory.mktemp("arts")
    out = {t: _artifact(d / t, t, seed=i) for i, t in enumerate(("mask", "gender", "age", "multi", "multihead"))}
    out["multi_b"] = _artifact(d / "multi_b", "multi", seed=11)
    # a K-fold directory: fold_0, fold_1 beside kfold_summary.json
    out["kfold"] = d / "kf"
    for f in range(2):
        _artifact(d / "kf" / f"fold_{f}", "multi", seed=20 + f)
    (d / "kf" / "kfold_summary.json").write_text("{}")
    return out


@pytest.fixture(scope="module")
def eval_table(synth_root):
    from mask_keras.data import read_eval

    return read_eval(synth_root)


def _inputs(paths):
    from mask_keras.inference.images import ImageInput

    return [ImageInput.from_bytes(str(f), Path(f).read_bytes()) for f in paths]


def _probs(run, table, tta=False, crops=()):
    """One run's probabilities through the inference engine: (N, C), or {head: (N, C)} for a multi-head model."""
    from mask_keras.inference import Predictor

    with Predictor.load(run, tta=tta, crops=crops, batch_size=32) as pred:
        eng = pred.engine
        (p,) = eng.predictions([eng.prepare(_inputs(table["path"].tolist()), "raise")])
    return p.probs if p.task == "multihead" else p.probs[p.task]


# ---- submission from per-task models ----------------------------------------------
@pytest.mark.slow
def test_three_task_submission_is_the_product_in_info_order(arts, synth_root, eval_table, tmp_path):
    from mask_keras.evaluate import evaluate
    from mask_keras.inference.submission import predict_submission

    out = tmp_path / "sub.csv"
    res = predict_submission(data_dir=synth_root, out_csv=out, roles={t: arts[t] for t in ("mask", "gender", "age")},
                             probs_csv=tmp_path / "probs.csv", gt=synth_root / "eval" / "gt.csv", batch_size=32)
    sub = pd.read_csv(out)
    info = pd.read_csv(synth_root / "eval" / "info.csv")
    assert list(sub.columns) == ["ImageID", "ans"] and sub["ImageID"].tolist() == info["ImageID"].tolist()
    pm, pg, pa = (_probs(arts[t], eval_table) for t in ("mask", "gender", "age"))
    p18 = E.combine_tasks(pm, pg, pa)
    np.testing.assert_array_equal(sub["ans"], p18.argmax(1))
    np.testing.assert_array_equal(sub["ans"], E.combine_argmax(pm, pg, pa))  # the plain per-task argmax
    probs = pd.read_csv(tmp_path / "probs.csv")
    np.testing.assert_allclose(probs[[f"p{c}" for c in range(18)]].to_numpy(), p18, atol=1e-6)
    # the submission is scored by evaluate (the `mask-keras evaluate` code) and matches the result's metrics
    m = evaluate(synth_root / "eval" / "gt.csv", out)
    assert m["macro_f1"] == pytest.approx(res.metrics["macro_f1"])
    # per task and overall in the comparison table
    t = res.table.set_index("model")
    assert list(t.index) == ["mask", "gender", "age", "ensemble"]
    for task in ("mask", "gender", "age"):
        assert t.loc["ensemble", f"f1_{task}"] == pytest.approx(m[f"f1_{task}"])
        assert t.loc[task, f"f1_{task}"] == pytest.approx(m[f"f1_{task}"])  # one model per task: the same
    assert np.isnan(t.loc["mask", "macro_f1"]) and t.loc["ensemble", "macro_f1"] == pytest.approx(m["macro_f1"])
    # "argmax" combination gives the same labels
    res2 = predict_submission(data_dir=synth_root, out_csv=tmp_path / "sub2.csv", combine="argmax",
                              roles={t: arts[t] for t in ("mask", "gender", "age")}, batch_size=32, progress=False)
    np.testing.assert_array_equal(res2.submission["ans"], sub["ans"])


@pytest.mark.slow
def test_two_model_ensemble_scored_against_each_model(arts, synth_root, eval_table, tmp_path):
    from sklearn.metrics import accuracy_score, f1_score

    from mask_keras.inference.submission import predict_submission

    gt = pd.read_csv(synth_root / "eval" / "gt.csv").set_index("ImageID")["ans"]
    y = gt.reindex(eval_table["ImageID"]).to_numpy()
    res = predict_submission([arts["multi"], arts["multi_b"]], synth_root, tmp_path / "s.csv", gt=synth_root / "eval" / "gt.csv",
                             batch_size=32, progress=False)
    pa, pb = _probs(arts["multi"], eval_table), _probs(arts["multi_b"], eval_table)
    assert res.combined.level == "class"
    np.testing.assert_array_equal(res.submission["ans"], ((pa + pb) / 2).argmax(1))
    t = res.table.set_index("model")
    assert list(t.index) == ["multi", "multi_b", "ensemble"]
    for name, p in (("multi", pa), ("multi_b", pb), ("ensemble", (pa + pb) / 2)):
        assert t.loc[name, "macro_f1"] == pytest.approx(f1_score(y, p.argmax(1), average="macro"))
        assert t.loc[name, "accuracy"] == pytest.approx(accuracy_score(y, p.argmax(1)))
        mask_true, mask_pred = L.decode(y)[0], L.decode(p.argmax(1))[0]
        assert t.loc[name, "f1_mask"] == pytest.approx(f1_score(mask_true, mask_pred, average="macro"))


@pytest.mark.slow
def test_mixed_models_vote_per_task_or_on_18_classes(arts, synth_root, eval_table, tmp_path):
    from mask_keras.inference.submission import predict_submission

    pm = _probs(arts["mask"], eval_table)
    p18 = _probs(arts["multi"], eval_table)
    heads = _probs(arts["multihead"], eval_table)
    assert set(heads) == {"mask", "gender", "age"}
    models = [arts["mask"], arts["multi"], arts["multihead"]]
    # task level: per task the mean over the models covering it, then the product
    res = predict_submission(models, synth_root, tmp_path / "t.csv", level="task", batch_size=32, progress=False)
    sm, sg, sa = E.split_multi(p18)
    want = E.combine_tasks((pm + sm + heads["mask"]) / 3, (sg + heads["gender"]) / 2, (sa + heads["age"]) / 2)
    np.testing.assert_array_equal(res.submission["ans"], want.argmax(1))
    # class level: the per-task model alone cannot vote on 18 classes -> the 18-way and multihead only
    res = predict_submission([arts["multi"], arts["multihead"]], synth_root, tmp_path / "c.csv", level="class",
                             vote="hard", tie="lowest", batch_size=32, progress=False)
    hp = E.combine_tasks(heads["mask"], heads["gender"], heads["age"])
    np.testing.assert_array_equal(res.submission["ans"], E.hard_vote([p18, hp], tie="lowest"))


# ---- K-fold directories and hard voting ---------------------------------------------
@pytest.mark.slow
def test_kfold_dir_expands_to_its_folds_and_hard_votes(arts, synth_root, eval_table, tmp_path):
    from mask_keras.cli import main
    from mask_keras.inference.artifacts import expand_models

    folds = expand_models(kfold_dirs=[arts["kfold"]])
    assert [p.name for p in folds] == ["fold_0", "fold_1"]
    out = tmp_path / "kf.csv"
    assert main(["predict", "--data-dir", str(synth_root), "--kfold-dir", str(arts["kfold"]), "--model",
                 str(arts["multi"]), "--vote", "hard", "--out", str(out), "--batch-size", "32",
                 "--weights", "1,1,2", "--probs", str(tmp_path / "kf.probs.csv"), "--json"]) == 0
    # model order: --model first, then the folds; ties -> highest weighted mean probability
    p = [_probs(arts["multi"], eval_table)] + [_probs(f, eval_table) for f in folds]
    want = E.hard_vote(p, weights=[1, 1, 2])
    np.testing.assert_array_equal(pd.read_csv(out)["ans"], want)
    # --probs holds the soft 18-class probabilities (the weighted mean), for a hard vote too
    probs = pd.read_csv(tmp_path / "kf.probs.csv")
    np.testing.assert_allclose(probs[[f"p{c}" for c in range(18)]].to_numpy(), E.soft_vote(p, [1, 1, 2]), atol=1e-6)


# ---- TTA on the predict side ---------------------------------------------------------
@pytest.mark.slow
def test_tta_is_the_mean_of_the_views(arts, eval_table):
    import dataclasses

    from mask_keras import pipeline
    from mask_keras.inference import Predictor
    from mask_keras.inference.artifacts import load_artifact, model_outputs
    from mask_keras.inference.images import crop_windows

    art = load_artifact(arts["multihead"])
    paths = eval_table["path"].tolist()[:20]
    pcfg = art.config.preprocess

    def view(pcfg, flip=False):  # the reference: the pipeline's pixels, mirrored on the host for the flip
        x = pipeline.load_images(paths, pcfg)
        return model_outputs(art.model.predict_on_batch(x[:, :, ::-1] if flip else x))

    # the flipped view the engine feeds is the mirror image of the plain one, the plain one the pipeline's
    with Predictor.load(arts["multihead"], tta=True, batch_size=32) as pred:
        px = pred.engine.prepare(_inputs(paths), "raise").pixels[0]
    x0 = pipeline.load_images(paths, pcfg)
    assert px.shape == (20, 2, *x0.shape[1:])
    np.testing.assert_array_equal(px[:, 0], x0)
    np.testing.assert_array_equal(px[:, 1], x0[:, :, ::-1])

    plain, flipped = view(pcfg), view(pcfg, flip=True)
    got = _probs(arts["multihead"], eval_table.iloc[:20], tta=True)
    for k in ("mask", "gender", "age"):
        np.testing.assert_allclose(got[k], (plain[k] + flipped[k]) / 2, atol=1e-5)
    # a crop view: scale 0.5 of the whole 128x96 image = a centre crop of 64x48
    np.testing.assert_array_equal(crop_windows(128, 96, pcfg, crops=(0.5,)), [[0, 0, 128, 96], [32, 24, 96, 72]])
    zoom = view(dataclasses.replace(pcfg, crop="center", crop_size=(64, 48)))
    got = _probs(arts["multihead"], eval_table.iloc[:20], crops=(0.5,))
    for k in ("mask", "gender", "age"):
        np.testing.assert_allclose(got[k], (plain[k] + zoom[k]) / 2, atol=1e-5)
    # scale 1.0 on an uncropped model is the plain view again
    same = _probs(arts["mask"], eval_table.iloc[:20], crops=(1.0,))
    np.testing.assert_allclose(same, _probs(arts["mask"], eval_table.iloc[:20]), atol=1e-5)


# ---- combining hand-made predictions --------------------------------------------------
def _pred(task, **probs):
    from mask_keras.inference.artifacts import Artifact
    from mask_keras.inference.combine import Prediction

    cfg = Config().override(**{"train.task": task})
    return Prediction(Artifact(Path(task), cfg), {k: np.asarray(v, float) for k, v in probs.items()})


def test_combine_predictions_by_hand():
    from mask_keras.inference.combine import CombineError, combine_predictions

    mask = _pred("mask", mask=[[0.1, 0.7, 0.2]])
    gender = _pred("gender", gender=[[0.4, 0.6]])
    age_a = _pred("age", age=[[0.5, 0.3, 0.2]])
    age_b = _pred("age", age=[[0.1, 0.45, 0.45]])
    c = combine_predictions([mask, gender, age_a, age_b])
    # age soft vote: mean (0.3, 0.375, 0.325) -> 1; class = 1*6 + 1*3 + 1 = 10
    assert c.level == "task" and c.tasks == ("mask", "gender", "age") and c.labels.tolist() == [10]
    np.testing.assert_allclose(c.p18[0, 10], 0.7 * 0.6 * 0.375)
    np.testing.assert_allclose(c.task_probs["age"], [[0.3, 0.375, 0.325]])
    assert {t: v.tolist() for t, v in c.task_labels.items()} == {"mask": [1], "gender": [1], "age": [1]}
    # age hard vote: one vote each for 0 and 1 (b: 0.45 tie -> argmax picks 1); tie -> highest mean prob = 1
    h = combine_predictions([mask, gender, age_a, age_b], vote="hard")
    assert h.labels.tolist() == [10]
    # a hard vote shows the vote shares: the age tie is 0.5 / 0.5, broken by the tie rule
    np.testing.assert_allclose(h.task_probs["mask"], [[0, 1, 0]])
    np.testing.assert_allclose(h.task_probs["gender"], [[0, 1]])
    np.testing.assert_allclose(h.task_probs["age"], [[0.5, 0.5, 0]])
    assert h.task_labels["age"].tolist() == [1] and h.task_probs["age"][0, 1] == h.task_probs["age"].max()
    np.testing.assert_allclose(h.p18[0, 10], 1 * 1 * 0.5)  # the product of the task shares
    assert combine_predictions([mask, gender, age_a, age_b], vote="hard", tie="lowest").labels.tolist() == [9]
    assert combine_predictions([mask, gender, age_a, age_b], vote="hard", tie="first_model").labels.tolist() == [9]
    # weights: age_a counts three times -> age 0
    assert combine_predictions([mask, gender, age_a, age_b], weights=[1, 1, 3, 1]).labels.tolist() == [9]
    # ... in a hard vote too: shares 0.75 / 0.25, no tie: every task's answer is the argmax of its shares
    h = combine_predictions([mask, gender, age_a, age_b], vote="hard", weights=[1, 1, 3, 1])
    np.testing.assert_allclose(h.task_probs["age"], [[0.75, 0.25, 0]])
    assert h.labels.tolist() == [9]
    for t in ("mask", "gender", "age"):
        np.testing.assert_allclose(h.task_probs[t].sum(axis=1), 1)
        np.testing.assert_array_equal(h.task_probs[t].argmax(axis=1), h.task_labels[t])
    # an 18-way model joins at the class level; the per-task models form one member
    p18 = np.zeros((1, 18))
    p18[0, 17] = 1.0
    c = combine_predictions([_pred("multi", multi=p18), mask, gender, age_a], level="class")
    system = E.combine_tasks([[0.1, 0.7, 0.2]], [[0.4, 0.6]], [[0.5, 0.3, 0.2]])
    np.testing.assert_allclose(c.p18, (p18 + system) / 2)
    assert c.level == "class" and c.labels.tolist() == [17]
    # at the class level the task answers are the argmax of the joint's marginals (here 17's too)
    assert {t: v.tolist() for t, v in c.task_labels.items()} == {"mask": [2], "gender": [1], "age": [2]}
    for t, v in zip(("mask", "gender", "age"), E.split_multi(c.p18)):
        np.testing.assert_allclose(c.task_probs[t], v)
    # ... which can differ from the joint class: 0.4 on class 0 (wear/male/<30), 0.3 each on 10 and 11
    # (incorrect/female/30-59, >=60): the joint answer is class 0, the mask answer 'incorrect' (0.6)
    split = np.zeros((1, 18))
    split[0, [0, 10, 11]] = 0.4, 0.3, 0.3
    c = combine_predictions([_pred("multi", multi=split)], level="class")
    assert c.labels.tolist() == [0] and c.task_labels["mask"].tolist() == [1] and c.task_labels["gender"].tolist() == [1]
    np.testing.assert_allclose(c.task_probs["mask"], [[0.4, 0.6, 0.0]])
    # per-task models that do not cover the three tasks cannot be joined into one 18-class member
    with pytest.raises(CombineError, match="do not cover gender, age"):
        combine_predictions([_pred("multi", multi=p18), mask], level="class")
    # a subset of the tasks is combined per covered task, without an 18-class answer
    c = combine_predictions([mask, gender])
    assert c.tasks == ("mask", "gender") and c.level == "task" and c.labels is None and c.p18 is None
    assert {t: v.tolist() for t, v in c.task_labels.items()} == {"mask": [1], "gender": [1]}
    np.testing.assert_allclose(c.task_probs["mask"], [[0.1, 0.7, 0.2]])
    np.testing.assert_allclose(c.task_probs["gender"], [[0.4, 0.6]])
    gender_b = _pred("gender", gender=[[0.8, 0.2]])
    c = combine_predictions([gender, gender_b])  # two gender models: mean (0.6, 0.4) -> 0
    assert c.tasks == ("gender",) and c.labels is None and c.task_labels["gender"].tolist() == [0]
    np.testing.assert_allclose(c.task_probs["gender"], [[0.6, 0.4]])
    c = combine_predictions([gender, gender_b], weights=[3, 1])  # (3*(0.4, 0.6) + (0.8, 0.2)) / 4
    np.testing.assert_allclose(c.task_probs["gender"], [[0.5, 0.5]])
    h = combine_predictions([gender, gender_b, _pred("gender", gender=[[0.3, 0.7]])], vote="hard")
    np.testing.assert_allclose(h.task_probs["gender"], [[1 / 3, 2 / 3]])
    assert h.task_labels["gender"].tolist() == [1] == h.task_probs["gender"].argmax(axis=1).tolist()
    # ... but the 18-class settings need all three tasks
    with pytest.raises(CombineError, match=r"level='class' .* cover only mask, gender"):
        combine_predictions([mask, gender], level="class")
    with pytest.raises(CombineError, match=r"combine='argmax' .* needs mask, gender and age"):
        combine_predictions([mask, gender], combine="argmax")
    with pytest.raises(CombineError, match="no models given"):
        combine_predictions([])
    with pytest.raises(CombineError, match="one weight per model"):
        combine_predictions([mask, gender, age_a], weights=[1, 2])
    with pytest.raises(CombineError, match="vote must be one of"):
        combine_predictions([mask, gender, age_a], vote="majority")
    assert issubclass(CombineError, ValueError)


# ---- bad inputs: a clear error naming the culprit, and no submission written ----------
@pytest.fixture
def eval_copy(synth_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_root / "eval", root / "eval")
    return root


def _fails(match, *args, **kw):
    from mask_keras.inference.submission import predict_submission

    out = kw.pop("out")
    with pytest.raises(ValueError, match=match):
        predict_submission(*args, out_csv=out, probs_csv=out.with_suffix(".probs.csv"), progress=False, **kw)
    assert not out.exists() and not out.with_suffix(".probs.csv").exists()
    assert not list(out.parent.glob(".*.tmp*"))


def test_missing_artifact(arts, eval_copy, tmp_path):
    _fails(r"runs/nope: artifact not found", ["runs/nope"], eval_copy, out=tmp_path / "s.csv")
    _fails(r"kf: no model.keras here \(it holds K-fold models", [arts["kfold"]], eval_copy, out=tmp_path / "s.csv")
    _fails("no models given", [], eval_copy, out=tmp_path / "s.csv")


def test_artifact_for_the_wrong_task(arts, eval_copy, tmp_path):
    _fails(r"gender: is a 'gender' model, but was given as the 'mask' model", data_dir=eval_copy,
           roles={"mask": arts["gender"], "gender": arts["gender"], "age": arts["age"]}, out=tmp_path / "s.csv")
    _fails(r"a submission needs the 18 classes: .* these cover only mask, gender", [arts["mask"], arts["gender"]],
           eval_copy, out=tmp_path / "s.csv")
    # config.json and model.keras that do not belong together
    bad = tmp_path / "swapped"
    shutil.copytree(arts["mask"], bad)
    shutil.copy(arts["gender"] / "config.json", bad / "config.json")
    shutil.copy(arts["age"] / "model.keras", bad / "model.keras")
    _fails(r"swapped: config.json says task 'gender' .* outputs \(None, 3\)", [bad, arts["mask"], arts["age"]],
           eval_copy, out=tmp_path / "s.csv")


def test_image_that_fails_to_decode(arts, eval_copy, tmp_path):
    info = pd.read_csv(eval_copy / "eval" / "info.csv")
    victim = eval_copy / "eval" / "images" / info["ImageID"].iloc[5]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])  # truncated JPEG
    _fails(rf"{victim.name}: truncated JPEG", [arts["multi"]], eval_copy, out=tmp_path / "s.csv")


def test_info_csv_with_unknown_image_ids(arts, eval_copy, tmp_path):
    info_path = eval_copy / "eval" / "info.csv"
    info = pd.read_csv(info_path)
    pd.concat([info, pd.DataFrame({"ImageID": ["not_a_real_image.jpg"], "ans": [0]})]).to_csv(info_path, index=False)
    _fails(r"not_a_real_image.jpg: listed in .*info.csv \(row 86\) but missing", [arts["multi"]], eval_copy,
           out=tmp_path / "s.csv")


def test_cli_errors_exit_2_and_write_nothing(arts, eval_copy, tmp_path, capsys):
    from mask_keras.cli import main

    out = tmp_path / "s.csv"
    assert main(["predict", "--data-dir", str(eval_copy), "--mask", str(arts["age"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "mask-keras predict: error:" in err and "is a 'age' model, but was given as the 'mask' model" in err
    assert not out.exists()


def test_predict_help_lists_the_options(capsys):
    from mask_keras.cli import main

    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = capsys.readouterr().out
    for flag in ("--model", "--kfold-dir", "--tta", "--tta-crops", "--vote", "--level", "--probs", "--gt"):
        assert flag in text


@pytest.mark.slow
def test_cli_predict_json_and_score(arts, synth_root, tmp_path, capsys):
    from mask_keras.cli import main

    out = tmp_path / "s.csv"
    assert main(["predict", "--data-dir", str(synth_root), "--multi", str(arts["multi"]), "--multihead",
                 str(arts["multihead"]), "--tta", "--out", str(out), "--gt", str(synth_root / "eval" / "gt.csv"),
                 "--batch-size", "32", "--json"]) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d["rows"] == 84 and d["models"] == 2 and d["level"] == "class"
    assert main(["evaluate", "--gt", str(synth_root / "eval" / "gt.csv"), "--pred", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["macro_f1"] == pytest.approx(d["macro_f1"])
