"""Face detection (mask_keras.detect): MTCNN worker, box cache, crop geometry, fallbacks.

The real detector (a TensorFlow worker process) starts once for the module (``detector``
fixture, a few seconds); cache logic that needs no network uses ``FakeDetector``.
"""
from __future__ import annotations

import hashlib
import io
import os
import time
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _layout_factory import make_layout
from PIL import Image

from mask_keras.config import Config, PreprocessConfig
from mask_keras.data import LayoutError, read_eval, read_train
from mask_keras.detect import (CACHE_COLUMNS, Detector, DetectorError, box_iou, center_crop_boxes, contact_sheet,
                               default_cache_path, detect_dir, face_crop_boxes, face_crops, format_summary,
                               infer_root, pick_face, read_cache, widen_boxes)
from mask_keras.detect import process as detect_process

skimage_data = pytest.importorskip("skimage.data")

#: MTCNN's box (x0, y0, x1, y1) on skimage's astronaut saved as JPEG (quality 92), recorded after
#: checking a drawing of it by eye: forehead to chin, cheek to cheek, keypoints on eyes/nose/mouth
ASTRONAUT_BOX = (180.4, 64.5, 264.7, 172.1)
CFG = PreprocessConfig()  # margins (30, 60, 30, 30), fallback (340, 256), min confidence 0.9


def jpeg(array, quality: int = 92) -> bytes:
    b = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(b, format="JPEG", quality=quality)
    return b.getvalue()


def gradient(h=64, w=48, phase=0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 5 + phase) % 256, (y * 3) % 256, ((x + y) * 2 + phase) % 256], -1).astype(np.uint8)


def make_eval(root: Path, images: dict[str, bytes]) -> Path:
    """An eval-only data folder: ``root/eval/info.csv`` + ``root/eval/images/<name>``."""
    images_dir = root / "eval" / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        (images_dir / name).write_bytes(data)
    pd.DataFrame({"ImageID": list(images), "ans": 0}).to_csv(root / "eval" / "info.csv", index=False)
    return root


class FakeDetector:
    """Stands in for :class:`Detector` where the network does not matter: one fixed face per image
    whose width is in ``faces_for_width`` (else none); counts what it was asked."""

    versions = {"mtcnn": "fake"}

    def __init__(self, faces_for_width=None, fail_on_call=None):
        self.faces_for_width = faces_for_width or {}
        self.calls, self.images = 0, 0
        self.fail_on_call = fail_on_call

    def detect(self, blobs):
        self.calls += 1
        if self.fail_on_call is not None and self.calls >= self.fail_on_call:
            raise KeyboardInterrupt  # the user pressed Ctrl-C in the middle of a run
        self.images += len(blobs)
        out = []
        for b in blobs:
            with Image.open(io.BytesIO(b)) as im:
                w, h = im.size
            faces = np.asarray(self.faces_for_width.get(w, np.zeros((0, 15))), np.float32).reshape(-1, 15)
            out.append({"width": w, "height": h, "faces": faces, "error": None})
        return out


class NoDetector:
    versions = {}

    def detect(self, blobs):
        raise AssertionError(f"detector called with {len(blobs)} image(s); everything should be cached")


def face_row(x0, y0, x1, y1, conf):
    return [x0, y0, x1, y1, conf] + [np.nan] * 10


@pytest.fixture(scope="module")
def detector():
    det = Detector()
    det.start()
    yield det
    det.close()


@pytest.fixture(scope="module")
def photos():
    astro = skimage_data.astronaut()
    two = np.full((512, 900, 3), 235, np.uint8)  # the astronaut, and a half-size copy beside her
    two[:, :512] = astro
    two[100:356, 600:856] = np.asarray(Image.fromarray(astro).resize((256, 256), Image.BILINEAR))
    return {"astronaut.jpg": jpeg(astro), "coffee.jpg": jpeg(skimage_data.coffee()), "two_faces.jpg": jpeg(two)}


