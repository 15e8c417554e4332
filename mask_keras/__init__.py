"""mask_keras: mask x gender x age face classification on Keras 3 (JAX backend first).

Importing the package selects the JAX backend unless ``KERAS_BACKEND`` is already
set, and keeps TensorFlow (used only for tf.data) off any GPU so that JAX owns it.
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.2.0"

#: set (to "1") only in the synthetic generator's render workers (mask_keras.data.synth.write), which
#: need numpy and PIL: no backend set-up, no Keras; each spawned worker would otherwise pay ~8 s of imports
LIGHT_IMPORT_ENV = "MASK_KERAS_LIGHT_IMPORT"
_light = os.environ.get(LIGHT_IMPORT_ENV) == "1"

if os.environ["KERAS_BACKEND"] == "jax" and not _light:
    # XLA:CPU runs some convolutions (depthwise above all) far slower than needed: in CPU programs Keras'
    # convolutions take faster formulations (mask_keras.jax_backend.cpu_conv); MASK_KERAS_CPU_CONV=0: off
    from .jax_backend import cpu_conv as _cpu_conv
    from .jax_backend import host_init as _host_init

    _cpu_conv.install()
    # initial weights drawn with numpy, not one XLA compile per weight shape; MASK_KERAS_HOST_INIT=0: off
    _host_init.install()

from . import labels  # noqa: E402  (light: numpy only)
from .data.layout import LayoutError, read_eval, read_train  # noqa: E402

# register every custom Keras object, so `import mask_keras` is all a fresh process
# needs before keras.saving.load_model("model.keras")
if not _light:
    from . import augment, losses, metrics, models  # noqa: E402,F401

__all__ = ["labels", "read_train", "read_eval", "LayoutError", "__version__"]
