"""Predicting any images: files and folders (JPEG, PNG, WebP), arrays, bytes, run / K-fold /
ensemble artifacts, the CLI's ``predict ARTIFACT --images``; answers checked against the
validation pipeline's pixels through each model and the voting formulas by hand, per-face
answers and the no-face policy, bad inputs named.

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


def _probs(run, files, flip=False):
    """The reference: the validation pipeline's pixels (pipeline.load_images) through the model."""
    from mask_keras import pipeline
    from mask_keras.inference.artifacts import load_artifact, model_outputs

    art = load_artifact(run)
    x = pipeline.load_images(list(files), art.config.preprocess)
    return model_outputs(art.model.predict_on_batch(x[:, :, ::-1] if flip else x))


def test_one_gender_model_answers_gender_for_every_file_and_reports_bad_ones(arts, photos):
    from mask_keras.inference import Predictor

    p = Predictor.load(arts["gender"])
    assert p.tasks == ("gender",)
    t = p.predict_files([photos])
    names = [f.rsplit("/", 1)[-1] for f in t["path"]]
    assert len(t) == 7 and "notes.txt" not in names  # every image file has a row, other files are not searched
    bad = t[t["error"] != ""]
    assert sorted(n.rsplit("/", 1)[-1] for n in bad["path"]) == ["text.jpg", "trunc.jpg"]
    assert bad["gender"].isna().all()
    assert "cannot decode" in bad.loc[bad["path"].str.endswith("trunc.jpg"), "error"].item()
    assert "not a JPEG/PNG/WebP/GIF/BMP image" in bad.loc[bad["path"].str.endswith("text.jpg"), "error"].item()
    good = t[t["error"] == ""]
    ref = _probs(arts["gender"], good["path"])
    np.testing.assert_allclose(good[["p_gender_male", "p_gender_female"]].to_numpy(), ref, atol=1e-5)
    assert good["gender"].tolist() == [L.CLASS_NAMES["gender"][i] for i in ref.argmax(1)]
    np.testing.assert_allclose(good["gender_prob"], ref.max(1), atol=1e-5)
    assert t["class"].isna().all() and t["mask"].isna().all() and t["age"].isna().all()
    # a centre-crop model never asks for a face: face_found empty, the crop box given
    assert good["face_found"].isna().all() and good["face_box"].isna().all()
    assert all(len(b) == 4 for b in good["crop_box"])
    # the lossless WebP and PNG of one photo are the same pixels: the same answer
    webp, png = (good.loc[good["path"].str.endswith(s), "p_gender_male"].item() for s in ("a.webp", "b.png"))
    assert webp == pytest.approx(png, abs=1e-6)
    # one compiled program per batch bucket: 5 images went as one padded batch of 8
    assert {s[0] for s in p.members[0].runner.shapes} <= {1, 2, 4, 8, 16, 32, 64}


def test_models_for_a_subset_of_tasks_are_combined_by_the_same_rule(arts, photos, tmp_path):
    from mask_keras.inference import CombineError, Predictor

    files = [str(f) for f in sorted(photos.glob("*.jpg"))]
    pm, pg = _probs(arts["mask"], files), _probs(arts["gender"], files)
    other = _artifact(tmp_path / "g2", "gender", seed=9)
    pg2 = _probs(other, files)
    t = Predictor.load(arts["mask"], arts["gender"], other, weights=[1, 1, 3]).predict_files(files)
    assert t["class"].isna().all() and t["age"].isna().all()
    want_g = (pg + 3 * pg2) / 4  # soft vote: the weighted mean of the gender models
    np.testing.assert_allclose(t[["p_gender_male", "p_gender_female"]].to_numpy(float), want_g, atol=1e-5)
    np.testing.assert_allclose(t[[f"p_mask_{n}" for n in L.CLASS_NAMES["mask"]]].to_numpy(float), pm, atol=1e-5)
    # every row is self-consistent: each task's answer is the argmax of the probabilities shown
    for task in ("mask", "gender"):
        shown = t[[f"p_{task}_{n}" for n in L.CLASS_NAMES[task]]].to_numpy(float)
        assert t[task].tolist() == [L.CLASS_NAMES[task][i] for i in shown.argmax(1)]
    # a hard vote shows vote shares, and its answer is their argmax
    h = Predictor.load(arts["gender"], other, vote="hard", tie="first_model").predict_files(files)
    shares = h[["p_gender_male", "p_gender_female"]].to_numpy(float)
    assert set(np.round(shares.ravel(), 6)) <= {0.0, 0.5, 1.0}
    first = pg.argmax(1)
    assert h["gender"].tolist() == [L.CLASS_NAMES["gender"][i] for i in first]  # ties: the first model's
    with pytest.raises(CombineError, match="level='class'.*cover only mask, gender"):
        Predictor.load(arts["mask"], arts["gender"], level="class")
    with pytest.raises(CombineError, match="combine='argmax'"):
        Predictor.load(arts["gender"], combine="argmax")