# ---- the real detector ---------------------------------------------------------------------
def test_astronaut_face_found_and_cropped(detector, photos, tmp_path):
    root = make_eval(tmp_path / "data", {k: photos[k] for k in ("astronaut.jpg", "coffee.jpg")})
    s = detect_dir(root, detector=detector, progress=False)
    assert (s["images"], s["processed"], s["skipped"], s["found"], s["not_found"], s["errors"]) == (2, 2, 0, 1, 1, 0)
    assert detector.versions["keras_backend"] == "tensorflow" and os.environ["KERAS_BACKEND"] == "jax"
    cache = read_cache(default_cache_path(root)).set_index("path")
    assert list(read_cache(default_cache_path(root)).columns) == CACHE_COLUMNS
    a = cache.loc["eval/images/astronaut.jpg"]
    box = a[["x0", "y0", "x1", "y1"]].to_numpy(float)
    assert a["status"] == "face" and a["found"] and a["confidence"] > 0.99 and a["n_faces"] == 1
    assert (a["width"], a["height"]) == (512, 512)
    assert np.abs(box - ASTRONAUT_BOX).max() < 8, box
    assert box_iou(box, ASTRONAUT_BOX) > 0.85
    # keypoints inside the box, in anatomical order (image-left eye first, mouth below nose below eyes)
    for k in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right"):
        assert box[0] < a[f"{k}_x"] < box[2] and box[1] < a[f"{k}_y"] < box[3], k
    assert a["left_eye_x"] < a["nose_x"] < a["right_eye_x"]
    assert max(a["left_eye_y"], a["right_eye_y"]) < a["nose_y"] < min(a["mouth_left_y"], a["mouth_right_y"])
    c = cache.loc["eval/images/coffee.jpg"]
    assert c["status"] == "no_face" and not c["found"] and c["n_faces"] == 0 and np.isnan(c["x0"])
    assert (c["width"], c["height"]) == (600, 400)

    t = face_crop_boxes(read_eval(root), CFG)
    t = t.set_index("ImageID")
    x0, y0, x1, y1 = box
    assert t.loc["astronaut.jpg", ["crop_y0", "crop_x0", "crop_y1", "crop_x1"]].tolist() == [
        int(np.floor(y0 - 60)), int(np.floor(x0 - 30)), int(np.ceil(y1 + 30)), int(np.ceil(x1 + 30))]
    assert not t.loc["astronaut.jpg", "crop_fallback"]
    # coffee (400 x 600): centre 340 x 256
    assert t.loc["coffee.jpg", ["crop_y0", "crop_x0", "crop_y1", "crop_x1"]].tolist() == [30, 172, 370, 428]
    assert t.loc["coffee.jpg", "crop_fallback"]
    assert t.attrs["face_fallbacks"]["no_face"] == 1 and t.attrs["face_fallbacks"]["total"] == 1
    for col in ("crop_y0", "crop_x0", "crop_y1", "crop_x1"):
        assert t[col].dtype == np.int64

    sheet = contact_sheet(read_eval(root), CFG, tmp_path / "sheet.png", n=24)
    with Image.open(sheet) as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_largest_confident_face_is_kept(detector, photos, tmp_path):
    root = make_eval(tmp_path / "data", {"two_faces.jpg": photos["two_faces.jpg"]})
    detect_dir(root, detector=detector, progress=False)
    r = read_cache(default_cache_path(root)).iloc[0]
    assert r["n_faces"] == 2 and r["status"] == "face"
    assert np.abs(r[["x0", "y0", "x1", "y1"]].to_numpy(float) - ASTRONAUT_BOX).max() < 8  # the big one


