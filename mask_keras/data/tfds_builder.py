"""TensorFlow Datasets builder ``mask_faces``: the competition layout as a TFDS dataset.

Builds offline from a local directory in the competition layout (see
:mod:`mask_keras.data.layout`); nothing is downloaded. The folders are read with
:func:`mask_keras.data.read_train` / :func:`mask_keras.data.read_eval`, so the
validation, the quirks (mixed extensions, ``._*`` files, suffixed ids) and the
relabeling are exactly those of the rest of the package. Images are stored as the
bytes on disk (JPEG or PNG, not re-encoded) and decoded to ``uint8 HxWx3``.

Configs (each its own directory ``data_dir/mask_faces/<config>/1.0.0``):

- ``train`` (default): split ``train``, labels as recorded.
- ``train_certain`` / ``train_all``: split ``train`` with the certain / all fixes of
  ``relabel.csv`` applied (``read_train(relabel=...)``).
- ``eval``: split ``eval``, features ``image`` and ``ImageID`` only, in ``info.csv``
  order (the eval set has no labels, and a TFDS config has one feature set for all its
  splits, so eval is a config of its own rather than a split of ``train``).

Train features: ``image``, ``mask`` (wear/incorrect/not_wear), ``gender``
(male/female), ``age_group`` (<30/30-59/>=60 at the evaluation threshold 60),
``age`` (int32; recompute groups for another threshold with
``mask_keras.labels.age_group``), ``label`` (18 classes, ``mask*6+gender*3+age_group``),
``profile`` (the person folder), ``id`` and ``stem``. Supervised keys: ``(image, label)``.

Example::

    from mask_keras.data.tfds_builder import build_tfds
    builder = build_tfds("data/default", "~/tensorflow_datasets")        # builds once, then reuses
    ds = builder.as_dataset(split="train", shuffle_files=True)          # dict of tensors
    ds = builder.as_dataset(split="train", as_supervised=True)          # (image, label)
    ev = build_tfds("data/default", "~/tensorflow_datasets", config="eval").as_dataset(split="eval")

    # later, without the source folders (the class need not even be imported):
    import tensorflow_datasets as tfds
    ds = tfds.builder_from_directory("~/tensorflow_datasets/mask_faces/train/1.0.0").as_dataset(split="train")
    # or, after importing this module (it registers "mask_faces"):
    ds = tfds.load("mask_faces/train", split="train", data_dir="~/tensorflow_datasets", download=False)

The same build through TFDS' own manual-dir mechanism::

    b = MaskFaces(data_dir=DATA_DIR, config="train")
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=ROOT))

Importing this module imports TensorFlow (through :mod:`mask_keras._tf`, which hides
the GPUs from it: TF is used for data only) and TFDS: about 2 s on top of TF's import.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .._tf import tf  # noqa: F401  (first: hide GPUs from TF before TFDS imports it)

import tensorflow_datasets as tfds  # noqa: E402
from etils import epath  # noqa: E402  (a TFDS dependency)

from .. import labels as L  # noqa: E402
from .layout import read_eval, read_train  # noqa: E402

NAME = "mask_faces"
CONFIG_NAMES = ("train", "train_certain", "train_all", "eval")


@dataclasses.dataclass(eq=False)
class MaskFacesConfig(tfds.core.BuilderConfig):
    """A ``mask_faces`` config: which part of the layout, and which relabel fixes.

    Attributes:
        relabel: False | "certain" | "all" (train configs; passed to ``read_train``).
        part: "train" or "eval".
    """

    relabel: bool | str = False
    part: str = "train"


class MaskFaces(tfds.core.GeneratorBasedBuilder):
    """The mask x gender x age face set, built from a local competition layout."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: train (3 relabel variants) and eval configs."}
    BUILDER_CONFIGS = [
        MaskFacesConfig(name="train", description="train split, labels as recorded"),
        MaskFacesConfig(name="train_certain", relabel="certain",
                        description="train split with the certain relabel fixes applied"),
        MaskFacesConfig(name="train_all", relabel="all",
                        description="train split with all relabel fixes applied"),
        MaskFacesConfig(name="eval", part="eval", description="eval split: image and ImageID, info.csv order"),
    ]
    DEFAULT_CONFIG_NAME = "train"
    # TFDS 4.9.x resolves ``code_path`` through the ``importlib_resources`` backport, which it
    # declares only for Python < 3.9 (ModuleNotFoundError on 3.11); this file is the answer anyway.
    code_path = epath.Path(__file__)
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Point the manual dir at the directory that holds the competition layout:
      ROOT/train/train.csv, ROOT/train/images/<id>_<gender>_<race>_<age>/...,
      ROOT/eval/info.csv, ROOT/eval/images/<ImageID>
    e.g. download_config=tfds.download.DownloadConfig(manual_dir=ROOT), or use
    mask_keras.data.tfds_builder.build_tfds(ROOT, DATA_DIR).
    """

    def __init__(self, *, root=None, on_error: str = "raise", **kwargs):
        """A builder reading the layout at ``root``.

        Args:
            root: the layout directory (else the manual dir of ``download_and_prepare``).
            on_error: "raise" or "skip", passed to the readers.
            **kwargs: ``tfds.core.GeneratorBasedBuilder`` arguments (``data_dir``, ``config``, ...).
        """
        self._root = Path(root).expanduser() if root is not None else None
        self._on_error = on_error
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        image = tfds.features.Image(shape=(None, None, 3))  # encoding_format None: bytes kept as stored
        if cfg.part == "eval":
            features = tfds.features.FeaturesDict({"image": image, "ImageID": tfds.features.Text()})
            supervised = None
        else:
            features = tfds.features.FeaturesDict({
                "image": image,
                "mask": tfds.features.ClassLabel(names=L.CLASS_NAMES["mask"]),
                "gender": tfds.features.ClassLabel(names=L.CLASS_NAMES["gender"]),
                "age_group": tfds.features.ClassLabel(names=L.CLASS_NAMES["age"]),
                "age": tfds.features.Scalar(dtype=np.int32),
                "label": tfds.features.ClassLabel(names=[L.class_name(c) for c in range(L.NUM_CLASSES)]),
                "profile": tfds.features.Text(),
                "id": tfds.features.Text(),
                "stem": tfds.features.Text(),
            })
            supervised = ("image", "label")
        return tfds.core.DatasetInfo(
            builder=self,
            description=("Mask x gender x age face classification (18 classes), built from a local copy of "
                         "the competition layout by mask_keras."),
            features=features,
            supervised_keys=supervised,
            disable_shuffling=cfg.part == "eval",  # eval keeps info.csv order (submission order)
        )

    def _source_root(self, dl_manager) -> Path:
        return self._root if self._root is not None else Path(dl_manager.manual_dir)

    def _split_generators(self, dl_manager):
        root = self._source_root(dl_manager)
        part = self.builder_config.part
        return {part: self._generate_examples(root, part)}

    def _generate_examples(self, root: Path, part: str):
        """(key, example) pairs: ``profile/stem`` keys for train, the info.csv row index for eval."""
        if part == "eval":
            table = read_eval(root, on_error=self._on_error)
            for i, r in enumerate(table.itertuples(index=False)):
                yield i, {"image": r.path, "ImageID": r.ImageID}
            return
        table = read_train(root, relabel=self.builder_config.relabel, age_upper=L.EVAL_AGE_UPPER,
                           on_error=self._on_error)
        for r in table.itertuples(index=False):
            yield f"{r.profile}/{r.stem}", {
                "image": r.path,
                "mask": int(r.mask),
                "gender": int(r.gender),
                "age_group": int(r.age_group),
                "age": int(r.age),
                "label": int(r.label),
                "profile": r.profile,
                "id": r.id,
                "stem": r.stem,
            }


def build_tfds(root, data_dir, config: str = "train", on_error: str = "raise",
               overwrite: bool = False) -> MaskFaces:
    """Build (or reuse) the ``mask_faces/<config>`` dataset from the layout at ``root`` into ``data_dir``.

    An existing build in ``data_dir`` is reused as is (TFDS does not look at ``root`` again);
    ``overwrite=True`` rebuilds it.

    Args:
        root: the dataset folder in the competition layout (``~`` expanded).
        data_dir: the TFDS data directory; the build goes to ``data_dir/mask_faces/<config>/1.0.0``.
        config: one of ``CONFIG_NAMES``: ``train``, ``train_certain``, ``train_all``, ``eval``.
        on_error: "raise" or "skip", passed to the layout readers.
        overwrite: rebuild even when a build exists.

    Returns:
        The prepared builder (``builder.as_dataset(split="train")``, or ``split="eval"``
        for ``config="eval"``).

    Raises:
        ValueError: an unknown ``config``.
    """
    if config not in CONFIG_NAMES:
        raise ValueError(f"unknown mask_faces config {config!r}; choose one of {', '.join(CONFIG_NAMES)}")
    root = Path(root).expanduser()
    builder = MaskFaces(data_dir=str(Path(data_dir).expanduser()), config=config, root=root, on_error=on_error)
    mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root),
                                                                              download_mode=mode))
    return builder
