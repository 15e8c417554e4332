import json
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from mask_keras import evaluate as V
from mask_keras import labels as L

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _tables(n=300, seed=0, acc=0.6, classes=18):
    rng = np.random.default_rng(seed)
    ids = [f"{rng.integers(16**10):010x}_{i}.jpg" for i in range(n)]
    y = rng.integers(0, classes, n)
    noise = rng.integers(0, classes, n)
    p = np.where(rng.random(n) < acc, y, noise)
    return pd.DataFrame({"ImageID": ids, "ans": y}), pd.DataFrame({"ImageID": ids, "ans": p})


def _sk(y, p):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's default zero_division="warn"
        return f1_score(y, p, average="macro")


def test_numbers_equal_sklearn_and_order_does_not_matter(tmp_path):
    gt, pred = _tables()
    y, p = gt["ans"].to_numpy(), pred["ans"].to_numpy()
    d = V.evaluate(gt, pred)
    assert d["macro_f1"] == _sk(y, p)
    assert d["accuracy"] == accuracy_score(y, p)
    for task, t, q in zip(("mask", "gender", "age"), L.decode(y), L.decode(p)):
        assert d[f"f1_{task}"] == _sk(t, q)
    assert d["per_class_f1"] == pytest.approx(list(f1_score(y, p, labels=range(18), average=None)))
    assert len(d["per_class_f1"]) == 18 and d["n"] == len(gt)
    assert d["confusion_matrix"] == confusion_matrix(y, p, labels=range(18)).tolist()
    assert d["support"] == np.bincount(y, minlength=18).tolist()
    # shuffled prediction rows, via CSV files, give the same numbers
    gt.to_csv(tmp_path / "gt.csv", index=False)
    pred.sample(frac=1.0, random_state=3).to_csv(tmp_path / "pred.csv", index=False)
    d2 = V.evaluate(tmp_path / "gt.csv", str(tmp_path / "pred.csv"))
    for k in ("macro_f1", "accuracy", "f1_mask", "f1_gender", "f1_age", "per_class_f1", "confusion_matrix", "n"):
        assert d2[k] == d[k], k


def test_macro_f1_uses_sklearn_default_label_set():
    # only classes 0..5 occur: sklearn averages over those, per_class_f1 still lists 18
    gt, pred = _tables(n=120, seed=1, classes=6)
    y, p = gt["ans"].to_numpy(), pred["ans"].to_numpy()
    d = V.evaluate(gt, pred)
    assert d["macro_f1"] == _sk(y, p)
    assert d["macro_f1"] != pytest.approx(np.mean(d["per_class_f1"]))
    assert d["per_class_f1"][6:] == [0.0] * 12


def _write(path, text):
    path.write_text(text)
    return path


def test_input_errors(tmp_path):
    gt = _write(tmp_path / "gt.csv", "ImageID,ans\na.jpg,0\nb.jpg,17\nc.jpg,5\n")
    ok = _write(tmp_path / "ok.csv", "ImageID,ans\nc.jpg,5\na.jpg,0\nb.jpg,1\n")
    assert V.evaluate(gt, ok)["n"] == 3
    cases = {
        "ImageID,label\na.jpg,0\nb.jpg,17\nc.jpg,5\n": r"bad\.csv: missing column\(s\) ans",
        "imageid,ans\na.jpg,0\nb.jpg,17\nc.jpg,5\n": r"rename 'imageid' -> 'ImageID'",
        "ImageID,ans\na.jpg,0\nb.jpg,17\n": r"row counts differ: gt has 3, pred has 2.*missing from pred: \['c.jpg'\]",
        "ImageID,ans\na.jpg,0\nb.jpg,17\nx.jpg,5\n": r"missing from pred: \['c.jpg'\].*not in gt: \['x.jpg'\]",
        "ImageID,ans\na.jpg,0\nb.jpg,18\nc.jpg,5\n": r"bad\.csv: ans must be .* 0\.\.17, got '18' at row 1 \(line 3",
        "ImageID,ans\na.jpg,-1\nb.jpg,1\nc.jpg,5\n": r"got '-1' at row 0",
        "ImageID,ans\na.jpg,0\nb.jpg,2.5\nc.jpg,5\n": r"got '2.5' at row 1",
        "ImageID,ans\na.jpg,0\nb.jpg,\nc.jpg,5\n": r"got '' at row 1",
        "ImageID,ans\na.jpg,0\nb.jpg,x\nc.jpg,5\n": r"got 'x' at row 1",
        "ImageID,ans\na.jpg,0\na.jpg,1\nc.jpg,5\n": r"duplicate ImageID\(s\) \['a.jpg'\]",
        "ImageID,ans\na.jpg,0\n,1\nc.jpg,5\n": r"empty ImageID at row 1",
        "": r"cannot read the pred file",
    }
    for text, pattern in cases.items():
        bad = _write(tmp_path / "bad.csv", text)
        with pytest.raises(V.EvaluationError, match=pattern):
            V.evaluate(gt, bad)
    # the truth is checked the same way, and named as such
    with pytest.raises(V.EvaluationError, match=r"bad\.csv: duplicate"):
        V.evaluate(_write(tmp_path / "bad.csv", "ImageID,ans\na.jpg,0\na.jpg,1\nc.jpg,5\n"), ok)
    with pytest.raises(V.EvaluationError, match="gt file not found"):
        V.evaluate(tmp_path / "nope.csv", ok)
    with pytest.raises(V.EvaluationError, match=r"<pred DataFrame>: ans must .* got 99 at row 0"):
        V.evaluate(gt, pd.DataFrame({"ImageID": ["a.jpg"], "ans": [99]}))


