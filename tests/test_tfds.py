"""The TFDS builder ``mask_faces`` (mask_keras.data.tfds_builder), built offline from a tiny layout."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from _layout_factory import MASK_COLORS, make_layout, stratified_people

from mask_keras.data import LayoutError, read_eval, read_train
from mask_keras.data import tfds_builder as tfb

tfds = tfb.tfds

PEOPLE = stratified_people(1) + [("001498-1", "male", 45), ("000020", "female", 25)]
N_EVAL = 5


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("src") / "data"
    return make_layout(root, PEOPLE, ext={"000001": ".png", "000002": ".jpeg"}, mask5_jpg=("000002",),
                       hidden=True, n_eval=N_EVAL, size=(6, 4))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def built(src, data_dir):
    return tfb.build_tfds(src.root, data_dir)


def to_frame(ds) -> pd.DataFrame:
    rows = []
    for ex in tfds.as_numpy(ds):
        rows.append({k: (v.decode() if isinstance(v, bytes) else v) for k, v in ex.items()})
    return pd.DataFrame(rows)


def test_tf_for_data_only():
    assert "mask_keras._tf" in sys.modules
    assert tfb.tf.config.get_visible_devices("GPU") == []
    assert tfb.MaskFaces.name == "mask_faces"


def test_build_and_load_matches_read_train(built, src, data_dir):
    assert built.info.splits["train"].num_examples == 7 * len(PEOPLE)
    assert (data_dir / "mask_faces" / "train" / "1.0.0" / "dataset_info.json").exists()
    got = to_frame(built.as_dataset(split="train"))
    assert len(got) == 7 * len(PEOPLE)
    ref = read_train(src.root)
    m = ref.merge(got, on=["profile", "stem"], suffixes=("", "_tfds"), validate="one_to_one")
    assert len(m) == len(ref)
    for col in ("mask", "gender", "age_group", "age", "label", "id"):
        np.testing.assert_array_equal(m[col].to_numpy(), m[f"{col}_tfds"].to_numpy(), err_msg=col)
    # every image decodes to HxWx3 uint8 and carries the colour of its mask state (image stayed with its label)
    for img, mask in zip(m["image"], m["mask"]):
        assert img.shape == (6, 4, 3) and img.dtype == np.uint8
        assert np.abs(img.reshape(-1, 3).mean(0) - MASK_COLORS[mask]).max() < 8
    assert built.info.features["label"].num_classes == 18
    assert built.info.features["mask"].names == ["wear", "incorrect", "not_wear"]
    assert built.info.supervised_keys == ("image", "label")


def test_images_stored_as_on_disk(built, src):
    ds = built.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()})
    by_key = {(ex["profile"].decode(), ex["stem"].decode()): ex["image"] for ex in tfds.as_numpy(ds)}
    for _, r in read_train(src.root).iterrows():
        with open(r["path"], "rb") as f:
            assert by_key[(r["profile"], r["stem"])] == f.read()
    assert by_key[(src.profile("000001"), "mask1")][:8] == b"\x89PNG\r\n\x1a\n"
    assert by_key[(src.profile("000003"), "mask1")][:2] == b"\xff\xd8"


def test_supervised_batches(built):
    image, label = next(iter(tfds.as_numpy(built.as_dataset(split="train", as_supervised=True).batch(7))))
    assert image.shape == (7, 6, 4, 3) and label.shape == (7,)
    assert ((0 <= label) & (label < 18)).all()


def test_reload_without_source(built, data_dir):
    b = tfds.builder_from_directory(str(data_dir / "mask_faces" / "train" / "1.0.0"))
    assert b.info.splits["train"].num_examples == 7 * len(PEOPLE)
    ds = tfds.load("mask_faces/train", split="train", data_dir=str(data_dir), download=False)
    assert sum(1 for _ in ds) == 7 * len(PEOPLE)


def test_relabel_config(src, data_dir):
    b = tfb.build_tfds(src.root, data_dir, config="train_certain")
    got = to_frame(b.as_dataset(split="train")).sort_values(["profile", "stem"]).reset_index(drop=True)
    ref = read_train(src.root, relabel="certain")
    for col in ("mask", "gender", "age_group", "label"):
        np.testing.assert_array_equal(got[col].to_numpy(), ref[col].to_numpy(), err_msg=col)
    assert (got[got["id"] == "001498-1"]["gender"] == 1).all()
    swapped = got[got["id"] == "000020"].set_index("stem")
    assert swapped.loc["normal", "mask"] == 1 and swapped.loc["incorrect_mask", "mask"] == 2


def test_eval_config_keeps_info_csv_order(src, data_dir):
    b = tfb.build_tfds(src.root, data_dir, config="eval")
    assert list(b.info.splits) == ["eval"]
    assert set(b.info.features) == {"image", "ImageID"}
    got = to_frame(b.as_dataset(split="eval"))
    assert list(got["ImageID"]) == list(read_eval(src.root)["ImageID"]) == src.eval_ids
    assert all(img.shape == (6, 4, 3) for img in got["image"])


def test_manual_dir_route_and_reuse(tmp_path):
    lay = make_layout(tmp_path / "src", PEOPLE[:3], n_eval=0, size=(4, 4))
    data_dir = tmp_path / "tfds"
    b = tfb.MaskFaces(data_dir=str(data_dir), config="train")
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(lay.root)))
    assert b.info.splits["train"].num_examples == 21
    # a second build reuses what is there; overwrite=True rebuilds from the (changed) source
    lay.drop_row(PEOPLE[0][0])
    import shutil

    shutil.rmtree(lay.folder(PEOPLE[0][0]))
    assert tfb.build_tfds(lay.root, data_dir).info.splits["train"].num_examples == 21
    assert tfb.build_tfds(lay.root, data_dir, overwrite=True).info.splits["train"].num_examples == 14


def test_errors_and_skips(tmp_path):
    lay = make_layout(tmp_path / "src", PEOPLE[:3], n_eval=0, size=(4, 4))
    lay.remove_image(PEOPLE[1][0], "mask3")
    with pytest.raises(LayoutError, match="mask3"):
        tfb.build_tfds(lay.root, tmp_path / "a")
    b = tfb.build_tfds(lay.root, tmp_path / "b", on_error="skip")
    assert b.info.splits["train"].num_examples == 14
    with pytest.raises(LayoutError, match="info.csv not found"):
        tfb.build_tfds(lay.root, tmp_path / "c", config="eval")
    with pytest.raises(ValueError, match="unknown mask_faces config 'test'"):
        tfb.build_tfds(lay.root, tmp_path / "d", config="test")
