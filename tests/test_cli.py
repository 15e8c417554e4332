"""The `mask-keras` command line: help everywhere, synth + inspect on a fresh set, clear errors."""
import json
import subprocess
import sys

import pytest

SUBCOMMANDS = ["synth", "inspect", "train", "evaluate", "detect", "tune", "predict", "export"]


def run(*args, check=True):
    """``mask-keras ARGS`` through the installed entry point, in a fresh interpreter (~8 s:
    only where the fresh process is the point; :func:`run_here` otherwise)."""
    p = subprocess.run([sys.executable, "-m", "mask_keras", *args], capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def test_help_everywhere(capsys):
    """Top-level and every subcommand's help, in this process (a fresh interpreter costs ~8 s;
    test_bad_option_is_a_clear_error runs the installed entry point)."""
    from mask_keras.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in SUBCOMMANDS:
        assert cmd in out
    for cmd in SUBCOMMANDS:
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert "usage: mask-keras " + cmd in capsys.readouterr().out


def run_here(capsys, *args):
    """``mask-keras ARGS`` in this process: (exit code, stdout, stderr)."""
    from mask_keras.cli import main

    try:
        code = main(list(args))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_synth_then_inspect_on_a_fresh_set(tmp_path, capsys):
    root = tmp_path / "set"
    code, out, err = run_here(capsys, "synth", str(root), "--people", "14", "--eval-people", "2", "--seed", "3",
                              "--image-size", "64x48", "--workers", "1")
    assert code == 0, err
    s = _last_json(out)
    assert s["people"] == 14
    code, out, err = run_here(capsys, "inspect", str(root))
    assert code == 0, err
    assert "people: 14" in out and "images: 98" in out
    assert (root / "class_balance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _last_json(text: str) -> dict:
    """The summary JSON object printed last (tqdm/progress lines may come before it)."""
    start = text.index("\n{") + 1 if not text.startswith("{") else 0
    return json.loads(text[start:])


def test_bad_option_is_a_clear_error(tmp_path, capsys):
    # the installed entry point in a fresh interpreter: a real exit status
    p = run("train", "--data-dir", str(tmp_path), "--set", "train.epoch=3", check=False)
    assert p.returncode == 2
    assert "unknown train option 'epoch'" in p.stderr and "did you mean 'epochs'" in p.stderr
    code, _, err = run_here(capsys, "train", "--data-dir", str(tmp_path), "--backbone", "resnet9000",
                            "--weights", "none")
    assert code == 2 and "unknown backbone" in err
    code, _, err = run_here(capsys, "inspect", str(tmp_path / "missing"))
    assert code == 2 and "train.csv" in err


def test_image_size_flag_is_checked(capsys):
    code, _, err = run_here(capsys, "train", "--image-size", "big")
    assert code == 2 and "HEIGHTxWIDTH" in err


def test_evaluate_json(tmp_path, capsys):
    (tmp_path / "gt.csv").write_text("ImageID,ans\na.jpg,0\nb.jpg,7\nc.jpg,17\n")
    (tmp_path / "pred.csv").write_text("ImageID,ans\nc.jpg,17\na.jpg,0\nb.jpg,6\n")
    code, out, err = run_here(capsys, "evaluate", "--gt", str(tmp_path / "gt.csv"), "--pred",
                              str(tmp_path / "pred.csv"), "--json")
    assert code == 0, err
    d = json.loads(out)
    assert set(d) == {"macro_f1", "accuracy", "f1_mask", "f1_gender", "f1_age", "ci", "groups", "worst_group",
                      "group_gap"}
    assert d["accuracy"] == pytest.approx(2 / 3)
    # b.jpg (class 7: incorrect/male/30-59) answered 6 (incorrect/male/<30): its group is the worst
    assert d["worst_group"] == "male/30-59" and d["groups"]["male/30-59"] == {
        "n": 1, "accuracy": 0.0, "f1_mask": 1.0, "f1_gender": 1.0, "f1_age": 0.0}
    assert d["ci"]["resampled"] == "images" and d["ci"]["macro_f1"][0] <= d["macro_f1"]
