"""Labels of the task: mask state x gender x age group -> 18 classes.

class = mask * 6 + gender * 3 + age_group
decode: mask = c // 6, gender = (c // 3) % 2, age_group = c % 3
"""
from __future__ import annotations

import enum

import numpy as np

NUM_CLASSES = 18
TASKS = ("mask", "gender", "age", "multi", "multihead")
#: number of classes per single task
TASK_CLASSES = {"mask": 3, "gender": 2, "age": 3, "multi": NUM_CLASSES}
#: the three per-task answers, in the order of a multi-head model's outputs and of the 18-class code
HEADS = ("mask", "gender", "age")
#: age threshold used for evaluation (the competition's rule); training may lower it
EVAL_AGE_UPPER = 60
AGE_LOWER = 30


class Mask(enum.IntEnum):
    WEAR = 0
    INCORRECT = 1
    NOT_WEAR = 2


class Gender(enum.IntEnum):
    MALE = 0
    FEMALE = 1


class AgeGroup(enum.IntEnum):
    YOUNG = 0  # < 30
    MIDDLE = 1  # 30 .. upper-1
    OLD = 2  # >= upper (60 by the competition's rule)


#: image file stem -> mask state, exactly as the real folders name them
MASK_STEMS = {
    "mask1": Mask.WEAR,
    "mask2": Mask.WEAR,
    "mask3": Mask.WEAR,
    "mask4": Mask.WEAR,
    "mask5": Mask.WEAR,
    "incorrect_mask": Mask.INCORRECT,
    "normal": Mask.NOT_WEAR,
}
GENDER_NAMES = {"male": Gender.MALE, "female": Gender.FEMALE}

CLASS_NAMES = {
    "mask": ["wear", "incorrect", "not_wear"],
    "gender": ["male", "female"],
    "age": ["<30", "30-59", ">=60"],
}


def age_group(age, upper: int = EVAL_AGE_UPPER, lower: int = AGE_LOWER):
    """Age group of an age (scalar or array): 0 (< lower), 1, 2 (>= upper).

    ``upper`` is the knob the teams tuned: training with 58 or 59 moves the late
    fifties into the rare >=60 group; evaluation always uses 60.
    """
    if not lower < upper:
        raise ValueError(f"age_group: need lower < upper, got lower={lower}, upper={upper}")
    a = np.asarray(age)
    out = np.where(a >= upper, 2, np.where(a >= lower, 1, 0))
    return int(out) if out.ndim == 0 else out.astype(np.int64)


def encode(mask, gender, age_grp):
    """(mask, gender, age_group) -> class 0..17; works on scalars and arrays."""
    m, g, a = (np.asarray(x) for x in (mask, gender, age_grp))
    for name, v, hi in (("mask", m, 3), ("gender", g, 2), ("age_group", a, 3)):
        if np.any((v < 0) | (v >= hi)):
            raise ValueError(f"encode: {name} must be in 0..{hi - 1}, got {v!r}")
    out = m * 6 + g * 3 + a
    return int(out) if out.ndim == 0 else out.astype(np.int64)


def decode(label):
    """class 0..17 -> (mask, gender, age_group); works on scalars and arrays."""
    c = np.asarray(label)
    if np.any((c < 0) | (c >= NUM_CLASSES)):
        raise ValueError(f"decode: class must be in 0..{NUM_CLASSES - 1}, got {c!r}")
    m, g, a = c // 6, (c // 3) % 2, c % 3
    if c.ndim == 0:
        return int(m), int(g), int(a)
    return m.astype(np.int64), g.astype(np.int64), a.astype(np.int64)


def class_name(label: int) -> str:
    m, g, a = decode(label)
    return f"{CLASS_NAMES['mask'][m]}/{CLASS_NAMES['gender'][g]}/{CLASS_NAMES['age'][a]}"


def task_target(task: str, mask, gender, age_grp):
    """The integer target of ``task`` for rows with these labels."""
    if task == "mask":
        return np.asarray(mask)
    if task == "gender":
        return np.asarray(gender)
    if task == "age":
        return np.asarray(age_grp)
    if task == "multi":
        return encode(mask, gender, age_grp)
    raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return task
