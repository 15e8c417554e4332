"""The in-memory inference engine: images -> face rows -> model pixels -> one combined answer.

Two steps, so that a service can run the first per request (in parallel) and the second once
for many requests (one model call per model for all of them):

* :meth:`Engine.prepare`: per image, its face rows (the detector, for face-crop models;
  :mod:`mask_keras.inference.faces`), then per row and model the crop windows and their
  pixels (:mod:`mask_keras.inference.images`: one decode per window, shared by the models
  that see the same window, e.g. the folds of a K-fold run).
* :meth:`Engine.run`: per model one :class:`~mask_keras.inference.runners.Runner` call over
  every row and view of every prepared batch, the views averaged, the models combined
  (:func:`mask_keras.inference.combine.combine_predictions`), one answer dict per row
  (:func:`mask_keras.inference.answers.answer_row`).

Example:
    >>> eng = Engine(members)                                   # doctest: +SKIP
    >>> eng.answer([ImageInput.from_bytes("a.jpg", data)])      # doctest: +SKIP
    [{'image': 0, 'face': None, 'face_found': None, 'crop_box': [56, 92, 456, 292], 'gender': 'female', ...}]
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import labels as L
from ..detect import face_crops
from ..pipeline.tfdata import parallel_calls
from ..ensemble import TIE_RULES
from .answers import answer_row
from .combine import COMBINES, Prediction, check_choice, combine_predictions, model_weights
from .faces import FACES, NO_FACE, Face, FaceFinder, NoFaceError, face_rows
from .images import BadImage, ImageInput, check_crops, crop_windows, model_pixels
from .runners import keras_runner

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One model that votes: where it came from, its preprocessing, its compiled runner.

    Attributes:
        name: a short name (``run``, ``kfold/fold_0``).
        task: its task (``mask``, ``gender``, ``age``, ``multi``, ``multihead``).
        path: its folder.
        kind: ``keras`` or ``export``.
        config: its run's :class:`mask_keras.config.Config`.
        runner: its :class:`~mask_keras.inference.runners.Runner`.
    """

    name: str
    task: str
    path: Path
    kind: str
    config: object
    runner: object = field(repr=False)

    @property
    def preprocess(self):
        """The run's ``PreprocessConfig``."""
        return self.config.preprocess

    @classmethod
    def from_artifact(cls, art, max_batch: int = 64) -> "Member":
        """A run's member: its Keras model (loaded and checked now) behind a compiled runner.

        Args:
            art: an :class:`~mask_keras.inference.artifacts.Artifact`.
            max_batch: the largest batch one model call gets.

        Returns:
            The :class:`Member`.
        """
        return cls(art.name, art.task, art.path, "keras", art.config, keras_runner(art.model, max_batch, art.name))


@dataclass
class Row:
    """One answer row of a prepared batch: an image, or one face of it.

    Attributes:
        image: the input's index in the batch.
        face: its :class:`~mask_keras.inference.faces.Face` (None: no face model).
        crop_box: the first model's crop window, once decoded.
        error: why the row has no answer, or ``""``.
    """

    image: int
    face: Face | None
    crop_box: list | None = None
    error: str = ""


@dataclass
class Prepared:
    """Images made ready for :meth:`Engine.run`.

    Attributes:
        inputs: the :class:`ImageInput` s.
        rows: their :class:`Row` s (several per image with ``faces="all"``).
        answered: the indices of the rows that get an answer (no error, not skipped).
        pixels: per member, uint8 ``(len(answered), V, h, w, 3)``.
    """

    inputs: list
    rows: list
    answered: list
    pixels: list


