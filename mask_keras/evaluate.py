"""Score a submission against the truth: macro F1 (the competition metric), accuracy,
per-task F1, per-class F1 and confusion matrices; optionally a report and PNGs.

Both inputs are ``ImageID,ans`` tables (a CSV path or a DataFrame), ``ans`` in 0..17.
Rows are matched by ``ImageID``, never by position, so the prediction may come in any
order. ``macro_f1`` is exactly ``sklearn.metrics.f1_score(y_true, y_pred,
average="macro")``: the mean over the classes present in the truth or the prediction
(sklearn's default label set), so it can differ from the mean of ``per_class_f1``, which
always lists all 18 classes (0.0 for a class that is neither true nor predicted).

Per-task F1 (``f1_mask``, ``f1_gender``, ``f1_age``) is the macro F1 within each task,
the task labels recovered from the 18 classes with :func:`mask_keras.labels.decode`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from . import labels as L
from . import plots
from .files import atomic_write_text
from .groups import bootstrap_ci, group_scores, slice_scores

COLUMNS = ("ImageID", "ans")
#: the keys ``mask-keras evaluate --json`` prints, in this order
CLI_KEYS = ("macro_f1", "accuracy", "f1_mask", "f1_gender", "f1_age")
#: ... followed by these, where the metrics have them
GROUP_KEYS = ("ci", "groups", "worst_group", "group_gap")
TASK_NAMES = L.HEADS
#: files written by ``evaluate(..., out_dir=...)``
OUTPUT_FILES = ("metrics.json", "report.txt", "confusion_matrix.png",
                "confusion_mask.png", "confusion_gender.png", "confusion_age.png")
_SHOW = 5  # how many offending ids/rows an error message lists


class EvaluationError(ValueError):
    """The truth or the prediction table cannot be scored (names the file and the fix)."""


# ---- reading and checking ---------------------------------------------------------
def _load(x, role: str) -> tuple[pd.DataFrame, str, bool]:
    """(table, name for messages, came from a file)."""
    if isinstance(x, pd.DataFrame):
        return x.reset_index(drop=True), f"<{role} DataFrame>", False
    path = Path(x)
    if not path.is_file():
        raise EvaluationError(f"{path}: {role} file not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except Exception as e:  # pandas raises several types for broken/empty CSVs
        raise EvaluationError(f"{path}: cannot read the {role} file as CSV ({e}); "
                              f"expected a header line 'ImageID,ans'") from e
    df.columns = [str(c).strip() for c in df.columns]
    return df, str(path), True


def _where(i: int, from_file: bool) -> str:
    return f"row {i} (line {i + 2} of the file)" if from_file else f"row {i}"


def _check(df: pd.DataFrame, name: str, from_file: bool) -> pd.DataFrame:
    """-> DataFrame with str ImageID and int64 ans, or EvaluationError naming file and row."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        found = ",".join(map(str, df.columns)) or "(none)"
        lower = {str(c).lower(): c for c in df.columns}
        hint = [f"{lower[c.lower()]!r} -> {c!r}" for c in missing if c.lower() in lower]
        raise EvaluationError(f"{name}: missing column(s) {','.join(missing)}; expected columns "
                              f"'ImageID,ans', found: {found}"
                              + (f" (rename {', '.join(hint)})" if hint else ""))
    ids = df["ImageID"]
    bad = [i for i, v in enumerate(ids) if v is None or (isinstance(v, float) and math.isnan(v))
           or str(v).strip() == ""]
    if bad:
        raise EvaluationError(f"{name}: empty ImageID at {_where(bad[0], from_file)}"
                              + (f" and {len(bad) - 1} more row(s)" if len(bad) > 1 else ""))
    ids = ids.map(lambda v: str(v).strip())
    ans = np.empty(len(df), dtype=np.int64)
    for i, v in enumerate(df["ans"]):
        try:
            f = float(str(v).strip())
            ok = math.isfinite(f) and f == int(f)
        except (TypeError, ValueError):
            ok = False
        if not ok or not 0 <= int(f) < L.NUM_CLASSES:
            raise EvaluationError(f"{name}: ans must be an integer class in 0..{L.NUM_CLASSES - 1}, "
                                  f"got {v!r} at {_where(i, from_file)} (ImageID {ids.iloc[i]!r})")
        ans[i] = int(f)
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        first = dup.drop_duplicates()
        rows = [int(j) for j in np.flatnonzero(ids.to_numpy() == first.iloc[0])]
        raise EvaluationError(f"{name}: duplicate ImageID(s) {first.iloc[:_SHOW].tolist()}"
                              + (f" and {len(first) - _SHOW} more" if len(first) > _SHOW else "")
                              + f"; e.g. {first.iloc[0]!r} at rows {rows}. Each image must appear once")
    return pd.DataFrame({"ImageID": ids.to_numpy(dtype=object), "ans": ans})


