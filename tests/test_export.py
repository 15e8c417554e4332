"""CPU inference export: the exported SavedModel predicts what the Keras (JAX) model predicts."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mask_keras.config import Config, ConfigError


def _run_dir(path, task, root, image_size=(32, 24)):
    """A run directory (model.keras + config.json) of an untrained tiny model: enough for export."""
    from mask_keras.models.build import build_model

    cfg = Config().override(**{"train.task": task, "model.backbone": "tiny_cnn", "model.weights": None,
                               "preprocess.image_size": image_size, "preprocess.crop": "none",
                               "data.data_dir": str(root), "train.out_dir": str(path)})
    model = build_model(cfg.model, task, image_size)
    path.mkdir(parents=True)
    model.save(path / "model.keras")
    cfg.save(path / "config.json")
    return path, model, cfg


@pytest.mark.slow
def test_tf_saved_model_matches_keras_on_arrays_and_files(synth_root, tmp_path):
    from mask_keras import predict
    from mask_keras.data import read_eval
    from mask_keras.export import export_artifact, load_exported, max_abs_difference

    run, model, cfg = _run_dir(tmp_path / "run", "multihead", synth_root)
    out = export_artifact(run, tmp_path / "export")
    meta = json.loads((out / "export.json").read_text())
    assert meta["format"] == "tf_saved_model" and meta["task"] == "multihead"
    exp = load_exported(out)
    assert exp.config.preprocess.image_size == cfg.preprocess.image_size

    x = np.random.default_rng(1).uniform(0, 255, size=(10, 32, 24, 3)).astype("float32")
    ref = model.predict(x, verbose=0)
    got = exp.predict(x, batch_size=4)  # several batches, a ragged last one
    assert set(got) == {"mask", "gender", "age"}
    for k in got:
        np.testing.assert_allclose(got[k], np.asarray(ref[k]), atol=1e-4)
    assert max_abs_difference(run, out) < 1e-4

    # end to end from files: the same as the package's JAX inference (predict.predict_probs)
    paths = read_eval(synth_root)["path"].tolist()[:11]
    want = predict.predict_probs(predict.load_artifact(run), paths, batch_size=8, tta=True)
    have = exp.predict_files(paths, batch_size=8, tta=True)
    for k in want:
        assert have[k].shape == (11, {"mask": 3, "gender": 2, "age": 3}[k])
        np.testing.assert_allclose(have[k], want[k], atol=1e-4)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "export.json", "saved_model"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export")]


@pytest.mark.slow
def test_jax2tf_export_matches(synth_root, tmp_path):
    from mask_keras.export import export_artifact, load_exported

    run, model, _ = _run_dir(tmp_path / "run", "mask", synth_root)
    out = export_artifact(run, tmp_path / "export", format="jax2tf", verify=True)
    x = np.random.default_rng(2).uniform(0, 255, size=(5, 32, 24, 3)).astype("float32")
    np.testing.assert_allclose(load_exported(out).predict(x), model.predict(x, verbose=0), atol=1e-4)


def test_bad_inputs_are_clear_errors(tmp_path):
    from mask_keras.export import ExportError, export_artifact, load_exported

    with pytest.raises(ConfigError, match="unknown export format 'onnxx'"):
        export_artifact(tmp_path, tmp_path / "out", format="onnxx")
    with pytest.raises(ExportError, match="no model.keras"):
        export_artifact(tmp_path, tmp_path / "out")
    with pytest.raises(ExportError, match="saved_model.pb"):
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
    assert "verified: max abs difference from model.keras" in out.out
    x = np.random.default_rng(3).uniform(0, 255, size=(4, 32, 24, 3)).astype("float32")
    np.testing.assert_allclose(load_exported(tmp_path / "exp").predict(x), model.predict(x, verbose=0), atol=1e-4)
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["config.json", "export.json", "saved_model"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".exp")]  # no temp or old folder left
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2
    assert "no model.keras" in capsys.readouterr().err
