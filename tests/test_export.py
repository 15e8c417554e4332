"""Exports: the SavedModel, ONNX and LiteRT files predict what the Keras (JAX) model predicts,
from photos (their graph crops and resizes as the pipeline does) and, for the SavedModel, bytes;
an export folder answers files through ``Predictor.load`` as its run does."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mask_keras.config import Config, ConfigError


def _run_dir(path, task, root, image_size=(32, 24), crop="none", val_files=()):
    """A run directory (model.keras + config.json) of an untrained tiny model: enough for export;
    ``val_files`` go into its val_predictions.csv (the photos --verify checks on)."""
    import pandas as pd

    from mask_keras.models.build import build_model

    cfg = Config().override(**{"train.task": task, "model.backbone": "tiny_cnn", "model.weights": None,
                               "preprocess.image_size": image_size, "preprocess.crop": crop,
                               "preprocess.crop_size": (100, 60), "preprocess.face_fallback": (90, 70),
                               "data.data_dir": str(root), "train.out_dir": str(path)})
    model = build_model(cfg.model, task, image_size)
    path.mkdir(parents=True)
    model.save(path / "model.keras")
    cfg.save(path / "config.json")
    if val_files:
        pd.DataFrame({"path": list(val_files), "y_true": 0, "y_pred": 0}).to_csv(path / "val_predictions.csv",
                                                                               index=False)
    return path, model, cfg


def _photo(rng, h, w):
    """A smooth photo-like uint8 image with noise (a plain noise image has no structure to resize)."""
    from mask_keras._tf import tf

    base = tf.image.resize(rng.uniform(0, 255, (max(h // 8, 2), max(w // 8, 2), 3)), (h, w)).numpy()
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


class _BoxDetector:
    """Stands in for the MTCNN worker (tests/test_detect.py runs the real one): for each photo
    (by its bytes) one face at a given ``[y0, x0, y1, x1]`` box, confidence 0.99."""

    def __init__(self, files, boxes):
        from pathlib import Path

        self.faces = {Path(f).read_bytes(): b for f, b in zip(files, boxes)}

    def detect(self, images):
        import io

        from PIL import Image

        out = []
        for data in images:
            y0, x0, y1, x1 = (float(v) for v in self.faces[bytes(data)])
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
            out.append({"width": w, "height": h, "error": None,
                        "faces": np.array([[x0, y0, x1, y1, 0.99] + [np.nan] * 10], np.float32)})
        return out

    def close(self):
        pass


@pytest.mark.parametrize("crop", ["center", "none", "face"])
def test_crop_resize_layer_matches_the_pipeline(crop):
    """The graph's crop + antialiased resize (matrix products) against pipeline.preprocess_image
    (tf.image.resize): windows equal, pixels equal but for a rare rounding of a half level."""
    from mask_keras import pipeline
    from mask_keras._tf import tf
    from mask_keras.config import PreprocessConfig
    from mask_keras.models.serving import CropResize

    rng = np.random.default_rng(0)
    differing = total = 0
    for hw, size, crop_size in [((512, 384), (128, 96), (400, 200)), ((60, 50), (32, 24), (40, 30)),
                                ((100, 80), (96, 64), (400, 200)), ((37, 29), (32, 24), (40, 30))]:
        cfg = PreprocessConfig(image_size=size, crop=crop, crop_size=crop_size)
        x = np.stack([_photo(rng, *hw) for _ in range(2)])
        boxes = np.array([[3, 2, hw[0] - 5, hw[1] // 2 + 3], [-4, hw[1] // 3, hw[0] + 9, hw[1] + 2]], np.int32)
        got, windows = CropResize(size, crop, crop_size)(x, boxes)
        want = np.stack([pipeline.preprocess_image(tf.constant(x[i]), boxes[i], cfg).numpy() for i in range(2)])
        win = np.stack([np.stack([v.numpy() for v in pipeline.crop_window(hw[0], hw[1], boxes[i], cfg)])
                        for i in range(2)])
        np.testing.assert_array_equal(np.asarray(windows), win)
        d = np.abs(np.asarray(got) - want.astype(np.float32))
        assert got.shape == want.shape and d.max() <= 1.0
        differing, total = differing + int((d > 0).sum()), total + d.size
    assert differing / total < 1e-3, (differing, total)
    with pytest.raises(ValueError, match="crop='bogus'"):
        CropResize((32, 24), "bogus")


@pytest.mark.slow
def test_tf_saved_model_takes_bytes_photos_and_pixels(synth_root, tmp_path):
    from mask_keras import pipeline
    from mask_keras._tf import tf
    from mask_keras.data import read_eval
    from mask_keras.export import export_artifact, load_exported
    from mask_keras.inference import Predictor
    from mask_keras.models.serving import build_serving_model

    paths = read_eval(synth_root)["path"].tolist()[:11]
    run, model, cfg = _run_dir(tmp_path / "run", "multihead", synth_root, crop="center", val_files=paths[:4])
    out = export_artifact(run, tmp_path / "export", verify=True)
    meta = json.loads((out / "export.json").read_text())
    assert meta["format"] == "tf_saved_model" and meta["task"] == "multihead"
    # checked on the run's validation photos: the graph against Keras, and serve_bytes (the
    # pipeline's own TF decode and crop ops) against the package's file path
    assert meta["verify"]["images"] == "4 validation image(s) of the run"
    assert meta["verify"]["max_abs_difference"] <= 1e-4 and meta["verify"]["vs_package_files"] <= 1e-4
    exp = load_exported(out)
    assert exp.config.preprocess.image_size == cfg.preprocess.image_size

    x = np.random.default_rng(1).uniform(0, 255, size=(10, 32, 24, 3)).astype("float32")
    ref = model.predict(x, verbose=0)
    got = exp.predict(x, batch_size=4)  # cropped pixels, several batches, a ragged last one
    assert set(got) == {"mask", "gender", "age"}
    for k in got:
        np.testing.assert_allclose(got[k], np.asarray(ref[k]), atol=1e-4)

    # encoded bytes in: the answers and crop boxes Predictor gives on the same files
    with Predictor.load(run) as pred:
        answers = pred.predict_files(paths)
    b = exp._loaded.serve_bytes(tf.constant([open(f, "rb").read() for f in paths]))
    assert [list(map(int, r)) for r in b["crop_box"].numpy()] == answers["crop_box"].tolist()
    np.testing.assert_allclose(b["gender"].numpy()[:, 1], answers["p_gender_female"], atol=2e-6)
    # full-size photos in (the serve_image endpoint, the graph's own crop): the Keras serving model's answers
    photos = [pipeline.decode_image(tf.io.read_file(f)).numpy() for f in paths[:3]]
    serving = build_serving_model(model, cfg.preprocess, "multihead")
    want = serving({"image": np.stack(photos)})
    have = exp.predict_photos(np.stack(photos))
    for k in ("mask", "gender", "age", "crop_box"):
        np.testing.assert_allclose(have[k], np.asarray(want[k]), atol=1e-4)

    # end to end from files with TTA, in batches of 8 (a ragged last one): the export folder
    # through Predictor answers as its run does (the engine's decode, crop and flip; the export's runtime)
    with Predictor.load(run, tta=True, batch_size=8) as pred:
        want = pred.predict_files(paths)
    with Predictor.load(out, tta=True, batch_size=8) as pred:
        assert [m.kind for m in pred.members] == ["export"]
        have = pred.predict_files(paths)
    probs = [c for c in want.columns if c.startswith("p_") or (c[0] == "p" and c[1:].isdigit())]
    assert len(have) == 11 and len(probs) == 3 + 2 + 3 + 18
    np.testing.assert_allclose(have[probs].to_numpy(float), want[probs].to_numpy(float), atol=1e-4)
    assert have["crop_box"].tolist() == want["crop_box"].tolist()
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "artifact.json", "config.json", "export.json",
                                                     "saved_model"]
    assert json.loads((out / "artifact.json").read_text())["kind"] == "export"
    assert "serve_bytes" in (out / "README.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export")]


@pytest.mark.slow
def test_onnx_and_litert_take_photos_and_face_boxes(synth_root, tmp_path, capsys):
    """A face-crop 18-way run to ONNX and LiteRT: photo + box in, checked with onnxruntime and
    the LiteRT interpreter against the Keras serving model on real files; from files through
    Predictor (the engine's face crop, the export's runtime) as the run answers them."""
    import onnx
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    from mask_keras._tf import tf
    from mask_keras.cli import main
    from mask_keras.data import read_eval
    from mask_keras.export import load_exported
    from mask_keras.inference import Predictor
    from mask_keras.models.serving import build_serving_model

    paths = read_eval(synth_root)["path"].tolist()[:5]
    run, model, cfg = _run_dir(tmp_path / "run", "multi", synth_root, crop="face", val_files=paths[:3])
    from mask_keras.pipeline import decode_image

    photos = [decode_image(tf.io.read_file(f)).numpy() for f in paths]  # the decode predict_files uses
    boxes = np.array([[10, 5, 90, 70], [0, 0, 128, 96], [40, 30, 41, 31], [-5, -5, 60, 200], [20, 20, 100, 80]],
                     np.int32)
    serving = build_serving_model(model, cfg.preprocess, "multi")
    want = serving({"image": np.stack(photos), "box": boxes})
    # the run's answers on the files, its crops from the detector's faces (the boxes above, widened
    # by the run's margins and clipped to the photo), plain and with TTA
    run_answers = {}
    for tta in (False, True):
        with Predictor.load(run, tta=tta) as pred:
            pred.engine.finder.detector = _BoxDetector(paths, boxes)
            run_answers[tta] = pred.predict_files(paths)
    crops = {tuple(b) for b in run_answers[False]["crop_box"]}
    assert run_answers[False]["face_found"].all() and len(crops) == 4  # two clip to the whole photo
    probs = [f"p{c}" for c in range(18)]
    # both from one TensorFlow process, through the command line: one subfolder a format
    assert main(["export", str(run), str(tmp_path / "exp"), "--format", "onnx,litert", "--verify"]) == 0
    printed = capsys.readouterr().out
    for fmt, file in [("onnx", "model.onnx"), ("litert", "model.tflite")]:
        out = tmp_path / "exp" / fmt
        assert f"-> {out} ({fmt})" in printed
        meta = json.loads((out / "export.json").read_text())
        assert meta["verify"]["max_abs_difference"] <= 1e-4, meta["verify"]
        assert meta["verify"]["images"] == "3 validation image(s) of the run"
        assert sorted(p.name for p in out.iterdir()) == ["README.md", "artifact.json", "config.json",
                                                         "export.json", file]
        readme = (out / "README.md").read_text()
        assert "`box`" in readme and "decodes the photo" in readme and "[90, 70]" in readme
        exp = load_exported(out)
        have = exp.predict_photos(np.stack(photos), boxes)  # the graph's own crop at the given boxes
        np.testing.assert_allclose(have["probs"], np.asarray(want["probs"]), atol=1e-4)
        np.testing.assert_array_equal(have["crop_box"], np.asarray(want["crop_box"]))
        assert have["probs"].shape == (5, 18)
        # from files, the face crops from the detector, plain and with TTA (the engine flips):
        # the same answers as the run's
        for tta in (False, True):
            with Predictor.load(out, tta=tta) as pred:
                pred.engine.finder.detector = _BoxDetector(paths, boxes)
                got = pred.predict_files(paths)
            ref = run_answers[tta]
            np.testing.assert_allclose(got[probs].to_numpy(float), ref[probs].to_numpy(float), atol=1e-4)
            assert got["crop_box"].tolist() == ref["crop_box"].tolist()
            assert got["face_box"].tolist() == ref["face_box"].tolist()
    # the files run with the runtimes alone, as the README says (no package code)
    graph = onnx.load(str(tmp_path / "exp" / "onnx" / "model.onnx"))
    assert {n.domain for n in graph.graph.node} <= {"", "ai.onnx"}  # standard ops only
    sess = onnxruntime.InferenceSession(str(tmp_path / "exp" / "onnx" / "model.onnx"))
    got = dict(zip([o.name for o in sess.get_outputs()],
                   sess.run(None, {"image": photos[0][None], "box": boxes[:1]})))
    np.testing.assert_allclose(got["probs"], np.asarray(want["probs"])[:1], atol=1e-4)
    runner = Interpreter(str(tmp_path / "exp" / "litert" / "model.tflite")).get_signature_runner()
    for i in (0, 2):  # another photo size through the same interpreter
        small = photos[i][: 60 + i, : 50 + i]
        got = runner(image=small[None], box=boxes[i:i + 1])
        ref = serving({"image": small[None], "box": boxes[i:i + 1]})
        np.testing.assert_allclose(got["probs"], np.asarray(ref["probs"]), atol=1e-4)


@pytest.mark.slow
def test_jax2tf_export_matches(synth_root, tmp_path):
    from mask_keras.export import export_artifact, load_exported

    run, model, _ = _run_dir(tmp_path / "run", "mask", synth_root)
    out = export_artifact(run, tmp_path / "export", format="jax2tf", verify=True)
    x = np.random.default_rng(2).uniform(0, 255, size=(5, 32, 24, 3)).astype("float32")
    np.testing.assert_allclose(load_exported(out).predict(x), model.predict(x, verbose=0), atol=1e-4)


@pytest.mark.slow
def test_predictor_loads_an_export_folder_as_its_run(synth_root, tmp_path):
    """``Predictor.load(export_dir)``: the export folder resolved as kind 'export' (its
    artifact.json), the same answers on files as the run; a manifest that disagrees with the
    folder's files is refused at load, naming both."""
    from mask_keras.data import read_eval
    from mask_keras.export import export_artifact
    from mask_keras.inference import ArtifactError, Predictor
    from mask_keras.inference.artifacts import resolve

    paths = read_eval(synth_root)["path"].tolist()[:6]
    run, _, _ = _run_dir(tmp_path / "run", "multi", synth_root, crop="center")
    out = export_artifact(run, tmp_path / "export")
    manifest = json.loads((out / "artifact.json").read_text())
    assert manifest["kind"] == "export" and manifest["task"] == "multi"
    assert resolve(out).kind == "export" and resolve(out).members == [out]
    with Predictor.load(run) as pred:
        want = pred.predict_files(paths)
    with Predictor.load(out) as pred:
        assert [(m.kind, m.task) for m in pred.members] == [("export", "multi")]
        assert pred.metadata()["models"][0]["kind"] == "export"
        have = pred.predict_files(paths)
    assert list(have.columns) == list(want.columns)
    probs = ["class_prob"] + [c for c in want.columns if c.startswith("p_") or (c[0] == "p" and c[1:].isdigit())]
    np.testing.assert_allclose(have[probs].to_numpy(float), want[probs].to_numpy(float), atol=1e-4)
    for col in ("path", "crop_box", "class", "mask", "gender", "age", "level", "face_found", "error"):
        assert have[col].tolist() == want[col].tolist(), col

    # the manifest edited to say 'run': refused before any model loads, naming both kinds
    (out / "artifact.json").write_text(json.dumps({**manifest, "kind": "run"}))
    with pytest.raises(ArtifactError, match=r"artifact.json says kind 'run' \(needs model.keras\) "
                                            r"but its files say 'export' \(export.json\)"):
        Predictor.load(out)


