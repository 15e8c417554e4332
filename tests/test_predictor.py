"""Predicting any images: files and folders (JPEG, PNG, WebP), arrays, run / K-fold / ensemble
artifacts, the CLI's ``predict ARTIFACT --images``; answers checked against the submission
path's primitives (predict_probs, combine_predictions), bad inputs named.

The artifacts are untrained tiny models saved with their config (as in test_predict.py).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mask_keras import labels as L
from mask_keras.config import Config

SIZE = (32, 24)


def _artifact(path, task, seed, **over):
    import keras

    from mask_keras.models.build import build_model

    cfg = Config().override(**{"train.task": task, "model.backbone": "tiny_cnn", "model.weights": None,
                               "preprocess.image_size": SIZE, "preprocess.crop": "center",
                               "preprocess.crop_size": (100, 80), "train.out_dir": str(path), **over})
    keras.utils.set_random_seed(seed)
    path.mkdir(parents=True)
    build_model(cfg.model, task, SIZE).save(path / "model.keras")
    cfg.save(path / "config.json")
    return path


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    d = tmp_path_factory.mktemp("predictor_arts")
    out = {t: _artifact(d / t, t, seed=i) for i, t in enumerate(("mask", "gender", "age", "multi"))}
    for f in range(2):
        _artifact(d / "kf" / f"fold_{f}", "multi", seed=20 + f)
    out["kfold"] = d / "kf"
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory, synth_root):
    """A folder tree: 3 JPEGs at the top, a WebP and a PNG copy of the first below, a truncated
    JPEG and a text file named .jpg, and a non-image file that the folder search ignores."""
    d = tmp_path_factory.mktemp("photos")
    src = sorted((synth_root / "eval" / "images").iterdir())[:4]
    for p in src[:3]:
        shutil.copy(p, d / p.name)
    (d / "sub").mkdir()
    rgb = Image.open(src[0]).convert("RGB")
    rgb.save(d / "sub" / "a.webp", lossless=True)
    rgb.save(d / "sub" / "b.png")
    (d / "sub" / "trunc.jpg").write_bytes(src[3].read_bytes()[:2000])
    (d / "sub" / "text.jpg").write_text("hello")
    (d / "sub" / "notes.txt").write_text("not an image")
    return d


def _probs(run, files):
    from mask_keras.predict import load_artifact, predict_probs

    return predict_probs(load_artifact(run), files, batch_size=16)


def test_one_gender_model_answers_gender_for_every_file_and_reports_bad_ones(arts, photos):
    from mask_keras.predictor import Predictor

    p = Predictor.load(arts["gender"])
    assert p.tasks == ("gender",)
    t = p.predict_files([photos])
    names = [f.rsplit("/", 1)[-1] for f in t["path"]]
    assert len(t) == 7 and "notes.txt" not in names  # every image file has a row, other files are not searched
    bad = t[t["error"] != ""]
    assert sorted(n.rsplit("/", 1)[-1] for n in bad["path"]) == ["text.jpg", "trunc.jpg"]
    assert bad["gender"].isna().all() and "truncated JPEG" in bad.loc[bad["path"].str.endswith("trunc.jpg"), "error"].item()
    good = t[t["error"] == ""]
    ref = _probs(arts["gender"], good["path"].tolist())
    np.testing.assert_allclose(good[["p_gender_male", "p_gender_female"]].to_numpy(), ref, atol=1e-5)
    assert good["gender"].tolist() == [L.CLASS_NAMES["gender"][i] for i in ref.argmax(1)]
    np.testing.assert_allclose(good["gender_prob"], ref.max(1), atol=1e-5)
    assert t["class"].isna().all() and t["mask"].isna().all() and t["age"].isna().all()
    # the lossless WebP and PNG of one photo are the same pixels: the same answer
    webp, png = (good.loc[good["path"].str.endswith(s), "p_gender_male"].item() for s in ("a.webp", "b.png"))
    assert webp == pytest.approx(png, abs=1e-6)


@pytest.mark.slow
def test_three_task_models_give_the_18_classes_of_the_submission_path(arts, photos):
    from mask_keras.predict import combine_predictions, load_artifact, predict_artifact
    from mask_keras.predictor import Predictor

    runs = [arts[t] for t in ("mask", "gender", "age")]
    t = Predictor.load(*runs).predict_files([photos])
    good = t[t["error"] == ""]
    files = good["path"].tolist()
    comb = combine_predictions([predict_artifact(load_artifact(r), files, batch_size=16) for r in runs])
    np.testing.assert_array_equal(good["class"].to_numpy(dtype=np.int64), comb.labels)
    np.testing.assert_allclose(good[[f"p{c}" for c in range(18)]].to_numpy(dtype=np.float64), comb.p18, atol=1e-5)
    m, g, a = L.decode(comb.labels)
    assert good["mask"].tolist() == [L.CLASS_NAMES["mask"][i] for i in m]
    assert good["age"].tolist() == [L.CLASS_NAMES["age"][i] for i in a]
    assert good["gender"].tolist() == [L.CLASS_NAMES["gender"][i] for i in g]


@pytest.mark.slow
def test_find_images_answers_each_file_once(tmp_path, caplog):
    from mask_keras.predictor import find_images

    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/a.jpg", "d/sub/b.PNG", "d/._a.jpg", "d/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    a, b = str(tmp_path / "d" / "a.jpg"), str(tmp_path / "d" / "sub" / "b.PNG")
    assert find_images([tmp_path / "d"]) == [a, b]
    assert find_images([tmp_path / "d"], recursive=False) == [a]
    with caplog.at_level("WARNING", logger="mask_keras.predictor"):
        got = find_images([b, tmp_path / "d", tmp_path / "d" / "sub" / ".." / "a.jpg"])
    assert got == [b, a]  # first occurrence kept, by the resolved path
    assert "2 file(s) given more than once" in caplog.text
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        find_images([tmp_path / "missing.jpg"])
    (tmp_path / "e" / "deeper").mkdir(parents=True)
    (tmp_path / "e" / "deeper" / "c.jpg").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="no images.*not searched recursively"):
        find_images([tmp_path / "e"], recursive=False)


def test_kfold_and_ensemble_directories(arts, photos, tmp_path):
    from mask_keras.predict import combine_predictions, load_artifact, predict_artifact
    from mask_keras.predictor import Predictor

    folds = sorted(arts["kfold"].glob("fold_*"))
    p = Predictor.load(arts["kfold"])
    assert [a.path for a in p.artifacts] == folds and p.vote == "soft"
    # a recipe's ensemble directory: its models and its vote (hard), overridable
    ens = tmp_path / "ens"
    ens.mkdir()
    (ens / "ensemble.json").write_text(json.dumps({"models": [str(f) for f in folds] + [str(arts["multi"])],
                                                   "vote": "hard", "level": "class", "tta": True}))
    p = Predictor.load(ens)
    assert (p.vote, p.level, p.tta, len(p.artifacts)) == ("hard", "class", True, 3)
    assert Predictor.load(ens, vote="soft", tta=False).vote == "soft"
    t = p.predict_files([photos / "sub" / "b.png", photos])
    files = t.loc[t["error"] == "", "path"].tolist()
    preds = [predict_artifact(load_artifact(r), files, batch_size=16, tta=True) for r in [*folds, arts["multi"]]]
    comb = combine_predictions(preds, vote="hard", level="class")
    np.testing.assert_array_equal(t.loc[t["error"] == "", "class"].to_numpy(dtype=np.int64), comb.labels)


def test_arrays_of_any_size_answer_like_their_files(arts, photos, tmp_path):
    from mask_keras.predictor import Predictor

    rng = np.random.default_rng(0)
    imgs = [np.asarray(Image.open(photos / "sub" / "b.png")), rng.integers(0, 256, (57, 41, 3), dtype=np.uint8)]
    Image.fromarray(imgs[1]).save(tmp_path / "r.png")
    p = Predictor.load(arts["multi"])
    a = p.predict_images(imgs)
    f = p.predict_files([photos / "sub" / "b.png", tmp_path / "r.png"])
    assert a["index"].tolist() == [0, 1] and "path" not in a.columns
    cols = [f"p{c}" for c in range(18)]
    np.testing.assert_allclose(a[cols].to_numpy(dtype=float), f[cols].to_numpy(dtype=float), atol=1e-6)
    with pytest.raises(ValueError, match=r"images\[1\]: expected a uint8 RGB array"):
        p.predict_images([imgs[0], imgs[1].astype(np.float32)])


def test_bad_inputs_are_named(arts, photos, tmp_path):
    from mask_keras.pipeline import ImageError
    from mask_keras.predict import ArtifactError
    from mask_keras.predictor import Predictor

    with pytest.raises(ArtifactError, match="artifact not found"):
        Predictor.load(tmp_path / "nope")
    with pytest.raises(ArtifactError, match="no artifacts given"):
        Predictor.load()
    with pytest.raises(ArtifactError, match="given twice"):
        Predictor.load(arts["multi"], arts["multi"])
    (tmp_path / "ens").mkdir()
    (tmp_path / "ens" / "ensemble.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="ensemble.json: unreadable"):
        Predictor.load(tmp_path / "ens")
    p = Predictor.load(arts["gender"])
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        p.predict_files([tmp_path / "missing.jpg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        p.predict_files([tmp_path / "empty"])
    with pytest.raises(ImageError, match="trunc.jpg"):
        p.predict_files([photos / "sub"], on_error="raise")
    with pytest.raises(ValueError, match="on_error"):
        p.predict_files([photos], on_error="ignore")


def test_cli_predict_images_writes_csv_and_json_lines(arts, photos, tmp_path, capsys):
    from mask_keras.cli import main

    out = tmp_path / "answers.jsonl"
    assert main(["predict", str(arts["gender"]), "--images", str(photos), "--out", str(out), "--json"]) in (None, 0)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary == {"predictions": str(out), "rows": 7, "skipped": 2, "tasks": ["gender"], "models": 1}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 7 and {r["gender"] for r in rows if not r["error"]} <= {"male", "female"}
    # an 18-way model: integer classes and probabilities survive JSON lines
    multi = tmp_path / "multi.jsonl"
    main(["predict", str(arts["multi"]), "--images", str(photos / "sub" / "b.png"), "--out", str(multi)])
    row = json.loads(multi.read_text())
    assert isinstance(row["class"], int) and 0 <= row["class"] <= 17 and isinstance(row["p0"], float)
    # .json: the same records as one JSON array (json.load reads it; JSON lines would not parse)
    main(["predict", str(arts["gender"]), "--images", str(photos), "--out", str(tmp_path / "answers.json")])
    assert json.loads((tmp_path / "answers.json").read_text()) == rows
    csv = tmp_path / "a.csv"
    main(["predict", "--gender", str(arts["gender"]), "--images", str(photos / "sub" / "b.png"), "--out", str(csv)])
    t = pd.read_csv(csv)
    assert t["path"].tolist() == [str(photos / "sub" / "b.png")] and "p_gender_female" in t.columns
    with pytest.raises(SystemExit, match="ARTIFACT arguments go with --images"):
        main(["predict", str(arts["gender"])])


class _FakeDetector:
    """One face at a fixed box in every image (x0, y0, x1, y1, confidence, 10 keypoints)."""

    def __init__(self, box=(30.0, 40.0, 60.0, 75.0), confidence=0.99):
        self.face = np.array([[*box, confidence] + [np.nan] * 10], np.float32)
        self.calls, self.closed = 0, False

    def detect(self, files):
        self.calls += 1
        out = []
        for f in files:
            with Image.open(f) as im:
                w, h = im.size
            out.append({"width": w, "height": h, "faces": self.face, "error": None})
        return out

    def close(self):
        self.closed = True


def test_face_crop_models_get_their_crop_from_the_detector(arts, photos, tmp_path):
    from mask_keras.detect import detected_crop_boxes
    from mask_keras.detect.geometry import widen_boxes
    from mask_keras.predict import load_artifact, predict_probs
    from mask_keras.predictor import Predictor

    run = _artifact(tmp_path / "face", "gender", seed=3, **{"preprocess.crop": "face",
                                                            "preprocess.face_margins": (2, 4, 2, 2)})
    p = Predictor.load(run)
    p.detector = det = _FakeDetector()  # the real MTCNN worker: tests/test_detect.py
    files = [str(photos / "sub" / "b.png"), str(sorted(photos.glob("*.jpg"))[0])]
    t = p.predict_files(files)
    assert det.calls == 1  # one detection per call, whatever the number of face-crop models
    pcfg = load_artifact(run).config.preprocess
    with Image.open(files[0]) as im:
        w, h = im.size
    widened, valid = widen_boxes(det.face[:, :4].astype(float), pcfg.face_margins, h, w)  # -> (y0, x0, y1, x1)
    assert valid[0] and t["crop_box"][0] == [int(v) for v in widened[0]]
    assert 0 < t["crop_box"][0][0] and t["crop_box"][0][2] < h  # a face box, not the whole photo
    table = pd.concat([pd.DataFrame({"path": files}), detected_crop_boxes(det.detect(files), pcfg)], axis=1)
    np.testing.assert_allclose(t[["p_gender_male", "p_gender_female"]].to_numpy(float),
                               predict_probs(load_artifact(run), table, batch_size=16), atol=1e-5)
    p.close()
    assert det.closed and p.detector is None


def test_detected_crop_boxes_fall_back_like_the_cache():
    from mask_keras.detect import detected_crop_boxes
    from mask_keras.detect.geometry import center_crop_boxes

    cfg = Config().preprocess
    face = np.array([[100, 120, 220, 280, 0.99] + [np.nan] * 10], np.float32)
    unsure = face.copy()
    unsure[0, 4] = 0.5
    results = [{"width": 384, "height": 512, "faces": face, "error": None},
               {"width": 384, "height": 512, "faces": np.zeros((0, 15), np.float32), "error": None},
               {"width": 384, "height": 512, "faces": unsure, "error": None},
               {"width": 384, "height": 512, "faces": np.zeros((0, 15), np.float32), "error": "broken"}]
    out = detected_crop_boxes(results, cfg)
    expected_reason = ["face", "no_face", "low_confidence" if 0.5 < cfg.face_min_confidence else "face", "error"]
    assert out["reason"].tolist() == expected_reason
    fallback = center_crop_boxes(512, 384, cfg.face_fallback)[0].tolist()
    for j in (1, 3):
        assert out.loc[j, ["crop_y0", "crop_x0", "crop_y1", "crop_x1"]].tolist() == fallback
        assert out.loc[j, "crop_fallback"]
    assert not out.loc[0, "crop_fallback"]
