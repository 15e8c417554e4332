"""Known mislabeled people (``data/relabel.csv``), applied on request.

The CSV has columns ``id,change,value,certain,note``; ``change`` is one of
``swap_incorrect_normal`` (the incorrect_mask and normal images are swapped),
``gender`` (value: male|female) or ``age`` (value: the true age). ``certain`` is 1
for the fixes every team agreed on, 0 for those only some teams applied.
"""
from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import pandas as pd

from .. import labels as L

log = logging.getLogger(__name__)

RELABEL_COLUMNS = ("id", "change", "value", "certain")
CHANGES = ("swap_incorrect_normal", "gender", "age")
MODES = ("certain", "all")


def default_relabel_path() -> Path:
    """The relabel CSV shipped with the package (``mask_keras/data/relabel.csv``).

    Returns:
        Its path.
    """
    return Path(str(resources.files("mask_keras.data").joinpath("relabel.csv")))


def load_relabel(path=None, mode: str = "certain") -> pd.DataFrame:
    """The relabel table; ``mode="certain"`` keeps only the rows everyone agreed on.

    Args:
        path: a relabel CSV; None: :func:`default_relabel_path`.
        mode: ``"certain"`` (rows with ``certain == 1``) or ``"all"``.

    Returns:
        The rows as strings (at least ``id, change, value, certain``), index reset.

    Raises:
        ValueError: an unknown ``mode``, a missing column, an unknown ``change``, a
            ``gender`` value other than male|female, an ``age`` value that is not a whole
            number in 0-120, or two rows with the same ``id`` and ``change``.
    """
    if mode not in MODES:
        raise ValueError(f"relabel mode must be one of {MODES}, got {mode!r} (read_train and "
                         f"data.relabel also take True, meaning 'certain')")
    path = Path(path) if path else default_relabel_path()
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in RELABEL_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: relabel CSV lacks column(s) {missing}; expected {list(RELABEL_COLUMNS)}")
    bad = sorted(set(df["change"]) - set(CHANGES))
    if bad:
        raise ValueError(f"{path}: unknown change(s) {bad}; use one of {CHANGES}")
    # each row's value checked here, naming the row (line numbers count the header as line 1)
    for i, r in df.iterrows():
        v, where = r["value"], f"{path}, line {i + 2} (id {r['id']}, change {r['change']})"
        if r["change"] == "gender" and v not in L.GENDER_NAMES:
            raise ValueError(f"{where}: gender value {v!r}; use one of {sorted(L.GENDER_NAMES)}")
        if r["change"] == "age" and not (v.isdigit() and 0 <= int(v) <= 120):
            raise ValueError(f"{where}: age value {v!r}; use the true age as a whole number of years (0-120)")
    dup = df[df.duplicated(["id", "change"], keep=False)]
    if not dup.empty:  # a second swap would undo the first; two genders or ages contradict
        raise ValueError(f"{path}: more than one row with the same id and change: "
                         f"{sorted(set(zip(dup['id'], dup['change'])))}; keep one of each")
    if mode == "certain":
        df = df[df["certain"] == "1"]
    return df.reset_index(drop=True)


def apply_relabel(table: pd.DataFrame, mode: str = "certain", path=None) -> pd.DataFrame:
    """Apply the fixes to an image table (before ``with_labels``); ids not present are ignored.

    Args:
        table: image rows with ``id`` (str), the integer codes ``mask`` and ``gender``, and ``age``.
        mode: ``"certain"`` or ``"all"`` (see :func:`load_relabel`).
        path: a relabel CSV; None: the packaged one.

    Returns:
        A copy with ``mask`` (incorrect <-> normal swapped), ``gender`` or ``age`` fixed;
        ``attrs["relabeled"]`` lists the ids a fix matched. ``age_group``/``label`` are not
        recomputed: call :func:`mask_keras.data.layout.with_labels` after.

    Example:
        >>> import pandas as pd
        >>> t = pd.DataFrame({"id": ["001498-1", "000020", "000020"], "gender": [0, 1, 1],
        ...                   "age": [45, 30, 30], "mask": [0, 1, 2]})
        >>> out = apply_relabel(t)
        >>> out["gender"].tolist(), out["mask"].tolist(), out.attrs["relabeled"]
        ([1, 1, 1], [0, 2, 1], ['000020', '001498-1'])
    """
    fixes = load_relabel(path, mode)
    out = table.copy()
    changed = []
    for _, fx in fixes.iterrows():
        sel = out["id"] == fx["id"]
        if not sel.any():
            continue
        changed.append(fx["id"])
        if fx["change"] == "swap_incorrect_normal":
            inc = sel & (out["mask"] == L.Mask.INCORRECT)
            nor = sel & (out["mask"] == L.Mask.NOT_WEAR)
            out.loc[inc, "mask"] = int(L.Mask.NOT_WEAR)
            out.loc[nor, "mask"] = int(L.Mask.INCORRECT)
        elif fx["change"] == "gender":
            out.loc[sel, "gender"] = int(L.GENDER_NAMES[fx["value"]])
        elif fx["change"] == "age":
            out.loc[sel, "age"] = int(fx["value"])
    log.info("relabel (%s): changed %d people: %s", mode, len(changed), changed)
    out.attrs["relabeled"] = changed
    return out
