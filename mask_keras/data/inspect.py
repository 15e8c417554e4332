"""Counts, skips and a class-balance chart of a data directory (``mask-keras inspect DATA_DIR``).

::

    from mask_keras.data.inspect import inspect, format_report
    d = inspect("data/default")             # also writes data/default/class_balance.png
    print(format_report(d))

The data are read with :func:`mask_keras.data.read_train` (``on_error="skip"`` by
default, so a broken folder is reported instead of stopping the inspection) and, when
``eval/`` exists, :func:`mask_keras.data.read_eval`. Only the CSVs and folder listings
are read; images are not decoded (use ``verify_images`` for that).
"""
from __future__ import annotations

from pathlib import Path

from .. import labels as L
from ..plots import class_balance
from .layout import LayoutError, read_eval, read_train

#: names of the per-task groups, in code order
MASK_NAMES = L.CLASS_NAMES["mask"]
GENDER_NAMES = L.CLASS_NAMES["gender"]
AGE_NAMES = L.CLASS_NAMES["age"]


def _counts(values, names) -> dict[str, int]:
    """``{name: count}`` for codes 0..len(names)-1, zeros included."""
    vc = values.value_counts()
    return {name: int(vc.get(code, 0)) for code, name in enumerate(names)}


def inspect(root, out_png=None, relabel=False, age_upper: int = L.EVAL_AGE_UPPER,
            on_error: str = "skip") -> dict:
    """Statistics of the layout under ``root``.

    Args:
        root: the dataset folder (``train/``, optionally ``eval/``).
        out_png: where to write the class-balance chart (default ``root/class_balance.png``;
            ``False`` to write none).
        relabel: passed to :func:`~mask_keras.data.layout.read_train`.
        age_upper: passed to ``read_train`` (the >=60 group's threshold).
        on_error: passed to ``read_train`` and ``read_eval``; with ``"skip"`` (default) a broken
            ``eval/`` is reported as one skip instead of raising.

    Returns:
        A dict with ``root``, ``people``, ``images``, ``classes`` (18 entries, class
        id -> images), ``mask``, ``gender``, ``age_group`` (group name -> images),
        ``people_by_group`` (``"male/<30"``-style keys: people per gender x age group),
        ``extensions`` (images per file extension), ``skipped`` (list of ``(path, reason)``),
        ``relabel``, ``relabeled`` (ids changed), ``age_upper``, ``eval`` (``None`` when there
        is no ``eval/``, else ``{"images": n, "skipped": [...]}``) and ``png`` (path or None).

    Raises:
        LayoutError: what ``read_train`` raises (see there), or a broken ``eval/`` with ``on_error="raise"``.
    """
    root = Path(root)
    t = read_train(root, relabel=relabel, age_upper=age_upper, on_error=on_error)
    people = t.groupby("profile")[["gender", "age_group"]].first()
    by_group = {f"{g}/{a}": int(((people["gender"] == gi) & (people["age_group"] == ai)).sum())
                for gi, g in enumerate(GENDER_NAMES) for ai, a in enumerate(AGE_NAMES)}
    ext = t["path"].str.rsplit(".", n=1).str[-1].str.lower().value_counts()
    d = {
        "root": str(root),
        "people": int(t["profile"].nunique()),
        "images": int(len(t)),
        "classes": {c: int(n) for c, n in zip(range(L.NUM_CLASSES),
                                              t["label"].value_counts().reindex(range(L.NUM_CLASSES),
                                                                                fill_value=0))},
        "mask": _counts(t["mask"], MASK_NAMES),
        "gender": _counts(t["gender"], GENDER_NAMES),
        "age_group": _counts(t["age_group"], AGE_NAMES),
        "people_by_group": by_group,
        "extensions": {f".{k}": int(v) for k, v in sorted(ext.items())},
        "skipped": [tuple(s) for s in t.attrs.get("skipped", [])],
        "relabel": relabel,
        "relabeled": list(t.attrs.get("relabeled", [])),
        "age_upper": int(age_upper),
        "eval": None,
        "png": None,
    }
    if (root / "eval").exists():
        try:
            e = read_eval(root, on_error=on_error)
            d["eval"] = {"images": int(len(e)), "skipped": [tuple(s) for s in e.attrs.get("skipped", [])]}
        except LayoutError as err:  # a broken eval/ should not hide the train statistics
            if on_error == "raise":
                raise
            d["eval"] = {"images": 0, "skipped": [(str(root / "eval"), str(err))]}
    if out_png is not False:
        png = Path(out_png) if out_png else root / "class_balance.png"
        class_balance({"class (images)": {str(k): v for k, v in d["classes"].items()},
                       "mask (images)": d["mask"], "gender (images)": d["gender"],
                       f"age group (images, upper {age_upper})": d["age_group"],
                       "people (gender/age)": {f"{k[0].upper()}{k.split('/')[1]}": v
                                               for k, v in d["people_by_group"].items()}},
                      png, title=f"{root}: {d['people']} people, {d['images']} images")
        d["png"] = str(png)
    return d


def _pct(n: int, total: int) -> str:
    return f"{n:>7d}  {100.0 * n / total:5.1f}%" if total else f"{n:>7d}"


def _skip_line(path: str, reason: str) -> str:
    prefix = f"{path}: "
    return f"  {path}: {reason[len(prefix):] if reason.startswith(prefix) else reason}"


def format_report(d: dict) -> str:
    """A printable text report of :func:`inspect`'s dict.

    Args:
        d: the dict :func:`inspect` returns.

    Returns:
        Lines joined with newlines (no trailing newline): counts with percentages of the images,
        the people table, the skips and the chart's path.
    """
    n = d["images"]
    lines = [f"data: {d['root']}",
             f"people: {d['people']}   images: {n}   (age_upper={d['age_upper']}, relabel={d['relabel']})"]
    if d.get("relabeled"):
        lines.append(f"relabeled people: {len(d['relabeled'])} ({', '.join(d['relabeled'][:10])}"
                     f"{', ...' if len(d['relabeled']) > 10 else ''})")
    for title, key in (("mask", "mask"), ("gender", "gender"), ("age group", "age_group")):
        lines.append(f"{title} (images):")
        lines += [f"  {name:<10}{_pct(c, n)}" for name, c in d[key].items()]
    people = d["people"]
    lines.append("people by gender x age group:")
    lines.append("  " + " " * 8 + "".join(f"{a:>8}" for a in AGE_NAMES))
    for g in GENDER_NAMES:
        lines.append(f"  {g:<8}" + "".join(f"{d['people_by_group'][f'{g}/{a}']:>8d}" for a in AGE_NAMES))
    lines.append("classes (images):")
    for c, cnt in d["classes"].items():
        lines.append(f"  {c:>2} {L.class_name(c):<26}{_pct(cnt, n)}")
    if people:
        lines.append("file extensions: " + ", ".join(f"{k} {v}" for k, v in d["extensions"].items()))
    lines.append(f"skipped: {len(d['skipped'])}")
    lines += [_skip_line(p, r) for p, r in d["skipped"]]
    if d["eval"] is None:
        lines.append("eval: none (no eval/ folder)")
    else:
        lines.append(f"eval images: {d['eval']['images']}   skipped: {len(d['eval']['skipped'])}")
        lines += [_skip_line(p, r) for p, r in d["eval"]["skipped"]]
    if d.get("png"):
        lines.append(f"class balance chart: {d['png']}")
    return "\n".join(lines)
