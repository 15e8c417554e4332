"""Predict any images with trained artifacts: files, folders, pixel arrays or encoded bytes.

:meth:`Predictor.load` opens run, K-fold, ensemble and export folders
(:func:`mask_keras.inference.artifacts.resolve`: one resolver; an ensemble brings its vote,
level, weights and TTA), loads every model and checks the settings before the first image.
Every entry point then goes through the one engine (:class:`mask_keras.inference.engine.Engine`):
each image is decoded once in memory, cropped and resized as the run was validated, and each
model is called once per batch through its compiled runner. The answers have the fields of
:mod:`mask_keras.inference.answers` (per face: ``face_found``, ``face_box``,
``face_confidence``; the crop; each covered task; the 18 classes when all three are covered).

Example:
    >>> p = Predictor.load("runs/efficientnet_gender")            # doctest: +SKIP
    >>> p.predict_files(["photos/"])[["path", "face_found", "gender", "gender_prob"]]  # doctest: +SKIP
               path face_found  gender  gender_prob
    0  photos/a.jpg       None  female        0.93
"""
from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from .answers import answer_row, answer_table, find_images
from .artifacts import ArtifactError, load_artifact, resolve
from .engine import Engine, Member
from .exported import ExportedModel
from .images import BadImage, ImageInput
from .runners import export_runner

log = logging.getLogger(__name__)

#: the settings an ensemble folder may carry, and their defaults
DEFAULTS = {"vote": "soft", "level": "auto", "weights": None, "tie": "mean_prob", "combine": "product",
            "tta": False, "crops": ()}


def open_members(paths, batch_size: int = 64) -> tuple[list, dict]:
    """Resolve artifact folders and load every model (a run's Keras model, an export's runtime).

    Args:
        paths: run, K-fold, ensemble or export folders.
        batch_size: the largest batch a model is called with.

    Returns:
        ``(members, settings)``: the :class:`~mask_keras.inference.engine.Member` s, and the
        combination settings an ensemble folder carried (the first one's, when several).

    Raises:
        ArtifactError: no path, a path that is none of the kinds, a model given twice, or a
            model that cannot be loaded or does not match its config.
    """
    if not paths:
        raise ArtifactError("no artifacts given: pass run, K-fold, ensemble or export folders")
    members, settings, seen = [], {}, set()
    for p in paths:
        r = resolve(p)
        for k, v in r.settings.items():
            settings.setdefault(k, v)
        for d in r.members:
            if d.resolve() in seen:
                raise ArtifactError(f"{d}: given twice; each model votes once")
            seen.add(d.resolve())
            if r.kind == "export":
                ex = ExportedModel(d)
                members.append(Member(d.name, ex.task, d, "export", ex.config, export_runner(ex, batch_size)))
            else:
                members.append(Member.from_artifact(load_artifact(d), batch_size))
    return members, settings


