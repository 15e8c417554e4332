"""The only JAX-specific code of the package; everything else is backend-agnostic Keras.

* :mod:`~mask_keras.jax_backend.distribute` - the persistent compilation cache, compile
  counting, ``keras.distribution`` data parallelism over devices and hosts.
* :mod:`~mask_keras.jax_backend.cpu_conv` - convolutions as XLA:CPU runs them fast
  (depthwise above all, 20x slower as XLA writes them), installed into Keras' JAX backend
  when the package is imported; programs for GPUs and TPUs keep XLA's convolution.
* :mod:`~mask_keras.jax_backend.host_init` - initial weights drawn with numpy, so that
  building a model compiles no XLA program per weight shape.

Nothing here starts a JAX backend at import time: a multi-host job can only join its
cluster before the first device is touched (:func:`distribute.join_job`).
"""
