"""The synthetic data generator: layout, quirks, statistics, determinism, learnable labels."""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mask_keras import labels as L
from mask_keras.data import read_eval, read_train, synth
from mask_keras.data.relabel import apply_relabel, load_relabel

SMALL = (128, 96)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "set"
    summary = synth.generate(root, people=40, eval_people=6, seed=3, image_size=SMALL, workers=1, progress=False)
    return root, summary


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------
# layout and quirks
# ------------------------------------------------------------------------------------------

def test_reads_back_with_the_layout_reader(small_set):
    root, summary = small_set
    df = read_train(root)
    ev = read_eval(root)
    assert len(df) == 7 * 40 and df["profile"].nunique() == 40
    assert len(ev) == 7 * 6
    assert summary["images"] == 280 and summary["eval_images"] == 42 and summary["people"] == 40
    assert df.attrs["skipped"] == [] and ev.attrs["skipped"] == []
    assert (df.groupby("profile")["mask"].apply(lambda m: sorted(m.tolist())) == [[0] * 5 + [1, 2]] * 40).all()
    from PIL import Image

    for p in list(df["path"][:7]) + list(ev["path"][:3]):
        with Image.open(p) as im:
            assert im.size == (SMALL[1], SMALL[0]) and im.mode == "RGB"


def test_csv_columns_ids_and_ranges(small_set):
    root, _ = small_set
    tr = pd.read_csv(root / "train" / "train.csv", dtype=str)
    assert list(tr.columns) == ["id", "gender", "race", "age", "path"]
    assert tr["id"].str.fullmatch(r"\d{6}(-\d)?").all()
    assert set(tr["race"]) == {"Asian"} and set(tr["gender"]) <= {"male", "female"}
    ages = tr["age"].astype(int)
    assert ages.between(18, 60).all()
    assert (tr["path"] == tr["id"] + "_" + tr["gender"] + "_Asian_" + tr["age"]).all()
    info = pd.read_csv(root / "eval" / "info.csv", dtype=str)
    gt = pd.read_csv(root / "eval" / "gt.csv", dtype={"ImageID": str, "ans": int})
    assert list(info.columns) == ["ImageID", "ans"] and list(gt.columns) == ["ImageID", "ans"]
    assert (info["ans"] == "0").all()
    assert (info["ImageID"] == gt["ImageID"]).all()
    assert info["ImageID"].str.fullmatch(r"[0-9a-f]{40}\.jpg").all() and info["ImageID"].is_unique
    assert sorted(os.listdir(root / "eval" / "images")) == sorted(info["ImageID"])


def test_every_quirk_is_on_disk(small_set):
    root, summary = small_set
    images = root / "train" / "images"
    meta = json.loads((root / "synth_meta.json").read_text())
    q = meta["quirks"]
    for name in ("png_folders", "jpeg_folders", "jpeg_mask5_jpg", "suffixed_ids", "hidden_folders"):
        assert len(q[name]) >= 1, name
        assert summary["quirks"][name] == len(q[name])
    for f in q["png_folders"]:
        assert sorted(os.listdir(images / f)) == sorted(s + ".png" for s in synth.STEMS)
    for f in q["jpeg_folders"]:
        want = {s + ".jpeg" for s in synth.STEMS}
        if f in q["jpeg_mask5_jpg"]:
            want = want - {"mask5.jpeg"} | {"mask5.jpg"}
        assert set(os.listdir(images / f)) == want
    assert set(q["jpeg_mask5_jpg"]) <= set(q["jpeg_folders"])
    for f in q["hidden_folders"]:
        hidden = [n for n in os.listdir(images / f) if n.startswith("._")]
        assert len(hidden) == 7 and all((images / f / n).stat().st_size > 0 for n in hidden)
    for f in q["suffixed_ids"]:
        assert re.fullmatch(r"\d{6}-\d_.*", f)
    # the other folders are plain .jpg with nothing else in them
    plain = sorted(set(os.listdir(images)) - set(q["png_folders"]) - set(q["jpeg_folders"]) - set(q["hidden_folders"]))
    assert plain and all(sorted(os.listdir(images / f)) == sorted(s + ".jpg" for s in synth.STEMS) for f in plain)


