"""Convolutions (and max pooling) that XLA:CPU runs fast, installed into Keras' JAX backend.

Why
---
On CPU, XLA runs three kinds of convolution far slower than the arithmetic needs:

* **depthwise** (``feature_group_count`` = channels): a generic grouped-convolution loop,
  20-40x slow, its gradients slower still (jax-ml/jax#23713, jax-ml/jax#13800). One 3x3
  layer at (32, 24, 16, 144): 77 ms forward, 278 ms forward + backward. EfficientNet-B0,
  with one in every block, trained at 6.5 images/s against PyTorch's 42 on the same CPU.
* **1x1** kernel gradients: computed as a convolution whose window is the whole feature map
  (the batch as features), which XLA's YNNPACK path runs ~40x slower than the same
  numbers as a matrix product (EfficientNet's expand, project and squeeze-excite layers).
* **a feature map smaller than the kernel** (ResNet50's last stage at 96x64 input is 3x2
  under a 3x3 kernel): a fallback loop, ~800 ms for one 3x3 512->512 layer that a matrix
  product does in 10 ms; and kernel gradients of large-window, few-channel stems (7x7 on RGB).

And max pooling: ``reduce_window(max)`` and its select-and-scatter gradient are generic loops
on CPU (``tiny_cnn`` at 96x64: ~30% of its training step in four 2x2 pools).

How
---
* :func:`depthwise_conv2d` - k*k strided windows of the padded input, each times one kernel
  tap, summed: elementwise work XLA fuses into one loop. The input is split into ``stride x
  stride`` phases (polyphase), so every tap of a strided convolution is a plain window of one
  phase. The backward pass is written by hand (``jax.custom_vjp``): the input gradient, per
  phase, correlates the output gradient (zero-padded once) with the phase's taps, flipped;
  the kernel gradient sums every tap's ``window(x) * g`` over the batch in ONE variadic
  ``lax.reduce`` (XLA's own loop emitter, windows fused), then over space. Written as k*k
  separate ``sum``\ s, XLA hands each to YNNPACK, which copies the window first: 4-6x slower.
* :func:`pointwise_conv2d` - a 1x1 convolution as ``dot_general``: forward and both gradients
  are matrix products.
* :func:`max_pool2d` - the maximum of k*k strided windows; the gradient to the first maximum
  of each window (XLA's choice) as k*k masked copies: elementwise and fused.
* :func:`conv2d` - XLA's convolution where it is fast, im2col (the k*k windows concatenated
  along channels, one matrix product) where it is not: the kernel gradient always, the forward
  and input gradient when the feature map is smaller than the kernel.

Values and both gradients equal ``lax.conv_general_dilated`` to float32 rounding
(``tests/test_cpu_conv.py``: strides 1-2, kernels 1/3/5/7, same and valid padding, odd and
even sizes). Speed: ``bench/train_step.py`` and bench/README.md.

Where
-----
:func:`install` (called by ``import mask_keras``) replaces three functions of Keras' JAX backend,
``keras.src.backend.jax.nn.depthwise_conv``, ``...nn.conv`` and ``...nn.max_pool`` (2-D
channels-last float pooling: ``MaxPooling2D``, ResNet stems), through which every Keras
convolution layer and ``keras.ops.conv`` go: ``DepthwiseConv2D`` and ``SeparableConv2D``
(EfficientNet B0-B7 and V2, MobileNets, keras-hub models), ``Conv2D`` (ResNets, stems, heads)
and per-channel grouped ``Conv2D(groups=C)`` (ConvNeXt's 7x7), in ``fit``, ``evaluate``,
``predict`` and jax2tf exports alike. Keras has no public hook for a backend op, hence the
patch (the rest of the package uses public APIs only). The choice between these formulations
and XLA's convolution is made by :func:`jax.lax.platform_dependent` at lowering time: a program
compiled for a GPU or TPU contains XLA's convolution only. Anything not covered (dilation, a
depth multiplier above 1, other groupings, channels-first, 1-D or 3-D) is Keras' own op;
``bfloat16``/``float16`` depthwise inputs are computed in float32. Saved ``.keras`` files hold
ordinary Keras layers: they load and run with or without this.

Switch it off with ``MASK_KERAS_CPU_CONV=0`` (read by :func:`install`), or :func:`uninstall` /
``with cpu_conv.disabled():`` around the code that traces the model.
"""
from __future__ import annotations

