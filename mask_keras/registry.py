"""Named registries: the backbones, augmentation presets and losses a config may name.

The registries live here, in a leaf module (it imports only :mod:`mask_keras.errors`), and
are filled by the modules that define their entries when those are imported:
:mod:`mask_keras.models.backbones`, :mod:`mask_keras.augment` and :mod:`mask_keras.losses`.
``import mask_keras`` (which runs before any of its modules) imports all three, so
:meth:`mask_keras.config.Config.validate` checks names here without importing those modules.
"""
from __future__ import annotations

from typing import Any, Iterator

from .errors import unknown_choice


class Registry:
    """Names -> objects, in registration order; a lookup of an unknown name raises ConfigError.

    Reads like a dict: ``reg[name]`` (same as :meth:`get`), ``name in reg``, iteration over
    the names in registration order, ``len``, :meth:`items` and :meth:`values`.

    Args:
        kind: what the entries are, as error messages name them (e.g. ``"backbone"``).

    Example:
        >>> colours = Registry("colour")
        >>> colours.register("red", (255, 0, 0))
        (255, 0, 0)
        >>> @colours.register("blue")
        ... def blue():
        ...     return (0, 0, 255)
        >>> list(colours), colours.names(), "red" in colours, len(colours)
        (['red', 'blue'], ['blue', 'red'], True, 2)
        >>> try:
        ...     colours.get("rde")
        ... except ValueError as e:
        ...     print(e)
        unknown colour 'rde' (did you mean 'red'?); choose one of: blue, red
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str, obj: Any = None) -> Any:
        """Add ``obj`` under ``name`` and return it; without ``obj``, a decorator that registers
        what it decorates. A name registered twice raises ValueError.

        Args:
            name: the name configs use.
            obj: the entry (a spec, a preset, a builder function); None: return a decorator.

        Returns:
            ``obj``; without it, a decorator that registers its argument and returns it.

        Raises:
            ValueError: ``name`` is already registered.
        """
        if obj is None:
            return lambda o: self.register(name, o)
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        return obj

    def get(self, name: str) -> Any:
        """The entry registered under ``name``; ConfigError naming the choices (with a
        suggestion) otherwise.

        Args:
            name: a registered name (an unhashable value, e.g. a list from a config file,
                is unknown too).

        Returns:
            The registered object.

        Raises:
            ConfigError: ``name`` is not registered.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name from a config file
            raise unknown_choice(self.kind, name, self.names()) from None

    def names(self) -> list[str]:
        """The registered names, sorted.

        Returns:
            A new ``list[str]`` (iterating the registry gives registration order instead).
        """
        return sorted(self._entries)

    def __contains__(self, name) -> bool:
        try:
            return name in self._entries
        except TypeError:
            return False

    # read like a dict: reg[name], iteration (registration order), len, items(), values()
    __getitem__ = get

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self):
        """The ``(name, object)`` pairs, in registration order.

        Returns:
            A live view of the entries (``dict.items()``).
        """
        return self._entries.items()

    def values(self):
        """The registered objects, in registration order.

        Returns:
            A live view of the entries (``dict.values()``).
        """
        return self._entries.values()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


#: backbone name (``ModelConfig.backbone``) -> ``BackboneSpec``; filled by mask_keras.models.backbones
BACKBONES = Registry("backbone")
#: augmentation preset name (``AugmentConfig.preset``) -> ``Preset``; filled by mask_keras.augment
AUGMENT_PRESETS = Registry("augmentation preset")
#: loss name (``LossConfig.name`` / ``terms``) -> builder ``(cfg, num_classes, class_counts, class_weights)``;
#: filled by mask_keras.losses
LOSSES = Registry("loss")

__all__ = ["Registry", "BACKBONES", "AUGMENT_PRESETS", "LOSSES"]