def test_gt_classes_follow_the_label_rules(small_set):
    root, _ = small_set
    plan = synth.make_plan(40, 6, 3)
    gt = pd.read_csv(root / "eval" / "gt.csv", dtype={"ImageID": str, "ans": int}).set_index("ImageID")["ans"]
    assert len(gt) == 42
    for e in plan["eval"]:
        for stem, name in e["names"].items():
            want = L.encode(int(L.MASK_STEMS[stem]), e["true_gender"], L.age_group(e["age"], upper=60))
            assert gt[name] == want
    m, g, a = L.decode(gt.to_numpy())
    assert np.bincount(m, minlength=3).tolist() == [30, 6, 6]  # 5:1:1 per person


def test_planted_mislabels_are_listed_and_undone_by_relabel(small_set):
    root, summary = small_set
    meta = json.loads((root / "synth_meta.json").read_text())
    assert len(meta["mislabeled"]) >= 1 and summary["mislabeled"] == [m["id"] for m in meta["mislabeled"]]
    certain = load_relabel(mode="certain")
    own = load_relabel(root / "relabel.csv", mode="all")
    assert list(own["id"]) == summary["mislabeled"]
    # the planted people carry relabel.csv's ids, and no other synthetic person uses one of its ids
    assert set(own["id"]) <= set(certain["id"])
    df = read_train(root)
    others = set(df["id"]) - set(own["id"])
    assert not others & set(load_relabel(mode="all")["id"])
    fixed = read_train(root, relabel=True)
    assert sorted(fixed.attrs["relabeled"]) == sorted(own["id"])
    own_fixed = apply_relabel(df, path=root / "relabel.csv")
    assert sorted(own_fixed.attrs["relabeled"]) == sorted(own["id"])


# ------------------------------------------------------------------------------------------
# statistics of the plan
# ------------------------------------------------------------------------------------------

def test_scale_counts_keeps_every_cell():
    for n in (1, 5, 11, 12, 13, 20, 37, 300, 2700, 10_001):
        c = synth.scale_counts(synth.DEMOGRAPHICS, n)
        assert sum(c.values()) == n
        if n >= 12:
            assert min(c.values()) >= 1
    assert synth.scale_counts(synth.DEMOGRAPHICS, 2700) == synth.DEMOGRAPHICS
    assert synth.scale_counts(synth.DEMOGRAPHICS, 1) == {k: int(k == ("female", 1)) for k in synth.DEMOGRAPHICS}


@pytest.mark.parametrize("n", [300, 2700])
def test_demographics_follow_the_table(n):
    plan = synth.make_plan(n, 0, seed=11)
    tr = pd.DataFrame(plan["train"])
    total = sum(synth.DEMOGRAPHICS.values())
    cells = tr.groupby(["gender", tr["age"].map(L.age_group)]).size()
    n_mis = len(plan["mislabeled"])
    for (g, grp), real in synth.DEMOGRAPHICS.items():
        want = real / total * n
        assert abs(cells.get((g, grp), 0) - want) <= 1 + n_mis, (g, grp)
    assert tr["age"].between(18, 60).all()
    assert ((tr["age"] == 60) == (tr["age"].map(L.age_group) == 2)).all()
    aged = {m["index"] for m in plan["mislabeled"] if m["change"] == "age"}  # recorded 59, drawn 60+
    young = (tr["age"] < 60) & ~tr["index"].isin(aged)
    assert (tr.loc[young, "drawn_age"] == tr.loc[young, "age"]).all()
    assert tr.loc[tr["age"] == 60, "drawn_age"].between(60, 80).all()
    # mass at the group borders, so that 29/30/31 and 55..59/60 are hard calls
    share = tr["age"].value_counts(normalize=True)
    assert share.get(29, 0) > 0.015 and share.get(30, 0) > 0.015 and share.get(31, 0) > 0.01
    assert share.reindex(range(55, 60)).fillna(0).sum() > 0.08
    assert abs((tr["gender"] == "female").mean() - 0.61) < 0.03


