"""Resume: a run killed with SIGKILL (mid-epoch, or while its backup is written) and resumed
ends with the same weights, optimizer state, history and metrics as an uninterrupted run."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from mask_keras.config import Config, ConfigError

# 20 people, random augmentation layers and MixUp on: the seeds, the data order and the mixer's
# generator must all come back for the resumed run to match
FAST = {"model.backbone": "tiny_cnn", "model.weights": None, "preprocess.image_size": (32, 24),
        "preprocess.crop": "none", "train.batch_size": 16, "train.lr": 3e-3, "train.verbose": 0,
        "augment.preset": "base", "augment.mixup": 0.5, "train.task": "mask", "train.epochs": 2,
        "data.max_people": 20, "train.precise_bn": 16, "train.save_last": True, "train.keep_top_k": 2}

# a training process that kills itself: at a batch of an epoch, or half-way through writing the
# backup of an epoch (arrays.npz cut short), as a preempted GPU job would be
_CHILD = r"""
import json, os, signal, sys
import numpy as np
import keras
import mask_keras
from mask_keras import resume
from mask_keras.config import Config
from mask_keras.train import train

cfg = Config.from_dict(json.loads(sys.argv[1]))
kill = json.loads(sys.argv[2])


class Kill(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if kill.get("epoch") == self.epoch and kill.get("batch") == batch:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch


if "backup" in kill:
    savez = np.savez

    def cut_short(f, **arrays):
        if resume.__dict__.get("_writes", 0) + 1 == kill["backup"]:
            savez(f, **arrays)
            f.truncate(f.tell() // 2)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        resume._writes = resume.__dict__.get("_writes", 0) + 1
        return savez(f, **arrays)

    np.savez = cut_short
train(cfg, callbacks=[Kill()])
print("not killed")
"""


def _cfg(root, out, **over):
    return Config().override(**{**FAST, "data.data_dir": str(root), "train.out_dir": str(out), **over})


def _killed_run(cfg, kill: dict):
    p = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cfg.to_dict()), json.dumps(kill)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stdout[-2000:], p.stderr[-3000:])


def _final_arrays(out):
    from mask_keras import resume

    b = resume.load_latest(out)
    return b.epochs, b.arrays


def _partial_files(out):
    return [p for p in out.rglob("*") if ".tmp" in p.name]


@pytest.fixture(scope="module")
def uninterrupted(synth_root, tmp_path_factory):
    from mask_keras.train import train

    out = tmp_path_factory.mktemp("resume") / "whole"
    res = train(_cfg(synth_root, out))
    return out, res


def _assert_same_run(out, ref_out, ref_res, res):
    epochs, arrays = _final_arrays(out)
    ref_epochs, ref_arrays = _final_arrays(ref_out)
    assert epochs == ref_epochs == FAST["train.epochs"]
    assert set(arrays) == set(ref_arrays)
    # same program, same inputs, same order: the same bits (weights, BN statistics, seed states,
    # Adam's moments and step count)
    for k in ref_arrays:
        if k != "paths":  # (auto-numbered names differ from process to process)
            np.testing.assert_array_equal(arrays[k], ref_arrays[k], err_msg=k)
    assert int(arrays["optimizer/iteration"]) == 2 * 7  # 112 training images / 16 = 7 steps an epoch
    # history.csv reads as one run; metrics.json the same numbers
    h, ref_h = pd.read_csv(out / "history.csv"), pd.read_csv(ref_out / "history.csv")
    assert h["epoch"].tolist() == [0, 1]
    pd.testing.assert_frame_equal(h, ref_h)
    m, ref_m = (json.loads((d / "metrics.json").read_text()) for d in (out, ref_out))
    for k in ("macro_f1", "accuracy", "epochs_run"):
        assert m[k] == ref_m[k], k
    assert res.metrics["macro_f1"] == ref_res.metrics["macro_f1"]
    # checkpoints: the same best and top-k epochs; no partial file anywhere
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == \
        sorted(p.name for p in (ref_out / "checkpoints").iterdir())
    assert (out / "last.keras").is_file() and not _partial_files(out)


@pytest.mark.slow
def test_killed_mid_epoch_then_resumed_equals_an_uninterrupted_run(synth_root, tmp_path, uninterrupted, capsys):
    """Mid-epoch backups every 3 steps (7 steps an epoch): killed after 5 steps of the second
    epoch, the run continues from step 3 of it (the epoch's first 3 batches drawn, not
    trained on; its loss and metric totals restored) and ends as the uninterrupted run did."""
    from mask_keras.train import train

    ref_out, ref_res = uninterrupted
    out = tmp_path / "run"
    cfg = _cfg(synth_root, out, **{"train.backup_steps": 3})
    _killed_run(cfg, {"epoch": 1, "batch": 4})  # in the middle of the second (last) epoch
    # the newest two of epoch_0000_step_000003, _000006, epoch_0001, epoch_0001_step_000003
    assert sorted(p.name for p in (out / "backup").iterdir()) == ["epoch_0001", "epoch_0001_step_000003"]
    assert len(pd.read_csv(out / "history.csv")) == 1
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        res = train(cfg.override(**{"train.resume": True, "train.verbose": 1}))
    assert not [w for w in seen if "ran out of data" in str(w.message)]  # the short resumed epoch is by design
    assert "after epoch 1 of 2 and 3 steps of the next (backup epoch_0001_step_000003)" in capsys.readouterr().out
    _assert_same_run(out, ref_out, ref_res, res)  # bit-equal weights, optimizer; the same history.csv
    # the resumed epoch's step 6 was backed up too, then the epoch's end
    assert sorted(p.name for p in (out / "backup").iterdir()) == ["epoch_0001_step_000006", "epoch_0002",
                                                                  "finished.json"]

    # resumed again: finished, nothing to do (no epoch trained, model.keras untouched)
    stamp = (out / "model.keras").stat().st_mtime_ns
    again = train(cfg.override(**{"train.resume": True}))
    assert again.metrics == json.loads((out / "metrics.json").read_text())
    assert (out / "model.keras").stat().st_mtime_ns == stamp
    # more epochs than the run had: only the number of epochs may change, and it continues
    longer = train(cfg.override(**{"train.resume": True, "train.epochs": 3}))
    assert len(pd.read_csv(out / "history.csv")) == 3 and longer.metrics["epochs_run"] == 3


@pytest.mark.slow
def test_killed_while_writing_a_backup_then_resumed(synth_root, tmp_path, uninterrupted, caplog):
    from mask_keras.train import train

    ref_out, ref_res = uninterrupted
    out = tmp_path / "run"
    cfg = _cfg(synth_root, out)
    _killed_run(cfg, {"backup": 2})  # arrays.npz of epoch 2 (the last) half written, then killed
    assert sorted(p.name for p in (out / "backup").iterdir() if not p.name.startswith(".")) == ["epoch_0001"]
    assert _partial_files(out)  # the killed write's temporary folder is there ...
    res = train(cfg.override(**{"train.resume": True}))
    _assert_same_run(out, ref_out, ref_res, res)  # ... and gone: resumed from epoch 1's backup


def test_a_damaged_backup_falls_back_to_the_previous_one_or_stops(tmp_path, caplog):
    from mask_keras import resume

    out = tmp_path / "run"
    for n, value in ((1, 1.0), (2, 2.0)):
        st = resume.RunState(out, {"train": {"epochs": 3}}, checkpoint=None)
        st.arrays = {"model/0": np.full((3,), value, "float32"), "optimizer/iteration": np.array(7 * n)}
        st.history = {"loss": [1.0] * n}
        st.write_backup(n)
    assert resume.load_latest(out).epochs == 2
    newest = out / "backup" / "epoch_0002" / "arrays.npz"
    newest.write_bytes(newest.read_bytes()[:40])  # cut short
    b = resume.load_latest(out)
    assert b.epochs == 1 and b.arrays["model/0"][0] == 1.0
    assert "does not match its checksum" in caplog.text
    (out / "backup" / "epoch_0001" / "state.json").unlink()
    with pytest.raises(resume.ResumeError, match=r"epoch_0002.*checksum.*epoch_0001.*incomplete.*Delete"):
        resume.load_latest(out)
    assert resume.load_latest(tmp_path / "never_trained") is None


def test_a_backup_whose_state_names_too_few_arrays_is_skipped(tmp_path, caplog):
    """A state.json that does not name every array (edited, another version) is a damaged backup, not a crash."""
    from mask_keras import resume

    out = tmp_path / "run"
    for n in (1, 2):
        st = resume.RunState(out, {"train": {"epochs": 3}}, checkpoint=None)
        st.arrays = {"model/0": np.full((3,), float(n), "float32"), "optimizer/iteration": np.array(7 * n)}
        st.history = {"loss": [1.0] * n}
        st.write_backup(n)
    state_file = out / "backup" / "epoch_0002" / "state.json"
    state = json.loads(state_file.read_text())
    state["array_names"] = state["array_names"][:1]
    state_file.write_text(json.dumps(state))
    b = resume.load_latest(out)
    assert b.epochs == 1 and b.arrays["model/0"][0] == 1.0
    assert "names 1 arrays but arrays.npz holds 2" in caplog.text


def test_a_different_config_is_named_and_nothing_to_resume_starts_fresh(synth_root, tmp_path, capsys):
    from mask_keras import resume

    out = tmp_path / "run"
    cfg = _cfg(synth_root, out)
    st = resume.RunState(out, cfg.to_dict(), checkpoint=None)
    st.arrays = {"model/0": np.zeros(1, "float32")}
    st.write_backup(1)
    b = resume.load_latest(out)
    resume.check_config(b, cfg.override(**{"train.epochs": 9, "train.resume": True}).to_dict(), out)  # allowed
    with pytest.raises(ConfigError, match=r"train\.lr: 0\.003 -> 0\.01; train\.seed: 42 -> 1.*"
                                          r"may change train\.epochs and how the run is run: train\.resume, train\.verbose"):
        resume.check_config(b, cfg.override(**{"train.lr": 0.01, "train.seed": 1}).to_dict(), out)

    from mask_keras.train import _resume_point

    fresh = _cfg(synth_root, tmp_path / "empty", **{"train.resume": True, "train.verbose": 1})
    assert _resume_point(fresh, tmp_path / "empty", chief=True) is None
    assert "nothing to resume" in capsys.readouterr().out


def test_the_ensemble_section_does_not_stop_a_resume(synth_root, tmp_path):
    """How a recipe combines the trained models is not what a run trains: a backup written before
    the ensemble section existed, or with other ensemble settings, resumes."""
    from mask_keras import resume

    out = tmp_path / "run"
    cfg = _cfg(synth_root, out)
    old = cfg.to_dict()
    del old["ensemble"]
    st = resume.RunState(out, old, checkpoint=None)
    st.arrays = {"model/0": np.zeros(1, "float32")}
    st.write_backup(1)
    b = resume.load_latest(out)
    resume.check_config(b, cfg.to_dict(), out)
    resume.check_config(b, cfg.override(**{"ensemble.vote": "hard", "ensemble.level": "class", "ensemble.tta": True,
                                            "ensemble.crops": [0.9], "ensemble.members": [["a", "b"]]}).to_dict(), out)
    with pytest.raises(ConfigError, match=r"train\.lr"):
        resume.check_config(b, cfg.override(**{"train.lr": 0.01, "ensemble.vote": "hard"}).to_dict(), out)


@pytest.mark.slow
def test_resume_across_the_freeze_boundary(synth_root, tmp_path):
    """Frozen backbone for one epoch, then everything: stopped in the first unfrozen epoch (here
    by an exception in this process, as a crash would; the SIGKILL tests above cover the kill),
    the run resumes from the backup taken at the end of the frozen phase (a new optimizer, the
    step count carried on) and ends as the uninterrupted run does."""
    import keras

    from mask_keras.models import backbones as B
    from mask_keras.train import train

    weights = tmp_path / "tiny.weights.h5"
    keras.utils.set_random_seed(0)
    B.tiny_cnn((32, 24, 3)).save_weights(weights)
    over = {"model.weights": str(weights), "model.freeze_epochs": 1, "train.keep_top_k": 0,
            "augment.mixup": 0.0}
    ref = train(_cfg(synth_root, tmp_path / "whole", **over))
    cfg = _cfg(synth_root, tmp_path / "run", **over)
    with pytest.raises(_Crash):
        train(cfg, callbacks=[_crash_at(epoch=1, batch=2)])
    state = json.loads((tmp_path / "run" / "backup" / "epoch_0001" / "state.json").read_text())
    assert state["phase"] == "frozen" and state["epochs_done"] == 1
    res = train(cfg.override(**{"train.resume": True}))
    _, a = _final_arrays(tmp_path / "run")
    _, b = _final_arrays(tmp_path / "whole")
    for k in b:
        if k != "paths":
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert res.history == ref.history


class _Crash(RuntimeError):
    pass


def _crash_at(epoch: int, batch: int, error=_Crash):
    """A Keras callback that raises ``error`` after a batch of an epoch: a crash, or a Ctrl-C
    (``KeyboardInterrupt``), in the middle of training."""
    import keras

    class CrashAt(keras.callbacks.Callback):
        def on_epoch_begin(self, e, logs=None):
            self.epoch = e

        def on_train_batch_end(self, b, logs=None):
            if (self.epoch, b) == (epoch, batch):
                raise error("stopped here by the test")

    return CrashAt()


@pytest.mark.slow
def test_kfold_resumes_mid_fold_from_the_command_line(synth_root, tmp_path, capsys, monkeypatch):
    """``mask-keras train --folds 2`` stopped by Ctrl-C inside fold 1, then ``--resume``: fold 0
    is kept, fold 1 continues from its backup, and the summary covers both folds."""
    import mask_keras.train as T
    from mask_keras.cli import main

    out = tmp_path / "kf"
    args = ["train", "--data-dir", str(synth_root), "--out-dir", str(out), "--folds", "2", "--backbone", "tiny_cnn",
            "--weights", "none", "--image-size", "32x24", "--epochs", "2", "--batch-size", "16", "--task", "mask",
            "--max-people", "20", "--lr", "0.003"]
    for kv in ("preprocess.crop=none", "augment.preset=none", "train.precise_bn=16", "train.verbose=0"):
        args += ["--set", kv]
    orig = T._callbacks

    def with_ctrl_c(cfg, out, *a, **k):  # Ctrl-C at the third batch of fold 1's second epoch
        cbs, st = orig(cfg, out, *a, **k)
        return (cbs + [_crash_at(epoch=1, batch=2, error=KeyboardInterrupt)] if cfg.data.fold == 1 else cbs), st

    monkeypatch.setattr(T, "_callbacks", with_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    monkeypatch.setattr(T, "_callbacks", orig)
    fold0 = out / "fold_0"
    stamp = (fold0 / "model.keras").stat().st_mtime_ns
    assert (out / "fold_1" / "backup" / "epoch_0001").is_dir()
    first = pd.read_csv(out / "fold_1" / "history.csv")
    assert len(first) == 1
    assert main(args + ["--resume"]) == 0
    assert (fold0 / "model.keras").stat().st_mtime_ns == stamp  # the finished fold was kept
    hist = pd.read_csv(out / "fold_1" / "history.csv")  # continued, not restarted
    assert len(hist) == 2
    pd.testing.assert_frame_equal(hist.iloc[:1], first)
    summary = json.loads((out / "kfold_summary.json").read_text())
    assert summary["oof_images"] == sum(len(pd.read_csv(out / f"fold_{f}" / "val_predictions.csv")) for f in (0, 1))
    assert not _partial_files(out)


def test_mix_off_epoch_stops_mixing(synth_root):
    """augment.mix_off_epoch: the mixer's switch, read by the dataset on every batch."""
    from mask_keras import pipeline
    from mask_keras.callbacks import MixOff
    from mask_keras.train import prepare_tables

    cfg = _cfg(synth_root, "unused", **{"augment.mixup": 1.0, "augment.mix_off_epoch": 2})
    train_t, _ = prepare_tables(cfg)
    ds, ds_info = pipeline.make_dataset(train_t, cfg, training=True, verbose=0)
    cb = MixOff(ds_info.mixer, 2)
    soft = []
    for epoch in range(3):
        cb.on_epoch_begin(epoch)
        _, y = next(iter(ds))
        soft.append(bool(np.any((np.asarray(y) > 0) & (np.asarray(y) < 1))))
    assert soft == [True, False, False]  # epoch 1 mixed (probability 1); from epoch 2 on, clean labels
    with pytest.raises(ConfigError, match="mix_off_epoch"):
        Config().override(**{"augment.mix_off_epoch": -1}).validate()


def test_every_entry_point_has_the_flag():
    from mask_keras.cli import build_parser, config_from_args, ensemble_parser, recipe_parser

    for p, argv in ((build_parser(), ["train", "--resume"]), (recipe_parser("a recipe"), ["--resume"]),
                    (ensemble_parser("an ensemble", ["mask"]), ["--resume"])):
        assert config_from_args(p.parse_args(argv)).train.resume is True


def test_skip_first_batches_continues_an_epoch_in_the_same_order(synth_root):
    """The wrapped dataset's next iterator gives exactly the rest of the epoch the original
    would have given (same shuffle draw, same MixUp), the one after that a whole epoch."""
    from mask_keras import pipeline
    from mask_keras.train import _advance, prepare_tables

    cfg = _cfg(synth_root, "unused")
    train_t, _ = prepare_tables(cfg)

    def epochs(ds, n):
        return [[np.asarray(y) for _, y in ds] for _ in range(n)]

    ref = epochs(pipeline.make_dataset(train_t, cfg, training=True, verbose=0)[0], 3)
    ds, ds_info = pipeline.make_dataset(train_t, cfg, training=True, verbose=0)
    _advance(ds, 1)
    skipped, release = pipeline.skip_first_batches(ds, 3)
    assert ds_info.num_steps == 7 and ds_info.mixer is not None
    rest = epochs(skipped, 1)[0]
    release()
    whole = epochs(skipped, 1)[0]
    assert len(rest) == 4 and len(whole) == 7
    for got, want in zip(rest + whole, ref[1][3:] + ref[2]):
        np.testing.assert_array_equal(got, want)  # the mixed (soft) targets: order and mixing


def test_backup_steps_is_checked():
    assert Config().override(**{"train.backup_steps": 50}).validate().train.backup_steps == 50
    with pytest.raises(ConfigError, match=r"train.backup_steps -1 must be >= 0"):
        Config().override(**{"train.backup_steps": -1}).validate()
    with pytest.raises(ConfigError, match="needs train.backup on"):
        Config().override(**{"train.backup_steps": 5, "train.backup": False}).validate()
    with pytest.raises(ConfigError, match="unset train.steps_per_epoch"):
        Config().override(**{"train.backup_steps": 5, "train.steps_per_epoch": 10}).validate()