def test_corrupt_images_are_recorded_counted_and_not_retried(detector, photos, tmp_path, caplog):
    root = make_eval(tmp_path / "data", {"good.jpg": jpeg(gradient()), "garbage.jpg": b"not an image at all",
                                         "truncated.jpg": photos["astronaut.jpg"][:3000]})
    s = detect_dir(root, detector=detector, progress=False)
    assert (s["processed"], s["errors"], s["not_found"]) == (3, 2, 1)
    assert s["totals"]["errors"] == 2
    reasons = dict(s["error_items"])
    assert "not a recognised image format" in reasons["eval/images/garbage.jpg"]
    assert "truncated" in reasons["eval/images/truncated.jpg"].lower()
    assert "garbage.jpg" in format_summary(s) and "errors 2" in format_summary(s)
    assert "garbage.jpg" in caplog.text  # reported in the log, not silent
    cache = read_cache(default_cache_path(root)).set_index("path")
    assert (cache["status"] == "error").sum() == 2 and cache.loc["eval/images/garbage.jpg", "error"]
    # unchanged broken files are not sent again
    s2 = detect_dir(root, detector=NoDetector(), progress=False)
    assert (s2["processed"], s2["skipped"], s2["totals"]["errors"]) == (0, 3, 2)
    # crops: the truncated JPEG still has a readable header (centre fallback), garbage has none (-1)
    t = face_crop_boxes(read_eval(root), CFG).set_index("ImageID")
    assert t.loc["truncated.jpg", ["crop_y0", "crop_x0", "crop_y1", "crop_x1"]].tolist() == [86, 128, 426, 384]
    assert t.loc["garbage.jpg", ["crop_y0", "crop_x0", "crop_y1", "crop_x1"]].tolist() == [-1, -1, -1, -1]
    assert t.attrs["face_fallbacks"]["error"] == 1 and t.attrs["face_fallbacks"]["unreadable"] == 1


def test_cache_reuse_invalidation_and_move(detector, tmp_path):
    root = tmp_path / "data"
    lay = make_layout(root, [("000001", "female", 45)], n_eval=2, size=(32, 24))
    s = detect_dir(root, detector=detector, progress=False)
    assert (s["images"], s["processed"], s["skipped"]) == (9, 9, 0)
    s = detect_dir(root, detector=NoDetector(), progress=False)
    assert (s["processed"], s["skipped"], s["rehashed"]) == (0, 9, 0)

    # different bytes -> re-detected; only that one
    changed = lay.image("000001", "mask3")
    changed.write_bytes(jpeg(gradient(32, 24, phase=77)))
    fake = FakeDetector()
    s = detect_dir(root, detector=fake, progress=False)
    assert (s["processed"], s["skipped"], fake.images) == (1, 8, 1)
    row = read_cache(default_cache_path(root)).set_index("path").loc[
        "train/images/000001_female_Asian_45/mask3.jpg"]
    assert row["sha1"] == hashlib.sha1(changed.read_bytes()).hexdigest()

    # same bytes, new mtime -> re-hashed only
    other = lay.eval_images / lay.eval_ids[0]
    st = os.stat(other)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    s = detect_dir(root, detector=NoDetector(), progress=False)
    assert (s["processed"], s["skipped"], s["rehashed"]) == (0, 9, 1)

    # the folder moves (copied without times): keys are relative, hashes match -> nothing re-detected
    moved = tmp_path / "elsewhere" / "data"
    shutil.copytree(root, moved, copy_function=shutil.copy)
    s = detect_dir(moved, detector=NoDetector(), progress=False)
    assert (s["processed"], s["skipped"]) == (0, 9) and s["rehashed"] >= 8
    t = face_crop_boxes(read_train(moved), CFG)
    assert t.attrs["face_fallbacks"]["no_entry"] == 0 and t.attrs["face_fallbacks"]["no_face"] == 7


def test_resume_after_limit_and_interrupt(tmp_path):
    root = tmp_path / "data"
    make_layout(root, [("000001", "female", 45), ("000002", "male", 61)], n_eval=3, size=(16, 12))
    s = detect_dir(root, detector=FakeDetector(), progress=False, limit=5, batch_size=2)
    assert (s["processed"], s["remaining"]) == (5, 12)
    assert len(read_cache(default_cache_path(root))) == 5
    fake = FakeDetector()
    s = detect_dir(root, detector=fake, progress=False, batch_size=4)
    assert (s["processed"], s["skipped"], s["remaining"], fake.images) == (12, 5, 0, 12)

    # Ctrl-C in the middle: the batches done so far are in the cache, the next run does the rest
    root2 = tmp_path / "data2"
    make_layout(root2, [("000001", "female", 45), ("000002", "male", 61)], n_eval=3, size=(16, 12))
    with pytest.raises(KeyboardInterrupt):
        detect_dir(root2, detector=FakeDetector(fail_on_call=3), progress=False, batch_size=4)
    assert len(read_cache(default_cache_path(root2))) == 8
    fake = FakeDetector()
    s = detect_dir(root2, detector=fake, progress=False, batch_size=4)
    assert (s["processed"], s["skipped"], fake.images) == (9, 8, 9)
    assert not [p for p in os.listdir(root2) if ".tmp" in p]  # no temp file left behind