@pytest.mark.slow
def test_three_task_models_give_the_18_classes_of_the_submission_path(arts, photos):
    from mask_keras.ensemble import combine_tasks
    from mask_keras.inference import Predictor

    runs = [arts[t] for t in ("mask", "gender", "age")]
    t = Predictor.load(*runs).predict_files([photos])
    good = t[t["error"] == ""]
    files = good["path"].tolist()
    p18 = combine_tasks(*(_probs(r, files) for r in runs))
    np.testing.assert_array_equal(good["class"].to_numpy(dtype=np.int64), p18.argmax(1))
    np.testing.assert_allclose(good[[f"p{c}" for c in range(18)]].to_numpy(dtype=np.float64), p18, atol=1e-5)
    np.testing.assert_allclose(good["class_prob"].to_numpy(float), p18.max(1), atol=1e-5)
    m, g, a = L.decode(p18.argmax(1))
    assert good["mask"].tolist() == [L.CLASS_NAMES["mask"][i] for i in m]
    assert good["age"].tolist() == [L.CLASS_NAMES["age"][i] for i in a]
    assert good["gender"].tolist() == [L.CLASS_NAMES["gender"][i] for i in g]
    assert set(good["level"]) == {"task"}


@pytest.mark.slow
def test_find_images_answers_each_file_once(tmp_path, caplog):
    from mask_keras.inference import find_images

    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/a.jpg", "d/sub/b.PNG", "d/._a.jpg", "d/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    a, b = str(tmp_path / "d" / "a.jpg"), str(tmp_path / "d" / "sub" / "b.PNG")
    assert find_images([tmp_path / "d"]) == [a, b]
    assert find_images([tmp_path / "d"], recursive=False) == [a]
    with caplog.at_level("WARNING", logger="mask_keras.inference.answers"):
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
    from mask_keras.ensemble import split_multi
    from mask_keras.inference import Predictor
    from mask_keras.inference.artifacts import resolve, write_manifest

    folds = sorted(arts["kfold"].glob("fold_*"))
    p = Predictor.load(arts["kfold"])
    assert [m.path for m in p.members] == folds and p.engine.vote == "soft"
    assert resolve(arts["kfold"]).kind == "kfold"
    # a recipe's ensemble directory: its models and its vote (hard), overridable
    ens = tmp_path / "ens"
    ens.mkdir()
    (ens / "ensemble.json").write_text(json.dumps({"models": [str(f) for f in folds] + [str(arts["multi"])],
                                                   "vote": "hard", "level": "class", "tta": True}))
    write_manifest(ens, "ensemble", task="multi", members=[*folds, arts["multi"]])
    p = Predictor.load(ens)
    e = p.engine
    assert (e.vote, e.level, e.tta, len(p.members)) == ("hard", "class", True, 3)
    assert Predictor.load(ens, vote="soft", tta=False).engine.vote == "soft"
    t = p.predict_files([photos / "sub" / "b.png", photos])
    good = t[t["error"] == ""]
    files = good["path"].tolist()
    # TTA: the mean of the view and its mirror, per model; then a hard vote over the 18 classes
    per = [(_probs(r, files) + _probs(r, files, flip=True)) / 2 for r in [*folds, arts["multi"]]]
    votes = np.stack([q.argmax(1) for q in per])  # 3 models
    y = good["class"].to_numpy(dtype=np.int64)
    shares = good[[f"p{c}" for c in range(18)]].to_numpy(float)
    for j in range(len(files)):
        counts = np.bincount(votes[:, j], minlength=18)
        assert counts[y[j]] == counts.max()  # the answer has the most votes
        np.testing.assert_allclose(shares[j], counts / 3, atol=1e-6)  # the shares shown are the votes
    # at the class level the class is the joint answer, and each task's answer the argmax of the
    # marginals shown beside it (the row is self-consistent)
    assert set(good["level"]) == {"class"}
    for task in ("mask", "gender", "age"):
        shown = good[[f"p_{task}_{n}" for n in L.CLASS_NAMES[task]]].to_numpy(float)
        marg = dict(zip(("mask", "gender", "age"), split_multi(shares)))[task]
        np.testing.assert_allclose(shown, marg, atol=2e-6)
        assert good[task].tolist() == [L.CLASS_NAMES[task][i] for i in shown.argmax(1)]
    # a manifest that disagrees with the folder's files fails at load, naming both
    write_manifest(tmp_path / "ens", "run")
    with pytest.raises(ArtifactError_(), match="says kind 'run'.*ensemble.json"):
        Predictor.load(ens)
    write_manifest(ens, "ensemble", members=[tmp_path / "gone"])
    with pytest.raises(ArtifactError_(), match="lists member .*gone"):
        Predictor.load(ens)


