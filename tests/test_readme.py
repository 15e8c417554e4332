"""The README's Python example runs as written (on the test set, with the fast backbone)."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _api_example() -> str:
    """The first python block of the "Python API" section."""
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_readme_opens_with_the_two_commands():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    assert first_block.splitlines()[0].startswith("make demo")
    assert first_block.splitlines()[1].startswith("make test")


@pytest.mark.slow
def test_python_api_example_runs(synth_root, tmp_path, monkeypatch):
    code = _api_example()
    # the same code on the session's tiny set: the fast CPU backbone, small images, 20 people,
    # precise BN over 2 batches (its default, 1,024 images, is the whole set here)
    assert '"train.batch_size": 32}' in code
    code = (code.replace('"data/default"', repr(str(synth_root)))
                .replace('"efficientnet_b0"', '"tiny_cnn"')
                .replace("(96, 64)", "(32, 24)")
                .replace('"train.batch_size": 32}', '"train.batch_size": 32, "data.max_people": 20, "train.precise_bn": 64}')
                .replace("epochs=2", "epochs=1")
                .replace('"train.epochs": 2', '"train.epochs": 1'))
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(compile(code, str(README), "exec"), ns)
    assert 0.0 <= ns["result"].metrics["macro_f1"] <= 1.0
    assert (tmp_path / "runs" / "api_demo" / "model.keras").is_file()