def test_train_only_and_missing_layout(tmp_path):
    root = tmp_path / "data"
    make_layout(root, [("000001", "female", 45)], n_eval=0, size=(16, 12))
    s = detect_dir(root, detector=FakeDetector(), progress=False)
    assert s["images"] == 7 and s["processed"] == 7
    with pytest.raises(LayoutError, match="neither train/ nor eval/"):
        detect_dir(tmp_path / "empty", detector=NoDetector(), progress=False)


def test_worker_start_failure_is_reported(monkeypatch):
    def bad_env(device="cpu"):
        env = dict(os.environ)
        env["KERAS_BACKEND"] = "jax"
        return env

    monkeypatch.setattr(detect_process, "worker_env", bad_env)
    det = Detector()
    with pytest.raises(DetectorError, match="KERAS_BACKEND=tensorflow"):
        det.start()
    assert not det.running


def test_worker_that_does_not_answer_in_time_is_killed():
    """start_timeout bounds the wait for the worker's first reply (its imports take seconds)."""
    det = Detector(start_timeout=0.05)
    t = time.perf_counter()
    with pytest.raises(DetectorError, match=r"no answer within start_timeout=0.05 s"):
        det.start()
    assert not det.running and det.pid is None and time.perf_counter() - t < 30


# ---- crops from the cache, no network --------------------------------------------------------
def _cached_eval(tmp_path, faces_for_width, sizes):
    """Eval images of the given (h, w) sizes, detected by FakeDetector (faces keyed by width)."""
    root = make_eval(tmp_path / "data", {f"img{i}.jpg": jpeg(gradient(h, w)) for i, (h, w) in enumerate(sizes)})
    detect_dir(root, detector=FakeDetector(faces_for_width), progress=False)
    return root


def test_face_crop_boxes_reasons_and_counts(tmp_path):
    sizes = [(512, 384), (500, 300), (400, 256), (512, 200), (120, 100)]
    faces = {384: face_row(100, 150, 200, 280, 0.99),  # a confident face
             300: face_row(10, 10, 60, 60, 0.85),  # found, but below face_min_confidence
             256: face_row(0, 0, 40, 50, 0.999),  # touches the top-left corner
             100: face_row(30, 30, 70, 80, 0.95)}
    root = _cached_eval(tmp_path, faces, sizes)
    table = read_eval(root)
    t = face_crop_boxes(table, CFG).set_index("ImageID")
    crop = lambda k: t.loc[k, ["crop_y0", "crop_x0", "crop_y1", "crop_x1"]].tolist()  # noqa: E731
    assert crop("img0.jpg") == [90, 70, 310, 230]
    assert crop("img1.jpg") == [80, 22, 420, 278]  # low confidence -> centre 340 x 256 of 500 x 300
    assert crop("img2.jpg") == [0, 0, 80, 70]  # clipped at the top-left edges
    assert crop("img3.jpg") == [86, 0, 426, 200]  # no face, image narrower than the fallback
    assert crop("img4.jpg") == [0, 0, 110, 100]  # 120 x 100 image: face + margins clipped on 3 sides
    assert t["crop_fallback"].tolist() == [False, True, False, True, False]
    fb = t.attrs["face_fallbacks"]
    assert (fb["low_confidence"], fb["no_face"], fb["total"], fb["of"]) == (1, 1, 2, 5)
    assert np.isclose(t.loc["img0.jpg", "face_confidence"], 0.99) and np.isnan(t.loc["img3.jpg", "face_confidence"])
    # a whole Config works too (its .preprocess is used)
    assert face_crop_boxes(table, Config()).set_index("ImageID")[t.columns].equals(t)
    # a stricter config turns the 0.95 face into a fallback; margins come from the config
    strict = PreprocessConfig(face_min_confidence=0.98, face_margins=(0, 0, 0, 0))
    t2 = face_crop_boxes(table, strict).set_index("ImageID")
    assert t2.loc["img4.jpg", "crop_fallback"] and t2.attrs["face_fallbacks"]["low_confidence"] == 2
    assert t2.loc["img0.jpg", ["crop_y0", "crop_x0", "crop_y1", "crop_x1"]].tolist() == [150, 100, 280, 200]
    # the input table is not modified, other columns and attrs kept
    assert "crop_y0" not in table.columns and list(t.reset_index().columns[:2]) == ["ImageID", "path"]


