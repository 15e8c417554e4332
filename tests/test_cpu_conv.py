"""CPU convolutions (mask_keras.jax_backend.cpu_conv) against XLA's own, and their Keras hook.

Values and both gradients are compared with ``lax.conv_general_dilated`` on small random
arrays (eager JAX: no compile per case), with a random cotangent so that every output
element weighs differently.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import mask_keras  # noqa: F401  (JAX backend, hook installed)

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
from jax import lax

from mask_keras.jax_backend import cpu_conv

TOL = 2e-5  # float32 sums of up to 49 products of O(1) numbers
_RNG = np.random.default_rng(0)


def _normal(*shape):
    """Test inputs from numpy: an eager ``jax.random`` call compiles once per shape."""
    return _RNG.normal(size=shape).astype("float32")


def _xla_depthwise(x, k, strides, padding):
    return lax.conv_general_dilated(x, k[:, :, None, :], strides, padding.upper(),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=x.shape[-1], precision="highest")


def _xla_conv(x, k, strides, padding):
    return lax.conv_general_dilated(x, k, strides, padding.upper(), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision="highest")


def _value_and_grads(f, x, k, ct):
    y, vjp = jax.vjp(f, x, k)
    return (y, *vjp(ct))


def _assert_all_same(cases):
    """``cases``: ``[(what, fast, ref, x, k)]``; every case's value and gradients in one jitted program
    (eager JAX would compile every primitive for every shape)."""
    rng = np.random.default_rng(7)
    cts = [rng.normal(size=jax.eval_shape(ref, x, k).shape).astype("float32") for _, _, ref, x, k in cases]

    @jax.jit
    def errors(xs, ks, cts):
        out = []
        for (_, fast, ref, _, _), x, k, ct in zip(cases, xs, ks, cts):
            for a, b in zip(_value_and_grads(fast, x, k, ct), _value_and_grads(ref, x, k, ct)):
                out.append(jnp.max(jnp.abs(a - b)) / jnp.maximum(1.0, jnp.max(jnp.abs(b))))
        return jnp.stack(out).reshape(len(cases), 3)

    errs = np.asarray(errors([c[3] for c in cases], [c[4] for c in cases], cts))
    bad = [f"{what}: {name} differs by {e:.2e}" for (what, *_), row in zip(cases, errs)
           for name, e in zip(("value", "input gradient", "kernel gradient"), row) if not e < TOL]
    assert not bad, "\n".join(bad)


#: (shape, stride, padding): odd and even sizes, each stride and padding at least twice per kernel
CASES = [((2, 7, 9, 3), 1, "same"), ((2, 7, 9, 3), 2, "valid"), ((2, 8, 6, 4), 2, "same"), ((2, 8, 8, 4), 1, "valid")]


@pytest.mark.parametrize("kernel", [3, 5, 7])
def test_depthwise_values_and_both_gradients_equal_xla(kernel):
    cases = []
    for shape, stride, padding in CASES:
        x = _normal(*shape)
        k = _normal(kernel, kernel, shape[-1])
        if padding == "valid" and min(shape[1:3]) < kernel:
            shape, padding = (shape[0], kernel + 2, kernel + 1, shape[3]), "valid"
            x = _normal(*shape)
        s = (stride, stride)
        cases.append((f"depthwise {shape} k{kernel} s{stride} {padding}",
                      lambda a, b, s=s, p=padding: cpu_conv.depthwise_conv2d(a, b, s, p),
                      lambda a, b, s=s, p=padding: _xla_depthwise(a, b, s, p), x, k))
    _assert_all_same(cases)


def test_depthwise_unequal_strides_and_kernels():
    x = _normal(2, 9, 8, 3)
    cases = []
    for kh, kw, sh, sw in ((3, 5, 1, 2), (5, 3, 2, 1), (1, 3, 2, 2)):
        k = _normal(kh, kw, 3)
        s = (sh, sw)
        cases.append((f"k{kh}x{kw} s{sh}x{sw}", lambda a, b, s=s: cpu_conv.depthwise_conv2d(a, b, s, "same"),
                      lambda a, b, s=s: _xla_depthwise(a, b, s, "same"), x, k))
    _assert_all_same(cases)


@pytest.mark.parametrize("kernel", [1, 3, 7])
def test_conv2d_and_pointwise_equal_xla_including_maps_smaller_than_the_kernel(kernel):
    # (2, 3, 2, 5) under a 3x3 or 7x7 kernel takes im2col for everything; (2, 9, 8, 5) XLA's forward
    cases = []
    for shape, stride, padding in (((2, 9, 8, 5), 1, "same"), ((2, 9, 8, 5), 2, "valid"), ((2, 3, 2, 5), 1, "same"),
                                   ((2, 3, 2, 5), 2, "same")):
        x = _normal(*shape)
        k = _normal(kernel, kernel, shape[-1], 4)
        if padding == "valid" and min(shape[1:3]) < kernel:
            padding = "same"
        s = (stride, stride)
        if kernel == 1:
            fast = lambda a, b, s=s: cpu_conv.pointwise_conv2d(a, b[0, 0], s)  # noqa: E731
        else:
            fast = lambda a, b, s=s, p=padding: cpu_conv.conv2d(a, b, s, p)  # noqa: E731
        cases.append((f"conv {shape} k{kernel} s{stride} {padding}", fast,
                      lambda a, b, s=s, p=padding: _xla_conv(a, b, s, p), x, k))
    _assert_all_same(cases)


# --------------------------------------------------------------------------- the Keras hook
def _layers():
    return {
        "depthwise": keras.layers.DepthwiseConv2D(3, strides=2, padding="same"),
        "separable": keras.layers.SeparableConv2D(6, 5, padding="same"),
        "grouped_per_channel": keras.layers.Conv2D(4, 7, padding="same", groups=4),  # ConvNeXt
        "pointwise": keras.layers.Conv2D(6, 1),
        "conv3x3_s2": keras.layers.Conv2D(6, 3, strides=2, padding="same"),
    }


@pytest.mark.parametrize("name", list(_layers()))
def test_keras_layers_give_the_same_outputs_and_gradients_with_and_without_the_hook(name):
    layer = _layers()[name]
    x = np.random.default_rng(0).normal(size=(2, 9, 8, 4)).astype("float32")
    layer.build(x.shape)

    def run():
        def loss(params, x):
            y, _ = layer.stateless_call(params, [], x)
            return jnp.sum(jnp.sin(y)), y

        params = [v.value for v in layer.trainable_variables]
        (_, y), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, x)
        hlo = jax.jit(lambda p, x: layer.stateless_call(p, [], x)[0]).lower(params, x).as_text()
        return y, grads, hlo

    assert cpu_conv.installed()
    y1, g1, hlo_fast = run()
    with cpu_conv.disabled():
        assert not cpu_conv.installed()
        y0, g0, hlo_xla = run()
    assert cpu_conv.installed()
    np.testing.assert_allclose(y1, y0, atol=1e-4, rtol=1e-5)
    for a, b in zip(g1, g0):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
    # the fast path really ran: XLA's convolution is gone from the CPU program
    assert "stablehlo.convolution" in hlo_xla
    if name != "conv3x3_s2":  # a plain 3x3 keeps XLA's forward; only its kernel gradient changes
        assert "stablehlo.convolution" not in hlo_fast


def test_programs_for_gpu_and_tpu_keep_xla_convolution():
    x, k = jnp.ones((2, 8, 6, 4)), jnp.ones((3, 3, 4, 1))
    grad = jax.jit(jax.grad(lambda x, k: jnp.sum(keras.ops.depthwise_conv(x, k, 1, "same") ** 2), (0, 1)))
    traced = grad.trace(x, k)
    cpu = traced.lower(lowering_platforms=("cpu",)).compile().as_text()
    assert " convolution(" not in cpu
    for platform in ("cuda", "tpu"):
        txt = traced.lower(lowering_platforms=(platform,)).as_text()
        assert "feature_group_count = 4" in txt, platform


@pytest.mark.parametrize("case", ["dilation", "depth_multiplier", "channels_first", "two_groups", "conv1d"])
def test_what_the_fast_path_does_not_cover_is_keras_own_op(case, monkeypatch):
    calls = []
    for fn in ("depthwise_conv2d", "conv2d", "pointwise_conv2d"):
        monkeypatch.setattr(cpu_conv, fn, lambda *a, _fn=fn, **k: calls.append(_fn))
    rng = np.random.default_rng(0)
    if case == "dilation":
        layer, shape = keras.layers.DepthwiseConv2D(3, dilation_rate=2, padding="same"), (1, 9, 9, 3)
    elif case == "depth_multiplier":
        layer, shape = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), (1, 9, 9, 3)
    elif case == "channels_first":
        layer, shape = keras.layers.DepthwiseConv2D(3, padding="same", data_format="channels_first"), (1, 3, 9, 9)
    elif case == "two_groups":
        layer, shape = keras.layers.Conv2D(4, 3, groups=2, padding="same"), (1, 9, 9, 4)
    else:
        layer, shape = keras.layers.Conv1D(4, 3, padding="same"), (1, 9, 3)
    x = rng.normal(size=shape).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x))
    assert calls == []
    with cpu_conv.disabled():
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), y, atol=1e-5)


def test_bfloat16_depthwise_is_computed_in_float32():
    x = jnp.asarray(_normal(2, 8, 6, 4), jnp.bfloat16)
    k = jnp.asarray(_normal(3, 3, 4, 1), jnp.bfloat16)
    y = keras.ops.depthwise_conv(x, k, 1, "same")
    assert y.dtype == jnp.bfloat16
    ref = _xla_depthwise(x.astype(jnp.float32), k[..., 0].astype(jnp.float32), (1, 1), "same")
    np.testing.assert_allclose(np.asarray(y, np.float32), ref, rtol=2e-2, atol=2e-2)


def test_saved_model_loads_and_predicts_the_same_with_the_hook_on_and_off(tmp_path):
    """A .keras file holds plain Keras layers: a fresh process loads it either way."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 12, 3))
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inp)
    h = keras.layers.DepthwiseConv2D(5, padding="same")(h)
    h = keras.layers.Conv2D(6, 1)(h)
    out = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, out)
    path = tmp_path / "m.keras"
    model.save(path)
    x = np.random.default_rng(0).uniform(size=(4, 16, 12, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    want = model.predict(x, verbose=0)
    script = textwrap.dedent(f"""
        import numpy as np, mask_keras, keras
        from mask_keras.jax_backend import cpu_conv
        x = np.load({str(tmp_path / 'x.npy')!r})
        assert cpu_conv.installed()  # a fresh process: on by default
        np.save({str(tmp_path / 'y_1.npy')!r}, keras.saving.load_model({str(path)!r}).predict(x, verbose=0))
        cpu_conv.uninstall()  # and off: Keras' own convolutions
        np.save({str(tmp_path / 'y_0.npy')!r}, keras.saving.load_model({str(path)!r}).predict(x, verbose=0))
    """)
    env = {k: v for k, v in os.environ.items() if k != cpu_conv.ENV}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "y_1.npy"), want, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "y_0.npy"), want, atol=1e-5)


