import numpy as np
import pytest

from mask_keras import ensemble as E
from mask_keras import labels as L


def _rand_probs(rng, n, c):
    x = rng.random((n, c)) + 1e-3
    return x / x.sum(axis=1, keepdims=True)


# ---- combine ------------------------------------------------------------------------
def test_combine_one_sample_by_hand():
    pm, pg, pa = [[0.1, 0.7, 0.2]], [[0.4, 0.6]], [[0.2, 0.3, 0.5]]
    p18 = E.combine_tasks(pm, pg, pa)
    assert p18.shape == (1, 18)
    assert np.argmax(p18[0]) == 11 == 1 * 6 + 1 * 3 + 2
    assert p18[0, 11] == pytest.approx(0.7 * 0.6 * 0.5)
    # every entry follows labels.encode
    for m in range(3):
        for g in range(2):
            for a in range(3):
                assert p18[0, L.encode(m, g, a)] == pytest.approx(pm[0][m] * pg[0][g] * pa[0][a])
    assert p18.sum() == pytest.approx(1.0)
    assert E.combine_argmax(pm, pg, pa).tolist() == [11]


def test_argmax_of_product_equals_combined_argmaxes():
    rng = np.random.default_rng(0)
    n = 500
    pm, pg, pa = _rand_probs(rng, n, 3), _rand_probs(rng, n, 2), _rand_probs(rng, n, 3)
    np.testing.assert_array_equal(E.combine_tasks(pm, pg, pa).argmax(1), E.combine_argmax(pm, pg, pa))
    # also with ties (rounded to a coarse grid) numpy's first-index rule agrees
    pm, pg, pa = (np.round(p * 4) / 4 for p in (pm, pg, pa))
    ok = (pm.max(1) > 0) & (pg.max(1) > 0) & (pa.max(1) > 0)
    np.testing.assert_array_equal(E.combine_tasks(pm, pg, pa).argmax(1)[ok], E.combine_argmax(pm, pg, pa)[ok])


def test_combine_argmax_accepts_labels():
    assert E.combine_argmax(np.array([2, 0]), np.array([1, 0]), np.array([0, 2])).tolist() == [15, 2]
    with pytest.raises(ValueError, match="0..1"):
        E.combine_argmax(np.array([0]), np.array([2]), np.array([0]))


def test_combine_errors():
    with pytest.raises(ValueError, match="p_gender.*2 classes"):
        E.combine_tasks(np.ones((2, 3)) / 3, np.ones((2, 3)) / 3, np.ones((2, 3)) / 3)
    with pytest.raises(ValueError, match="row counts"):
        E.combine_tasks(np.ones((2, 3)) / 3, np.ones((3, 2)) / 2, np.ones((2, 3)) / 3)
    with pytest.raises(ValueError, match="negative"):
        E.combine_tasks([[-1.0, 1.0, 1.0]], [[0.5, 0.5]], [[0.2, 0.3, 0.5]])


def test_split_multi_marginals_and_inverse():
    rng = np.random.default_rng(1)
    p18 = _rand_probs(rng, 50, 18)
    pm, pg, pa = E.split_multi(p18)
    assert pm.shape == (50, 3) and pg.shape == (50, 2) and pa.shape == (50, 3)
    for p in (pm, pg, pa):
        np.testing.assert_allclose(p.sum(1), 1.0)
    # marginal of mask by hand: classes with c // 6 == m
    np.testing.assert_allclose(pm[:, 1], p18[:, 6:12].sum(1))
    np.testing.assert_allclose(pg[:, 1], p18[:, [3, 4, 5, 9, 10, 11, 15, 16, 17]].sum(1))
    np.testing.assert_allclose(pa[:, 2], p18[:, 2::3].sum(1))
    # split inverts combine for independent factors
    fm, fg, fa = _rand_probs(rng, 50, 3), _rand_probs(rng, 50, 2), _rand_probs(rng, 50, 3)
    for got, want in zip(E.split_multi(E.combine_tasks(fm, fg, fa)), (fm, fg, fa)):
        np.testing.assert_allclose(got, want)


def test_18way_argmax_can_differ_from_marginal_argmax():
    # a non-factorising 18-way output: the most likely class is not the per-task argmaxes
    p18 = np.zeros((1, 18))
    p18[0, [0, 10, 16]] = [0.4, 0.3, 0.3]  # 10 and 16 share gender 1, age 1 -> marginals favour them
    assert p18.argmax(1)[0] == 0
    assert E.combine_argmax(*E.split_multi(p18))[0] == L.encode(0, 1, 1)


def test_from_multihead():
    pm, pg, pa = [[0.1, 0.7, 0.2]], [[0.4, 0.6]], [[0.2, 0.3, 0.5]]
    want = E.combine_tasks(pm, pg, pa)
    np.testing.assert_allclose(E.from_multihead([pm, pg, pa], combine=True), want)
    np.testing.assert_allclose(E.from_multihead({"age": pa, "mask": pm, "gender": pg}, combine=True), want)
    np.testing.assert_allclose(
        E.from_multihead({"age_out": pa, "mask_out": pm, "gender_out": pg}, combine=True), want)
    logits = [np.log(pm), np.log(pg) + 3.0, np.log(pa)]
    np.testing.assert_allclose(E.from_multihead(logits, from_logits=True, combine=True), want)
    # default: the three task arrays, in the order mask, gender, age (what callers unpack)
    tasks = E.from_multihead({"age": pa, "mask": pm, "gender": pg})
    assert [t.shape for t in tasks] == [(1, 3), (1, 2), (1, 3)]
    for got, exp in zip(tasks, (pm, pg, pa)):
        np.testing.assert_allclose(got, exp)
    with pytest.raises(ValueError, match="'gender' output"):
        E.from_multihead({"mask": pm, "age": pa, "x": pg})
    with pytest.raises(ValueError, match="list of 3"):
        E.from_multihead([pm, pg])
    with pytest.raises(ValueError, match="gender head.*2 classes"):
        E.from_multihead([pm, pa, pa])


