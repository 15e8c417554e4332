"""Results by group and bootstrap intervals (mask_keras.groups), against scikit-learn and scipy."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from mask_keras import labels as L
from mask_keras.groups import bootstrap_ci, group_scores, slice_scores, weighted_macro_f1


def _labels(n, seed, noise=0.3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 18, n)
    p = np.where(rng.random(n) < noise, rng.integers(0, 18, n), y)
    return y, p


def test_every_group_score_is_scikit_learn_on_that_groups_images():
    y, p = _labels(600, 0)
    g = group_scores(y, p)
    m, gen, age = L.decode(y)
    pm, pg, pa = L.decode(p)
    assert list(g["groups"]) == ["male/<30", "male/30-59", "male/>=60", "female/<30", "female/30-59", "female/>=60"]
    for gi, gname in enumerate(("male", "female")):
        for ai, aname in enumerate(("<30", "30-59", ">=60")):
            sel = (gen == gi) & (age == ai)
            row = g["groups"][f"{gname}/{aname}"]
            assert row["n"] == sel.sum()
            assert row["accuracy"] == pytest.approx(accuracy_score(y[sel], p[sel]), abs=5e-5)
            for t, a, b in (("mask", m, pm), ("gender", gen, pg), ("age", age, pa)):
                assert row[f"f1_{t}"] == pytest.approx(f1_score(a[sel], b[sel], average="macro"), abs=5e-5)
    acc = {k: v["accuracy"] for k, v in g["groups"].items()}
    assert g["worst_group"] == min(acc, key=acc.get)
    assert g["group_gap"] == pytest.approx(max(acc.values()) - min(acc.values()), abs=1e-4)
    # a per-task model: the groups come from the truth given beside its labels
    gt = group_scores(gen, pg, "gender", gender=gen, age=age)
    sel = (gen == 1) & (age == 2)
    assert gt["groups"]["female/>=60"]["accuracy"] == pytest.approx(accuracy_score(gen[sel], pg[sel]), abs=5e-5)
    assert set(gt["groups"]["female/>=60"]) == {"n", "accuracy", "f1_gender"}
    with pytest.raises(ValueError, match="pass them"):
        group_scores(gen, pg, "gender")
    # a group without images: counted 0, no scores, not the worst
    keep = ~((gen == 0) & (age == 2))
    g = group_scores(y[keep], p[keep])
    assert g["groups"]["male/>=60"] == {"n": 0, "accuracy": None, "f1_mask": None, "f1_gender": None, "f1_age": None}
    assert g["worst_group"] != "male/>=60"


def test_slices_are_the_task_f1_on_each_cell():
    y, p = _labels(500, 1)
    s = slice_scores(y, p)
    m, gen, age = L.decode(y)
    _, pg, pa = L.decode(p)
    sel = (m == 1) & (gen == 1)
    assert s["f1_age_by_mask_gender"]["incorrect/female"] == pytest.approx(
        f1_score(age[sel], pa[sel], average="macro"), abs=5e-5)
    sel = (m == 2) & (age == 2)
    assert s["f1_gender_by_mask_age"]["not_wear/>=60"] == pytest.approx(
        f1_score(gen[sel], pg[sel], average="macro"), abs=5e-5)


def test_weighted_macro_f1_is_scikit_learn_on_the_repeated_rows():
    y, p = _labels(80, 2, noise=0.5)
    rng = np.random.default_rng(3)
    w = rng.integers(0, 4, (5, len(y)))
    got = weighted_macro_f1(y, p, w, 18)
    for r in range(5):
        rows = np.repeat(np.arange(len(y)), w[r])
        assert got[r] == pytest.approx(f1_score(y[rows], p[rows], average="macro", zero_division=0), abs=1e-12)


def test_bootstrap_interval_is_scipys_percentile_interval():
    from scipy.stats import bootstrap

    y, p = _labels(400, 4)
    ci = bootstrap_ci(y, p)
    ref = bootstrap((y, p), lambda a, b: f1_score(a, b, average="macro", zero_division=0), paired=True,
                    vectorized=False, n_resamples=1000, method="percentile", random_state=0).confidence_interval
    assert ci["resampled"] == "images" and ci["n_resamples"] == 1000
    # two independent sets of 1,000 resamples: the ends agree to Monte Carlo noise
    assert ci["macro_f1"][0] == pytest.approx(ref.low, abs=0.015) and ci["macro_f1"][1] == pytest.approx(ref.high, abs=0.015)
    full = f1_score(y, p, average="macro")
    for k in ("macro_f1", "f1_mask", "f1_gender", "f1_age"):
        assert ci[k][0] < ci[k][1]
    assert ci["macro_f1"][0] < full < ci["macro_f1"][1]
    assert bootstrap_ci(y, p) == ci  # seeded


def test_people_are_resampled_with_all_their_photos():
    # 40 people with 7 photos each; each person's photos are all right or all wrong, so the
    # spread between people is what the interval must show: resampling the 280 photos as if
    # independent understates it
    rng = np.random.default_rng(5)
    person = np.repeat(np.arange(40), 7)
    y = rng.integers(0, 18, 280)
    wrong = rng.random(40) < 0.4
    p = np.where(wrong[person], (y + 1) % 18, y)
    by_person = bootstrap_ci(y, p, units=person)
    by_image = bootstrap_ci(y, p)
    assert by_person["resampled"] == "people"
    width = (lambda c: c["macro_f1"][1] - c["macro_f1"][0])
    assert width(by_person) > 1.5 * width(by_image)
