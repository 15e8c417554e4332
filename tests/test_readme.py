"""Every Python example of the README runs as written (on the test set, with the fast backbone).

The examples are read from README.md by the heading above them, edited only where the
test set differs from the README's (the data folder, the run folder, image sizes, epochs),
and executed; a new python block in the README fails ``test_every_python_block_is_run``
until a test here runs it.
"""
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"
RECIPES = README.parent / "recipes"

#: the heading above each python block -> the test that runs it
RUN_BY = {
    "Python API": "test_python_api_predictor_and_export_examples_run",
    "In Python: `Predictor`": "test_python_api_predictor_and_export_examples_run",
    "As one file: `mask-keras export`": "test_python_api_predictor_and_export_examples_run",
    "Recipes": "test_recipe_example_is_the_recipe_shortened",
    "Data as a TFDS dataset": "test_tfds_example_runs",
}


def python_blocks() -> dict[str, str]:
    """The README's python blocks, by the nearest heading above each."""
    blocks, heading = {}, None
    for part in re.split(r"(^#{2,4} [^\n]*$|^```python\n.*?^```$)", README.read_text(), flags=re.M | re.S):
        if part.startswith("#"):
            heading = part.lstrip("#").strip()
        elif part.startswith("```python"):
            assert heading not in blocks, f"two python blocks under {heading!r}: give one its own heading"
            blocks[heading] = part[len("```python\n"):-3]
    return blocks


def _edit(code: str, *pairs) -> str:
    for old, new in pairs:
        assert old in code, f"the README example no longer contains {old!r}: update this test with it"
        code = code.replace(old, new)
    return code


def test_readme_opens_with_the_two_commands():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    assert first_block.splitlines()[0].startswith("make demo")
    assert first_block.splitlines()[1].startswith("make test")


def test_every_python_block_is_run():
    blocks = python_blocks()
    assert sorted(blocks) == sorted(RUN_BY), "a README python block without a test here (or a test without one)"
    for test in set(RUN_BY.values()):
        assert test in globals(), test


def test_recipe_example_is_the_recipe_shortened():
    """The README's recipe excerpt runs, and every field it sets has the real recipe's value."""
    from mask_keras import recipe
    from mask_keras.config import Config

    ns = {"Config": Config, "recipe": recipe}
    exec(compile(python_blocks()["Recipes"], str(README), "exec"), ns)
    before = README.read_text().split("```python\n" + python_blocks()["Recipes"])[0]
    name = re.findall(r"`recipes/(\w+)\.py`:\s*$", before, flags=re.M)[-1]  # "A shortened `recipes/X.py`:"
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    real = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(real)
    for demo in (False, True):
        shown, actual = ns["get_config"](demo), real.get_config(demo)
        shown.validate()
        set_in_readme = re.findall(r"c\.(\w+)\.(\w+) = ", python_blocks()["Recipes"])
        assert set_in_readme, "the excerpt sets no field"
        for section, key in set_in_readme:
            assert getattr(getattr(shown, section), key) == getattr(getattr(actual, section), key), (section, key)
    assert callable(ns["main"])


@pytest.mark.slow
def test_python_api_predictor_and_export_examples_run(synth_root, tmp_path, monkeypatch):
    """The Python API example trains; the Predictor and export examples then use its run."""
    blocks = python_blocks()
    # the same code on the session's tiny set: the fast CPU backbone, small images, 20 people,
    # precise BN over 2 batches (its default, 1,024 images, is the whole set here)
    api = _edit(blocks["Python API"],
                ('"data/default"', repr(str(synth_root))),
                ('"efficientnet_b0"', '"tiny_cnn"'),
                ("(96, 64)", "(32, 24)"),
                ('"train.batch_size": 32}', '"train.batch_size": 32, "data.max_people": 20, "train.precise_bn": 64}'),
                ("epochs=2", "epochs=1"),
                ('"train.epochs": 2', '"train.epochs": 1'))
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(compile(api, str(README), "exec"), ns)
    assert ns["info"].num_steps == ns["info"].num_examples // 32 > 0
    assert 0.0 <= ns["result"].metrics["macro_f1"] <= 1.0
    assert (tmp_path / "runs" / "api_demo" / "model.keras").is_file()

    # the Predictor example, on that run (a mask model) and a folder of photos
    photos = sorted((Path(synth_root) / "eval" / "images").iterdir())[:3]
    (tmp_path / "photos").mkdir()
    for p in photos:
        (tmp_path / "photos" / p.name).write_bytes(p.read_bytes())
    frame = np.asarray(Image.open(photos[0]).convert("RGB"))
    ns = {"frame_rgb_uint8": frame, "upload_bytes": photos[0].read_bytes()}
    exec(compile(_edit(blocks["In Python: `Predictor`"], ('"runs/efficientnet_gender"', '"runs/api_demo"')),
                 str(README), "exec"), ns)
    assert len(ns["table"]) == 1 and ns["p"].predict_files(["photos/"]).shape[0] == 3
    assert ns["rows"][0]["mask"] == ns["table"]["mask"][0]  # the same photo, as bytes and as an array

    # the export example: ONNX, verified against the Keras model, loaded and run
    ns = {"photo_rgb_uint8": frame, "paths": [str(p) for p in photos]}
    exec(compile(_edit(blocks["As one file: `mask-keras export`"],
                       ('"runs/efficientnet_gender"', '"runs/api_demo"')), str(README), "exec"), ns)
    assert ns["out"]["probs"].shape == (1, 3) and ns["out"]["crop_box"].shape == (1, 4)
    probs = ns["table"][[c for c in ns["table"].columns if c.startswith("p_mask_")]].to_numpy(float)
    assert probs.shape == (3, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (tmp_path / "exports" / "gender_onnx" / "README.md").is_file()


def test_tfds_example_runs(synth_root, tmp_path):
    pytest.importorskip("tensorflow_datasets")
    ns = {}
    code = _edit(python_blocks()["Data as a TFDS dataset"],
                 ('"data/default"', repr(str(synth_root))), ('"/tmp/tfds"', repr(str(tmp_path / "tfds"))))
    exec(compile(code, str(README), "exec"), ns)
    first = next(iter(ns["ds"]))
    assert first["image"].shape[-1] == 3 and 0 <= int(first["label"]) < 18