# --------------------------------------------------------------------------- max pooling
def _xla_max_pool(x, k, s, padding):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, *k, 1), (1, *s, 1), padding.upper())


@pytest.mark.parametrize("pool,strides", [((2, 2), (2, 2)), ((3, 3), (2, 2)), ((3, 3), (1, 1)), ((2, 3), (1, 2))])
def test_max_pool_values_and_gradient_equal_xla(pool, strides):
    for h, w in [(9, 7), (8, 6)]:
        for padding in ("same", "valid"):
            x = jnp.asarray(_normal(2, h, w, 3))
            y0, vjp0 = jax.vjp(lambda x: _xla_max_pool(x, pool, strides, padding), x)
            y1, vjp1 = jax.vjp(lambda x: cpu_conv.max_pool2d(x, pool, strides, padding), x)
            ct = jnp.asarray(_normal(*y0.shape))
            np.testing.assert_array_equal(y1, y0)
            np.testing.assert_allclose(vjp1(ct)[0], vjp0(ct)[0], atol=1e-6)


def test_max_pool_gradient_goes_to_the_first_maximum_like_xla():
    # ReLU outputs tie at 0 (and rounding makes other ties): the gradient must not be split
    x = jnp.maximum(jnp.asarray(_normal(2, 8, 6, 3)), 0).round(1)
    ones = jnp.ones((2, 4, 3, 3))
    g0 = jax.vjp(lambda x: _xla_max_pool(x, (3, 3), (2, 2), "same"), x)[1](ones)[0]
    g1 = jax.vjp(lambda x: cpu_conv.max_pool2d(x, (3, 3), (2, 2), "same"), x)[1](ones)[0]
    np.testing.assert_array_equal(g1, g0)
    assert float(g1.sum()) == ones.size  # every output's gradient lands on exactly one input