def test_full_size_plan_matches_the_real_counts():
    plan = synth.make_plan(2700, 10, seed=0)
    q = {k: len(v) for k, v in plan["quirks"].items()}
    assert q["png_folders"] == 73 and q["jpeg_folders"] == 51 and q["jpeg_mask5_jpg"] == 3
    assert q["suffixed_ids"] == 41
    mis = plan["mislabeled"]
    assert len(mis) == 15
    assert sorted(m["id"] for m in mis) == sorted(load_relabel(mode="certain")["id"])
    folders = [p["folder"] for p in plan["train"]]
    assert len(set(folders)) == 2700 and len({p["id"] for p in plan["train"]}) == 2700


# ------------------------------------------------------------------------------------------
# determinism, arguments, atomic output
# ------------------------------------------------------------------------------------------

def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    kw = dict(people=8, eval_people=2, image_size=(64, 48), progress=False)
    a = synth.generate(tmp_path / "a", seed=5, workers=1, **kw)
    synth.generate(tmp_path / "b", seed=5, workers=2, **kw)
    assert "MASK_KERAS_LIGHT_IMPORT" not in os.environ  # set for the pool's start only
    ha, hb = _tree_hashes(tmp_path / "a"), _tree_hashes(tmp_path / "b")
    assert ha == hb and len(ha) > 7 * 10
    synth.generate(tmp_path / "c", seed=6, workers=1, **kw)
    hc = _tree_hashes(tmp_path / "c")
    images = [k for k in ha if k.endswith((".jpg", ".jpeg", ".png")) and "/._" not in k]
    assert sum(ha[k] != hc.get(k) for k in images) == len(images)
    # a previous synthetic set is replaced in place, with the same bytes for the same seed
    b = synth.generate(tmp_path / "a", seed=5, workers=1, **kw)
    assert _tree_hashes(tmp_path / "a") == ha and b["mislabeled"] == a["mislabeled"]
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "c"]


