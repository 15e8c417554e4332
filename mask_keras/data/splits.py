"""Train/validation splits by person, stratified on gender x age group.

The unit is the person (``profile``), never the image: all 7 images of a person land
on the same side, so validation never sees a face it trained on (the official
baseline's image-level split leaked people). Strata are the person-level
``gender x age_group`` cells (6 of them), so the rare >=60 group is spread evenly.

Everything is deterministic for a seed and independent of the table's row order:
people are sorted by ``profile`` first and shuffled with a seeded
``numpy.random.RandomState`` (whose stream NumPy keeps stable across versions).
Allocation is exact: a hold-out takes ``round(val_ratio * n_people)`` people, shared
between strata by largest remainder; K folds deal each stratum's shuffled people
round-robin (continuing the count from one stratum to the next), so every stratum
and every fold differ by at most one person from their fair share.

Typical use (``DataConfig.folds``/``fold``/``val_ratio`` map onto ``train_val_split``)::

    table = read_train(root)
    train, val = train_val_split(table, val_ratio=0.2, seed=42)          # hold-out
    train, val = train_val_split(table, folds=5, fold=2, seed=42)        # K-fold, fold 2 is val
    table = add_folds(table, k=5, seed=42)                               # or keep the column
    train, val = select_fold(table, 2)
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np
import pandas as pd

#: the person-level columns the strata are built from
STRATA = ("gender", "age_group")
_PERSON_COLUMNS = ("profile", "id", "gender", "age", "age_group")


class SplitWarning(UserWarning):
    """A split could not be fully stratified (a stratum is smaller than the number of folds)."""


def _check_table(table: pd.DataFrame, by) -> None:
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"expected the image table (pandas DataFrame from read_train), got {type(table).__name__}")
    need = list(dict.fromkeys(["profile", *by]))
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise ValueError(f"image table lacks column(s) {missing} needed to split by person; it has "
                         f"{list(table.columns)} (use the table from mask_keras.data.read_train)")
    if table.empty:
        raise ValueError("image table is empty: nothing to split")


def person_table(table: pd.DataFrame, by=STRATA) -> pd.DataFrame:
    """One row per person (sorted by ``profile``): person columns, ``n_images`` and ``strat``.

    ``strat`` is the stratum key, e.g. ``"1_2"`` for female / >=60 with the default ``by``.

    Args:
        table: the image table, one row per image, with ``profile`` and the ``by`` columns
            (e.g. from :func:`mask_keras.data.read_train`).
        by: the person-level columns whose values, joined with ``_``, make the stratum key
            (default :data:`STRATA`: ``gender``, ``age_group``).

    Returns:
        A new DataFrame indexed 0..n_people-1: ``profile``, those of ``id``, ``gender``, ``age``,
        ``age_group`` and ``by`` that ``table`` has (each person's first value), ``n_images``
        (int, the person's rows) and ``strat`` (str).

    Raises:
        TypeError: ``table`` is not a DataFrame.
        ValueError: ``table`` is empty or lacks ``profile`` or a ``by`` column, or a person's
            rows disagree on a ``by`` column.

    Example:
        >>> t = pd.DataFrame({"profile": ["b", "a", "a"], "gender": [1, 0, 0], "age_group": [2, 1, 1]})
        >>> p = person_table(t)
        >>> p["profile"].tolist(), p["n_images"].tolist(), p["strat"].tolist()
        (['a', 'b'], [2, 1], ['0_1', '1_2'])
    """
    by = tuple(by)
    _check_table(table, by)
    cols = [c for c in dict.fromkeys([*_PERSON_COLUMNS, *by]) if c in table.columns]
    g = table.groupby("profile", sort=True)
    nunique = g[list(by)].nunique()
    bad = nunique[(nunique > 1).any(axis=1)]
    if len(bad):
        raise ValueError(f"people with rows that disagree on {list(by)}: {bad.index.tolist()[:10]}; "
                         f"a person has one gender and one age group")
    people = g[[c for c in cols if c != "profile"]].first()
    people["n_images"] = g.size()
    people = people.reset_index()
    people["strat"] = people[list(by)].astype(str).agg("_".join, axis=1)
    return people.sort_values("profile", kind="stable").reset_index(drop=True)


def _strata(people: pd.DataFrame) -> list[np.ndarray]:
    """Row positions of each stratum (strata in sorted key order, people in profile order)."""
    return [np.flatnonzero(people["strat"].to_numpy() == s) for s in sorted(people["strat"].unique())]


def _largest_remainder(sizes: np.ndarray, total: int) -> np.ndarray:
    """Integer counts per stratum summing to ``total``, proportional to ``sizes``."""
    quota = sizes * total / sizes.sum()
    counts = np.floor(quota).astype(int)
    rest = total - counts.sum()
    order = np.argsort(-(quota - counts), kind="stable")  # ties: first stratum in key order
    counts[order[:rest]] += 1
    return counts


def _stratified_pick(people: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    """Boolean mask over ``people``: ``n`` of them, stratified, chosen by ``seed``."""
    rng = np.random.RandomState(seed)
    strata = _strata(people)
    counts = _largest_remainder(np.array([len(s) for s in strata], dtype=float), n)
    pick = np.zeros(len(people), dtype=bool)
    for idx, c in zip(strata, counts):
        pick[rng.permutation(idx)[:c]] = True
    return pick


def _map_back(table: pd.DataFrame, people: pd.DataFrame, col: str, values) -> pd.DataFrame:
    out = table.copy()
    out[col] = out["profile"].map(dict(zip(people["profile"], values))).astype(np.int64)
    return out


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in 0..2**32-1, got {seed!r}")
    return int(seed)


def add_holdout(table: pd.DataFrame, val_ratio: float = 0.2, seed: int = 0, by=STRATA) -> pd.DataFrame:
    """Copy of ``table`` with ``fold``: 0 = train, 1 = validation, chosen by person, stratified.

    ``round(val_ratio * n_people)`` people go to validation (at least 1, at most n-1; Python's
    ``round``, halves to even), shared between the strata by largest remainder.

    Args:
        table: the image table, one row per image, with ``profile`` and the ``by`` columns
            (e.g. from :func:`mask_keras.data.read_train`).
        val_ratio: the fraction of *people* (not images) for validation, strictly between 0 and 1.
        seed: integer in 0..2**32-1 choosing the people; a seed and a set of people give the
            same result whatever the table's row order.
        by: the person-level columns making the strata (default :data:`STRATA`), as in
            :func:`person_table`.

    Returns:
        A copy of ``table`` (same index and row order) with an int64 ``fold`` column: 0 = train,
        1 = validation; all rows of a person share it.

    Raises:
        ValueError: ``val_ratio`` or ``seed`` out of range, fewer than 2 people, or a table
            :func:`person_table` rejects (``TypeError`` when it is not a DataFrame).

    Example:
        >>> t = pd.DataFrame({"profile": [f"p{i}" for i in range(8) for _ in range(2)],
        ...                   "gender": [0] * 8 + [1] * 8, "age_group": [0, 0, 1, 1] * 4})
        >>> h = add_holdout(t, val_ratio=0.25, seed=0)
        >>> sorted(h.loc[h["fold"] == 1, "profile"].unique())  # 2 of the 8 people, with all their images
        ['p1', 'p2']
    """
    if isinstance(val_ratio, bool) or not isinstance(val_ratio, numbers.Real) or not 0 < val_ratio < 1:
        raise ValueError(f"val_ratio must be a number strictly between 0 and 1, got {val_ratio!r}")
    seed = _check_seed(seed)
    people = person_table(table, by)
    n = len(people)
    if n < 2:
        raise ValueError(f"need at least 2 people for a train/validation split, the table has {n}")
    n_val = int(min(n - 1, max(1, round(val_ratio * n))))
    return _map_back(table, people, "fold", _stratified_pick(people, n_val, seed).astype(np.int64))


def add_folds(table: pd.DataFrame, k: int = 5, seed: int = 0, by=STRATA) -> pd.DataFrame:
    """Copy of ``table`` with ``fold`` in 0..k-1 (person-level, stratified K-fold).

    Each stratum's people are shuffled and dealt to the folds round-robin, the deal
    continuing from one stratum to the next, so folds differ in size by at most one
    person and in each stratum by at most one person. A stratum with fewer than ``k``
    people cannot reach every fold: that is allowed (a :class:`SplitWarning` says so).

    Args:
        table: the image table, one row per image, with ``profile`` and the ``by`` columns
            (e.g. from :func:`mask_keras.data.read_train`).
        k: the number of folds, an integer from 2 to the number of people.
        seed: integer in 0..2**32-1 choosing the people; a seed and a set of people give the
            same result whatever the table's row order.
        by: the person-level columns making the strata (default :data:`STRATA`), as in
            :func:`person_table`.

    Returns:
        A copy of ``table`` (same index and row order) with an int64 ``fold`` column in 0..k-1;
        all rows of a person share it.

    Raises:
        ValueError: ``k`` below 2 or above the number of people, ``seed`` out of range, or a
            table :func:`person_table` rejects (``TypeError`` when it is not a DataFrame).

    Example:
        >>> t = pd.DataFrame({"profile": [f"p{i}" for i in range(8) for _ in range(2)],
        ...                   "gender": [0] * 8 + [1] * 8, "age_group": [0, 0, 1, 1] * 4})
        >>> f = add_folds(t, k=2, seed=0)
        >>> fold_summary(f).values.tolist()  # people per fold (rows) x stratum (columns)
        [[1, 1, 1, 1], [1, 1, 1, 1]]
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 2:
        raise ValueError(f"k (number of folds) must be an integer >= 2, got {k!r}; use add_holdout for one split")
    seed = _check_seed(seed)
    people = person_table(table, by)
    if k > len(people):
        raise ValueError(f"k={k} folds need at least {k} people, the table has {len(people)}")
    rng = np.random.RandomState(seed)
    fold = np.empty(len(people), dtype=np.int64)
    small = []
    pos = 0
    for idx in _strata(people):
        if len(idx) < k:
            small.append(f"{people['strat'].iloc[idx[0]]} ({len(idx)} people)")
        fold[rng.permutation(idx)] = (pos + np.arange(len(idx))) % k
        pos += len(idx)
    if small:
        warnings.warn(f"stratified {k}-fold: stratum {', '.join(small)} of {list(by)} has fewer people than "
                      f"folds; some validation folds will have none of them", SplitWarning, stacklevel=2)
    return _map_back(table, people, "fold", fold)


def select_fold(table: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, val)``: validation is the rows with ``fold == fold``, training the rest.

    For :func:`add_holdout` tables the validation fold is 1.

    Args:
        table: a table with a ``fold`` column (from :func:`add_holdout` or :func:`add_folds`).
        fold: the validation fold, one of the values in ``table["fold"]``.

    Returns:
        ``(train, val)`` DataFrames: the rows in their order, index reset, ``fold`` kept.

    Raises:
        ValueError: ``table`` has no ``fold`` column, ``fold`` is not one of its values, or
            ``fold`` holds every row.

    Example:
        >>> train, val = select_fold(pd.DataFrame({"profile": list("abcd"), "fold": [0, 1, 0, 1]}), 1)
        >>> train["profile"].tolist(), val["profile"].tolist()
        (['a', 'c'], ['b', 'd'])
    """
    if "fold" not in table.columns:
        raise ValueError("table has no 'fold' column; call add_holdout or add_folds first")
    folds = sorted(int(f) for f in table["fold"].unique())
    if fold not in folds:
        raise ValueError(f"fold {fold!r} not in the table's folds {folds}")
    is_val = (table["fold"] == fold).to_numpy()
    train = table[~is_val].reset_index(drop=True)
    val = table[is_val].reset_index(drop=True)
    if train.empty:
        raise ValueError(f"fold {fold} holds every row: no training data left")
    return train, val


def train_val_split(table: pd.DataFrame, val_ratio: float = 0.2, folds: int = 0, fold: int = 0,
                    seed: int = 0, by=STRATA) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, val)`` from the DataConfig knobs: hold-out when ``folds`` is 0/1, else K-fold.

    Both returned tables carry the ``fold`` column.

    Args:
        table: the image table, one row per image, with ``profile`` and the ``by`` columns
            (e.g. from :func:`mask_keras.data.read_train`).
        val_ratio: the validation fraction of people for a hold-out (:func:`add_holdout`);
            ignored for K-fold.
        folds: 0 or 1 for a hold-out, K >= 2 for K-fold (:func:`add_folds`).
        fold: the validation fold for K-fold, in 0..folds-1; ignored for a hold-out.
        seed: integer in 0..2**32-1 choosing the people; a seed and a set of people give the
            same result whatever the table's row order.
        by: the person-level columns making the strata (default :data:`STRATA`), as in
            :func:`person_table`.

    Returns:
        ``(train, val)`` as from :func:`select_fold`; ``fold`` is 0/1 for a hold-out, 0..K-1
        for K-fold.

    Raises:
        ValueError: ``folds`` not a non-negative integer, ``fold`` out of range for K-fold, or
            any error of :func:`add_holdout` / :func:`add_folds`.

    Example:
        >>> t = pd.DataFrame({"profile": [f"p{i}" for i in range(8) for _ in range(2)],
        ...                   "gender": [0] * 8 + [1] * 8, "age_group": [0, 0, 1, 1] * 4})
        >>> train, val = train_val_split(t, folds=2, fold=1, seed=0)
        >>> len(train), len(val), sorted(val["profile"].unique())
        (8, 8, ['p0', 'p3', 'p5', 'p6'])
        >>> train, val = train_val_split(t, val_ratio=0.25, seed=0)  # hold-out
        >>> len(train), len(val)
        (12, 4)
    """
    if isinstance(folds, bool) or not isinstance(folds, numbers.Integral) or folds < 0:
        raise ValueError(f"folds must be 0/1 (hold-out) or K >= 2, got {folds!r}")
    if folds <= 1:
        return select_fold(add_holdout(table, val_ratio, seed, by), 1)
    if isinstance(fold, bool) or not isinstance(fold, numbers.Integral) or not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0..{folds - 1} for folds={folds}, got {fold!r}")
    return select_fold(add_folds(table, folds, seed, by), int(fold))


def subsample_people(table: pd.DataFrame, max_people: int | None, seed: int = 0, by=STRATA) -> pd.DataFrame:
    """Keep at most ``max_people`` people (all their images), stratified; row order kept.

    ``None`` or a cap >= the number of people returns the table unchanged (a copy).

    Args:
        table: the image table, one row per image, with ``profile`` and the ``by`` columns
            (e.g. from :func:`mask_keras.data.read_train`).
        max_people: the most people to keep, a positive integer, or ``None`` to keep everyone
            (then nothing else is checked).
        seed: integer in 0..2**32-1 choosing the people; a seed and a set of people give the
            same result whatever the table's row order.
        by: the person-level columns making the strata (default :data:`STRATA`), as in
            :func:`person_table`.

    Returns:
        The kept people's rows in table order with the index reset, or (nothing dropped) a copy
        of ``table`` with its index.

    Raises:
        ValueError: ``max_people`` not a positive integer or ``None``, ``seed`` out of range, or
            a table :func:`person_table` rejects.

    Example:
        >>> t = pd.DataFrame({"profile": [f"p{i}" for i in range(8) for _ in range(2)],
        ...                   "gender": [0] * 8 + [1] * 8, "age_group": [0, 0, 1, 1] * 4})
        >>> s = subsample_people(t, 4, seed=0)
        >>> sorted(s["profile"].unique()), len(s)
        (['p1', 'p2', 'p4', 'p7'], 8)
    """
    if max_people is None:
        return table.copy()
    if isinstance(max_people, bool) or not isinstance(max_people, numbers.Integral) or max_people < 1:
        raise ValueError(f"max_people must be a positive integer or None, got {max_people!r}")
    seed = _check_seed(seed)
    people = person_table(table, by)
    if max_people >= len(people):
        return table.copy()
    keep = set(people["profile"][_stratified_pick(people, int(max_people), seed)])
    return table[table["profile"].isin(keep)].reset_index(drop=True)


def fold_summary(table: pd.DataFrame, by=STRATA) -> pd.DataFrame:
    """People per fold x stratum (rows: folds, columns: strata), for reports and checks.

    Args:
        table: an image table with a ``fold`` column (from :func:`add_holdout` or
            :func:`add_folds`) and the columns :func:`person_table` needs.
        by: the person-level columns making the strata (default :data:`STRATA`), as in
            :func:`person_table`.

    Returns:
        A ``pandas.crosstab`` DataFrame: index ``fold`` (its values, sorted), columns ``strat``
        (the stratum keys, sorted), int counts of people.

    Raises:
        ValueError: ``table`` has no ``fold`` column, or a table :func:`person_table` rejects.

    Example:
        >>> t = pd.DataFrame({"profile": [f"p{i}" for i in range(8) for _ in range(2)],
        ...                   "gender": [0] * 8 + [1] * 8, "age_group": [0, 0, 1, 1] * 4})
        >>> s = fold_summary(add_holdout(t, val_ratio=0.25, seed=0))
        >>> s.columns.tolist(), s.index.tolist(), s.values.tolist()
        (['0_0', '0_1', '1_0', '1_1'], [0, 1], [[1, 1, 2, 2], [1, 1, 0, 0]])
    """
    if "fold" not in table.columns:
        raise ValueError("table has no 'fold' column; call add_holdout or add_folds first")
    people = person_table(table, by).merge(table.groupby("profile")["fold"].first().reset_index(), on="profile")
    return pd.crosstab(people["fold"], people["strat"])