def test_face_crop_boxes_stale_new_and_missing_files(tmp_path, caplog):
    root = _cached_eval(tmp_path, {384: face_row(100, 150, 200, 280, 0.99)}, [(512, 384)] * 3)
    images = root / "eval" / "images"
    (images / "img1.jpg").write_bytes(jpeg(gradient(512, 384, phase=9), quality=40))  # changed since detect
    (images / "img2.jpg").unlink()  # gone
    (images / "new.jpg").write_bytes(jpeg(gradient(512, 384)))  # never detected
    table = read_eval(root, on_error="skip")
    table = pd.concat([table, pd.DataFrame({"ImageID": ["img2.jpg", "new.jpg"],
                                            "path": [str(images / "img2.jpg"), str(images / "new.jpg")]})],
                      ignore_index=True)
    t = face_crop_boxes(table, CFG).set_index("ImageID")
    fb = t.attrs["face_fallbacks"]
    assert (fb["stale"], fb["missing"], fb["no_entry"], fb["total"]) == (1, 1, 1, 3)
    assert t.loc["new.jpg", ["crop_y0", "crop_x0", "crop_y1", "crop_x1"]].tolist() == [86, 64, 426, 320]
    assert t.loc["img2.jpg", "crop_y0"] == -1
    crop_log = " ".join(r.getMessage() for r in caplog.records if r.name == "mask_keras.detect.crop")
    assert "mask-keras detect" in crop_log and "img2.jpg" in crop_log


def test_cache_location(tmp_path):
    root = _cached_eval(tmp_path, {}, [(64, 48)])
    table = read_eval(root)
    assert infer_root(table["path"]) == root
    # the cache can live elsewhere: keys stay relative to the data root
    elsewhere = tmp_path / "boxes.parquet"
    shutil.move(default_cache_path(root), elsewhere)
    with pytest.raises(FileNotFoundError, match="mask-keras detect"):
        face_crop_boxes(table, CFG)
    t = face_crop_boxes(table, CFG, cache_path=elsewhere)
    assert t.attrs["face_fallbacks"]["no_face"] == 1
    with pytest.raises(ValueError, match="infer the data root"):
        infer_root(["/somewhere/else/x.jpg"])
    # a broken cache names itself and the fix
    elsewhere.write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="delete it"):
        face_crop_boxes(table, CFG, cache_path=elsewhere)


# ---- pure geometry -----------------------------------------------------------------------------
H, W = 512, 384
M = (30, 60, 30, 30)  # left, top, right, bottom


def widen1(box, margins=M, h=H, w=W):
    crops, valid = widen_boxes(np.asarray([box], float), margins, h, w)
    return crops[0].tolist(), bool(valid[0])


def test_widen_inside_rounds_outwards():
    assert widen1((100, 150, 200, 280)) == ([90, 70, 310, 230], True)
    assert widen1((100.6, 150.2, 199.1, 279.5)) == ([90, 70, 310, 230], True)  # floor start, ceil end