def read_answers(x, role: str = "gt") -> pd.Series:
    """A checked ``ImageID,ans`` table (CSV path or DataFrame) as a Series ``ImageID -> class``.

    Args:
        x: a CSV path (UTF-8, a BOM allowed) or a DataFrame with columns ``ImageID`` and ``ans``.
        role: what the table is, for error messages (``"gt"`` or ``"pred"``).

    Returns:
        An int64 ``pd.Series`` of classes 0..17 indexed by ``ImageID`` (str, stripped), in
        the table's row order.

    Raises:
        EvaluationError: naming the file, row and fix for a missing file, wrong columns, an
            empty ``ImageID``, a class outside 0..17 or a duplicated ``ImageID``.

    Example:
        >>> read_answers(pd.DataFrame({"ImageID": ["a", "b"], "ans": [0, 17]})).to_dict()
        {'a': 0, 'b': 17}
        >>> read_answers(pd.DataFrame({"ImageID": ["a"], "ans": [18]}))
        Traceback (most recent call last):
        ...
        mask_keras.evaluate.EvaluationError: <gt DataFrame>: ans must be an integer class in 0..17, got 18 at row 0 ...
    """
    return _check(*_load(x, role)).set_index("ImageID")["ans"]


def _few(values) -> str:
    values = sorted(values)
    more = f" and {len(values) - _SHOW} more" if len(values) > _SHOW else ""
    return f"{values[:_SHOW]}{more}"


def read_pair(gt, pred) -> tuple[np.ndarray, np.ndarray]:
    """Load and check both tables -> (y_true, y_pred) in the truth's row order.

    Args:
        gt: the truth, a CSV path or a DataFrame with columns ``ImageID,ans``.
        pred: the prediction, likewise; matched to ``gt`` by ``ImageID`` (any row order).

    Returns:
        ``(y_true, y_pred)``: two aligned int64 (N,) arrays of classes 0..17.

    Raises:
        EvaluationError: either table is invalid (:func:`read_answers`), or their row counts
            or ImageID sets differ.

    Example:
        >>> gt = pd.DataFrame({"ImageID": ["a", "b", "c"], "ans": [0, 4, 17]})
        >>> read_pair(gt, pd.DataFrame({"ImageID": ["c", "a", "b"], "ans": [17, 0, 5]}))
        (array([ 0,  4, 17]), array([ 0,  5, 17]))
    """
    g, gname, gfile = _load(gt, "gt")
    p, pname, pfile = _load(pred, "pred")
    g = _check(g, gname, gfile)
    p = _check(p, pname, pfile)
    gids, pids = set(g["ImageID"]), set(p["ImageID"])
    missing, extra = gids - pids, pids - gids
    if len(g) != len(p) or missing or extra:
        msg = [f"{pname} does not match {gname}"]
        if len(g) != len(p):
            msg.append(f"row counts differ: gt has {len(g)}, pred has {len(p)}")
        if missing:
            msg.append(f"{len(missing)} ImageID(s) of gt missing from pred: {_few(missing)}")
        if extra:
            msg.append(f"{len(extra)} ImageID(s) in pred not in gt: {_few(extra)}")
        raise EvaluationError("; ".join(msg) + ". The prediction needs exactly one row per gt image")
    y_pred = p.set_index("ImageID")["ans"].reindex(g["ImageID"]).to_numpy(dtype=np.int64)
    return g["ans"].to_numpy(dtype=np.int64), y_pred