def ArtifactError_():
    from mask_keras.inference import ArtifactError

    return ArtifactError


def test_arrays_and_bytes_of_any_size_answer_like_their_files(arts, photos, tmp_path):
    from mask_keras.inference import Predictor

    rng = np.random.default_rng(0)
    imgs = [np.asarray(Image.open(photos / "sub" / "b.png")), rng.integers(0, 256, (57, 41, 3), dtype=np.uint8)]
    Image.fromarray(imgs[1]).save(tmp_path / "r.png")
    p = Predictor.load(arts["multi"])
    a = p.predict_images(imgs)
    f = p.predict_files([photos / "sub" / "b.png", tmp_path / "r.png"])
    b = p.predict_bytes([(photos / "sub" / "b.png").read_bytes(), (tmp_path / "r.png").read_bytes()])
    assert a["image"].tolist() == [0, 1] and "path" not in a.columns
    cols = [f"p{c}" for c in range(18)]
    np.testing.assert_allclose(a[cols].to_numpy(dtype=float), f[cols].to_numpy(dtype=float), atol=1e-6)
    np.testing.assert_allclose([[r[c] for c in cols] for r in b], f[cols].to_numpy(dtype=float), atol=1e-6)
    with pytest.raises(ValueError, match=r"images\[1\]: expected a uint8 RGB array"):
        p.predict_images([imgs[0], imgs[1].astype(np.float32)])