@pytest.mark.parametrize("box, expected", [
    ((0, 150, 100, 280), [90, 0, 310, 130]),  # touches the left edge
    ((100, 0, 200, 120), [0, 70, 150, 230]),  # touches the top edge
    ((250, 150, W, 280), [90, 220, 310, W]),  # touches the right edge
    ((100, 400, 200, H), [340, 70, H, 230]),  # touches the bottom edge
    ((-40, -70, 50, 60), [0, 0, 90, 80]),  # partly outside, top-left
    ((300, 450, 420, 600), [390, 270, H, W]),  # partly outside, bottom-right
    ((0, 0, W, H), [0, 0, H, W]),  # the whole image
])
def test_widen_at_borders(box, expected):
    crop, valid = widen1(box)
    assert valid and crop == expected
    y0, x0, y1, x1 = crop
    assert 0 <= y0 < y1 <= H and 0 <= x0 < x1 <= W


def test_widen_margins_larger_than_image():
    assert widen1((100, 100, 120, 130), margins=(1000, 1000, 1000, 1000)) == ([0, 0, H, W], True)
    assert widen1((5, 5, 10, 10), margins=(30, 60, 30, 30), h=40, w=30) == ([0, 0, 40, 30], True)


def test_widen_degenerate_boxes():
    assert widen1((50, 60, 50, 60), margins=(0, 0, 0, 0)) == ([0, 0, 0, 0], False)  # zero size, no margin
    assert widen1((50, 60, 50, 60)) == ([0, 20, 90, 80], True)  # zero size, margins give it an area
    assert widen1((500, 600, 560, 700)) == ([0, 0, 0, 0], False)  # wholly outside the image
    assert widen1((np.nan, 1, 2, 3)) == ([0, 0, 0, 0], False)
    assert widen1((200, 280, 100, 150)) == ([90, 70, 310, 230], True)  # corners given swapped


def test_widen_vectorised_matches_rows():
    rng = np.random.default_rng(0)
    n = 200
    h, w = rng.integers(20, 600, n), rng.integers(20, 600, n)
    a, b = rng.uniform(-100, 700, (n, 2)), rng.uniform(-100, 700, (n, 2))
    boxes = np.concatenate([a, b], axis=1)
    crops, valid = widen_boxes(boxes, M, h, w)
    for i in range(0, n, 17):
        assert widen1(boxes[i], M, h[i], w[i]) == (crops[i].tolist(), bool(valid[i]))
    y0, x0, y1, x1 = crops[valid].T
    assert ((0 <= y0) & (y0 < y1) & (y1 <= h[valid]) & (0 <= x0) & (x0 < x1) & (x1 <= w[valid])).all()


def test_center_crop_boxes():
    assert center_crop_boxes(512, 384, (340, 256)).tolist() == [[86, 64, 426, 320]]
    assert center_crop_boxes([512, 300, 100], [384, 200, 1000], (340, 256)).tolist() == [
        [86, 64, 426, 320], [0, 0, 300, 200], [0, 372, 100, 628]]
    assert center_crop_boxes(11, 7, (4, 4)).tolist() == [[3, 1, 7, 5]]
    with pytest.raises(ValueError):
        center_crop_boxes(10, 10, (0, 5))


def test_face_crops_falls_back_per_row():
    boxes = np.asarray([[100, 150, 200, 280], [100, 150, 200, 280], [np.nan] * 4, [600, 600, 700, 700]])
    crops, fb = face_crops(boxes, [True, False, True, True], M, (340, 256), H, W)
    assert crops.tolist() == [[90, 70, 310, 230], [86, 64, 426, 320], [86, 64, 426, 320], [86, 64, 426, 320]]
    assert fb.tolist() == [False, True, True, True]