# ---- metrics ----------------------------------------------------------------------
def task_scores(y_true, y_pred, task: str) -> dict:
    """Scores of one task's class ids (two aligned (N,) arrays), as the package reports them.

    ``macro_f1`` is sklearn's ``f1_score(average="macro")`` (over the classes present in
    either array, the competition's score), ``accuracy``, ``per_class_f1`` (an array over
    every class of the task, 0 for a class never seen or predicted). For the 18 classes
    (``task`` ``multi`` or ``multihead``) also ``f1_mask``, ``f1_gender``, ``f1_age``: the
    macro F1 of each task decoded from the 18-class ids.

    Args:
        y_true: (N,) true class ids.
        y_pred: (N,) predicted class ids, aligned with ``y_true``.
        task: ``mask``, ``gender``, ``age`` (3/2/3 classes), ``multi`` or ``multihead`` (18).

    Returns:
        A dict: ``macro_f1`` and ``accuracy`` (floats), ``per_class_f1`` (a float64 numpy array
        of the task's classes), and for 18 classes ``f1_mask``, ``f1_gender``, ``f1_age``.

    Example:
        >>> s = task_scores([0, 1, 1, 2], [0, 1, 2, 2], "mask")
        >>> round(s["macro_f1"], 4), s["accuracy"], s["per_class_f1"].round(4).tolist()
        (0.7778, 0.75, [1.0, 0.6667, 0.6667])
    """

    yt = np.asarray(y_true, dtype=np.int64)
    yp = np.asarray(y_pred, dtype=np.int64)
    multi = task in ("multi", "multihead")
    k = L.NUM_CLASSES if multi else L.TASK_CLASSES[task]
    # zero_division=0 is what sklearn's default "warn" computes, without the warning
    d = {"macro_f1": float(f1_score(yt, yp, average="macro", zero_division=0)),
         "accuracy": float(accuracy_score(yt, yp)),
         "per_class_f1": f1_score(yt, yp, labels=list(range(k)), average=None, zero_division=0)}
    if multi:
        for name, t, p in zip(TASK_NAMES, L.decode(yt), L.decode(yp)):
            d[f"f1_{name}"] = float(f1_score(t, p, average="macro", zero_division=0))
    return d


def metrics_from_labels(y_true, y_pred, units=None) -> dict:
    """All metrics of two (N,) arrays of classes 0..17 (already aligned), JSON-ready.

    Args:
        y_true: (N,) true classes 0..17.
        y_pred: (N,) predicted classes 0..17, aligned with ``y_true``.
        units: (N,) person ids for the bootstrap intervals (people resampled); None: images.

    Returns:
        The dict of :func:`evaluate` without ``gt`` and ``pred``.

    Raises:
        EvaluationError: the arrays are not 1-D of one length, are empty, or hold a class
            outside 0..17.

    Example:
        >>> d = metrics_from_labels([0, 4, 17], [0, 5, 17])
        >>> d["macro_f1"], d["n"], d["support"][:6]
        (0.5, 3, [1, 0, 0, 0, 1, 0])
    """

    yt = np.asarray(y_true, dtype=np.int64)
    yp = np.asarray(y_pred, dtype=np.int64)
    if yt.shape != yp.shape or yt.ndim != 1:
        raise EvaluationError(f"y_true and y_pred must be 1-D of equal length, got {yt.shape} and {yp.shape}")
    if yt.size == 0:
        raise EvaluationError("nothing to score: the tables have no rows")
    for name, y in (("y_true", yt), ("y_pred", yp)):
        if y.min() < 0 or y.max() >= L.NUM_CLASSES:
            raise EvaluationError(f"{name}: classes must be in 0..{L.NUM_CLASSES - 1}")
    s = task_scores(yt, yp, "multi")
    d = {"macro_f1": s["macro_f1"], "accuracy": s["accuracy"], **{f"f1_{t}": s[f"f1_{t}"] for t in TASK_NAMES}}
    task_cm = {task: confusion_matrix(t, p, labels=list(range(L.TASK_CLASSES[task]))).tolist()
               for task, t, p in zip(TASK_NAMES, L.decode(yt), L.decode(yp))}
    all18 = list(range(L.NUM_CLASSES))
    d["per_class_f1"] = [float(v) for v in s["per_class_f1"]]
    d["support"] = np.bincount(yt, minlength=L.NUM_CLASSES).tolist()
    d["n"] = int(yt.size)
    d["confusion_matrix"] = confusion_matrix(yt, yp, labels=all18).tolist()
    d["task_confusion_matrices"] = task_cm
    d.update(group_scores(yt, yp))
    d["slices"] = slice_scores(yt, yp)
    d["ci"] = bootstrap_ci(yt, yp, units=units)
    return d


