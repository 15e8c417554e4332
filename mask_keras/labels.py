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
    """Mask state: ``WEAR`` (0, worn properly), ``INCORRECT`` (1), ``NOT_WEAR`` (2)."""

    WEAR = 0
    INCORRECT = 1
    NOT_WEAR = 2


class Gender(enum.IntEnum):
    """Gender: ``MALE`` (0), ``FEMALE`` (1)."""

    MALE = 0
    FEMALE = 1


class AgeGroup(enum.IntEnum):
    """Age group (see :func:`age_group`): ``YOUNG`` (0), ``MIDDLE`` (1), ``OLD`` (2)."""

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

    Args:
        age: age in years, a number or array-like of numbers.
        upper: first age of group 2 (``EVAL_AGE_UPPER``, 60, by default).
        lower: first age of group 1 (``AGE_LOWER``, 30, by default).

    Returns:
        An ``int`` for a scalar ``age``, else an int64 array of ``age``'s shape.

    Raises:
        ValueError: unless ``lower < upper``.

    Example:
        >>> age_group(29), age_group(59), age_group(59, upper=58)
        (0, 1, 2)
        >>> age_group([18, 45, 60])
        array([0, 1, 2])
    """
    if not lower < upper:
        raise ValueError(f"age_group: need lower < upper, got lower={lower}, upper={upper}")
    a = np.asarray(age)
    out = np.where(a >= upper, 2, np.where(a >= lower, 1, 0))
    return int(out) if out.ndim == 0 else out.astype(np.int64)


def encode(mask, gender, age_grp):
    """(mask, gender, age_group) -> class 0..17; works on scalars and arrays.

    Args:
        mask: mask state(s) in 0..2 (:class:`Mask`).
        gender: gender(s) in 0..1 (:class:`Gender`).
        age_grp: age group(s) in 0..2 (:class:`AgeGroup`).

    Returns:
        ``mask * 6 + gender * 3 + age_grp``: an ``int`` for scalars, else an int64 array
        (the inputs broadcast).

    Raises:
        ValueError: a value outside its range.

    Example:
        >>> encode(Mask.NOT_WEAR, Gender.FEMALE, AgeGroup.OLD)
        17
        >>> encode([0, 1], [1, 0], [2, 0])
        array([5, 6])
    """
    m, g, a = (np.asarray(x) for x in (mask, gender, age_grp))
    for name, v, hi in (("mask", m, 3), ("gender", g, 2), ("age_group", a, 3)):
        if np.any((v < 0) | (v >= hi)):
            raise ValueError(f"encode: {name} must be in 0..{hi - 1}, got {v!r}")
    out = m * 6 + g * 3 + a
    return int(out) if out.ndim == 0 else out.astype(np.int64)


def decode(label):
    """class 0..17 -> (mask, gender, age_group); works on scalars and arrays.

    Args:
        label: class(es) in 0..17.

    Returns:
        A tuple ``(mask, gender, age_group)`` of ``int`` for a scalar ``label``, else of
        three int64 arrays of ``label``'s shape.

    Raises:
        ValueError: a class outside 0..17.

    Example:
        >>> decode(17)
        (2, 1, 2)
        >>> decode([0, 5])
        (array([0, 0]), array([0, 1]), array([0, 2]))
    """
    c = np.asarray(label)
    if np.any((c < 0) | (c >= NUM_CLASSES)):
        raise ValueError(f"decode: class must be in 0..{NUM_CLASSES - 1}, got {c!r}")
    m, g, a = c // 6, (c // 3) % 2, c % 3
    if c.ndim == 0:
        return int(m), int(g), int(a)
    return m.astype(np.int64), g.astype(np.int64), a.astype(np.int64)


def class_name(label: int) -> str:
    """Readable name of one 18-class label, ``"mask/gender/age"``.

    Args:
        label: a class in 0..17 (ValueError otherwise).

    Returns:
        The names from ``CLASS_NAMES`` joined by ``/``.

    Example:
        >>> class_name(4)
        'wear/female/30-59'
    """
    m, g, a = decode(label)
    return f"{CLASS_NAMES['mask'][m]}/{CLASS_NAMES['gender'][g]}/{CLASS_NAMES['age'][a]}"


def task_target(task: str, mask, gender, age_grp):
    """The integer target of ``task`` for rows with these labels.

    Args:
        task: ``mask``, ``gender``, ``age`` or ``multi`` (``multihead`` has no single
            target: ValueError, as for an unknown task).
        mask: mask state(s) in 0..2.
        gender: gender(s) in 0..1.
        age_grp: age group(s) in 0..2.

    Returns:
        The task's labels as an array (``multi``: :func:`encode`, an ``int`` for scalars).

    Example:
        >>> task_target("gender", [0, 1], [1, 0], [2, 2])
        array([1, 0])
        >>> task_target("multi", [0, 1], [1, 0], [2, 2]).tolist()
        [5, 8]
    """
    if task == "mask":
        return np.asarray(mask)
    if task == "gender":
        return np.asarray(gender)
    if task == "age":
        return np.asarray(age_grp)
    if task == "multi":
        return encode(mask, gender, age_grp)
    if task == "multihead":
        raise ValueError("task 'multihead' has no single target: take the mask, gender and age targets "
                         "(task_target('mask'|'gender'|'age', ...)) for its three heads")
    raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")


def check_task(task: str) -> str:
    """Validate a task name.

    Args:
        task: one of ``TASKS`` (``mask``, ``gender``, ``age``, ``multi``, ``multihead``).

    Returns:
        ``task`` unchanged.

    Raises:
        ValueError: an unknown task, naming the choices.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return task
