"""MixUp / CutMix of a batch (:class:`BatchMixer`): on the host, in ``tf.data``, as they need the labels.

They therefore come *before* the per-image augmentation of :mod:`mask_keras.augment` (which
runs in the model; timm and the teams mixed after it): a mixed image is flipped, warped and
recoloured as one image. TensorFlow is imported on first use, not with the module.
(timm keeps the same in ``timm/data/mixup.py``.)
"""
from __future__ import annotations

import logging

from . import labels as L

log = logging.getLogger(__name__)


def _generator(seed):
    from ._tf import tf

    if seed is None:
        return tf.random.Generator.from_non_deterministic_state()
    return tf.random.Generator.from_seed(int(seed))


class BatchMixer:
    """MixUp / CutMix of a batch with a shuffled copy of itself, on one-hot targets.

    TensorFlow ops, for ``tf.data`` (on the host, after the cast to float32, before
    normalisation); TensorFlow is imported on first use.

    Per batch one uniform draw ``u`` picks MixUp (``u < mixup``), CutMix
    (``mixup <= u < mixup + cutmix``) or nothing. Each image ``i`` is paired with image
    ``perm[i]`` of the same batch and gets its own ratio ``lam ~ Beta(alpha, alpha)``;
    targets become ``lam * y_i + (1 - lam) * y_perm[i]`` (still summing to 1). For CutMix
    ``lam`` is the kept area of the pasted box. Dict targets (multihead) are mixed with the
    same pairs and ratios. ``old_only`` (team 004) mixes only pairs where at least one of
    the two faces is >=60 (age group 2); other images are left unchanged.

    Args:
        mixup: probability in ``[0, 1]`` that a batch is mixed by MixUp.
        cutmix: probability in ``[0, 1]`` that a batch is mixed by CutMix; if
            ``mixup + cutmix > 1`` a warning is logged and CutMix gets ``1 - mixup``.
        alpha: ``> 0``, the Beta distribution's parameter for the mixing ratio.
        old_only: mix only pairs with a >=60 face (then the call needs ``age_group``).
        seed: base of the per-batch seeds (None: drawn from a non-deterministic generator).

    Raises:
        ValueError: a probability outside ``[0, 1]`` or ``alpha <= 0``.
    """

    def __init__(self, mixup: float = 0.0, cutmix: float = 0.0, alpha: float = 0.4,
                 old_only: bool = False, seed: int | None = None):
        if not 0 <= mixup <= 1 or not 0 <= cutmix <= 1:
            raise ValueError(f"mixup and cutmix are probabilities in [0, 1], got {mixup}, {cutmix}")
        if alpha <= 0:
            raise ValueError(f"mix_alpha must be > 0, got {alpha}")
        if mixup + cutmix > 1:
            log.warning("augment.mixup + augment.cutmix = %.2f > 1: CutMix runs in %.0f%% of the batches, not %.0f%%",
                        mixup + cutmix, 100 * (1 - mixup), 100 * cutmix)
        self.mixup, self.cutmix, self.alpha, self.old_only = float(mixup), float(cutmix), float(alpha), bool(old_only)
        from ._tf import tf

        self._tf = tf  # imported on first use, not with the module
        self.rng = _generator(seed)
        # the base of the per-batch seeds (see __call__'s key)
        self.seed = int(seed) if seed is not None else int(self.rng.uniform_full_int((), tf.int64).numpy() % (2**31))
        # read by the tf.data function on every batch: set_enabled(False) switches mixing off
        # from the next batch produced (training's augment.mix_off_epoch, timm's --mixup-off-epoch)
        self.enabled = tf.Variable(True, trainable=False, name="mix_enabled")

    def set_enabled(self, on: bool) -> None:
        """Mix (True) or pass batches through unchanged (False) from now on.

        Args:
            on: whether to mix; read by the ``tf.data`` function on every batch it makes.
        """
        self.enabled.assign(bool(on))

    @classmethod
    def from_config(cls, augment_cfg, seed=None) -> "BatchMixer | None":
        """A mixer for ``AugmentConfig``, or None when neither MixUp nor CutMix is on."""
        if augment_cfg.mixup <= 0 and augment_cfg.cutmix <= 0:
            return None
        return cls(augment_cfg.mixup, augment_cfg.cutmix, augment_cfg.mix_alpha, augment_cfg.mix_old_only, seed)

    def _beta(self, n, s1, s2):
        tf = self._tf  # (an import here would break autograph when tf.data traces this)

        a = tf.random.stateless_gamma((n,), seed=s1, alpha=self.alpha)
        b = tf.random.stateless_gamma((n,), seed=s2, alpha=self.alpha)
        return a / tf.maximum(a + b, 1e-12)

    def _seeds(self, key):
        """Six stateless seeds (6, 2): from the generator (``key`` None), or a function of the
        mixer's seed and ``key`` alone."""
        tf = self._tf

        if key is None:
            return tf.transpose(self.rng.make_seeds(6))
        digest = tf.strings.to_hash_bucket_fast(
            tf.strings.reduce_join(tf.strings.as_string(tf.reshape(key, [-1])), separator=","), 2**62)
        return tf.random.experimental.stateless_split(tf.stack([tf.constant(self.seed, tf.int64), digest]), num=6)

    def __call__(self, images, targets, age_group=None, key=None):
        """images (B, H, W, C) float32, targets (B, K) or dict of them; age_group (B,) int (for old_only).

        ``key``: what identifies the batch (the dataset passes its row indices): the pairs,
        ratios and boxes are then a function of the mixer's seed and the key only, not of how
        many batches were made before. Parallel map calls, prefetching and a resumed run
        (which rebuilds the dataset) then mix every batch exactly as one uninterrupted
        sequential run does. Without a key the mixer draws from its own generator."""
        tf = self._tf  # (an import here would break autograph when tf.data traces this)

        x = tf.convert_to_tensor(images, tf.float32)
        shape = tf.shape(x)
        b, h, w = shape[0], shape[1], shape[2]
        seeds = self._seeds(key)
        perm = tf.argsort(tf.random.stateless_uniform((b,), seed=seeds[0]), stable=True)
        u = tf.random.stateless_uniform((), seed=seeds[1])
        do_mixup = u < self.mixup
        do_cutmix = tf.logical_and(u >= self.mixup, u < self.mixup + self.cutmix)
        active = tf.fill((b,), tf.logical_and(tf.logical_or(do_mixup, do_cutmix), self.enabled))
        if self.old_only:
            if age_group is None:
                raise ValueError("BatchMixer(old_only=True) needs the age group of every image")
            old = tf.equal(tf.cast(age_group, tf.int32), int(L.AgeGroup.OLD))
            active = tf.logical_and(active, tf.logical_or(old, tf.gather(old, perm)))
        lam = self._beta(b, seeds[2], seeds[3])

        # CutMix box: area (1 - lam) of the image, centred uniformly, clipped to the image
        hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
        cut = tf.sqrt(1.0 - lam)
        ch, cw = tf.round(hf * cut), tf.round(wf * cut)
        cy = tf.random.stateless_uniform((b,), seed=seeds[4]) * hf
        cx = tf.random.stateless_uniform((b,), seed=seeds[5]) * wf
        y0 = tf.clip_by_value(tf.round(cy - ch / 2), 0.0, hf)
        y1 = tf.clip_by_value(tf.round(cy + ch / 2), 0.0, hf)
        x0 = tf.clip_by_value(tf.round(cx - cw / 2), 0.0, wf)
        x1 = tf.clip_by_value(tf.round(cx + cw / 2), 0.0, wf)
        rows = tf.range(hf)[None, :, None]
        cols = tf.range(wf)[None, None, :]
        box = ((rows >= y0[:, None, None]) & (rows < y1[:, None, None])
               & (cols >= x0[:, None, None]) & (cols < x1[:, None, None]))
        box = tf.cast(box, tf.float32)[..., None]  # (B, H, W, 1), 1 = pasted from the partner
        lam_cut = 1.0 - (y1 - y0) * (x1 - x0) / (hf * wf)

        lam = tf.where(do_cutmix, lam_cut, lam)
        lam = tf.where(active, lam, tf.ones_like(lam))
        partner = tf.gather(x, perm)
        mixed_up = lam[:, None, None, None] * x + (1.0 - lam[:, None, None, None]) * partner
        cut_mixed = x * (1.0 - box) + partner * box
        mixed = tf.where(do_cutmix, cut_mixed, mixed_up)
        x_out = tf.where(active[:, None, None, None], mixed, x)

        def mix_y(y):
            y = tf.cast(y, tf.float32)
            return lam[:, None] * y + (1.0 - lam[:, None]) * tf.gather(y, perm)

        y_out = {k: mix_y(v) for k, v in targets.items()} if isinstance(targets, dict) else mix_y(targets)
        return x_out, y_out
