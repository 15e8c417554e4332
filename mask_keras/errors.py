"""The package's light error types (ConfigError, ExportError, WeightsUnavailableError) and the
"did you mean" hint they carry.

A leaf module (imports nothing from the package), so any module can raise
:class:`ConfigError` without importing :mod:`mask_keras.config`, and the command line can
catch :class:`ExportError` without importing TensorFlow.
"""
from __future__ import annotations

import difflib


class ConfigError(ValueError):
    """A config value is unknown or inconsistent; raised before any work starts."""


class ExportError(RuntimeError):
    """The export failed or the exported directory is not usable (:mod:`mask_keras.inference.exported`)."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be had: no network, a blocked host, a missing file, or a
    weight package not installed (:mod:`mask_keras.models.backbones`, :mod:`mask_keras.models.pretrained`)."""


def did_you_mean(value, choices) -> str:
    """``" (did you mean 'x'?)"`` for the choice closest to ``value``, or ``""`` if none is close.

    Args:
        value: what was given (compared as a string).
        choices: the accepted values (compared as strings).

    Returns:
        The hint, with a leading space, or ``""`` when no choice is close (``difflib``).

    Example:
        >>> did_you_mean("resnet5", ["resnet50", "tiny_cnn"])
        " (did you mean 'resnet50'?)"
        >>> did_you_mean("zzz", ["resnet50", "tiny_cnn"])
        ''
    """
    near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def unknown_choice(name: str, value, choices) -> ConfigError:
    """The error for a value that is not one of ``choices``: names them, with a suggestion.

    Args:
        name: what the value is, e.g. ``"backbone"`` or ``"train.devices"``.
        value: what was given.
        choices: the accepted values, in the order to list them.

    Returns:
        A :class:`ConfigError` (not raised: the caller raises it).

    Example:
        >>> print(unknown_choice("backbone", "resnet5", ["resnet50", "tiny_cnn"]))
        unknown backbone 'resnet5' (did you mean 'resnet50'?); choose one of: resnet50, tiny_cnn
    """
    return ConfigError(f"unknown {name} {value!r}{did_you_mean(value, choices)}; "
                       f"choose one of: {', '.join(map(str, choices))}")
