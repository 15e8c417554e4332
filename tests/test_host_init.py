"""Initial weights drawn on the host (mask_keras.jax_backend.host_init)."""
from __future__ import annotations

import mask_keras  # noqa: F401  (JAX backend, hooks installed)

import jax
import keras
import numpy as np

from mask_keras.jax_backend import host_init
from mask_keras.jax_backend.distribute import CompileCounter


def _weights(seed):
    keras.utils.set_random_seed(seed)
    layer = keras.layers.Dense(64, kernel_initializer="glorot_uniform", bias_initializer="random_normal")
    layer.build((None, 32))
    conv = keras.layers.Conv2D(16, 3, kernel_initializer="truncated_normal")
    conv.build((None, 8, 8, 4))
    return [keras.ops.convert_to_numpy(v) for v in (*layer.weights, conv.kernel)]


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = _weights(3), _weights(3), _weights(4)
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)
        assert not np.array_equal(x, z)


def test_distributions_are_keras_own():
    kernel, bias, conv = _weights(0)
    limit = np.sqrt(6 / (32 + 64))  # glorot uniform
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.95 * limit
    assert abs(kernel.std() - limit / np.sqrt(3)) < 0.05 * limit
    assert abs(bias.std() - 0.05) < 0.02  # RandomNormal(stddev=0.05)
    # TruncatedNormal(stddev=0.05): within two standard deviations, std 0.88 of the untruncated one
    assert np.abs(conv).max() <= 2 * 0.05 + 1e-7
    assert abs(conv.std() - 0.05 * 0.8796) < 0.004


def test_building_a_model_compiles_no_program_per_weight_shape():
    from mask_keras.config import ModelConfig
    from mask_keras.models.build import build_model

    with CompileCounter() as cc:
        build_model(ModelConfig(backbone="efficientnet_b0", weights=None), "multi", (32, 32))
    random_compiles = sum(v for k, v in cc.counts.items() if "normal" in k or "uniform" in k)
    assert random_compiles == 0, cc
    assert sum(cc.counts.values()) < 40, cc  # was 162 (three per distinct random weight shape)


def test_inside_a_traced_function_jax_random_still_draws_fresh_numbers():
    gen = keras.random.SeedGenerator(1)

    @jax.jit
    def draw(state):
        # a traced seed: the draw must stay in the program and change with the state
        return keras.random.normal((4,), seed=state), keras.random.dropout(keras.ops.ones((100,)), 0.5, seed=state)

    s1 = gen.next()
    s2 = gen.next()
    (n1, d1), (n2, d2) = draw(s1), draw(s2)
    assert not np.allclose(n1, n2) and not np.array_equal(d1, d2)


def test_off_switch_restores_jax_random(monkeypatch):
    host_init.uninstall()
    try:
        assert not host_init.installed()
        monkeypatch.setenv(host_init.ENV, "0")
        assert host_init.install() is False and not host_init.installed()
    finally:
        monkeypatch.delenv(host_init.ENV)
        assert host_init.install() is True and host_init.installed()