def test_render_workers_import_the_package_without_keras():
    """What a spawned render worker imports (MASK_KERAS_LIGHT_IMPORT, set by generate around its pool):
    numpy, PIL and the renderer, not Keras or JAX (~8 s a worker otherwise)."""
    import subprocess
    import sys

    code = ("import sys; from mask_keras.data.synth.render import render_task; "
            "heavy = [m for m in ('keras', 'jax', 'tensorflow') if m in sys.modules]; assert not heavy, heavy")
    env = {**os.environ, "MASK_KERAS_LIGHT_IMPORT": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("kwargs, match", [
    (dict(people=0), "people"), (dict(people=-3), "people"), (dict(people=2.5), "people"),
    (dict(people=True), "people"), (dict(eval_people=-1), "eval_people"), (dict(seed=-1), "seed"),
    (dict(image_size=(10, 10)), "image_size"), (dict(image_size=(512,)), "image_size"),
    (dict(image_size="big"), "image_size"), (dict(image_size=(100, 1000)), "image_size"),
    (dict(image_size=(128.0, 96)), "image_size"), (dict(workers=0), "workers"),
])
def test_bad_arguments_raise(tmp_path, kwargs, match):
    args = dict(people=2, eval_people=0, image_size=(64, 48), workers=1, progress=False) | kwargs
    with pytest.raises(ValueError, match=match):
        synth.generate(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


def test_refuses_foreign_output_and_cleans_up_after_a_failure(tmp_path, monkeypatch):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        synth.generate(foreign, people=2, eval_people=0, image_size=(64, 48), progress=False)
    assert os.listdir(foreign) == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        synth.generate(tmp_path / "file", people=2, eval_people=0, image_size=(64, 48), progress=False)

    calls = []
    from mask_keras.data.synth import write as synth_write

    real = synth_write.render_task

    def dying(task):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(synth_write, "render_task", dying)
    with pytest.raises(KeyboardInterrupt):
        synth.generate(tmp_path / "half", people=5, eval_people=0, image_size=(64, 48), workers=1, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["file", "mine"]  # neither OUT nor OUT.tmp-* is left
    # an empty directory is fine
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(synth_write, "render_task", real)
    s = synth.generate(tmp_path / "empty", people=1, eval_people=0, image_size=(64, 48), progress=False)
    assert s["images"] == 7 and len(read_train(tmp_path / "empty")) == 7


# ------------------------------------------------------------------------------------------
# the pixels carry the labels: learnable, but not trivially
# ------------------------------------------------------------------------------------------

def _features(path) -> np.ndarray:
    """16x12 colour pixels plus a 16x12 map of skin-coloured pixels (hue/saturation rule)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB").resize((48, 64), Image.BILINEAR)
    hsv = np.asarray(im.convert("HSV"), np.float32) / 255
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    skin = np.exp(-((h - 0.06) / 0.035) ** 2) * ((s > 0.12) & (s < 0.6) & (v > 0.35))
    skin = skin.reshape(16, 4, 12, 4).mean(axis=(1, 3))
    rgb = np.asarray(im.resize((12, 16), Image.BILINEAR), np.float32) / 255
    return np.concatenate([skin.ravel(), rgb.ravel()])


def _linear_probe(root):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    df = read_train(root)
    bad = {m["profile"] for m in json.loads((root / "synth_meta.json").read_text())["mislabeled"]}
    df = df[~df["profile"].isin(bad)].reset_index(drop=True)
    X = np.stack([_features(p) for p in df["path"]])
    people = np.array(sorted(df["profile"].unique()))
    test_people = set(np.random.default_rng(0).choice(people, len(people) // 3, replace=False))
    te = df["profile"].isin(test_people).to_numpy()
    scores = {}
    for task in ("mask", "gender", "age_group"):
        y = df[task].to_numpy()
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=500))
        clf.fit(X[~te], y[~te])
        p = clf.predict(X[te])
        majority = np.bincount(y[te]).max() / te.sum()
        scores[task] = (float((p == y[te]).mean()), float(balanced_accuracy_score(y[te], p)), float(majority))
    return scores


def test_a_linear_model_learns_the_labels_from_pixels(tmp_path):
    """Held-out people; a linear model on 16x12 pixels: mask is learnt well, gender and age only partly."""
    root = tmp_path / "learn"
    synth.generate(root, people=300, eval_people=0, seed=1, image_size=SMALL, workers=1, progress=False)
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    with threadpool_limits(1):  # BLAS threads only fight each other on a small shared machine
        scores = _linear_probe(root)  # (accuracy, balanced accuracy, majority share) per task
    acc, bal, majority = scores["mask"]
    assert acc >= 0.88 and bal >= 0.75, scores  # chance: 0.71 (5:1:1), balanced 0.33
    acc, bal, majority = scores["gender"]
    assert bal >= 0.6 and acc <= 0.97 and bal <= 0.97, scores  # balanced chance 0.5
    acc, bal, majority = scores["age_group"]
    assert bal >= 0.38 and acc <= 0.97, scores  # balanced chance 0.33


def _cues(gender: int, age: int, n: int = 300) -> dict[str, np.ndarray]:
    keys = ("hair_len", "brow_w", "jaw", "shoulder", "neck_w", "wrinkle", "grey", "bags")
    out = {k: [] for k in keys + ("width",)}
    for i in range(n):
        P = synth.person_params(np.random.default_rng([gender, age, i]), gender, age, 512, 384)
        for k in keys:
            out[k].append(P[k])
        out["width"].append(P["a"] / P["b"])
    return {k: np.asarray(v, float) for k, v in out.items()}


def _separation(x, y) -> float:
    """|mean difference| in pooled standard deviations (d')."""
    return abs(x.mean() - y.mean()) / np.sqrt((x.var() + y.var()) / 2 + 1e-12)


def test_cues_overlap_so_no_single_one_decides():
    male, female = _cues(0, 35), _cues(1, 35)
    for k in ("hair_len", "brow_w", "jaw", "shoulder", "neck_w", "width"):
        d = _separation(male[k], female[k])
        assert 0.5 <= d <= 2.5, (k, d)  # each gender cue helps, none decides alone
    # age cues follow the age number: neighbours across a border are nearly alike, decades apart are not
    for k in ("wrinkle", "grey", "bags"):
        assert _separation(_cues(1, 29)[k], _cues(1, 31)[k]) < 0.6, k
    for k in ("wrinkle", "bags"):
        assert _separation(_cues(1, 20)[k], _cues(1, 55)[k]) > 2.0, k
    assert _separation(_cues(0, 58)["grey"], _cues(0, 60)["grey"]) < 0.6
    assert _cues(0, 70)["grey"].mean() > _cues(0, 50)["grey"].mean() > _cues(0, 30)["grey"].mean()