@pytest.mark.parametrize("layer", ["MaxPooling2D(2)", "MaxPooling2D(3, strides=2, padding='same')"])
def test_keras_max_pooling_uses_the_fast_path_on_cpu_and_equals_keras_own(layer):
    layer = eval(f"keras.layers.{layer}")
    x = jnp.asarray(_normal(2, 9, 8, 4))

    def run():
        f = jax.jit(lambda x: jnp.sum(jnp.sin(layer(x))))
        hlo = jax.jit(layer.__call__).lower(x).compile().as_text()
        return layer(x), jax.grad(f)(x), hlo

    y1, g1, hlo_fast = run()
    with cpu_conv.disabled():
        y0, g0, hlo_xla = run()
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_allclose(g1, g0, atol=1e-6)
    assert "reduce-window(" in hlo_xla and "reduce-window(" not in hlo_fast


@pytest.mark.parametrize("case", ["channels_first", "pool1d", "int"])
def test_max_pooling_the_fast_path_does_not_cover_is_keras_own_op(case, monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_conv, "max_pool2d", lambda *a, **k: calls.append(1))
    if case == "channels_first":
        y = keras.layers.MaxPooling2D(2, data_format="channels_first")(_normal(1, 3, 8, 8))
    elif case == "pool1d":
        y = keras.layers.MaxPooling1D(2)(_normal(1, 8, 3))
    else:
        y = keras.ops.max_pool(jnp.arange(16, dtype=jnp.int32).reshape(1, 4, 4, 1), 2, 2)
    assert calls == [] and y is not None