def test_pick_face():
    faces = np.asarray([face_row(0, 0, 50, 50, 0.99), face_row(100, 100, 300, 300, 0.95),
                        face_row(0, 0, 400, 400, 0.85)])
    assert pick_face(faces, 0.9) == 1  # largest among the confident ones
    assert pick_face(faces[[0, 2]], 0.9) == 0
    assert pick_face(faces[[2]], 0.9) == 0  # none confident: the most confident
    assert pick_face(faces[[1, 2]], 0.96) == 0  # 0.95 > 0.85
    assert pick_face(np.zeros((0, 15)), 0.9) == -1


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1
    assert np.isclose(box_iou((0, 0, 10, 10), (5, 0, 15, 10)), 50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0


@pytest.mark.slow
def test_synthetic_set_detects_and_the_face_crop_pipeline_falls_back(detector, tmp_path):
    """`detect` finishes on a synthetic set and reports its counts; crop="face" then feeds the
    pipeline, with every image either cropped to its face or counted as a fallback."""
    from mask_keras import pipeline
    from mask_keras.data.synth import generate
    from mask_keras.detect import detect_dir, face_crop_boxes

    root = tmp_path / "synth"
    generate(root, people=3, eval_people=1, seed=5, image_size=(512, 384), workers=1, progress=False)
    s = detect_dir(root, detector=detector, progress=False)
    assert s["images"] == 28 and s["processed"] == 28
    assert s["found"] + s["not_found"] + s["errors"] == 28 and s["errors"] == 0
    cfg = Config().override(**{"preprocess.crop": "face", "preprocess.image_size": (64, 48),
                               "train.task": "mask", "train.batch_size": 8})
    table = face_crop_boxes(read_train(root), cfg.preprocess)
    counts = table.attrs["face_fallbacks"]
    assert counts["of"] == 21 and counts["total"] == int(table["crop_fallback"].sum())
    # every image has a box: its face, or the centre fallback
    assert (table["crop_y1"] > table["crop_y0"]).all() and (table["crop_x1"] > table["crop_x0"]).all()
    ds, ds_info = pipeline.make_dataset(table, cfg, training=False)
    n = sum(int(w.sum()) for _, _, w in ds.as_numpy_iterator())
    assert n == 21


def test_the_predictor_answers_every_real_face_and_flags_a_photo_without_one(detector, photos, tmp_path):
    """The real MTCNN worker behind the inference engine: bytes and arrays (sent to the worker as
    they are) give the same faces; the astronaut's face is answered, the coffee cup flagged, and
    with faces='all' each of the two astronauts gets its row, the larger first."""
    import keras

    from mask_keras.inference import Predictor
    from mask_keras.models.build import build_model

    run = tmp_path / "face_run"
    cfg = Config().override(**{"train.task": "gender", "model.backbone": "tiny_cnn", "model.weights": None,
                               "preprocess.image_size": (32, 24), "preprocess.crop": "face"})
    keras.utils.set_random_seed(0)
    run.mkdir()
    build_model(cfg.model, "gender", (32, 24)).save(run / "model.keras")
    cfg.save(run / "config.json")
    arrays = {k: np.asarray(Image.open(io.BytesIO(v)).convert("RGB")) for k, v in photos.items()}
    assert [r["faces"].shape[0] for r in detector.detect(list(arrays.values()))] == \
        [r["faces"].shape[0] for r in detector.detect(list(photos.values()))]
    for faces, want in (("largest", [True, False, True]), ("all", [True, False, True, True])):
        p = Predictor.load(run, faces=faces)
        p.engine.finder.detector = detector  # the module's worker, already started
        rows = p.predict_bytes(list(photos.items()))
        assert [r["face_found"] for r in rows] == want, rows
        assert [r["image"] for r in rows] == ([0, 1, 2] if faces == "largest" else [0, 1, 2, 2])
        astro = rows[0]
        assert box_iou(np.array(astro["face_box"], float)[[1, 0, 3, 2]], ASTRONAUT_BOX) > 0.85
        assert astro["face_confidence"] > 0.99 and astro["gender"] in ("male", "female")
        assert rows[1]["face_box"] is None and rows[1]["crop_box"] == [30, 172, 370, 428]  # coffee: the fallback
        if faces == "all":
            big, small = rows[2], rows[3]
            assert (big["face"], small["face"]) == (0, 1)
            area = [(b[2] - b[0]) * (b[3] - b[1]) for b in (big["face_box"], small["face_box"])]
            assert area[0] > 2 * area[1]
        same = p.predict_images(list(arrays.values()))
        np.testing.assert_allclose(same["p_gender_male"].to_numpy(float), [r["p_gender_male"] for r in rows],
                                   atol=0.05)  # JPEG bytes decode in the DCT; the arrays are the full decode
        p.engine.finder.detector = None  # the fixture closes it
        p.close()