def test_bad_inputs_are_named(arts, photos, tmp_path):
    from mask_keras.inference import ArtifactError, BadImage, Predictor

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
    (tmp_path / "plain").mkdir()
    with pytest.raises(ArtifactError, match="not an artifact"):
        Predictor.load(tmp_path / "plain")
    p = Predictor.load(arts["gender"])
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        p.predict_files([tmp_path / "missing.jpg"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        p.predict_files([tmp_path / "empty"])
    with pytest.raises(BadImage, match="t(runc|ext).jpg"):
        p.predict_files([photos / "sub"], on_error="raise")
    with pytest.raises(ValueError, match="on_error"):
        p.predict_files([photos], on_error="ignore")
    with pytest.raises(BadImage, match="over the limit of 100"):
        p.predict_bytes([(photos / "sub" / "b.png").read_bytes()], max_pixels=100)
    with pytest.raises(ValueError, match="no_face must be one of center, skip, error"):
        Predictor.load(arts["gender"], no_face="centre")


def test_cli_predict_images_writes_csv_and_json_lines(arts, photos, tmp_path, capsys):
    from mask_keras.cli import main

    out = tmp_path / "answers.jsonl"
    assert main(["predict", str(arts["gender"]), "--images", str(photos), "--out", str(out), "--json"]) in (None, 0)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary == {"predictions": str(out), "rows": 7, "images": 7, "skipped": 2, "tasks": ["gender"],
                       "models": 1}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 7 and {r["gender"] for r in rows if not r["error"]} <= {"male", "female"}
    # an 18-way model: integer classes and probabilities survive JSON lines
    multi = tmp_path / "multi.jsonl"
    main(["predict", str(arts["multi"]), "--images", str(photos / "sub" / "b.png"), "--out", str(multi)])
    row = json.loads(multi.read_text())
    assert isinstance(row["class"], int) and 0 <= row["class"] <= 17 and isinstance(row["p0"], float)
    assert row["face_found"] is None and len(row["crop_box"]) == 4
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
    """Fixed faces in every image (x0, y0, x1, y1, confidence, 10 keypoints); none for images
    narrower than ``min_width``."""

    def __init__(self, faces=((30.0, 40.0, 60.0, 75.0, 0.99),), min_width=0):
        self.faces = np.array([[*f] + [np.nan] * 10 for f in faces], np.float32).reshape(-1, 15)
        self.min_width, self.calls, self.closed = min_width, 0, False

    def detect(self, images):
        import io

        self.calls += 1
        out = []
        for x in images:
            if isinstance(x, np.ndarray):
                h, w = x.shape[:2]
            else:
                with Image.open(io.BytesIO(x)) as im:
                    w, h = im.size
            faces = self.faces if w >= self.min_width else np.zeros((0, 15), np.float32)
            out.append({"width": w, "height": h, "faces": faces, "error": None})
        return out

    def close(self):
        self.closed = True


def _face_predictor(tmp_path, detector, **kw):
    from mask_keras.inference import Predictor

    run = _artifact(tmp_path / "face", "gender", seed=3, **{"preprocess.crop": "face",
                                                            "preprocess.face_margins": (2, 4, 2, 2)})
    p = Predictor.load(run, **kw)
    p.engine.finder.detector = detector  # the real MTCNN worker: tests/test_detect.py
    return run, p


def test_face_crop_models_get_their_crop_from_the_detector(arts, photos, tmp_path):
    from mask_keras import pipeline
    from mask_keras.detect.geometry import widen_boxes
    from mask_keras.inference.artifacts import load_artifact, model_outputs

    det = _FakeDetector()
    run, p = _face_predictor(tmp_path, det)
    files = [str(photos / "sub" / "b.png"), str(sorted(photos.glob("*.jpg"))[0])]
    t = p.predict_files(files)
    assert det.calls == 1  # one detection per batch, whatever the number of face-crop models
    art = load_artifact(run)
    pcfg = art.config.preprocess
    with Image.open(files[0]) as im:
        w, h = im.size
    widened, valid = widen_boxes(det.faces[:, :4].astype(float), pcfg.face_margins, h, w)  # -> (y0, x0, y1, x1)
    assert valid[0] and t["crop_box"][0] == [int(v) for v in widened[0]]
    assert t["face_found"].tolist() == [True, True] and t["face"].tolist() == [0, 0]
    assert t["face_box"][0] == [40, 30, 75, 60] and t["face_confidence"][0] == pytest.approx(0.99)
    table = pd.DataFrame({"path": files, **{c: [b[k] for b in t["crop_box"]]
                                            for k, c in enumerate(pipeline.CROP_COLUMNS)}})
    ref = model_outputs(art.model.predict_on_batch(pipeline.load_images(table, pcfg)))
    np.testing.assert_allclose(t[["p_gender_male", "p_gender_female"]].to_numpy(float), ref, atol=1e-5)
    p.close()
    assert det.closed and p.engine.finder.detector is None


def test_photos_without_a_face_are_flagged_skipped_or_refused(arts, photos, tmp_path):
    from mask_keras.detect.geometry import center_crop_boxes
    from mask_keras.inference import NoFaceError

    small = tmp_path / "small.png"
    Image.fromarray(np.full((60, 50, 3), 128, np.uint8)).save(small)
    files = [str(photos / "sub" / "b.png"), str(small)]
    run, p = _face_predictor(tmp_path / "c", _FakeDetector(min_width=80))
    t = p.predict_files(files)  # default: the centre crop, flagged
    assert t["face_found"].tolist() == [True, False] and t["face"].isna().tolist() == [False, True]
    pcfg = p.members[0].preprocess
    assert t["crop_box"][1] == center_crop_boxes(60, 50, pcfg.face_fallback)[0].tolist()
    assert t["gender"].notna().all() and (t["error"] == "").all()
    _, s = _face_predictor(tmp_path / "s", _FakeDetector(min_width=80), no_face="skip")
    t = s.predict_files(files)
    assert t["gender"].isna().tolist() == [False, True] and "no usable face (no_face)" in t["error"][1]
    _, e = _face_predictor(tmp_path / "e", _FakeDetector(min_width=80), no_face="error")
    with pytest.raises(NoFaceError, match="small.png: no usable face"):
        e.predict_files(files)


def test_every_face_gets_its_row_with_faces_all(arts, photos, tmp_path):
    faces = ((10.0, 10.0, 30.0, 40.0, 0.99), (50.0, 60.0, 110.0, 140.0, 0.97), (0.0, 0.0, 5.0, 5.0, 0.3))
    _, p = _face_predictor(tmp_path, _FakeDetector(faces), faces="all")
    t = p.predict_files([photos / "sub" / "b.png", photos / "sub" / "a.webp"])
    assert len(t) == 4 and t["face"].tolist() == [0, 1, 0, 1]  # the unsure third face is not answered
    assert t["face_box"][0] == [60, 50, 140, 110]  # the largest first
    assert t["crop_box"][0] != t["crop_box"][1] and t["p_gender_male"][0] != t["p_gender_male"][1]


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