def test_outputs_written(tmp_path):
    gt, pred = _tables(n=200, seed=2)
    out = tmp_path / "eval"
    d = V.evaluate(gt, pred, out_dir=out)
    for name in V.OUTPUT_FILES:
        assert (out / name).is_file(), name
    for name in ("confusion_matrix.png", "confusion_mask.png", "confusion_gender.png", "confusion_age.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["macro_f1"] == d["macro_f1"] and saved["confusion_matrix"] == d["confusion_matrix"]
    report = (out / "report.txt").read_text()
    assert report == V.format_report(d)
    assert f"{d['macro_f1']:.4f}" in report and f"{d['f1_age']:.4f}" in report
    assert L.class_name(17) in report
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_cli_json():
    gt, pred = _tables(n=50, seed=4)
    d = V.evaluate(gt, pred)
    line = V.cli_json(d)
    assert "\n" not in line
    obj = json.loads(line)
    assert list(obj) == ["macro_f1", "accuracy", "f1_mask", "f1_gender", "f1_age", "ci", "groups", "worst_group",
                         "group_gap"]
    assert obj["macro_f1"] == d["macro_f1"] and obj["groups"] == d["groups"]
    assert obj["ci"]["macro_f1"][0] <= d["macro_f1"] <= obj["ci"]["macro_f1"][1]


def test_task_scores_match_sklearn_per_task():
    task_scores = V.task_scores
    rng = np.random.default_rng(0)
    yt, yp = rng.integers(0, 18, 200), rng.integers(0, 18, 200)
    yp[:120] = yt[:120]
    s = task_scores(yt, yp, "multihead")
    assert s["macro_f1"] == pytest.approx(f1_score(yt, yp, average="macro"))
    assert s["accuracy"] == pytest.approx(accuracy_score(yt, yp)) and s["per_class_f1"].shape == (18,)
    for name, t, p in zip(("mask", "gender", "age"), L.decode(yt), L.decode(yp)):
        assert s[f"f1_{name}"] == pytest.approx(f1_score(t, p, average="macro"))
    # one task: its own classes, a class never seen nor predicted scores 0 in per_class_f1
    g = task_scores([0, 0, 2, 2], [0, 2, 2, 2], "mask")
    assert g["macro_f1"] == pytest.approx(f1_score([0, 0, 2, 2], [0, 2, 2, 2], average="macro"))
    np.testing.assert_allclose(g["per_class_f1"], [2 / 3, 0.0, 0.8])
    assert "f1_mask" not in g


def test_read_answers_is_the_checked_table(tmp_path):
    p = tmp_path / "gt.csv"
    p.write_text("ImageID,ans\na.jpg,3\nb.jpg,17\n")
    s = V.read_answers(p)
    assert s.to_dict() == {"a.jpg": 3, "b.jpg": 17} and s.dtype == np.int64
    p.write_text("ImageID,ans\na.jpg,18\n")
    with pytest.raises(V.EvaluationError, match=r"gt.csv: ans must be an integer class in 0..17, got '18' at row 0"):
        V.read_answers(p)