class Predictor:
    """Trained models, how their answers are combined, and the face policy (see the module docstring).

    Args:
        engine: the :class:`~mask_keras.inference.engine.Engine`.
        sources: the paths it was loaded from (reported by :meth:`metadata`).
        batch_size: images per model call for files.
    """

    def __init__(self, engine: Engine, sources=(), batch_size: int = 64):
        self.engine, self.sources, self.batch_size = engine, [str(s) for s in sources], int(batch_size)

    @classmethod
    def load(cls, *paths, vote=None, level=None, weights=None, tie=None, combine=None, tta=None, crops=None,
             no_face: str = "center", faces: str = "largest", batch_size: int = 64) -> "Predictor":
        """Open run, K-fold, ensemble and export folders; load and check every model now.

        Settings left at None come from an ensemble folder's ``ensemble.json`` when one is
        given, else :data:`DEFAULTS`.

        Args:
            *paths: the artifact folders (every model of each votes).
            vote: ``"soft"`` or ``"hard"``.
            level: ``"auto"``, ``"task"`` or ``"class"``.
            weights: one weight per model, in the order they are given (folds in order).
            tie: the hard-vote tie rule.
            combine: ``"product"`` or ``"argmax"``.
            tta: also predict the mirrored view.
            crops: extra TTA crop view scales.
            no_face: ``"center"``, ``"skip"`` or ``"error"`` (:mod:`mask_keras.inference.faces`).
            faces: ``"largest"`` or ``"all"``.
            batch_size: the largest batch one model call gets.

        Returns:
            The :class:`Predictor`, every model loaded.

        Raises:
            ArtifactError: see :func:`open_members`.
            CombineError: a setting the models do not allow.
        """
        members, saved = open_members(paths, batch_size)
        given = {"vote": vote, "level": level, "weights": weights, "tie": tie, "combine": combine, "tta": tta,
                 "crops": crops}
        kw = {k: (v if v is not None else saved.get(k, DEFAULTS[k])) for k, v in given.items()}
        engine = Engine(members, no_face=no_face, faces=faces, **kw)
        return cls(engine, paths, batch_size)

    # ------------------------------------------------------------------ properties
    @property
    def members(self) -> list:
        """The models that vote (:class:`~mask_keras.inference.engine.Member`)."""
        return self.engine.members

    @property
    def tasks(self) -> tuple:
        """The tasks (of mask, gender, age) the models answer together."""
        return self.engine.tasks

    # ------------------------------------------------------------------ entry points
    def predict_files(self, paths, recursive: bool = True, on_error: str = "report",
                      progress: bool = False) -> pd.DataFrame:
        """Answers for image files and folders (searched recursively): a row per file (per face
        with ``faces="all"``).

        Files are read and decoded ahead (in threads) while the models answer the batch before.

        Args:
            paths: files and folders.
            recursive: search folders recursively.
            on_error: ``"report"``: an unreadable, corrupt or non-image file gets a row with
                its ``error`` and no answer (the count is logged); ``"raise"``:
                :class:`~mask_keras.inference.images.BadImage` naming the first.
            progress: show a progress bar.

        Returns:
            A DataFrame with ``path`` and the fields of :mod:`mask_keras.inference.answers`.
        """
        if on_error not in ("report", "raise"):
            raise ValueError(f"on_error must be 'report' or 'raise', got {on_error!r}")
        files = find_images(paths, recursive=recursive)
        chunks = [list(range(s, min(s + self.batch_size, len(files)))) for s in range(0, len(files), self.batch_size)]

        def prepare(idx):
            inputs, bad = [], {}
            for i in idx:
                try:
                    inputs.append(ImageInput.from_bytes(files[i], Path(files[i]).read_bytes()))
                except (OSError, BadImage) as e:
                    if on_error == "raise":
                        raise BadImage(f"{files[i]}: {e}" if isinstance(e, OSError) else str(e)) from None
                    bad[i] = str(e) if isinstance(e, BadImage) else f"{files[i]}: cannot read ({e})"
            good = [i for i in idx if i not in bad]
            return good, bad, self.engine.prepare(inputs, on_error=on_error)

        rows = []
        bar = tqdm(total=len(files), desc="predict", unit="img", disable=not progress)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mask_keras_ahead") as ahead:
            nxt = ahead.submit(prepare, chunks[0]) if chunks else None
            for c in range(len(chunks)):
                good, bad, prepared = nxt.result()
                if c + 1 < len(chunks):
                    nxt = ahead.submit(prepare, chunks[c + 1])
                answered = self.engine.run([prepared])[0]
                for r in answered:
                    r["image"] = good[r["image"]]
                rows.extend(answered)
                rows.extend(answer_row(i, None, None, msg, None, None, self.tasks) for i, msg in bad.items())
                bar.update(len(chunks[c]))
        bar.close()
        rows.sort(key=lambda r: r["image"])  # stable: a file's faces stay in order
        failed = [r for r in rows if r["error"]]
        if failed:
            log.warning("%d of %d row(s) without an answer: %s", len(failed), len(rows),
                        "; ".join(r["error"] for r in failed[:5]) + (" ..." if len(failed) > 5 else ""))
        return answer_table(rows, files, "path")

    def predict_images(self, images, on_error: str = "raise") -> pd.DataFrame:
        """Answers for full-size uint8 RGB images ``(H, W, 3)`` of any size (a list or a batch).

        The arrays go to the same crop and resize as files (no encoding in between).

        Args:
            images: uint8 (H, W, 3) RGB arrays, or a uint8 (N, H, W, 3) batch.
            on_error: as for :meth:`predict_files`.

        Returns:
            The fields of :mod:`mask_keras.inference.answers`, ``image`` the position in ``images``.
        """
        inputs = [ImageInput.from_array(f"images[{i}]", a) for i, a in enumerate(images)]
        return answer_table(self.engine.answer(inputs, on_error=on_error))

    def predict_bytes(self, images, on_error: str = "raise", max_pixels: int | None = None) -> list[dict]:
        """Answers for encoded images (JPEG, PNG, WebP, GIF, BMP bytes), as dicts.

        Args:
            images: ``(name, bytes)`` pairs, or bytes (named ``images[i]``).
            on_error: as for :meth:`predict_files`.
            max_pixels: refuse larger images (:class:`~mask_keras.inference.images.BadImage`, 413).

        Returns:
            One answer dict per row (:func:`mask_keras.inference.answers.answer_row`).
        """
        pairs = [x if isinstance(x, tuple) else (f"images[{i}]", x) for i, x in enumerate(images)]
        inputs = [ImageInput.from_bytes(n, d, max_pixels) for n, d in pairs]
        return self.engine.answer(inputs, on_error=on_error)

    def prepare(self, inputs, on_error: str = "raise"):
        """:meth:`mask_keras.inference.engine.Engine.prepare` (a service prepares per request).

        Args:
            inputs: :class:`~mask_keras.inference.images.ImageInput` s.
            on_error: ``"report"`` or ``"raise"``.

        Returns:
            The :class:`~mask_keras.inference.engine.Prepared` batch.
        """
        return self.engine.prepare(inputs, on_error=on_error)

    def run(self, batches) -> list[list[dict]]:
        """:meth:`mask_keras.inference.engine.Engine.run`: one model call per model for all batches.

        Args:
            batches: prepared batches.

        Returns:
            Per batch, its answer dicts.
        """
        return self.engine.run(batches)

    def warm_up(self, up_to: int = 16) -> None:
        """Compile every model's calls for batches up to ``up_to`` images (and views) now.

        Args:
            up_to: the largest batch of images to expect.
        """
        for m in self.members:
            m.runner.warm_up(tuple(m.preprocess.image_size), up_to * self.engine.views)

    # ------------------------------------------------------------------ about
    def metadata(self) -> dict:
        """What a caller needs to know: tasks, models, how they are combined, the face policy.

        Returns:
            A JSON-ready dict: ``tasks``, ``vote``, ``level``, ``weights``, ``tie``, ``combine``,
            ``tta``, ``crops``, ``no_face``, ``faces``, ``sources`` and ``models`` (per model
            ``path``, ``kind``, ``task``, ``backbone``, ``image_size``, ``crop``).
        """
        e = self.engine
        return {"tasks": list(self.tasks), "vote": e.vote, "level": e.level, "weights": e.weights, "tie": e.tie,
                "combine": e.combine, "tta": e.tta, "crops": list(e.crops), "no_face": e.no_face, "faces": e.faces,
                "sources": self.sources,
                "models": [{"path": str(m.path), "kind": m.kind, "task": m.task, "backbone": m.config.model.backbone,
                            "image_size": list(m.preprocess.image_size), "crop": m.preprocess.crop}
                           for m in self.members]}

    def digest(self) -> str:
        """SHA-256 over every model's files (``model.keras`` or the export's, and ``config.json``).

        Returns:
            The hex digest.
        """
        h = hashlib.sha256()
        for m in self.members:
            names = (("model.keras", "config.json") if m.kind == "keras" else
                     ("export.json", "config.json", "model.onnx", "model.tflite", "saved_model/saved_model.pb"))
            for name in names:
                if (m.path / name).is_file():
                    h.update((m.path / name).read_bytes())
        return h.hexdigest()

    def close(self) -> None:
        """Stop the face detector (if started) and the decode threads."""
        self.engine.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
