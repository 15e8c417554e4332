"""Oversampling of >=60 faces, class-balanced sampling, class weights."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mask_keras import labels as L
from mask_keras import sampling as S
from mask_keras._tf import tf


def _people_table(n_young=6, n_old=4):
    """7 rows per person, like the real layout; old people have age_group 2."""
    rows = []
    for p in range(n_young + n_old):
        a = 2 if p >= n_young else p % 2
        g = p % 2
        for stem, m in L.MASK_STEMS.items():
            rows.append(dict(profile=f"{p:06d}_{'female' if g else 'male'}_Asian_{60 if a == 2 else 25}",
                             stem=stem, path=f"/x/{p}/{stem}.jpg", mask=int(m), gender=g, age_group=a,
                             label=L.encode(int(m), g, a)))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("factor", [1.0, 2.0, 2.5, 3.25, 1.75])
def test_oversample_old_realised_ratio_is_exact(factor):
    t = _people_table(n_young=6, n_old=4)
    out = S.oversample_old(t, factor, seed=0)
    old_before = (t.age_group == 2).sum()
    old_after = (out.age_group == 2).sum()
    assert old_after / old_before == factor
    assert (out.age_group != 2).sum() == (t.age_group != 2).sum()
    # whole people are repeated: each old person's 7 images appear equally often
    per_person = out[out.age_group == 2].groupby("profile").stem.value_counts().unstack()
    assert (per_person.nunique(axis=1) == 1).all()
    counts = per_person.iloc[:, 0].to_numpy()
    assert set(counts) <= {int(np.floor(factor)), int(np.floor(factor)) + 1}
    pd.testing.assert_frame_equal(out, S.oversample_old(t, factor, seed=0))  # deterministic


def test_oversample_old_remainder_depends_on_seed_and_not_row_order():
    t = _people_table(n_young=2, n_old=8)
    a = S.old_repeat_counts(t, 1.5, seed=0)
    shuffled = t.sample(frac=1, random_state=1)
    b = S.old_repeat_counts(shuffled, 1.5, seed=0)
    np.testing.assert_array_equal(a[shuffled.index.to_numpy()], b)
    picks = {tuple(S.old_repeat_counts(t, 1.5, seed=s)) for s in range(6)}
    assert len(picks) > 1


def test_oversample_old_validation():
    t = _people_table()
    with pytest.raises(ValueError, match=">= 1"):
        S.oversample_old(t, 0.5)
    np.testing.assert_array_equal(S.old_repeat_counts(t[t.age_group != 2], 3.0), 1)


def test_balanced_dataset_ratios_near_uniform():
    per_class = [tf.data.Dataset.from_tensors(c).repeat() for c in range(4)]
    draws = np.array([int(v) for v in S.balanced_dataset(per_class, seed=0).take(2000)])
    freq = np.bincount(draws, minlength=4) / 2000
    np.testing.assert_allclose(freq, 0.25, atol=0.04)


def test_balanced_sampling_through_make_dataset(tmp_path):
    from mask_keras import pipeline as P
    from mask_keras.config import Config, PreprocessConfig

    files = []
    for i in range(4):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.full((16, 12, 3), 40 * i, np.uint8)).save(files[-1])
    # 180 female : 20 male
    g = np.r_[np.ones(180, int), np.zeros(20, int)]
    t = pd.DataFrame({"path": [files[i % 4] for i in range(200)], "mask": 0, "gender": g, "age_group": 0})
    cfg = Config()
    cfg.preprocess = PreprocessConfig(image_size=(8, 8), crop="none")
    cfg.train = dataclasses.replace(cfg.train, batch_size=50, verbose=0)
    cfg.augment = dataclasses.replace(cfg.augment, preset="none")
    cfg.sampling = dataclasses.replace(cfg.sampling, balance="class")
    ds, ds_info = P.make_dataset(t, cfg, training=True, task="gender")
    assert ds_info.num_steps == 4
    y = np.concatenate([b[1].numpy().argmax(1) for _ in range(5) for b in ds])  # 5 epochs, 1000 draws
    assert len(y) == 1000
    assert abs(y.mean() - 0.5) < 0.06
    cfg.sampling = dataclasses.replace(cfg.sampling, balance="none")
    y = np.concatenate([b[1].numpy().argmax(1) for b in P.make_dataset(t, cfg, training=True, task="gender")[0]])
    assert y.mean() == 0.9


def test_class_weights_inverse_frequency():
    from sklearn.utils.class_weight import compute_class_weight

    t = _people_table(n_young=6, n_old=4)
    for task in ("mask", "gender", "age", "multi"):
        cls = S.class_ids(t, task)
        w = S.class_weights(t, task)
        assert w.dtype == np.float32 and len(w) == (18 if task == "multi" else L.TASK_CLASSES[task])
        present = np.unique(cls)
        want = compute_class_weight("balanced", classes=present, y=cls)
        np.testing.assert_allclose(w[present], want, rtol=1e-6)
        np.testing.assert_allclose(w[cls].mean(), 1.0, rtol=1e-5)  # weighted mean over rows is 1
    # mask is 5:1:1 -> weights 7/15, 7/3, 7/3
    np.testing.assert_allclose(S.class_weights(t, "mask"), [7 / 15, 7 / 3, 7 / 3], rtol=1e-6)
    heads = S.class_weights(t, "multihead")
    assert set(heads) == {"mask", "gender", "age"}
    # multi: classes absent from the table get weight 0
    w = S.class_weights(t, "multi")
    assert (w[np.setdiff1d(np.arange(18), S.class_ids(t, "multi"))] == 0).all()


def test_unknown_balance_is_named_wherever_it_enters():
    """One list of balance values (sampling.BALANCES): the stream, the dataset factory's config check."""
    from mask_keras.config import Config, ConfigError

    table = _people_table()
    with pytest.raises(ConfigError, match="unknown balance 'clas'.*did you mean 'class'"):
        S.index_stream(table, "multi", np.ones(len(table), int), balance="clas")
    with pytest.raises(ConfigError, match="unknown sampling.balance 'person'; choose one of: none, class"):
        Config().override(**{"sampling.balance": "person"}).validate()