def evaluate(gt, pred, out_dir=None) -> dict:
    """Score ``pred`` against ``gt`` (CSV paths or DataFrames with columns ``ImageID,ans``).

    With ``out_dir`` also writes :data:`OUTPUT_FILES` there: ``metrics.json`` (atomically),
    ``report.txt`` (:func:`format_report`), ``confusion_matrix.png`` (18 classes) and
    ``confusion_{mask,gender,age}.png``.

    Args:
        gt: the truth, a CSV path or a DataFrame with columns ``ImageID,ans`` (``ans`` 0..17).
        pred: the prediction, likewise; rows are matched by ``ImageID``, in any order.
        out_dir: a folder to write the report files into (created); None: write nothing.

    Returns:
        A JSON-ready dict: ``macro_f1``, ``accuracy``, ``f1_mask``, ``f1_gender``,
        ``f1_age``, ``per_class_f1`` (18), ``support`` (18 true counts), ``n``,
        ``confusion_matrix`` (18x18, rows = truth), ``task_confusion_matrices``
        ({task: KxK}), ``groups`` / ``worst_group`` / ``group_gap`` (the six gender x age
        groups of the truth: :func:`mask_keras.groups.group_scores`), ``slices``
        (:func:`mask_keras.groups.slice_scores`), ``ci`` (95% bootstrap intervals over the
        images: :func:`mask_keras.groups.bootstrap_ci`), ``gt`` and ``pred``.

    Raises:
        EvaluationError: for missing columns, ``ans`` not an integer in 0..17 (naming file
            and row), duplicate ImageIDs, different row counts or ImageID sets.

    Example:
        >>> gt = pd.DataFrame({"ImageID": ["a", "b", "c"], "ans": [0, 4, 17]})
        >>> d = evaluate(gt, pd.DataFrame({"ImageID": ["c", "a", "b"], "ans": [17, 0, 5]}))
        >>> d["macro_f1"], d["f1_mask"], d["gt"]  # macro F1 over the classes 0, 4, 5, 17
        (0.5, 1.0, '<DataFrame>')
    """
    y_true, y_pred = read_pair(gt, pred)
    d = metrics_from_labels(y_true, y_pred)
    d["gt"] = "<DataFrame>" if isinstance(gt, pd.DataFrame) else str(gt)
    d["pred"] = "<DataFrame>" if isinstance(pred, pd.DataFrame) else str(pred)
    if out_dir is not None:
        write_outputs(d, out_dir)
    return d


def write_outputs(d: dict, out_dir) -> dict[str, Path]:
    """Write metrics.json, report.txt and the confusion PNGs of a metrics dict -> paths.

    Args:
        d: a metrics dict from :func:`evaluate` or :func:`metrics_from_labels`.
        out_dir: the folder to write into (created when missing).

    Returns:
        ``{file name: Path}`` for each of :data:`OUTPUT_FILES`.
    """

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics.json": atomic_write_text(out / "metrics.json", json.dumps(d, indent=2) + "\n"),
        "report.txt": atomic_write_text(out / "report.txt", format_report(d)),
        "confusion_matrix.png": plots.confusion_matrix(
            d["confusion_matrix"], [L.class_name(c) for c in range(L.NUM_CLASSES)],
            out / "confusion_matrix.png",
            title=f"confusion matrix (macro F1 {d['macro_f1']:.4f}, acc {d['accuracy']:.4f})"),
    }
    for task in TASK_NAMES:
        name = f"confusion_{task}.png"
        paths[name] = plots.confusion_matrix(
            d["task_confusion_matrices"][task], L.CLASS_NAMES[task], out / name,
            title=f"{task} (macro F1 {d[f'f1_{task}']:.4f})")
    return paths


