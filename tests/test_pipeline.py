"""tf.data input pipeline: shapes, padding, pixels, crops, JPEG scaled decode, cache, streaming, corrupt files."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mask_keras import labels as L
from mask_keras import pipeline as P
from mask_keras._tf import tf
from mask_keras.config import Config, PreprocessConfig
from mask_keras.pipeline import store

H, W = 64, 48  # tiny "photos" (height, width)


def _cfg(image_size=(32, 24), crop="none", batch=8, preset="none", cache="memory", **pre) -> Config:
    cfg = Config()
    cfg.preprocess = PreprocessConfig(image_size=image_size, crop=crop, **pre)
    cfg.augment = dataclasses.replace(cfg.augment, preset=preset)
    cfg.train = dataclasses.replace(cfg.train, batch_size=batch, cache=cache, verbose=0, seed=3)
    return cfg


def _save(path, arr, quality=95):
    img = Image.fromarray(np.asarray(arr, np.uint8))
    if str(path).endswith(".png"):
        img.save(path)
    else:
        img.save(path, quality=quality)
    return str(path)


def make_table(tmp_path, n=30, n_files=None, seed=0, old_every=5) -> pd.DataFrame:
    """``n`` rows in the image-table format; rows cycle through ``n_files`` small files (jpg and png)."""
    rng = np.random.default_rng(seed)
    n_files = n if n_files is None else n_files
    files = []
    for i in range(n_files):
        ext = "png" if i % 4 == 0 else "jpg"
        files.append(_save(tmp_path / f"img{i}.{ext}", rng.integers(0, 256, (H, W, 3))))
    rows = []
    for i in range(n):
        m, g = i % 3, (i // 3) % 2
        a = 2 if i % old_every == 0 else (i // 2) % 2
        rows.append(dict(profile=f"{i:06d}_x", id=f"{i:06d}", gender=g, age=65 if a == 2 else 40, stem="mask1",
                         path=files[i % n_files], mask=m, age_group=a, label=L.encode(m, g, a)))
    return pd.DataFrame(rows)


def _numpy(t):
    return {k: v.numpy() for k, v in t.items()} if isinstance(t, dict) else t.numpy()


def _collect(ds):
    return [tuple(_numpy(t) for t in b) for b in ds]


@pytest.mark.parametrize("task", ["mask", "gender", "age", "multi", "multihead"])
def test_shapes_and_dtypes_for_each_task(tmp_path, task):
    t = make_table(tmp_path, n=20, n_files=5)
    cfg = _cfg(batch=8)
    train, train_info = P.make_dataset(t, cfg, training=True, task=task)
    ev, ev_info = P.make_dataset(t, cfg, training=False, task=task)
    # static shapes in the element spec (JAX compiles once)
    assert train.element_spec[0].shape.as_list() == [8, 32, 24, 3]
    assert ev.element_spec[0].shape.as_list() == [8, 32, 24, 3]
    assert ev.element_spec[2].shape.as_list() == [8]
    x, y = next(iter(train))
    assert x.dtype == tf.uint8  # pixels; the model augments and converts on the device
    xe, ye, we = next(iter(ev))
    assert xe.dtype == tf.uint8 and we.dtype == tf.float32
    sizes = {"mask": 3, "gender": 2, "age": 3}
    for yy in (y, ye):
        if task == "multihead":
            assert set(yy) == {"mask", "gender", "age"}
            for k, v in yy.items():
                assert v.shape == (8, sizes[k]) and v.dtype == tf.float32
        else:
            assert yy.shape == (8, L.TASK_CLASSES[task]) and yy.dtype == tf.float32
            np.testing.assert_allclose(yy.numpy().sum(1), 1.0)
    # eval targets follow the table in order
    want = t.iloc[:8]
    if task == "multihead":
        np.testing.assert_array_equal(ye["mask"].numpy().argmax(1), want["mask"])
        np.testing.assert_array_equal(ye["gender"].numpy().argmax(1), want["gender"])
        np.testing.assert_array_equal(ye["age"].numpy().argmax(1), want["age_group"])
    else:
        tgt = L.task_target(task, want["mask"], want["gender"], want["age_group"])
        np.testing.assert_array_equal(ye.numpy().argmax(1), np.asarray(tgt))


def test_eval_pads_last_batch_and_drops_nothing(tmp_path):
    t = make_table(tmp_path, n=103, n_files=6)
    cfg = _cfg(image_size=(16, 12), batch=16)
    ds, ds_info = P.make_dataset(t, cfg, training=False, task="multi")
    assert ds_info.num_examples == 103 and ds_info.num_steps == 7
    batches = _collect(ds)
    assert len(batches) == 7
    assert all(b[0].shape == (16, 16, 12, 3) for b in batches)
    w = np.concatenate([b[2] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert w.sum() == 103
    np.testing.assert_array_equal(w[:103], 1.0)
    np.testing.assert_array_equal(w[103:], 0.0)
    np.testing.assert_array_equal(y[103:], 0.0)  # pads carry no class
    np.testing.assert_array_equal(y[:103].argmax(1), t["label"])


def test_train_drops_remainder_and_reshuffles(tmp_path):
    t = make_table(tmp_path, n=30, n_files=30)
    cfg = _cfg(batch=8)
    ds, ds_info = P.make_dataset(t, cfg, training=True, task="multi")
    assert ds_info.num_steps == 3 and ds.element_spec[0].shape[0] == 8
    e1, e2 = _collect(ds), _collect(ds)
    assert len(e1) == len(e2) == 3
    assert all(b[0].shape[0] == 8 for b in e1 + e2)
    order1 = np.concatenate([b[1].argmax(1) for b in e1])
    x1 = np.concatenate([b[0] for b in e1])
    x2 = np.concatenate([b[0] for b in e2])
    assert not np.array_equal(x1, x2)  # a new order every epoch
    assert len(order1) == 24


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_pixels_exact_on_solid_colour(tmp_path, cache):
    colour = np.array([200, 100, 50], np.uint8)
    p = _save(tmp_path / "solid.png", np.broadcast_to(colour, (H, W, 3)))
    t = pd.DataFrame([dict(path=p, mask=0, gender=1, age_group=2, label=L.encode(0, 1, 2))] * 4)
    cfg = _cfg(batch=4, cache=cache)
    for training in (True, False):
        x = next(iter(P.make_dataset(t, cfg, training=training, task="multi")[0]))[0].numpy()
        np.testing.assert_array_equal(x, np.broadcast_to(colour, x.shape))
    xp = next(iter(P.make_predict_dataset([p], cfg.preprocess, 2)[0])).numpy()
    np.testing.assert_array_equal(xp[0], np.broadcast_to(colour, xp[0].shape))
    np.testing.assert_array_equal(xp[1], 0)  # the pad
    from mask_keras.inference.images import ImageInput, crop_windows, model_pixels

    item = ImageInput.from_bytes(str(p), open(p, "rb").read())  # the inference engine's pixels: the same
    xe = model_pixels(item, cfg.preprocess, crop_windows(item.height, item.width, cfg.preprocess), flip=True)
    np.testing.assert_array_equal(xe, np.broadcast_to(colour, xe.shape))


def test_mixing_ships_float_pixels(tmp_path):
    t = make_table(tmp_path, n=16, n_files=4)
    cfg = _cfg(batch=8)
    cfg.augment = dataclasses.replace(cfg.augment, mixup=1.0)
    x, y = next(iter(P.make_dataset(t, cfg, training=True, task="multi")[0]))
    assert x.dtype == tf.float32 and 0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 255
    np.testing.assert_allclose(y.numpy().sum(1), 1.0, rtol=1e-5)


def test_center_crop_geometry(tmp_path):
    arr = np.zeros((H, W, 3), np.uint8)
    arr[...] = (0, 0, 255)
    arr[16:48, 12:36] = (255, 0, 0)  # the central 32x24 is red
    p = _save(tmp_path / "centre.png", arr)
    pre = PreprocessConfig(image_size=(32, 24), crop="center", crop_size=(32, 24))
    out = P.load_images([p], pre)[0]
    np.testing.assert_array_equal(out, np.broadcast_to([255, 0, 0], out.shape))
    # crop larger than the image: clipped to the whole image (same size -> identity)
    pre = PreprocessConfig(image_size=(H, W), crop="center", crop_size=(400, 200))
    np.testing.assert_array_equal(P.load_images([p], pre)[0], arr)
    # crop larger in one dimension only: full height, central 24 columns
    pre = PreprocessConfig(image_size=(H, 24), crop="center", crop_size=(400, 24))
    np.testing.assert_array_equal(P.load_images([p], pre)[0], arr[:, 12:36])


def test_face_crop_uses_given_columns_clipped_to_image(tmp_path):
    arr = np.zeros((H, W, 3), np.uint8)
    arr[10:30, 5:25] = (0, 255, 0)
    arr[40:, 30:] = (255, 255, 0)
    p = _save(tmp_path / "face.png", arr)
    t = pd.DataFrame({"path": [p, p], "crop_y0": [10, 40], "crop_x0": [5, 30], "crop_y1": [30, 900],
                      "crop_x1": [25, 700], "crop_fallback": [False, True]})
    pre = PreprocessConfig(image_size=(20, 20), crop="face")
    out = P.load_images(t, pre)
    np.testing.assert_array_equal(out[0], np.broadcast_to([0, 255, 0], out[0].shape))
    pre = PreprocessConfig(image_size=(H - 40, W - 30), crop="face")
    np.testing.assert_array_equal(P.load_images(t.iloc[1:], pre)[0], arr[40:, 30:])
    # the same through make_dataset / make_predict_dataset
    t["mask"], t["gender"], t["age_group"] = 0, 0, 0
    cfg = _cfg(image_size=(20, 20), crop="face", batch=2)
    x = next(iter(P.make_dataset(t.iloc[:1], cfg, training=False, task="mask")[0]))[0].numpy()[0]
    np.testing.assert_array_equal(x, out[0])
    xp = next(iter(P.make_predict_dataset(t.iloc[:1], cfg.preprocess, 1)[0])).numpy()[0]
    np.testing.assert_array_equal(xp, x)


def test_png_and_jpg_both_decode_like_pil(tmp_path):
    arr = np.zeros((H, W, 3), np.uint8)
    arr[:, :24] = (10, 120, 230)
    arr[:, 24:] = (240, 60, 20)
    paths = [_save(tmp_path / "a.png", arr), _save(tmp_path / "a.jpg", arr, quality=100),
             _save(tmp_path / "a.jpeg", arr, quality=100)]
    pre = PreprocessConfig(image_size=(H, W), crop="none")
    out = P.load_images(paths, pre).astype(int)
    np.testing.assert_array_equal(out[0], arr)
    for got, path in zip(out[1:], paths[1:]):  # TF's JPEG decoder agrees with PIL's
        ref = np.asarray(Image.open(path).convert("RGB"), int)
        np.testing.assert_array_equal(got, ref)
        assert np.abs(got - arr).mean() < 8


def test_cache_memory_and_file_give_same_values_twice(tmp_path):
    t = make_table(tmp_path, n=12, n_files=12)
    for cache in ("memory", str(tmp_path / "cache" / "c")):
        cfg = _cfg(batch=5, cache=cache)
        ds, ds_info = P.make_dataset(t, cfg, training=False, task="multi")
        a, b = _collect(ds), _collect(ds)
        for ba, bb in zip(a, b):
            np.testing.assert_array_equal(ba[0], bb[0])
    files = list((tmp_path / "cache").glob("c_*.npy"))  # the file cache was written, and nothing else
    assert len(files) == 1 and not [f for f in (tmp_path / "cache").iterdir() if f not in files]
    # a later run reads it instead of decoding (same pixels, no new file)
    stamp = files[0].stat().st_mtime_ns
    x = np.concatenate([b[0] for b in _collect(P.make_dataset(t, _cfg(batch=5, cache=cache), training=False,
                                                                task="multi")[0])])
    np.testing.assert_array_equal(x, np.concatenate([b[0] for b in a]))
    assert list((tmp_path / "cache").glob("c_*.npy")) == files and files[0].stat().st_mtime_ns == stamp
    # a replaced image (new size/mtime) is a new key: decoded again, never the stale pixels
    _save(t.path[3], np.full((H, W, 3), 9, np.uint8))
    x = np.concatenate([b[0] for b in _collect(P.make_dataset(t, _cfg(batch=5, cache=cache), training=False,
                                                                task="multi")[0])])
    assert len(list((tmp_path / "cache").glob("c_*.npy"))) == 2
    assert (x[3] == 9).all() and not (np.concatenate([b[0] for b in a])[3] == 9).all()


@pytest.mark.parametrize("balance", ["none", "class"])
def test_memory_cache_holds_every_image_before_the_first_epoch(tmp_path, balance):
    """Every image is decoded once when the dataset is built; epochs read only the cache."""
    t = make_table(tmp_path, n=20, n_files=20)
    cfg = _cfg(image_size=(8, 8), batch=4, preset="base")
    cfg.sampling = dataclasses.replace(cfg.sampling, balance=balance, old_factor=1.5)
    train, train_info = P.make_dataset(t, cfg, training=True, task="age")
    ev, ev_info = P.make_dataset(t, cfg, training=False, task="age")
    assert train_info.cache_bytes == ev_info.cache_bytes == 20 * 8 * 8 * 3
    for p in set(t.path):
        os.remove(p)
    for _ in range(2):
        assert len(_collect(train)) == train_info.num_steps and len(_collect(ev)) == ev_info.num_steps


@pytest.mark.parametrize("balance", ["none", "class"])
def test_streaming_matches_cache_and_covers_every_row(tmp_path, balance):
    """cache="none" decodes shuffled indices on the fly: same pixels as the cache, every row
    once per epoch (a multiple of the batch), a new order each epoch, reproducible by seed."""
    t = make_table(tmp_path, n=24, n_files=24, seed=4)
    cfg = _cfg(image_size=(8, 8), batch=6, cache="none")
    cfg.sampling = dataclasses.replace(cfg.sampling, balance=balance)
    ref = P.load_images(t, cfg.preprocess)
    key = {ref[i].tobytes(): i for i in range(len(t))}
    ds, ds_info = P.make_dataset(t, cfg, training=True, task="multi")
    assert ds_info.cache_bytes == 0
    epochs = []
    for _ in range(2):
        x = np.concatenate([b[0] for b in _collect(ds)])
        rows = [key[im.tobytes()] for im in x]  # every batch image is exactly one row's pixels
        epochs.append(rows)
    if balance == "none":
        assert sorted(epochs[0]) == list(range(24)) and sorted(epochs[1]) == list(range(24))
    assert epochs[0] != epochs[1]
    again, again_info = P.make_dataset(t, cfg, training=True, task="multi")
    assert [key[im.tobytes()] for im in np.concatenate([b[0] for b in _collect(again)])] == epochs[0]
    cached, cached_info = P.make_dataset(t, _cfg(image_size=(8, 8), batch=6), training=False, task="multi")
    streamed, streamed_info = P.make_dataset(t, cfg, training=False, task="multi")
    for a, b in zip(_collect(cached), _collect(streamed)):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)


def test_jpeg_scaled_decode_picks_the_dct_scale_and_stays_close_to_full_decode(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:384]
    smooth = np.stack([yy / 2, xx / 1.5, (yy + xx) / 3.6], -1) + rng.normal(0, 6, (512, 384, 3))
    p = _save(tmp_path / "photo.jpg", np.clip(smooth, 0, 255), quality=90)
    data = tf.io.read_file(p)
    for image_size, crop_size, ratio in [((128, 96), (400, 200), 2), ((64, 48), (400, 200), 4),
                                         ((300, 200), (400, 200), 1), ((50, 40), (512, 384), 8)]:
        pre = PreprocessConfig(image_size=image_size, crop="center", crop_size=crop_size)
        fast = P.load_images([p], pre)[0].astype(int)
        # the reference: libjpeg's DCT scaling at that ratio, then the crop window, then the resize
        full = tf.io.decode_jpeg(data, channels=3, ratio=ratio, dct_method="INTEGER_ACCURATE")
        ch, cw = crop_size[0] // ratio, crop_size[1] // ratio
        y0, x0 = (512 - crop_size[0]) // 2 // ratio, (384 - crop_size[1]) // 2 // ratio
        win = full[y0:y0 + ch, x0:x0 + cw]
        far = win.shape[0] >= 2 * image_size[0] or win.shape[1] >= 2 * image_size[1]
        want = P.resize_image(win, image_size, antialias=far).numpy().astype(int)
        assert np.abs(fast - want).max() <= 16 and np.abs(fast - want).mean() < 0.5, (image_size, ratio)
        # and close to decoding the whole image at full size (the PIL way)
        exact = P.load_images([p], dataclasses.replace(pre, jpeg_scaled_decode=False))[0].astype(int)
        assert np.abs(fast - exact).mean() < 3, image_size


def test_file_cache_is_keyed_by_content(tmp_path):
    t = make_table(tmp_path, n=6, n_files=6)
    cfg = _cfg(batch=3, cache=str(tmp_path / "cache" / "c"))
    x1 = np.concatenate([b[0] for b in _collect(P.make_dataset(t, cfg, training=False, task="mask")[0])])
    cfg2 = dataclasses.replace(cfg, preprocess=dataclasses.replace(cfg.preprocess, image_size=(16, 12)))
    x2 = np.concatenate([b[0] for b in _collect(P.make_dataset(t, cfg2, training=False, task="mask")[0])])
    assert x1.shape[1:3] == (32, 24) and x2.shape[1:3] == (16, 12)  # no stale cache read


def _bad_files(tmp_path):
    good = make_table(tmp_path, n=6, n_files=6)
    buf = (tmp_path / "img1.jpg").read_bytes()
    trunc = tmp_path / "truncated.jpg"
    trunc.write_bytes(buf[: len(buf) // 2])
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n")
    t = pd.concat([good, good.iloc[:2].assign(path=[str(trunc), str(text)])], ignore_index=True)
    return t, str(trunc), str(text)


def test_corrupt_images_raise_clear_error_naming_files(tmp_path):
    t, trunc, text = _bad_files(tmp_path)
    cfg = _cfg(batch=4)
    with pytest.raises(P.ImageError) as ei:
        P.make_dataset(t, cfg, training=True, task="multi")[0]
    msg = str(ei.value)
    assert trunc in msg and text in msg and "truncated JPEG" in msg and "not a JPEG/PNG" in msg
    assert "2 of 8" in msg
    with pytest.raises(P.ImageError, match="truncated.jpg"):
        P.make_predict_dataset(t["path"], cfg.preprocess, 4)
    # full decode check finds the same two
    assert {p for p, _ in P.check_images(t["path"], "full", progress=False)} == {trunc, text}


def test_a_training_set_smaller_than_a_batch_fails_before_decoding(tmp_path):
    t, trunc, text = _bad_files(tmp_path)  # 8 rows, 2 undecodable: the size error comes first
    with pytest.raises(ValueError, match=r"training set of 8 images is smaller than one batch \(16\)"):
        P.make_dataset(t, _cfg(batch=16), training=True, task="multi")[0]
    # with on_error=skip the 6 decodable rows are checked again after the decode
    cfg = _cfg(batch=7)
    cfg.data = dataclasses.replace(cfg.data, on_error="skip")
    with pytest.raises(ValueError, match=r"training set of 6 images is smaller than one batch \(7\)"):
        P.make_dataset(t, cfg, training=True, task="multi")[0]


def test_on_error_skip_drops_and_reports(tmp_path):
    t, trunc, text = _bad_files(tmp_path)
    cfg = _cfg(batch=3)
    cfg.data = dataclasses.replace(cfg.data, on_error="skip")
    ds, ds_info = P.make_dataset(t, cfg, training=False, task="mask")
    assert ds_info.num_examples == 6


@pytest.mark.parametrize("which", ["truncated", "text"])
def test_runtime_decode_error_names_the_file(tmp_path, which):
    """Without the up-front check, a file that fails to decode still surfaces with its path."""
    t, trunc, text = _bad_files(tmp_path)
    bad = trunc if which == "truncated" else text
    t = t[(t.path == bad) | ~t.path.isin([trunc, text])]
    # cached: every image is decoded when the dataset is built -> ImageError naming the file
    for training in (False, True):
        with pytest.raises(P.ImageError, match=bad.replace(".", r"\.")) as ei:
            P.make_dataset(t, _cfg(batch=4), training=training, task="multi", check="none")[0]
        assert [p for p, _ in ei.value.bad] == [bad]
    # streamed (cache none): the error surfaces while iterating, still naming the file;
    # last row (sentinel case) and first row, eval and training
    for order in (t, pd.concat([t.iloc[-1:], t.iloc[:-1]])):
        for training in (False, True):
            cfg = _cfg(batch=4, cache="none")
            with pytest.raises(tf.errors.InvalidArgumentError, match=bad.replace(".", r"\.")):
                _collect(P.make_dataset(order, cfg, training=training, task="multi", check="none")[0])


def test_predict_dataset_matches_eval_and_flip(tmp_path):
    t = make_table(tmp_path, n=11, n_files=11)
    cfg = _cfg(batch=4, crop="center", crop_size=(48, 40))
    ev = np.concatenate([b[0] for b in _collect(P.make_dataset(t, cfg, training=False, task="multi")[0])])
    ds, n = P.make_predict_dataset(t["path"].tolist(), cfg.preprocess, 4)
    assert n == 11 and ds.element_spec.shape.as_list() == [4, 32, 24, 3]
    xp = np.concatenate([b.numpy() for b in ds])
    assert xp.shape[0] == 12
    assert int(ds.cardinality()) == 3  # known: Keras shows the length and does not warn at the end
    np.testing.assert_array_equal(xp[:11], ev[:11])
    dsf, _ = P.make_predict_dataset(t["path"].tolist(), cfg.preprocess, 4, flip=True)
    xf = np.concatenate([b.numpy() for b in dsf])
    np.testing.assert_array_equal(xf[:11], xp[:11, :, ::-1])


def test_old_oversampling_through_make_dataset(tmp_path):
    t = make_table(tmp_path, n=30, n_files=10, old_every=5)  # 6 old rows
    assert (t.age_group == 2).sum() == 6
    cfg = _cfg(image_size=(8, 8), batch=6)
    cfg.sampling = dataclasses.replace(cfg.sampling, old_factor=2.0)
    ds, ds_info = P.make_dataset(t, cfg, training=True, task="age")
    assert ds_info.num_examples == 36 and ds_info.num_steps == 6
    # the length known before building (no file is read): the same plan
    assert P.epoch_size(t, cfg, training=True) == (36, 6) and P.epoch_size(t, cfg, training=False) == (30, 5)
    y = np.concatenate([b[1] for b in _collect(ds)])
    assert (y.argmax(1) == 2).sum() == 12


def test_face_crop_computes_boxes_when_columns_absent(tmp_path, monkeypatch):
    from mask_keras.pipeline import dataset

    p = _save(tmp_path / "f.png", np.full((H, W, 3), 7, np.uint8))
    calls = []

    def face_crop_boxes(table, preprocess_cfg):
        calls.append(len(table))
        return table.assign(crop_y0=0, crop_x0=0, crop_y1=10, crop_x1=10, crop_fallback=False)

    monkeypatch.setattr(dataset, "face_crop_boxes", face_crop_boxes)
    out = P.load_images([p], PreprocessConfig(image_size=(10, 10), crop="face"))
    assert calls == [1] and out.shape == (1, 10, 10, 3)


def _photo(rng, h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.clip(np.stack([yy * 200 / h, xx * 200 / w, (yy + xx) * 100 / (h + w)], -1)
                   + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def test_jpeg_size_reads_the_frame_header(tmp_path):
    rng = np.random.default_rng(0)
    img = Image.fromarray(_photo(rng, 70, 50))
    img.save(tmp_path / "base.jpg", quality=90)
    img.save(tmp_path / "prog.jpg", quality=90, progressive=True)
    # an EXIF block with a JPEG thumbnail of another size, and a 20 kB ICC profile: the
    # frame header sits past the first 4 kB read and after another image's SOF marker
    thumb = tmp_path / "thumb.jpg"
    Image.fromarray(_photo(rng, 16, 12)).save(thumb)
    exif = Image.Exif()
    exif[0x010E] = "x" * 100
    img.save(tmp_path / "app.jpg", quality=90, exif=exif.tobytes() + thumb.read_bytes(),
             icc_profile=bytes(rng.integers(0, 256, 20_000, dtype=np.uint8)))
    img.save(tmp_path / "img.png")
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "base.jpg").read_bytes()[:40])
    for name in ("base.jpg", "prog.jpg", "app.jpg"):
        assert P.jpeg_size(str(tmp_path / name)) == (70, 50), name
        assert P.jpeg_size(str(tmp_path / name)) == tuple(tf.io.extract_jpeg_shape(
            tf.io.read_file(str(tmp_path / name)))[:2].numpy())
    app = (tmp_path / "app.jpg").read_bytes()
    assert app.find(b"\xff\xc0") < 4096 < app.rfind(b"\xff\xc0")  # the thumbnail's SOF first, the image's late
    for name in ("img.png", "junk.jpg", "cut.jpg", "missing.jpg"):
        assert P.jpeg_size(str(tmp_path / name)) is None, name
    sizes = P.jpeg_sizes([str(tmp_path / n) for n in ("img.png", "base.jpg", "img.png", "prog.jpg")])
    assert sizes.tolist() == [[-1, -1], [70, 50], [-1, -1], [70, 50]]


@pytest.mark.parametrize("crop", ["none", "center", "face"])
def test_grouped_cache_decode_equals_the_per_image_path(tmp_path, crop):
    """The cache is decoded in groups of JPEGs of one DCT ratio (no per-image control flow):
    every pixel equals :func:`load_and_preprocess`, the path of streaming and inference,
    for JPEGs of several sizes (baseline and progressive), PNGs and face boxes off the image."""
    rng = np.random.default_rng(1)
    paths = []
    for i, (h, w) in enumerate([(512, 384), (512, 384), (300, 200), (97, 61), (1000, 700), (64, 48)] * 2):
        img = Image.fromarray(_photo(rng, h, w))
        ext = "png" if i % 5 == 4 else "jpg"
        p = str(tmp_path / f"p{i}.{ext}")
        img.save(p, **({} if ext == "png" else {"quality": 85, "progressive": i % 3 == 0}))
        paths.append(p)
    t = pd.DataFrame({"path": paths})
    y0, x0 = rng.integers(-40, 400, len(t)), rng.integers(-40, 300, len(t))
    t["crop_y0"], t["crop_x0"] = y0, x0
    t["crop_y1"], t["crop_x1"] = y0 + rng.integers(1, 500, len(t)), x0 + rng.integers(1, 400, len(t))
    for size in [(128, 96), (40, 30)]:
        pre = PreprocessConfig(image_size=size, crop=crop, crop_size=(400, 200))
        rows = P.Rows(t, pre, None)
        assert len(store.decoder_datasets(rows, pre)) >= 3  # several ratio groups and the general path (PNGs)
        got = P.decode_all(rows, pre, progress=False)
        want = np.stack([P.load_and_preprocess(p, b, pre).numpy() for p, b in zip(rows.path, rows.box)])
        np.testing.assert_array_equal(got, want)


def test_grouped_decode_falls_back_when_a_header_misleads(tmp_path, monkeypatch):
    """A JPEG whose window does not fit the size the header pass gave fails in its group and
    is decoded again through the general path; a broken file still raises, naming it."""
    t = make_table(tmp_path, n=8, n_files=8)
    pre = PreprocessConfig(image_size=(16, 12), crop="none")
    rows = P.Rows(t, pre, None)
    want = np.stack([P.load_and_preprocess(p, b, pre).numpy() for p, b in zip(rows.path, rows.box)])
    real = P.jpeg_sizes
    # the cache's grouping reads the sizes through the store module's name
    monkeypatch.setattr(store, "jpeg_sizes", lambda paths: np.where(real(paths) > 0, 4 * real(paths), -1))
    np.testing.assert_array_equal(P.decode_all(rows, pre, progress=False), want)
    broken = [p for p in rows.path if p.endswith(".jpg")][0]
    with open(broken, "r+b") as f:
        f.seek(200)
        f.write(b"\x00" * 400)
        f.truncate(700)
    with pytest.raises(P.ImageError, match=os.path.basename(broken)):
        P.decode_all(rows, pre, progress=False)


def test_datasets_run_without_the_tf_data_autotuner(tmp_path):
    """With the autotuner on, an iterator's end waits for its thread's next wake-up (seconds
    per epoch); every dataset built here turns it off and sets its parallelism itself."""
    t = make_table(tmp_path, n=8, n_files=8)
    cfg = _cfg(batch=4)
    for ds in (P.make_dataset(t, cfg, training=True, task="mask")[0],
               P.make_dataset(t, cfg, training=False, task="mask")[0],
               P.make_predict_dataset(t["path"].tolist(), cfg.preprocess, 4, progress=False)[0],
               P.make_dataset(t, _cfg(batch=4, cache="none"), training=True, task="mask")[0]):
        assert ds.options().autotune.enabled is False
        assert len(list(ds)) >= 2
    assert P.parallel_calls() == len(os.sched_getaffinity(0))


def test_create_dataset_flat_arguments_match_the_config_adapter(tmp_path):
    """create_dataset (flat arguments) gives make_dataset's batches, and a DatasetInfo instead of attributes."""
    t = make_table(tmp_path, n=20, n_files=5)
    cfg = _cfg(batch=6)
    cfg.sampling = dataclasses.replace(cfg.sampling, old_factor=2.0)
    flat, info = P.create_dataset(t, training=True, task="age", batch_size=6, preprocess=cfg.preprocess, seed=3,
                                  old_factor=2.0)
    adapted, adapted_info = P.make_dataset(t, cfg, training=True, task="age")
    n_old = int((t["age_group"] == 2).sum())  # every 5th row: repeated once more per epoch
    assert info == adapted_info
    assert (info.num_examples, info.num_steps, info.batch_size) == (20 + n_old, (20 + n_old) // 6, 6)
    assert info.training and info.task == "age" and info.mixer is None and info.cache_bytes == 20 * 32 * 24 * 3
    for (x1, y1), (x2, y2) in zip(_collect(flat), _collect(adapted), strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    ev, ev_info = P.create_dataset(t, task="multi", batch_size=8, preprocess=cfg.preprocess)
    assert (ev_info.num_examples, ev_info.num_steps, ev_info.training) == (20, 3, False)
    assert sum(float(w.sum()) for _, _, w in _collect(ev)) == 20  # the 4 pad rows weigh 0
    assert not hasattr(ev, "num_steps")  # the facts live in the info, not on the dataset


@pytest.mark.parametrize("kwargs, match", [
    (dict(task="ages"), "unknown task 'ages'"),
    (dict(balance="clas"), "unknown balance 'clas'.*did you mean 'class'"),
    (dict(on_error="ignore"), "unknown on_error 'ignore'.*raise, skip"),
    (dict(batch_size=0), "batch_size 0 must be >= 1"),
    (dict(old_factor=0.5), "old_factor 0.5 must be >= 1"),
])
def test_create_dataset_rejects_bad_arguments(tmp_path, kwargs, match):
    t = make_table(tmp_path, n=4, n_files=2)
    with pytest.raises(ValueError, match=match):
        P.create_dataset(t, **kwargs)
    with pytest.raises(ValueError, match="the table is empty"):
        P.create_dataset(t.iloc[:0])