def test_bad_inputs_are_clear_errors(tmp_path, capsys):
    from mask_keras.cli import main
    from mask_keras.export import ExportError, export_artifact, export_artifacts, load_exported

    with pytest.raises(ConfigError, match="unknown export format 'onnxx'"):
        export_artifact(tmp_path, tmp_path / "out", format="onnxx")
    with pytest.raises(ConfigError, match="unknown export format 'onnxx'"):
        export_artifacts(tmp_path, {"onnx": tmp_path / "a", "onnxx": tmp_path / "b"})
    with pytest.raises(ExportError, match="no export format given"):
        export_artifacts(tmp_path, {})
    with pytest.raises(ExportError, match="each format needs its own export folder"):
        export_artifacts(tmp_path, {"onnx": tmp_path / "same", "litert": tmp_path / "same"})
    assert main(["export", str(tmp_path), str(tmp_path / "out"), "--format", "onnx,litrt"]) == 2
    assert "unknown export format 'litrt'" in capsys.readouterr().err
    assert main(["export", str(tmp_path), str(tmp_path / "out"), "--format", ","]) == 2
    assert "no export format given" in capsys.readouterr().err
    with pytest.raises(ExportError, match="no model.keras"):
        export_artifact(tmp_path, tmp_path / "out")
    with pytest.raises(ExportError, match="no export.json"):
        load_exported(tmp_path)
    (tmp_path / "export.json").write_text('{"format": "onnx"}')
    with pytest.raises(ExportError, match="model.onnx is missing"):
        load_exported(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"")  # the file there, the run's config.json not copied
    with pytest.raises(ExportError, match="config.json is unusable.*config not found.*export the run again"):
        load_exported(tmp_path)
    assert not (tmp_path / "out").exists()


def test_export_command_line(synth_root, tmp_path, capsys):
    from mask_keras.cli import main
    from mask_keras.export import load_exported

    run, model, _ = _run_dir(tmp_path / "run", "gender", synth_root)
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "stale.txt").write_text("an earlier export's file")  # replaced as a whole
    # in this process: the command line's parsing, output and exit codes (tests/test_cli.py runs
    # the installed entry point in a fresh interpreter)
    assert main(["export", str(run), str(tmp_path / "exp"), "--format", "jax2tf", "--verify"]) == 0
    out = capsys.readouterr()
    assert "max abs difference from model.keras" in out.out and "README.md" in out.out
    x = np.random.default_rng(3).uniform(0, 255, size=(4, 32, 24, 3)).astype("float32")
    np.testing.assert_allclose(load_exported(tmp_path / "exp").predict(x), model.predict(x, verbose=0), atol=1e-4)
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["README.md", "artifact.json", "config.json",
                                                                     "export.json", "saved_model"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".exp")]  # no temp or old folder left
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2
    assert "artifact not found" in capsys.readouterr().err
