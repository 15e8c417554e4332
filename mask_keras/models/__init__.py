"""Models: backbone registry, heads, and the model builder.

Importing this package registers the custom Keras objects (``mask_keras>InputAdapter``),
which is all ``keras.saving.load_model`` needs to reload a saved ``.keras`` model; keras-hub
backbones reload through keras-hub itself (Keras imports it on demand). Only Keras is
imported here; keras-hub is imported when a keras-hub backbone is built.
"""
from __future__ import annotations

from .backbones import (BACKBONES, BackboneSpec, InputAdapter, WeightsUnavailableError,
                        build_backbone, describe_backbones, get_spec)
from .build import (MeltingPhase, backbone_of, build_model, fit_melting, fresh_optimizer,
                    melting_phases, set_backbone_trainable)
from .heads import HEADS, MULTIHEAD_OUTPUTS, apply_head, apply_multihead

__all__ = [
    "BACKBONES", "BackboneSpec", "InputAdapter", "WeightsUnavailableError", "build_backbone",
    "describe_backbones", "get_spec", "build_model", "backbone_of", "set_backbone_trainable",
    "MeltingPhase", "melting_phases", "fresh_optimizer", "fit_melting", "HEADS",
    "MULTIHEAD_OUTPUTS", "apply_head", "apply_multihead",
]
