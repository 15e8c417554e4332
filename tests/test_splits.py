"""Splits by person, stratified on gender x age group (mask_keras.data.splits)."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from mask_keras import labels as L
from mask_keras.data.layout import with_labels
from mask_keras.data.splits import (SplitWarning, add_folds, add_holdout, fold_summary, person_table,
                                    select_fold, subsample_people, train_val_split)

#: people per (gender, age_group) in the real train set, divided by 10 (mission.md)
REAL_GROUPS = {(0, 0): 55, (0, 1): 41, (0, 2): 8, (1, 0): 73, (1, 1): 82, (1, 2): 11}
AGES = {0: 24, 1: 44, 2: 60}


def image_table(groups=REAL_GROUPS, seed=0) -> pd.DataFrame:
    """An in-memory image table like read_train's (7 rows per person), shuffled ids."""
    rng = np.random.RandomState(seed)
    rows = []
    ids = rng.permutation(sum(groups.values())) + 1
    k = 0
    for (g, a), n in groups.items():
        for _ in range(n):
            pid = f"{ids[k]:06d}"
            k += 1
            prof = f"{pid}_{'male' if g == 0 else 'female'}_Asian_{AGES[a]}"
            for stem, m in L.MASK_STEMS.items():
                rows.append((prof, pid, g, "Asian", AGES[a], stem, f"/x/{prof}/{stem}.jpg", int(m)))
    df = pd.DataFrame(rows, columns=["profile", "id", "gender", "race", "age", "stem", "path", "mask"])
    return with_labels(df).sort_values(["profile", "stem"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def table():
    return image_table()


def people_of(t):
    return set(t["profile"])


def strat_shares(t):
    p = person_table(t)
    return p["strat"].value_counts(normalize=True).sort_index()


def test_person_table(table):
    p = person_table(table)
    assert len(p) == sum(REAL_GROUPS.values())
    assert p["profile"].is_monotonic_increasing and p["profile"].is_unique
    assert (p["n_images"] == 7).all()
    assert set(p["strat"]) == {f"{g}_{a}" for g, a in REAL_GROUPS}
    assert p.groupby("strat").size().to_dict() == {f"{g}_{a}": n for (g, a), n in REAL_GROUPS.items()}


def test_person_table_rejects_inconsistent_person(table):
    t = table.copy()
    t.loc[0, "gender"] = 1 - t.loc[0, "gender"]
    with pytest.raises(ValueError, match="disagree"):
        person_table(t)


@pytest.mark.parametrize("bad", ["profile", "gender", "age_group"])
def test_missing_columns_clear_error(table, bad):
    with pytest.raises(ValueError, match=rf"lacks column\(s\) \['{bad}'\]"):
        add_holdout(table.drop(columns=[bad]))
    with pytest.raises(ValueError, match=bad):
        add_folds(table.drop(columns=[bad]), 3)


def test_holdout_by_person_and_stratified(table):
    t = add_holdout(table, val_ratio=0.2, seed=0)
    assert set(t["fold"]) == {0, 1}
    assert (t.groupby("profile")["fold"].nunique() == 1).all()  # a person on one side only
    train, val = select_fold(t, 1)
    assert not people_of(train) & people_of(val)
    assert people_of(train) | people_of(val) == people_of(table)
    assert len(train) + len(val) == len(table)
    n = sum(REAL_GROUPS.values())
    assert len(people_of(val)) == round(0.2 * n)
    # every stratum gets its fair share to within one person
    pv = person_table(val).groupby("strat").size()
    for (g, a), size in REAL_GROUPS.items():
        assert abs(pv.get(f"{g}_{a}", 0) - 0.2 * size) <= 1
    # and the class ratios of the images are preserved
    ref = table["label"].value_counts(normalize=True)
    got = val["label"].value_counts(normalize=True).reindex(ref.index, fill_value=0)
    assert np.abs(got - ref).max() < 0.02


def test_holdout_deterministic_and_row_order_free(table):
    a = add_holdout(table, 0.25, seed=7)
    b = add_holdout(table, 0.25, seed=7)
    pd.testing.assert_frame_equal(a, b)
    shuffled = table.sample(frac=1.0, random_state=123)
    c = add_holdout(shuffled, 0.25, seed=7)
    assert c.index.equals(shuffled.index)  # rows stay where they were
    fa = a.groupby("profile")["fold"].first()
    fc = c.groupby("profile")["fold"].first()
    pd.testing.assert_series_equal(fa, fc.loc[fa.index])
    d = add_holdout(table, 0.25, seed=8)
    assert not d.groupby("profile")["fold"].first().equals(fa)  # a different seed, a different split


@pytest.mark.parametrize("k", [2, 5])
def test_kfold_every_person_in_exactly_one_val_fold(table, k):
    t = add_folds(table, k=k, seed=3)
    assert sorted(t["fold"].unique()) == list(range(k))
    assert (t.groupby("profile")["fold"].nunique() == 1).all()
    seen = []
    for f in range(k):
        train, val = select_fold(t, f)
        assert not people_of(train) & people_of(val)
        assert people_of(train) | people_of(val) == people_of(table)
        seen += sorted(people_of(val))
    assert sorted(seen) == sorted(people_of(table))  # each person validated exactly once
    s = fold_summary(t)
    assert s.values.sum() == len(people_of(table))
    sizes = s.sum(axis=1)
    assert sizes.max() - sizes.min() <= 1
    assert (s.max(axis=0) - s.min(axis=0)).max() <= 1  # per stratum: fair share +- 1
    ref = strat_shares(table)
    for f in range(k):
        got = strat_shares(t[t["fold"] == f]).reindex(ref.index, fill_value=0)
        assert np.abs(got - ref).max() < 0.05


def test_kfold_matches_sklearn_stratification_quality(table):
    """Our deal is at least as balanced as sklearn's StratifiedKFold on the person table."""
    from sklearn.model_selection import StratifiedKFold

    p = person_table(table)
    skf = StratifiedKFold(5, shuffle=True, random_state=0)
    sk = pd.crosstab(np.concatenate([np.full(len(v), i) for i, (_, v) in enumerate(skf.split(p, p["strat"]))]),
                     np.concatenate([p["strat"].to_numpy()[v] for _, v in skf.split(p, p["strat"])]))
    ours = fold_summary(add_folds(table, 5, seed=0))
    assert (ours.max(axis=0) - ours.min(axis=0)).max() <= (sk.max(axis=0) - sk.min(axis=0)).max()


def test_kfold_deterministic_and_row_order_free(table):
    a = add_folds(table, 4, seed=1).groupby("profile")["fold"].first()
    b = add_folds(table.sample(frac=1.0, random_state=5), 4, seed=1).groupby("profile")["fold"].first()
    pd.testing.assert_series_equal(a, b.loc[a.index])


def test_kfold_small_stratum_warns_not_crashes():
    t = image_table({(0, 0): 6, (0, 1): 5, (0, 2): 1, (1, 0): 6, (1, 1): 7, (1, 2): 2})
    with pytest.warns(SplitWarning, match="fewer people than folds"):
        a = add_folds(t, 5, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SplitWarning)
        b = add_folds(t.iloc[::-1], 5, seed=0)
    assert (a.groupby("profile")["fold"].first() == b.groupby("profile")["fold"].first()).all()
    assert sorted(a["fold"].unique()) == [0, 1, 2, 3, 4]
    s = fold_summary(a)
    assert (s.max(axis=0) - s.min(axis=0)).max() <= 1


def test_validation_errors(table):
    for bad in (0, 1, 0.0, 1.0, -0.1, 1.5, "0.2", True):
        with pytest.raises(ValueError, match="val_ratio"):
            add_holdout(table, bad)
    for bad in (0, 1, -2, 2.0, True):
        with pytest.raises(ValueError, match="k"):
            add_folds(table, bad)
    with pytest.raises(ValueError, match="at least"):
        add_folds(table, 10_000)
    with pytest.raises(ValueError, match="seed"):
        add_holdout(table, 0.2, seed=-1)
    with pytest.raises(ValueError, match="empty"):
        add_holdout(table.iloc[:0])
    with pytest.raises(ValueError, match="at least 2 people"):
        add_holdout(table[table["profile"] == table["profile"].iloc[0]])
    with pytest.raises(ValueError, match="no 'fold' column"):
        select_fold(table, 0)
    with pytest.raises(ValueError, match=r"not in the table's folds \[0, 1\]"):
        select_fold(add_holdout(table), 2)
    with pytest.raises(ValueError, match="fold must be in 0..4"):
        train_val_split(table, folds=5, fold=5)
    with pytest.raises(TypeError, match="DataFrame"):
        person_table([1, 2])


def test_train_val_split_maps_config(table):
    tr, va = train_val_split(table, val_ratio=0.2, seed=4)
    h_tr, h_va = select_fold(add_holdout(table, 0.2, seed=4), 1)
    pd.testing.assert_frame_equal(va, h_va)
    tr, va = train_val_split(table, folds=3, fold=2, seed=4)
    k_tr, k_va = select_fold(add_folds(table, 3, seed=4), 2)
    pd.testing.assert_frame_equal(tr, k_tr)
    assert (va["fold"] == 2).all()


def test_tiny_holdout_keeps_both_sides_nonempty():
    t = image_table({(0, 0): 1, (1, 1): 1})
    for r in (0.01, 0.99):
        tr, va = select_fold(add_holdout(t, r), 1)
        assert len(people_of(tr)) == 1 and len(people_of(va)) == 1


def test_subsample_people(table):
    s = subsample_people(table, 60, seed=0)
    assert len(people_of(s)) == 60
    assert (s.groupby("profile").size() == 7).all()  # whole people only
    assert people_of(s) <= people_of(table)
    n = sum(REAL_GROUPS.values())
    ps = person_table(s).groupby("strat").size()
    for (g, a), size in REAL_GROUPS.items():
        assert abs(ps.get(f"{g}_{a}", 0) - 60 * size / n) <= 1
    # row order of the input kept, deterministic, independent of row order
    assert s["profile"].is_monotonic_increasing
    assert people_of(subsample_people(table.sample(frac=1.0, random_state=2), 60, seed=0)) == people_of(s)
    assert people_of(subsample_people(table, 60, seed=1)) != people_of(s)
    # no cap / cap above the population: everything
    assert len(subsample_people(table, None)) == len(table)
    assert len(subsample_people(table, 10_000)) == len(table)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="max_people"):
            subsample_people(table, bad)


def test_split_on_read_train_table(tmp_path):
    """The real reader's table splits the same way (suffixed ids, strings in profile)."""
    from _layout_factory import make_layout, stratified_people

    from mask_keras.data import read_train

    lay = make_layout(tmp_path, stratified_people(2) + [("001498-1", "male", 45)], n_eval=0, size=(4, 4))
    t = read_train(lay.root)
    tr, va = train_val_split(t, val_ratio=0.3, seed=0)
    assert not people_of(tr) & people_of(va)
    assert len(people_of(tr)) + len(people_of(va)) == 13
    assert len(people_of(va)) == round(0.3 * 13)
