"""Inference: trained artifacts -> answers, through one in-memory engine.

* :mod:`~mask_keras.inference.artifacts`: what a folder holds (run, K-fold, ensemble, export;
  ``artifact.json``), a run opened and checked;
* :mod:`~mask_keras.inference.images`: bytes or arrays -> the pixels a model sees;
* :mod:`~mask_keras.inference.runners`: one compiled call per model, static batch sizes;
* :mod:`~mask_keras.inference.faces`: which faces are answered, photos without one;
* :mod:`~mask_keras.inference.combine`: one combination rule for any subset of the tasks;
* :mod:`~mask_keras.inference.engine`: prepare (decode, crop) and run (models, combine);
* :mod:`~mask_keras.inference.answers`: the answer fields, tables, CSV / JSON;
* :mod:`~mask_keras.inference.predictor`: :class:`Predictor`, the entry point;
* :mod:`~mask_keras.inference.submission`: the eval/ set -> a submission and its scores;
* :mod:`~mask_keras.inference.exported`: export folders run with their runtimes.
"""
from .answers import answer_records, answer_summary, find_images, write_answers  # noqa: F401
from .artifacts import ArtifactError, resolve  # noqa: F401
from .combine import CombineError  # noqa: F401
from .faces import NoFaceError  # noqa: F401
from .images import BadImage, ImageInput  # noqa: F401
from .predictor import Predictor  # noqa: F401