import contextlib
import functools
import os

import jax
import jax.numpy as jnp
from jax import lax

ENV = "MASK_KERAS_CPU_CONV"
_original: dict = {}  # name -> Keras' own backend function, while installed


# --------------------------------------------------------------------------- geometry
def _same_pads(n: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow / XLA "SAME" padding of one spatial dimension: (before, after)."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


class _Geometry:
    """Output size, padding and phase size of one spatial configuration."""

    def __init__(self, h, w, kh, kw, sh, sw, padding):
        self.kh, self.kw, self.sh, self.sw = kh, kw, sh, sw
        self.pt, pb = _same_pads(h, kh, sh) if padding == "same" else (0, 0)
        self.pl, pr = _same_pads(w, kw, sw) if padding == "same" else (0, 0)
        self.ho = (h + self.pt + pb - kh) // sh + 1
        self.wo = (w + self.pl + pr - kw) // sw + 1
        # phase size: the padded input, extended to a multiple of the stride, split in sh x sw phases
        self.hq = -(-(h + self.pt + pb) // sh)
        self.wq = -(-(w + self.pl + pr) // sw)
        self.h, self.w = h, w

    def phases(self, x, value=0):
        """``(B, hq, sh, wq, sw, C)``: phase ``(p, q)`` is ``[:, :, p, :, q, :]`` (padded with ``value``)."""
        b, _, _, c = x.shape
        xp = jnp.pad(x, ((0, 0), (self.pt, self.hq * self.sh - self.h - self.pt),
                         (self.pl, self.wq * self.sw - self.w - self.pl), (0, 0)), constant_values=value)
        return xp.reshape(b, self.hq, self.sh, self.wq, self.sw, c)

    def window(self, ph, a: int, b: int):
        """Tap ``(a, b)`` of every output position: ``(B, ho, wo, C)`` from :meth:`phases`."""
        return ph[:, a // self.sh: a // self.sh + self.ho, a % self.sh, b // self.sw: b // self.sw + self.wo,
                  b % self.sw, :]

    def unphase(self, per_tap: dict):
        """Transpose of :meth:`window` summed over taps: ``{(a, b): (B, ho, wo, C)}`` -> ``(B, h, w, C)``."""
        some = next(iter(per_tap.values()))
        bsz, c = some.shape[0], some.shape[-1]
        rows = []
        for p in range(self.sh):
            cols = []
            for q in range(self.sw):
                acc = None
                for (a, b), t in per_tap.items():
                    if a % self.sh != p or b % self.sw != q:
                        continue
                    oa, ob = a // self.sh, b // self.sw
                    t = jnp.pad(t, ((0, 0), (oa, self.hq - oa - self.ho), (ob, self.wq - ob - self.wo), (0, 0)))
                    acc = t if acc is None else acc + t
                cols.append(acc if acc is not None else jnp.zeros((bsz, self.hq, self.wq, c), some.dtype))
            rows.append(jnp.stack(cols, axis=3))  # (B, hq, wq, sw, C)
        full = jnp.stack(rows, axis=2).reshape(bsz, self.hq * self.sh, self.wq * self.sw, c)
        return full[:, self.pt: self.pt + self.h, self.pl: self.pl + self.w, :]

    def valid_rows(self, a: int, k_pad: int, stride: int, n_in: int, n_out: int) -> tuple[int, int]:
        """Output indices ``[lo, hi)`` whose tap ``a`` reads inside the unpadded input."""
        lo = max(0, -(-(k_pad - a) // stride))
        hi = min(n_out, (n_in - 1 - a + k_pad) // stride + 1)
        return lo, max(lo, hi)


# --------------------------------------------------------------------------- the op
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv2d(x, kernel, strides=(1, 1), padding="same"):
    """Depthwise 2-D convolution, NHWC, as fused shifted multiply-adds.

    Args:
        x: ``(batch, height, width, channels)`` float array.
        kernel: ``(kh, kw, channels)``: one filter per channel (depth multiplier 1).
        strides: ``(sh, sw)`` tuple of ints.
        padding: ``"same"`` (TensorFlow/XLA rule) or ``"valid"``.

    Returns:
        ``(batch, out_h, out_w, channels)``, equal to
        ``lax.conv_general_dilated(x, kernel[:, :, None, :], strides, padding.upper(),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels)``.

    Example:
        >>> x = jnp.ones((2, 8, 6, 4)); k = jnp.ones((3, 3, 4))
        >>> depthwise_conv2d(x, k, (2, 2), "same").shape
        (2, 4, 3, 4)
    """
    return _forward(x, kernel, strides, padding)


def _geometry(x, kernel, strides, padding) -> _Geometry:
    kh, kw, _ = kernel.shape
    return _Geometry(x.shape[1], x.shape[2], kh, kw, int(strides[0]), int(strides[1]), padding)


def _forward(x, kernel, strides, padding):
    g = _geometry(x, kernel, strides, padding)
    ph = g.phases(x)
    out = None
    for a in range(g.kh):
        for b in range(g.kw):
            t = g.window(ph, a, b) * kernel[a, b]
            out = t if out is None else out + t
    return out


def _fwd(x, kernel, strides, padding):
    return _forward(x, kernel, strides, padding), (x, kernel)


def _bwd(strides, padding, res, dy):
    x, kernel = res
    g = _geometry(x, kernel, strides, padding)
    bsz, h, w, c = x.shape
    # kernel gradient: window(x) * dy for every tap, reduced over the batch in one variadic reduce
    prods = []
    for a in range(g.kh):
        i0, i1 = g.valid_rows(a, g.pt, g.sh, h, g.ho)
        for b in range(g.kw):
            j0, j1 = g.valid_rows(b, g.pl, g.sw, w, g.wo)
            if i1 == i0 or j1 == j0:  # this tap only ever reads padding
                prods.append(jnp.zeros((bsz, g.ho, g.wo, c), dy.dtype))
                continue
            win = lax.slice(x, (0, g.sh * i0 + a - g.pt, g.sw * j0 + b - g.pl, 0),
                            (bsz, g.sh * (i1 - 1) + a - g.pt + 1, g.sw * (j1 - 1) + b - g.pl + 1, c),
                            (1, g.sh, g.sw, 1))
            p = win * dy[:, i0:i1, j0:j1, :]
            prods.append(jnp.pad(p, ((0, 0), (i0, g.ho - i1), (j0, g.wo - j1), (0, 0))))
    zero = jnp.zeros((), dy.dtype)
    per_tap = lax.reduce(tuple(prods), (zero,) * len(prods),
                         lambda u, v: tuple(s + t for s, t in zip(u, v)), (0,))
    dkernel = jnp.stack([jnp.sum(t, axis=(0, 1)) for t in per_tap]).reshape(g.kh, g.kw, c)
    # input gradient: per phase, dy (zero-padded once) correlated with the phase's taps, flipped
    mh, mw = -(-g.kh // g.sh), -(-g.kw // g.sw)
    dyp = jnp.pad(dy, ((0, 0), (mh - 1, g.hq - g.ho), (mw - 1, g.wq - g.wo), (0, 0)))
    rows = []
    for p in range(g.sh):
        cols = []
        for q in range(g.sw):
            acc = None
            for a in range(p, g.kh, g.sh):
                for b in range(q, g.kw, g.sw):
                    oa, ob = a // g.sh, b // g.sw
                    t = dyp[:, mh - 1 - oa: mh - 1 - oa + g.hq, mw - 1 - ob: mw - 1 - ob + g.wq, :] * kernel[a, b]
                    acc = t if acc is None else acc + t
            cols.append(acc if acc is not None else jnp.zeros((bsz, g.hq, g.wq, c), dy.dtype))
        rows.append(jnp.stack(cols, axis=3))  # (B, hq, wq, sw, C)
    dxp = jnp.stack(rows, axis=2).reshape(bsz, g.hq * g.sh, g.wq * g.sw, c)
    dx = dxp[:, g.pt: g.pt + h, g.pl: g.pl + w, :]
    return dx, dkernel


depthwise_conv2d.defvjp(_fwd, _bwd)


# --------------------------------------------------------------------------- max pooling
@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool2d(x, pool_size=(2, 2), strides=(2, 2), padding="valid"):
    """2-D max pooling, NHWC, as the elementwise maximum of k*k strided windows.

    XLA:CPU runs ``lax.reduce_window(max)`` as a slow generic loop and its gradient (select
    and scatter, expanded into iota/compare/scatter passes) slower still: in ``tiny_cnn``'s
    training step at 96x64 the four pools took ~30% of the time. Here the forward is k*k
    windows of the (``-inf``-padded, polyphase) input combined by ``maximum``, and the
    gradient goes, per window, to the first input equal to the maximum in row-major window
    order (the choice of XLA's select-and-scatter), as k*k masked copies of the output
    gradient added back into the input's phases: all elementwise work XLA fuses.

    Args:
        x: ``(batch, height, width, channels)`` float array.
        pool_size: ``(kh, kw)``.
        strides: ``(sh, sw)``.
        padding: ``"same"`` (TensorFlow/XLA rule, padding never wins) or ``"valid"``.

    Returns:
        ``(batch, out_h, out_w, channels)``, equal to ``lax.reduce_window(x, -inf, lax.max,
        (1, kh, kw, 1), (1, sh, sw, 1), padding.upper())``, and so are its gradients.

    Example:
        >>> max_pool2d(jnp.arange(16.0).reshape(1, 4, 4, 1), (2, 2), (2, 2), "valid")[0, :, :, 0]
        Array([[ 5.,  7.],
               [13., 15.]], dtype=float32)
    """
    return _pool_forward(x, pool_size, strides, padding)[0]


def _pool_geometry(x, pool_size, strides, padding) -> _Geometry:
    return _Geometry(x.shape[1], x.shape[2], int(pool_size[0]), int(pool_size[1]), int(strides[0]),
                     int(strides[1]), padding)


def _pool_forward(x, pool_size, strides, padding):
    g = _pool_geometry(x, pool_size, strides, padding)
    ph = g.phases(x, -jnp.inf)
    out = None
    for a in range(g.kh):
        for b in range(g.kw):
            w = g.window(ph, a, b)
            out = w if out is None else jnp.maximum(out, w)
    return out, ph


def _pool_fwd(x, pool_size, strides, padding):
    out, _ = _pool_forward(x, pool_size, strides, padding)
    return out, (x, out)


def _pool_bwd(pool_size, strides, padding, res, dy):
    x, out = res
    g = _pool_geometry(x, pool_size, strides, padding)
    ph = g.phases(x, -jnp.inf)
    taken = None
    per_tap = {}
    for a in range(g.kh):
        for b in range(g.kw):
            hit = g.window(ph, a, b) == out
            if taken is not None:
                hit = hit & ~taken
            taken = hit if taken is None else taken | hit
            per_tap[(a, b)] = jnp.where(hit, dy, jnp.zeros((), dy.dtype))
    return (g.unphase(per_tap),)


max_pool2d.defvjp(_pool_fwd, _pool_bwd)


# --------------------------------------------------------------------------- Keras backend hook
def _pair(v) -> tuple[int, int] | None:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(i) for i in v)
    return v if len(v) == 2 else None


def _fast_args(inputs, kernel, strides, padding, data_format, dilation_rate):
    """``(strides, padding)`` when the fast path covers the call, else None."""
    if getattr(inputs, "ndim", None) != 4 or getattr(kernel, "ndim", None) != 3:
        return None
    if data_format not in (None, "channels_last"):
        return None
    if _pair(dilation_rate) != (1, 1) or not isinstance(padding, str) or padding.lower() not in ("same", "valid"):
        return None
    s = _pair(strides)
    if s is None or min(s) < 1:
        return None
    if not (jnp.issubdtype(inputs.dtype, jnp.floating) and jnp.issubdtype(kernel.dtype, jnp.floating)):
        return None
    return s, padding.lower()


def _on_platform(fast, xla, *args):
    """``fast`` in programs lowered for CPU, ``xla`` everywhere else (decided at lowering)."""
    return lax.platform_dependent(*args, cpu=fast, default=xla)


def _depthwise(inputs, kernel, s, padding):
    dtype = jnp.result_type(inputs.dtype, kernel.dtype)
    work = jnp.float32 if jnp.finfo(dtype).bits < 32 else dtype  # bf16/f16: sums of k*k taps in f32
    out = depthwise_conv2d(inputs.astype(work), kernel.astype(work), s, padding)
    return out.astype(dtype)


def keras_depthwise_conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    """Drop-in for ``keras.src.backend.jax.nn.depthwise_conv`` (same signature and result)."""
    orig = _original.get("depthwise_conv") or _keras_nn().depthwise_conv
    data_format = _data_format(data_format)
    inputs, kernel = jnp.asarray(inputs), jnp.asarray(kernel)
    args = None
    if kernel.ndim == 4 and kernel.shape[-1] == 1 and kernel.shape[-2] == inputs.shape[-1]:
        args = _fast_args(inputs, kernel[..., 0], strides, padding, data_format, dilation_rate)
    if args is None:
        return orig(inputs, kernel, strides, padding, data_format, dilation_rate)
    s, pad = args
    return _on_platform(lambda x, k: _depthwise(x, k[..., 0], s, pad),
                        lambda x, k: orig(x, k, strides, padding, data_format, dilation_rate), inputs, kernel)


def pointwise_conv2d(x, kernel, strides=(1, 1)):
    """A 1x1 convolution as a matrix product, NHWC.

    Args:
        x: ``(batch, height, width, in_channels)``.
        kernel: ``(in_channels, out_channels)``.
        strides: ``(sh, sw)``: the output keeps every ``sh``-th row and ``sw``-th column
            (a 1x1 window needs no padding, "same" or "valid" alike).

    Returns:
        ``(batch, ceil(height / sh), ceil(width / sw), out_channels)``.

    XLA:CPU computes a 1x1 convolution's kernel gradient as a convolution whose window is the
    whole feature map (batch as features), which its YNNPACK path runs 40x slower than the
    same numbers as a matrix product: EfficientNet-B0's expand, project and squeeze-excite
    convolutions. Written as ``dot_general``, forward and both gradients are matrix products.
    """
    sh, sw = strides
    if sh > 1 or sw > 1:
        x = x[:, ::sh, ::sw, :]
    return lax.dot_general(x, kernel, (((3,), (0,)), ((), ())))


# --------------------------------------------------------------------------- general 2-D convolution
def _xla_conv(x, kernel, strides, padding):
    return lax.conv_general_dilated(x, kernel, strides, padding.upper(),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _patches(x, kh, kw, strides, padding):
    """im2col: ``(B, out_h, out_w, kh * kw * C)``, taps in (row, column) order, channels inner."""
    sh, sw = strides
    g = _Geometry(x.shape[1], x.shape[2], kh, kw, sh, sw, padding)
    bsz, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (g.pt, max(0, (g.ho - 1) * sh + kh - h - g.pt)),
                     (g.pl, max(0, (g.wo - 1) * sw + kw - w - g.pl)), (0, 0)))
    wins = [lax.slice(xp, (0, a, b, 0), (bsz, a + sh * (g.ho - 1) + 1, b + sw * (g.wo - 1) + 1, c), (1, sh, sw, 1))
            for a in range(kh) for b in range(kw)]
    return jnp.concatenate(wins, axis=-1) if len(wins) > 1 else wins[0]


def _im2col_conv(x, kernel, strides, padding):
    kh, kw, ci, co = kernel.shape
    p = _patches(x, kh, kw, strides, padding)
    return lax.dot_general(p, kernel.reshape(kh * kw * ci, co), (((3,), (0,)), ((), ())))


def _xla_is_slow(h: int, w: int, kh: int, kw: int) -> bool:
    """XLA:CPU's convolution falls back to a slow loop when the map is smaller than the kernel."""
    return h < kh or w < kw


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x, kernel, strides=(1, 1), padding="same"):
    """2-D convolution, NHWC / HWIO, one group, computed the way XLA:CPU runs fastest.

    Args:
        x: ``(batch, height, width, in_channels)`` float array.
        kernel: ``(kh, kw, in_channels, out_channels)``.
        strides: ``(sh, sw)`` tuple of ints.
        padding: ``"same"`` (TensorFlow/XLA rule) or ``"valid"``.

    Returns:
        The same array as ``lax.conv_general_dilated(x, kernel, strides, padding.upper(),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))``: XLA's own convolution for the forward
        pass and the input gradient, im2col (one matrix product) for the kernel gradient, and
        for all three when the feature map is smaller than the kernel (XLA's slow fallback).

    Example:
        >>> x = jnp.ones((2, 3, 2, 8)); k = jnp.ones((3, 3, 8, 4))
        >>> conv2d(x, k, (1, 1), "same").shape
        (2, 3, 2, 4)
    """
    return _conv_forward(x, kernel, strides, padding)


def _conv_forward(x, kernel, strides, padding):
    kh, kw = kernel.shape[:2]
    if _xla_is_slow(x.shape[1], x.shape[2], kh, kw):
        return _im2col_conv(x, kernel, strides, padding)
    return _xla_conv(x, kernel, strides, padding)


def _conv_fwd(x, kernel, strides, padding):
    return _conv_forward(x, kernel, strides, padding), (x, kernel)


def _conv_bwd(strides, padding, res, dy):
    x, kernel = res
    kh, kw, ci, co = kernel.shape
    # input gradient: XLA's transposed convolution reads dy, so its size decides
    if _xla_is_slow(dy.shape[1], dy.shape[2], kh, kw):
        _, vjp = jax.vjp(lambda v: _im2col_conv(v, kernel, strides, padding), x)
    else:
        _, vjp = jax.vjp(lambda v: _xla_conv(v, kernel, strides, padding), x)
    (dx,) = vjp(dy)
    # kernel gradient: patches^T @ dy, one matrix product
    p = _patches(x, kh, kw, strides, padding)
    dk = lax.dot_general(p, dy, (((0, 1, 2), (0, 1, 2)), ((), ())))
    return dx, dk.reshape(kh, kw, ci, co)


conv2d.defvjp(_conv_fwd, _conv_bwd)


def keras_conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    """Drop-in for ``keras.src.backend.jax.nn.conv``. In CPU programs: a grouped convolution with
    one group per channel and one filter per group (ConvNeXt's ``Conv2D(groups=C)``) is
    :func:`depthwise_conv2d`, a 1x1 convolution :func:`pointwise_conv2d`, any other one-group 2-D
    convolution :func:`conv2d`; everything else, and every convolution on other platforms, is
    Keras' own."""
    orig = _original.get("conv") or _keras_nn().conv
    data_format = _data_format(data_format)
    inputs, kernel = jnp.asarray(inputs), jnp.asarray(kernel)

    def xla(x, k):
        return orig(x, k, strides, padding, data_format, dilation_rate)

    if kernel.ndim != 4 or inputs.ndim != 4 or data_format != "channels_last":
        return orig(inputs, kernel, strides, padding, data_format, dilation_rate)
    args = _fast_args(inputs, kernel[:, :, 0, :], strides, padding, data_format, dilation_rate)
    if args is None:
        return orig(inputs, kernel, strides, padding, data_format, dilation_rate)
    s, pad = args
    if kernel.shape[-2] == 1 and inputs.shape[-1] > 1 and kernel.shape[-1] == inputs.shape[-1]:
        return _on_platform(lambda x, k: _depthwise(x, k[:, :, 0, :], s, pad), xla, inputs, kernel)
    if kernel.shape[-2] != inputs.shape[-1]:  # other groupings
        return orig(inputs, kernel, strides, padding, data_format, dilation_rate)
    dtype = jnp.result_type(inputs.dtype, kernel.dtype)
    if kernel.shape[:2] == (1, 1):
        return _on_platform(lambda x, k: pointwise_conv2d(x.astype(dtype), k[0, 0].astype(dtype), s),
                            xla, inputs, kernel)
    return _on_platform(lambda x, k: conv2d(x.astype(dtype), k.astype(dtype), s, pad), xla, inputs, kernel)


def keras_max_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
    """Drop-in for ``keras.src.backend.jax.nn.max_pool``: :func:`max_pool2d` in CPU programs for
    2-D channels-last float inputs, Keras' own op otherwise."""
    orig = _original.get("max_pool") or _keras_nn().max_pool
    data_format = _data_format(data_format)
    inputs = jnp.asarray(inputs)
    k = _pair(pool_size)
    s = k if strides is None else _pair(strides)
    if (inputs.ndim != 4 or data_format != "channels_last" or k is None or s is None or min(k + s) < 1
            or not isinstance(padding, str) or padding.lower() not in ("same", "valid")
            or not jnp.issubdtype(inputs.dtype, jnp.floating)):
        return orig(inputs, pool_size, strides, padding, data_format)
    pad = padding.lower()
    return _on_platform(lambda x: max_pool2d(x, k, s, pad),
                        lambda x: orig(x, pool_size, strides, padding, data_format), inputs)


def _data_format(data_format):
    import keras

    return data_format or keras.config.image_data_format()


def _keras_nn():
    from keras.src.backend.jax import nn  # no public hook for a backend op (module docstring)

    return nn


def install() -> bool:
    """Route Keras' JAX depthwise (and per-channel grouped) convolutions through this module.

    Idempotent; does nothing when ``MASK_KERAS_CPU_DEPTHWISE=0`` or the Keras backend is not
    JAX. Returns whether the fast path is installed. Takes effect for models traced from
    now on (a model compiled earlier keeps the program it has).
    """
    import keras

    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if keras.backend.backend() != "jax":
        return False
    if _original:
        return True
    _reinstall()
    return True


def uninstall() -> None:
    """Restore Keras' own functions (programs traced from now on use XLA's convolution)."""
    if not _original:
        return
    nn = _keras_nn()
    for name in _HOOKS:
        setattr(nn, name, _original.pop(name))


def installed() -> bool:
    return bool(_original)


@contextlib.contextmanager
def disabled():
    """Trace the body with Keras' own convolution (e.g. to compare against it)."""
    was = installed()
    uninstall()
    try:
        yield
    finally:
        if was:
            _reinstall()


def _reinstall() -> None:
    nn = _keras_nn()
    for name, fn in _HOOKS.items():
        _original[name] = getattr(nn, name)
        setattr(nn, name, fn)


#: Keras JAX backend function -> its replacement
_HOOKS = {"depthwise_conv": keras_depthwise_conv, "conv": keras_conv, "max_pool": keras_max_pool}