class Engine:
    """Members, how their answers are combined, and the face policy.

    Args:
        members: the :class:`Member` s.
        vote: ``"soft"`` or ``"hard"``.
        level: ``"auto"``, ``"task"`` or ``"class"``.
        weights: one per member, or None.
        tie: the hard-vote tie rule.
        combine: ``"product"`` or ``"argmax"``.
        tta: also the mirrored view of every view.
        crops: TTA crop view scales.
        no_face: ``"center"``, ``"skip"`` or ``"error"`` (:mod:`mask_keras.inference.faces`).
        faces: ``"largest"`` or ``"all"``.
        threads: decode threads for a large :meth:`prepare` (None: the usable cores).

    Raises:
        CombineError: an unknown choice, weights of the wrong length, or a setting the
            covered tasks do not allow.
    """

    def __init__(self, members, *, vote: str = "soft", level: str = "auto", weights=None, tie: str = "mean_prob",
                 combine: str = "product", tta: bool = False, crops=(), no_face: str = "center",
                 faces: str = "largest", threads: int | None = None):
        self.members = list(members)
        if not self.members:
            raise ValueError("Engine: no models")
        check_choice("no_face", no_face, NO_FACE)
        check_choice("faces", faces, FACES)
        check_choice("combine", combine, COMBINES)
        check_choice("tie", tie, TIE_RULES)
        self.vote, self.level, self.tie, self.combine = vote, level, tie, combine
        self.weights = None if weights is None else model_weights(len(self.members), weights).tolist()
        self.tta, self.crops = bool(tta), check_crops(crops)
        self.no_face, self.faces = no_face, faces
        self.finder = FaceFinder()
        self.pool = ThreadPoolExecutor(max_workers=threads or parallel_calls(), thread_name_prefix="mask_keras_decode")
        # the settings are checked against the tasks now, not at the first image
        fake = [Prediction(m, _dummy_probs(m.task)) for m in self.members]
        combine_predictions(fake, vote=vote, level=level, weights=self.weights, tie=tie, combine=combine)

    @property
    def tasks(self) -> tuple:
        """The tasks (of mask, gender, age) the members answer together."""
        covered = set()
        for m in self.members:
            covered |= set(L.HEADS) if m.task in ("multi", "multihead") else {m.task}
        return tuple(t for t in L.HEADS if t in covered)

    @property
    def uses_faces(self) -> bool:
        """Whether a member crops at the detected face (so the detector runs)."""
        return any(m.preprocess.crop == "face" for m in self.members)

    @property
    def views(self) -> int:
        """Views per row and member: the crop, each TTA crop, each mirrored with ``tta``."""
        return (1 + len(self.crops)) * (2 if self.tta else 1)

    # ------------------------------------------------------------------ prepare
    def _faces_of(self, inputs: list, crop_boxes) -> list[list]:
        if not self.uses_faces or crop_boxes is not None:
            return [[None] for _ in inputs]
        pcfg = next(m.preprocess for m in self.members if m.preprocess.crop == "face")
        results = self.finder.detect([it.detector_input() for it in inputs])
        return [face_rows(r, pcfg, self.faces) for r in results]

    def _row_pixels(self, item: ImageInput, face: Face | None, given=None) -> tuple[list, list]:
        """Per member the views' pixels of one row, and the first member's crop box."""
        cache, out, first = {}, [], None
        for k, m in enumerate(self.members):
            p = m.preprocess
            box = None
            if p.crop == "face" and given is not None:
                box = np.asarray(given[k], np.int64)
            elif p.crop == "face":
                xyxy = face.xyxy if face is not None and face.found else (np.nan,) * 4
                crops, _ = face_crops(np.asarray([xyxy], np.float64), face is not None and face.found,
                                      p.face_margins, p.face_fallback, item.height, item.width)
                box = crops[0]
            windows = crop_windows(item.height, item.width, p, box, self.crops)
            key = (tuple(p.image_size), bool(getattr(p, "jpeg_scaled_decode", False)), windows.tobytes(), self.tta)
            if key not in cache:
                cache[key] = model_pixels(item, p, windows, flip=self.tta)
            out.append(cache[key])
            if first is None:
                first = [int(v) for v in windows[0]]
        return out, first

    def prepare(self, inputs, on_error: str = "report", crop_boxes=None) -> Prepared:
        """Face rows and model pixels of some images (see the module docstring).

        Args:
            inputs: :class:`ImageInput` s.
            on_error: ``"report"``: an image that cannot be decoded gets a row with its
                ``error`` and no answer; ``"raise"``: :class:`BadImage`.
            crop_boxes: known face crops instead of the detector (e.g. the data set's cached
                detections, as training used): per member an ``(n, 4)`` array (or None for a
                member without a face crop); the rows then have no face fields.

        Returns:
            A :class:`Prepared`.

        Raises:
            BadImage: with ``on_error="raise"``, the first image that cannot be decoded.
            NoFaceError: with ``no_face="error"``, a photo without a usable face.
        """
        inputs = list(inputs)
        rows: list[Row] = []
        for i, faces in enumerate(self._faces_of(inputs, crop_boxes)):
            for f in faces:
                row = Row(i, f)
                if f is not None and not f.found:
                    if f.reason == "error":
                        row.error = f"{inputs[i].name}: the face detector cannot decode it"
                    elif self.no_face == "error":
                        raise NoFaceError(f"{inputs[i].name}: no usable face ({f.reason}); send a photo with "
                                          f"a face, or use no_face='center' (the centre crop) or 'skip'")
                    elif self.no_face == "skip":
                        row.error = f"no usable face ({f.reason}): skipped (no_face='skip')"
                rows.append(row)

        def work(row: Row):
            if row.error:
                return None
            try:
                given = None if crop_boxes is None else [None if b is None else b[row.image] for b in crop_boxes]
                pixels, row.crop_box = self._row_pixels(inputs[row.image], row.face, given)
                return pixels
            except BadImage as e:
                if on_error == "raise":
                    raise
                row.error = str(e)
                return None

        todo = [r for r in rows if not r.error]
        done = list(self.pool.map(work, rows)) if len(todo) > 2 else [work(r) for r in rows]
        answered = [j for j, px in enumerate(done) if px is not None]
        pixels = [np.stack([done[j][k] for j in answered]) if answered else None for k in range(len(self.members))]
        return Prepared(inputs, rows, answered, pixels)

    # ------------------------------------------------------------------ run
    def predictions(self, batches) -> list[Prediction]:
        """Per member one runner call over every answered row and view of ``batches``, the views averaged.

        Args:
            batches: :class:`Prepared` s with at least one answered row.

        Returns:
            One :class:`~mask_keras.inference.combine.Prediction` per member, rows in order.
        """
        preds = []
        for k, m in enumerate(self.members):
            px = np.concatenate([b.pixels[k] for b in batches if b.answered])
            n, v = px.shape[:2]
            out = m.runner(px.reshape(n * v, *px.shape[2:]))
            if not isinstance(out, dict):
                out = {m.task: out}
            preds.append(Prediction(m, {t: o.reshape(n, v, -1).mean(axis=1, dtype=np.float64)
                                        for t, o in out.items()}))
        return preds

    def run(self, batches) -> list[list[dict]]:
        """Answer prepared batches with one runner call per member over all of them.

        Args:
            batches: :class:`Prepared` s.

        Returns:
            Per batch, one answer dict per row (:func:`mask_keras.inference.answers.answer_row`).
        """
        batches = list(batches)
        counts = [len(b.answered) for b in batches]
        comb = None
        if sum(counts):
            comb = combine_predictions(self.predictions(batches), vote=self.vote, level=self.level,
                                       weights=self.weights, tie=self.tie, combine=self.combine)
        answers, start = [], 0
        for b, c in zip(batches, counts):
            where = {j: start + q for q, j in enumerate(b.answered)}
            answers.append([answer_row(r.image, r.face, r.crop_box, r.error, comb, where.get(j), self.tasks)
                            for j, r in enumerate(b.rows)])
            start += c
        return answers

    def answer(self, inputs, on_error: str = "report") -> list[dict]:
        """:meth:`prepare` then :meth:`run` for one batch of images.

        Args:
            inputs: :class:`ImageInput` s.
            on_error: as for :meth:`prepare`.

        Returns:
            One answer dict per row.
        """
        return self.run([self.prepare(inputs, on_error=on_error)])[0]

    def close(self) -> None:
        """Stop the face detector (if started) and the decode threads."""
        self.finder.close()
        self.pool.shutdown(wait=False)


def _dummy_probs(task: str) -> dict:
    if task == "multihead":
        return {t: np.full((1, L.TASK_CLASSES[t]), 1.0 / L.TASK_CLASSES[t]) for t in L.HEADS}
    k = L.TASK_CLASSES[task]
    return {task: np.full((1, k), 1.0 / k)}
