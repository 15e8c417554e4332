"""The search space: dotted config keys to distributions, checked before any trial (``space.json``)."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from ..config import Config, ConfigError
from ..errors import unknown_choice

#: what the search maximises (the epoch log each trial reports)
MONITOR = "val_macro_f1"
KINDS = ("uniform", "loguniform", "int", "categorical")
#: the study user attribute holding the space it was started with
SPACE_ATTR = "mask_keras_space"


@dataclasses.dataclass(frozen=True)
class Param:
    """One dimension of the search space: a dotted config key and its distribution.

    Build it with :func:`make_param` (which checks the arguments) or :func:`parse_space`.

    Attributes:
        key: the dotted config key, e.g. ``"train.lr"``; also the Optuna parameter name.
        kind: one of ``KINDS``: ``uniform``, ``loguniform``, ``int``, ``categorical``.
        args: ``(low, high)``, ``(low, high, step)`` for ``int``, or ``(choices,)``.
        encoded: categorical choices stored as JSON strings (some choice is a list, tuple
            or dict, which Optuna cannot store as such).

    Example:
        >>> p = make_param("preprocess.image_size", "categorical", ([[128, 96], [224, 224]],))
        >>> p.encoded, p.choices, p.decode("[224, 224]")
        (True, ([128, 96], [224, 224]), [224, 224])
    """

    key: str
    kind: str
    args: tuple
    encoded: bool = False

    @property
    def choices(self) -> tuple:
        """The categorical choices, as given (a categorical Param only)."""
        return tuple(self.args[0])

    def suggest(self, trial):
        """Sample a value with ``trial``, decoded to what the config expects.

        Args:
            trial: an ``optuna.Trial`` (or ``FixedTrial``); the parameter is named ``key``.

        Returns:
            A float (``uniform``/``loguniform``), an int (``int``, on the ``step`` grid) or
            one of the choices (JSON-decoded when ``encoded``).
        """
        if self.kind == "uniform":
            return trial.suggest_float(self.key, self.args[0], self.args[1])
        if self.kind == "loguniform":
            return trial.suggest_float(self.key, self.args[0], self.args[1], log=True)
        if self.kind == "int":
            step = self.args[2] if len(self.args) > 2 else 1
            return trial.suggest_int(self.key, self.args[0], self.args[1], step=step)
        if self.encoded:
            return json.loads(trial.suggest_categorical(self.key, [json.dumps(c) for c in self.choices]))
        return trial.suggest_categorical(self.key, list(self.choices))

    def decode(self, raw):
        """A value as Optuna stores it -> the config value.

        Args:
            raw: a trial's stored parameter value.

        Returns:
            ``raw``, JSON-decoded when the Param is ``encoded`` and ``raw`` is a string.
        """
        return json.loads(raw) if self.encoded and isinstance(raw, str) else raw

    def values(self) -> tuple:
        """The values to check against the config before the search starts.

        Returns:
            The choices (``categorical``), else ``(low, high)``.
        """
        return self.choices if self.kind == "categorical" else (self.args[0], self.args[1])


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def parse_space(space: dict, base_cfg: Config | None = None, check_values: bool = False) -> list[Param]:
    """Check a search-space dict and return its :class:`Param` list.

    ``space`` maps dotted config keys to ``(kind, *args)``: ``("uniform", low, high)``,
    ``("loguniform", low, high)``, ``("int", low, high[, step])``,
    ``("categorical", [choice, ...])`` (lists instead of tuples are fine, as in JSON).
    Keys are checked against ``base_cfg`` (unknown keys raise with a suggestion), numeric
    distributions on integer or boolean options are refused, and with ``check_values``
    every bound and choice is applied to the base config and validated
    (``Config.validate``). Raises :class:`ConfigError` naming the key and the fix.

    Args:
        space: ``{"section.option": [kind, *args], ...}``, non-empty; ``train.out_dir``
            cannot be searched.
        base_cfg: the config the trials start from (None: ``Config()``).
        check_values: also validate the base config with every bound and choice.

    Returns:
        One :class:`Param` per key, in the order of ``space``.

    Example:
        >>> parse_space({"train.lr": ["loguniform", 1e-5, 1e-2]})
        [Param(key='train.lr', kind='loguniform', args=(1e-05, 0.01), encoded=False)]
        >>> parse_space({"train.epochs": ["uniform", 1, 5]})
        Traceback (most recent call last):
        ...
        mask_keras.errors.ConfigError: search space train.epochs: an integer option (now 10); ...
    """
    base_cfg = base_cfg or Config()
    if not isinstance(space, dict) or not space:
        raise ConfigError("search space must be a non-empty mapping of 'section.option' to "
                          "[kind, ...], e.g. {\"train.lr\": [\"loguniform\", 1e-5, 1e-2]}")
    current = base_cfg.to_dict()
    params = []
    for key, spec in space.items():
        if not isinstance(key, str):
            raise ConfigError(f"search space key {key!r} must be a 'section.option' string")
        if key == "train.out_dir":
            raise ConfigError("train.out_dir cannot be searched: tune gives every trial its own "
                              "<out_dir>/trial_<number>; pass --out-dir for the study's folder")
        if not isinstance(spec, (list, tuple)) or not spec or not isinstance(spec[0], str):
            raise ConfigError(f"search space {key}: expected [kind, ...] with kind one of "
                              f"{', '.join(KINDS)}, got {spec!r}")
        kind, args = spec[0], tuple(spec[1:])
        if kind not in KINDS:
            raise unknown_choice(f"distribution for {key}:", kind, KINDS)
        p = make_param(key, kind, args)
        # the key must exist in the config (ConfigError with a suggestion otherwise)
        try:
            base_cfg.override(**{key: p.values()[0]})
        except ConfigError as e:
            raise ConfigError(f"search space key {key!r}: {e}") from None
        section, _, name = key.partition(".")
        default = current[section][name]
        if kind != "categorical" and isinstance(default, bool):
            raise ConfigError(f"search space {key}: a yes/no option; use [\"categorical\", [false, true]]")
        if kind in ("uniform", "loguniform") and isinstance(default, int):
            raise ConfigError(f"search space {key}: an integer option (now {default}); "
                              f"use [\"int\", low, high] or [\"categorical\", [...]]")
        params.append(p)
    if check_values:
        for p in params:
            for v in p.values():
                try:
                    base_cfg.override(**{p.key: v}).validate()
                except ConfigError as e:
                    raise ConfigError(f"search space {p.key}: value {v!r} is not valid on the base "
                                      f"config: {e}") from None
    return params


def make_param(key: str, kind: str, args: tuple) -> Param:
    """One :class:`Param` from its parts, its arguments checked (not the key: see :func:`parse_space`).

    Args:
        key: the dotted config key.
        kind: one of ``KINDS`` (another kind is taken as numeric ``(low, high)``).
        args: ``(low, high)`` finite numbers with ``low < high`` (``low > 0`` for
            ``loguniform``); integers ``(low, high[, step >= 1])`` for ``int``; or
            ``(choices,)``, a non-empty list of distinct JSON values, for ``categorical``.

    Returns:
        The :class:`Param` (``int`` bounds as ints; ``encoded`` when a choice is a list,
        tuple or dict).

    Raises:
        ConfigError: the arguments do not fit the kind, naming the expected form.

    Example:
        >>> make_param("model.head_units", "int", (64, 512, 64.0))
        Param(key='model.head_units', kind='int', args=(64, 512, 64), encoded=False)
    """
    where = f"search space {key} ({kind})"
    if kind == "categorical":
        if len(args) != 1 or not isinstance(args[0], (list, tuple)) or not args[0]:
            raise ConfigError(f"{where}: expected [\"categorical\", [choice, ...]] with at least one choice, "
                              f"got {[kind, *args]!r}")
        choices = tuple(args[0])
        try:
            keys = [json.dumps(c, sort_keys=True) for c in choices]
        except TypeError as e:
            raise ConfigError(f"{where}: choices must be JSON values ({e})") from None
        if len(set(keys)) != len(keys):
            raise ConfigError(f"{where}: duplicate choices in {list(choices)!r}")
        encoded = any(isinstance(c, (list, tuple, dict)) for c in choices)
        return Param(key, kind, (choices,), encoded)
    n = (2, 3) if kind == "int" else (2,)
    if len(args) not in n:
        form = "low, high[, step]" if kind == "int" else "low, high"
        raise ConfigError(f"{where}: expected [\"{kind}\", {form}], got {[kind, *args]!r}")
    if not all(_is_number(a) for a in args):
        raise ConfigError(f"{where}: bounds must be finite numbers, got {list(args)!r}")
    low, high = args[0], args[1]
    if kind == "int":
        if not all(float(a).is_integer() for a in args):
            raise ConfigError(f"{where}: bounds and step must be integers, got {list(args)!r}")
        args = tuple(int(a) for a in args)
        low, high = args[0], args[1]
        if len(args) == 3 and args[2] < 1:
            raise ConfigError(f"{where}: step must be >= 1, got {args[2]}")
    if not low < high:
        raise ConfigError(f"{where}: low {low} must be below high {high}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: low must be > 0 on a log scale, got {low}")
    return Param(key, kind, tuple(args))


def space_json(space: dict) -> str:
    """Canonical JSON of a space (tuples as lists, sorted keys): what the study records.

    Args:
        space: a search-space dict (see :func:`parse_space`).

    Returns:
        The JSON string.

    Example:
        >>> space_json({"train.lr": ("loguniform", 1e-5, 1e-2)})
        '{"train.lr": ["loguniform", 1e-05, 0.01]}'
    """
    return json.dumps(space, sort_keys=True)


def load_space(path) -> dict:
    """Read a search space from a JSON file (lists where Python would use tuples).

    Args:
        path: the ``space.json`` file (str or path).

    Returns:
        The space dict, unchecked (pass it to :func:`parse_space`).

    Raises:
        ConfigError: the file is missing, not JSON, or not a JSON object.
    """
    path = Path(path)
    try:
        space = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: search space file not found") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); expected e.g. "
                          "{\"train.lr\": [\"loguniform\", 1e-5, 1e-2]}") from None
    if not isinstance(space, dict):
        raise ConfigError(f"{path}: expected a JSON object of 'section.option': [kind, ...]")
    return space




def study_space(study) -> dict[str, Param]:
    """The space a study was started with, from its ``SPACE_ATTR`` user attribute.

    Args:
        study: an ``optuna.Study``.

    Returns:
        ``{key: Param}``; empty when the attribute is missing or unreadable.
    """
    try:  # the space this study was started with (no config check: only decoding is needed)
        return {k: make_param(k, v[0], tuple(v[1:])) for k, v in json.loads(study.user_attrs[SPACE_ATTR]).items()}
    except (KeyError, ValueError, TypeError, IndexError):
        return {}
