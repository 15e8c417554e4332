"""The plan of a synthetic set: who is in it, with which recorded labels, ids and quirks (one RNG per seed)."""
from __future__ import annotations

import hashlib
import logging

import numpy as np

from ... import labels as L
from ..relabel import load_relabel

log = logging.getLogger(__name__)


GENERATOR = "mask_keras.data.synth"
FORMAT_VERSION = 1
STEMS = tuple(L.MASK_STEMS)  # mask1..mask5, incorrect_mask, normal
REAL_TRAIN_PEOPLE = 2700
#: people per (gender, age group) in the real train set (mission table)
DEMOGRAPHICS = {
    ("male", 0): 549, ("male", 1): 410, ("male", 2): 83,
    ("female", 0): 732, ("female", 1): 817, ("female", 2): 109,
}
#: folder counts of the real set's quirks (out of 2700 people)
QUIRK_COUNTS = {"png": 73, "jpeg": 51, "jpeg_mask5_jpg": 3, "suffixed": 41}
HIDDEN_RATE = 0.05  # share of folders with macOS "._" files beside their images
MISLABEL_COUNT = 15  # certain rows of relabel.csv (the real set's known mislabels), out of 2700 people
MIN_PEOPLE_FOR_QUIRKS = 20
MIN_PEOPLE_PER_CELL = 12
MAX_PEOPLE = 300_000  # ids stay six digits
JPEG_QUALITY = 90
META_NAME = "synth_meta.json"

# age weights inside each group: students (18..25) and late twenties in <30; mass at the
# borders (30, 31, 55..59) in 30-59 so that 29/30 and 59/60 are hard calls
_YOUNG_W = {18: 10, 19: 11, 20: 12, 21: 10, 22: 9, 23: 8, 24: 7, 25: 6, 26: 5, 27: 5, 28: 6, 29: 8}
_MIDDLE_W = {30: 6, 31: 5, **{a: 1.6 for a in range(32, 40)}, **{a: 2.4 for a in range(40, 50)},
             **{a: 3.6 for a in range(50, 55)}, **{a: 5.5 for a in range(55, 60)}}



def scale_counts(counts, n: int, min_each: bool | None = None) -> dict:
    """Scale ``{key: count}`` to sum to ``n`` by largest-remainder rounding.

    Args:
        counts: ``{key: weight}`` (positive numbers, e.g. :data:`DEMOGRAPHICS`).
        n: the total to reach.
        min_each: every key gets at least 1, taken from the largest (only when ``n`` >= the
            number of keys); None: ``n >= MIN_PEOPLE_PER_CELL`` (12).

    Returns:
        ``{key: int}`` in ``counts``' order, summing to ``n``.

    Example:
        >>> scale_counts({"a": 549, "b": 410, "c": 83}, 12)
        {'a': 6, 'b': 5, 'c': 1}
    """
    keys = list(counts)
    w = np.array([counts[k] for k in keys], dtype=float)
    exact = w / w.sum() * n
    out = np.floor(exact).astype(int)
    rest = n - out.sum()
    order = sorted(range(len(keys)), key=lambda i: (-(exact[i] - out[i]), -w[i], i))
    for i in order[:rest]:
        out[i] += 1
    if min_each is None:
        min_each = n >= MIN_PEOPLE_PER_CELL
    if min_each and n >= len(keys):
        for i in range(len(keys)):
            if out[i] == 0:
                out[int(np.argmax(out))] -= 1
                out[i] = 1
    return {k: int(v) for k, v in zip(keys, out)}


def sample_ages(rng: np.random.Generator, group: int, n: int) -> np.ndarray:
    """Recorded ages of ``n`` people of an age group (0: 18..29, 1: 30..59, 2: exactly 60).

    Args:
        rng: the plan's generator (groups 0 and 1 draw from it).
        group: the age group, 0, 1 or 2.
        n: how many people.

    Returns:
        int64 ``(n,)``; groups 0 and 1 weighted toward students and the group borders.
    """
    if group == 2:
        return np.full(n, 60, dtype=np.int64)
    table = _YOUNG_W if group == 0 else _MIDDLE_W
    ages = np.array(list(table), dtype=np.int64)
    p = np.array(list(table.values()), dtype=float)
    return rng.choice(ages, size=n, p=p / p.sum())