# ---- text -------------------------------------------------------------------------
def format_report(d: dict) -> str:
    """A short plain-text report of a metrics dict (from :func:`evaluate`).

    Args:
        d: a metrics dict; ``macro_f1``, ``accuracy`` and ``f1_*`` are required, ``n``,
            ``per_class_f1``, ``support`` and ``confusion_matrix`` add to the report.

    Returns:
        The report: the headline scores, then (with ``per_class_f1``) one line per class
        with its support, predicted count and F1; ends with a newline.

    Example:
        >>> d = metrics_from_labels([0, 4, 17], [0, 5, 17])
        >>> format_report(d).splitlines()[:3]
        ['images:    3', 'macro F1:  0.5000  (95% interval 0.0000-1.0000, images resampled)', 'accuracy:  0.6667']
    """
    lines = [
        f"images:    {d.get('n', '?')}",
        f"macro F1:  {d['macro_f1']:.4f}",
        f"accuracy:  {d['accuracy']:.4f}",
        f"F1 mask:   {d['f1_mask']:.4f}",
        f"F1 gender: {d['f1_gender']:.4f}",
        f"F1 age:    {d['f1_age']:.4f}",
        "",
    ]
    ci = d.get("ci")
    if ci:
        lines[1] += f"  (95% interval {ci['macro_f1'][0]:.4f}-{ci['macro_f1'][1]:.4f}, {ci['resampled']} resampled)"
    if d.get("groups"):
        lines.append(f"{'group':<14}{'images':>7}{'accuracy':>10}{'F1 mask':>9}{'F1 gender':>11}{'F1 age':>8}")
        fmt = (lambda v: f"{v:.4f}" if v is not None else "-")
        for name, g in d["groups"].items():
            lines.append(f"{name:<14}{g['n']:>7}{fmt(g['accuracy']):>10}{fmt(g.get('f1_mask')):>9}"
                         f"{fmt(g.get('f1_gender')):>11}{fmt(g.get('f1_age')):>8}")
        lines += [f"worst group: {d['worst_group']} (accuracy gap between groups {fmt(d['group_gap'])})", ""]
    per = d.get("per_class_f1")
    if per is not None:
        cm = np.asarray(d["confusion_matrix"]) if "confusion_matrix" in d else None
        support = d.get("support") or (cm.sum(axis=1).tolist() if cm is not None else None)
        predicted = cm.sum(axis=0).tolist() if cm is not None else None
        lines.append(f"{'class':>5}  {'name':<26}{'support':>8}{'predicted':>10}{'F1':>8}")
        for c, f in enumerate(per):
            s = f"{support[c]:>8}" if support is not None else f"{'':>8}"
            p = f"{predicted[c]:>10}" if predicted is not None else f"{'':>10}"
            lines.append(f"{c:>5}  {L.class_name(c):<26}{s}{p}{f:>8.4f}")
    return "\n".join(lines) + "\n"


def cli_json(d: dict) -> str:
    """The one-line JSON object ``mask-keras evaluate --json`` prints: :data:`CLI_KEYS`, then the
    intervals, the groups, the worst group and the gap (:data:`GROUP_KEYS`) where ``d`` has them.

    Args:
        d: a metrics dict from :func:`evaluate` (holding every key of :data:`CLI_KEYS`).

    Returns:
        A JSON string: those keys as floats, in :data:`CLI_KEYS` order, then :data:`GROUP_KEYS`.

    Example:
        >>> cli_json(metrics_from_labels([0, 4, 17], [0, 4, 17]))  # doctest: +ELLIPSIS
        '{"macro_f1": 1.0, "accuracy": 1.0, "f1_mask": 1.0, "f1_gender": 1.0, "f1_age": 1.0, "ci": {"macro_f1": [...'
    """
    return json.dumps({**{k: float(d[k]) for k in CLI_KEYS}, **{k: d[k] for k in GROUP_KEYS if k in d}})