# ---- soft vote / TTA ----------------------------------------------------------------
def test_soft_vote_weighted_mean_by_hand():
    a = np.array([[0.8, 0.2], [0.1, 0.9]])
    b = np.array([[0.2, 0.8], [0.5, 0.5]])
    np.testing.assert_allclose(E.soft_vote([a, b]), [[0.5, 0.5], [0.3, 0.7]])
    # weights 3:1 -> 0.75 a + 0.25 b
    np.testing.assert_allclose(E.soft_vote([a, b], weights=[3, 1]), [[0.65, 0.35], [0.2, 0.8]])
    np.testing.assert_allclose(E.soft_vote([a, b], weights=[1, 0]), a)
    np.testing.assert_allclose(E.soft_vote(np.stack([a, b])), [[0.5, 0.5], [0.3, 0.7]])


def test_soft_vote_errors():
    a = np.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="same shape"):
        E.soft_vote([a, np.full((3, 3), 1 / 3)])
    with pytest.raises(ValueError, match="one weight per model"):
        E.soft_vote([a, a], weights=[1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        E.soft_vote([a, a], weights=[1, -1])
    with pytest.raises(ValueError, match="all be zero"):
        E.soft_vote([a, a], weights=[0, 0])
    with pytest.raises(ValueError, match="empty"):
        E.soft_vote([])


def test_tta_mean():
    rng = np.random.default_rng(2)
    views = [_rand_probs(rng, 4, 18) for _ in range(3)]
    np.testing.assert_allclose(E.tta_mean(views), (views[0] + views[1] + views[2]) / 3)


# ---- hard vote ----------------------------------------------------------------------
def test_hard_vote_majority():
    votes = [np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1]), np.array([1, 1, 0, 1])]
    assert E.hard_vote(votes).tolist() == [0, 1, 2, 1]
    # probability arrays vote for their argmax
    probs = [np.eye(3)[v] * 0.8 + 0.2 / 3 for v in votes]
    assert E.hard_vote(probs).tolist() == [0, 1, 2, 1]
    # weights: the third model outweighs the other two
    assert E.hard_vote(votes, weights=[1, 1, 3]).tolist() == [1, 1, 0, 1]


def test_hard_vote_tie_rules():
    # 3 models, each row a three-way tie
    p1 = np.array([[0.5, 0.1, 0.4], [0.2, 0.3, 0.5]])  # votes 0, 2
    p2 = np.array([[0.1, 0.6, 0.3], [0.6, 0.3, 0.1]])  # votes 1, 0
    p3 = np.array([[0.0, 0.4, 0.6], [0.3, 0.6, 0.1]])  # votes 2, 1
    probs = [p1, p2, p3]
    # mean probs: row0 [0.2, 0.367, 0.433] -> 2; row1 [0.367, 0.4, 0.233] -> 1
    assert E.hard_vote(probs).tolist() == [2, 1]
    assert E.hard_vote(probs, tie="mean_prob").tolist() == [2, 1]
    assert E.hard_vote(probs, tie="lowest").tolist() == [0, 0]
    assert E.hard_vote(probs, tie="first_model").tolist() == [0, 2]
    # labels only: mean_prob falls back to lowest
    labs = [p.argmax(1) for p in probs]
    assert E.hard_vote(labs).tolist() == [0, 0]
    assert E.hard_vote(labs, tie="first_model").tolist() == [0, 2]
    # a two-way tie among three classes: weights 1, 1, 0 -> models 1 and 2 tie, model 3 ignored
    assert E.hard_vote(probs, weights=[1, 1, 0], tie="first_model").tolist() == [0, 2]
    assert E.hard_vote(probs, weights=[1, 1, 0], tie="lowest").tolist() == [0, 0]
    # mean_prob uses the weights: row0 means (p1+p2)/2 = [0.3, 0.35, 0.35] -> tied 0 vs 1 -> 1
    assert E.hard_vote(probs, weights=[1, 1, 0]).tolist() == [1, 0]
    # float weights that tie only up to rounding are still a tie
    assert E.hard_vote([np.array([0]), np.array([1]), np.array([1])], weights=[0.3, 0.1, 0.2],
                       tie="lowest").tolist() == [0]


def test_hard_vote_errors():
    with pytest.raises(ValueError, match="unknown tie rule"):
        E.hard_vote([np.array([0])], tie="random")
    with pytest.raises(ValueError, match="different numbers of rows"):
        E.hard_vote([np.array([0, 1]), np.array([0])])
    with pytest.raises(ValueError, match="out of range"):
        E.hard_vote([np.full((1, 3), 1 / 3), np.array([5])])
    with pytest.raises(ValueError, match="integers"):
        E.hard_vote([np.array([0.5])])


def test_stacked_inputs():
    a = np.array([[0.8, 0.2], [0.1, 0.9]])
    with pytest.raises(ValueError, match="stacked"):
        E.soft_vote(a)  # one (N, C) array is not a list of models
    assert E.hard_vote(np.array([[0, 1], [0, 1], [1, 1]])).tolist() == [0, 1]