def sample_demographics(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(gender codes, recorded ages) of ``n`` people, cells scaled from the real table, shuffled.

    Args:
        n: how many people.
        rng: the plan's generator.

    Returns:
        ``(genders, ages)``: int64 ``(n,)`` each, gender 0 male / 1 female, per-cell counts
        from :func:`scale_counts` of :data:`DEMOGRAPHICS`.
    """
    cells = scale_counts(DEMOGRAPHICS, n)
    genders, ages = [], []
    for (g, grp), k in cells.items():
        genders += [int(L.GENDER_NAMES[g])] * k
        ages.append(sample_ages(rng, grp, k))
    genders = np.array(genders, dtype=np.int64)
    ages = np.concatenate(ages) if ages else np.zeros(0, np.int64)
    perm = rng.permutation(n)
    return genders[perm], ages[perm]


def _drawn_age(rng: np.random.Generator, recorded: int) -> int:
    """The age the pixels show: the recorded one, or 60..80 for people recorded as 60."""
    if recorded < 60:
        return int(recorded)
    return int(min(80, 60 + np.floor(rng.exponential(5.0))))


def _quirk_count(name_or_count, n: int) -> int:
    real = QUIRK_COUNTS[name_or_count] if isinstance(name_or_count, str) else name_or_count
    k = int(round(n * real / REAL_TRAIN_PEOPLE))
    return max(k, 1) if n >= MIN_PEOPLE_FOR_QUIRKS else k


def _certain_relabels() -> list[dict]:
    return load_relabel(mode="certain").to_dict("records")


def _all_relabel_ids() -> set[str]:
    return set(load_relabel(mode="all")["id"])


def make_plan(people: int, eval_people: int, seed: int) -> dict:
    """Everything but the pixels: people, recorded labels, ids, file names, quirks.

    Deterministic in ``seed``. The planted mislabels take the ids of ``relabel.csv``'s certain
    rows (read from the package), so ``read_train(relabel=True)`` fixes them.

    Args:
        people: train people (>= 1).
        eval_people: eval people (>= 0), drawn apart from the train people.
        seed: the seed of the one generator every draw comes from.

    Returns:
        A dict: ``train`` (per person: ``index, id, gender, age, folder, true_gender,
        drawn_age, swap, exts, hidden``), ``eval`` (per person: ``index, true_gender, age,
        drawn_age, names, labels``), ``eval_rows`` (shuffled ``(file name, class)``),
        ``mislabeled`` (``index, change, value, note, id, profile``) and ``quirks`` (folder
        lists: ``png_folders``, ``jpeg_folders``, ``jpeg_mask5_jpg``, ``suffixed_ids``, ``hidden_folders``).

    Example:
        >>> plan = make_plan(30, 2, seed=0)
        >>> len(plan["train"]), len(plan["eval"]), len(plan["eval_rows"])
        (30, 2, 14)
        >>> plan["train"][0]["folder"]
        '000002_female_Asian_60'
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7919]))
    genders, ages = sample_demographics(people, rng)
    drawn_age = np.array([_drawn_age(rng, a) for a in ages], dtype=np.int64)
    rec_gender = genders.copy()
    rec_age = ages.copy()
    swap = np.zeros(people, bool)

    # ids: sorted distinct numbers; relabel.csv's ids are kept free for the planted mislabels
    reserved = _all_relabel_ids()
    reserved_nums = {int(r.split("-")[0]) for r in reserved}
    space = max(int(people * 2.6), people + 64)
    nums = np.setdiff1d(np.arange(1, space + len(reserved_nums) + 1), sorted(reserved_nums))
    ids = [f"{x:06d}" for x in np.sort(rng.choice(nums, size=people, replace=False))]

    # planted mislabels, taking the ids of relabel.csv's certain rows
    n_mis = _quirk_count(MISLABEL_COUNT, people) if people >= MIN_PEOPLE_FOR_QUIRKS else 0
    pool = _certain_relabels()
    by_kind: dict[str, list[dict]] = {}
    for r in pool:
        by_kind.setdefault(r["change"], []).append(r)
    for k in by_kind:
        by_kind[k] = [by_kind[k][i] for i in rng.permutation(len(by_kind[k]))]
    kinds = [k for k in ("gender", "swap_incorrect_normal", "age") if k in by_kind]
    order = []
    while any(by_kind[k] for k in kinds):
        for k in kinds:
            if by_kind[k]:
                order.append(by_kind[k].pop(0))
    cell = [(int(g), int(L.age_group(a))) for g, a in zip(genders, ages)]
    cell_n = {c: cell.count(c) for c in set(cell)}
    taken: set[int] = set()

    def pick(cond):
        """A random person not yet taken that satisfies ``cond`` (None if there is none)."""
        for _ in range(200):
            i = int(rng.integers(people))
            if i not in taken and cond(i):
                return i
        ok = [i for i in range(people) if i not in taken and cond(i)]
        return int(ok[rng.integers(len(ok))]) if ok else None

    mislabeled = []
    extra = 0
    for j in range(n_mis):
        if j < len(order):
            fx = dict(order[j])
        else:  # beyond the real rows: fresh ids (still listed in OUT/relabel.csv)
            fx = {"id": None, "change": ("gender", "swap_incorrect_normal")[extra % 2], "value": ""}
            extra += 1
        if fx["change"] == "gender":
            if not fx["value"]:
                fx["value"] = "female" if rng.random() < 0.5 else "male"
            true_g = int(L.GENDER_NAMES[fx["value"]])
            i = pick(lambda i: genders[i] == true_g and cell_n[cell[i]] >= 2)
        elif fx["change"] == "age":
            i = pick(lambda i: ages[i] == 60 and cell_n[cell[i]] >= 3)
        else:
            i = pick(lambda i: True)
        if i is None:
            continue
        taken.add(i)
        cell_n[cell[i]] -= 1
        if fx["change"] == "gender":
            rec_gender[i] = 1 - genders[i]
            note = f"recorded {'male' if rec_gender[i] == 0 else 'female'}, drawn {fx['value']}"
        elif fx["change"] == "age":
            rec_age[i] = int(fx["value"]) - 1
            fx["value"] = str(int(ages[i]))
            note = f"recorded {rec_age[i]}, drawn as {ages[i]}+ (apparent {drawn_age[i]})"
        else:
            swap[i] = True
            note = "incorrect_mask and normal images swapped"
        if fx["id"]:
            ids[i] = fx["id"]
        mislabeled.append({"index": i, "change": fx["change"], "value": fx["value"], "note": note})

    # suffixed ids: reuse another person's number with -1 / -2
    used = set(ids)
    n_suf = _quirk_count("suffixed", people)
    n_suf -= sum("-" in ids[m["index"]] for m in mislabeled)
    cand = [int(i) for i in rng.permutation(people) if int(i) not in taken]
    suffixed = [int(i) for i in cand[:max(0, n_suf)]]
    bases = [i for i in cand[max(0, n_suf):]] or [i for i in range(people) if i not in suffixed]
    last = None
    for i in suffixed:
        base = last if (last is not None and rng.random() < 0.25) else ids[int(bases[rng.integers(len(bases))])]
        base = base.split("-")[0]
        k = 1
        while f"{base}-{k}" in used:
            k += 1
        ids[i] = f"{base}-{k}"
        used.add(ids[i])
        last = base
    suffixed += [m["index"] for m in mislabeled if "-" in ids[m["index"]]]

    # extensions (png and jpeg folders disjoint) and hidden files
    perm = [int(i) for i in rng.permutation(people)]
    n_png, n_jpeg = _quirk_count("png", people), _quirk_count("jpeg", people)
    n_png = min(n_png, people)
    n_jpeg = min(n_jpeg, people - n_png)
    png, jpeg = set(perm[:n_png]), set(perm[n_png:n_png + n_jpeg])
    n_m5 = min(_quirk_count("jpeg_mask5_jpg", people), len(jpeg))
    jpeg_m5 = set(perm[n_png:n_png + n_m5])
    n_hidden = int(round(people * HIDDEN_RATE))
    n_hidden = max(n_hidden, 1) if people >= MIN_PEOPLE_FOR_QUIRKS else n_hidden
    hidden = {int(i) for i in rng.choice(people, size=min(n_hidden, people), replace=False)}

    train = []
    for i in range(people):
        g = "male" if rec_gender[i] == 0 else "female"
        folder = f"{ids[i]}_{g}_Asian_{int(rec_age[i])}"
        ext = ".png" if i in png else ".jpeg" if i in jpeg else ".jpg"
        exts = {s: ext for s in STEMS}
        if i in jpeg_m5:
            exts["mask5"] = ".jpg"
        train.append({"index": i, "id": ids[i], "gender": g, "age": int(rec_age[i]), "folder": folder,
                      "true_gender": int(genders[i]), "drawn_age": int(drawn_age[i]), "swap": bool(swap[i]),
                      "exts": exts, "hidden": i in hidden})
    for m in mislabeled:
        m["id"] = ids[m["index"]]
        m["profile"] = train[m["index"]]["folder"]

    # eval: other people (own RNG stream), 7 images each under hashed names, shuffled listing
    eg, ea = sample_demographics(eval_people, rng)
    evals = []
    for i in range(eval_people):
        names = {s: hashlib.sha1(f"{GENERATOR}:{seed}:eval:{i}:{s}".encode()).hexdigest() + ".jpg"
                 for s in STEMS}
        grp = int(L.age_group(int(ea[i])))
        labels = {s: L.encode(int(L.MASK_STEMS[s]), int(eg[i]), grp) for s in STEMS}
        evals.append({"index": i, "true_gender": int(eg[i]), "age": int(ea[i]),
                      "drawn_age": _drawn_age(rng, int(ea[i])), "names": names, "labels": labels})
    eval_rows = [(e["names"][s], e["labels"][s]) for e in evals for s in STEMS]
    eval_rows = [eval_rows[j] for j in rng.permutation(len(eval_rows))]

    return {
        "train": train, "eval": evals, "eval_rows": eval_rows, "mislabeled": mislabeled,
        "quirks": {
            "png_folders": sorted(train[i]["folder"] for i in png),
            "jpeg_folders": sorted(train[i]["folder"] for i in jpeg),
            "jpeg_mask5_jpg": sorted(train[i]["folder"] for i in jpeg_m5),
            "suffixed_ids": sorted(train[i]["folder"] for i in set(suffixed)),
            "hidden_folders": sorted(train[i]["folder"] for i in hidden),
        },
    }


