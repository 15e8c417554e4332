"""Distributed search (mask_keras.tune): workers sharing one SQLite study, crash recovery,
pruning, space validation and the best config, all with cheap objectives (no training)."""
import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import optuna
import pytest

from mask_keras import tune as T
from mask_keras.config import Config, ConfigError

S = optuna.trial.TrialState
SPACE = {"train.lr": ("loguniform", 1e-4, 1e-2), "augment.mixup": ("uniform", 0.0, 0.5),
         "loss.name": ("categorical", ["ce", "focal", "f1_focal"]),
         "preprocess.image_size": ("categorical", [[128, 96], [64, 48]]),
         "model.head_units": ("int", 32, 256, 32)}


def score(cfg: Config) -> float:
    """A quadratic of the sampled parameters, best at lr=1e-3, mixup=0.2, focal, 64x48."""
    return (-(cfg.train.lr * 1000 - 1) ** 2 - (cfg.augment.mixup - 0.2) ** 2
            + (cfg.loss.name == "focal") + (cfg.preprocess.image_size == (64, 48)))


def cheap(cfg, trial):
    return score(cfg)


def load(url, name="s"):
    return optuna.load_study(study_name=name, storage=url)


# A worker process: signals it is ready (imports done), waits for "go", runs tune().
WORKER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    a = json.loads(sys.argv[1])
    sys.path.insert(0, a["tests"])
    from test_tune import SPACE, score
    from mask_keras import tune as T
    from mask_keras.config import Config
    import alembic.migration, sqlalchemy.orm  # noqa: F401  (import before the start line, as tune would)
    Path(a["ready"]).touch()
    while not Path(a["go"]).exists():
        time.sleep(0.02)
    def objective(cfg, trial):
        time.sleep(a["sleep"])
        if trial.number == a["crash_at"]:
            os._exit(3)  # the worker dies mid-trial: no tell, no exception handler
        return score(cfg)
    T.tune(Config(), SPACE, a["n"], storage=a["storage"], study_name="s", objective_fn=objective,
           out_dir=a["out"], heartbeat_interval=1, grace_period=1, poll_interval=0.1)
    # its own objective: the worker never imported the training code (TensorFlow)
    assert "mask_keras.train" not in sys.modules and "tensorflow" not in sys.modules, "training code imported"
""")


def start_workers(tmp_path, n_workers, **kw):
    procs = []
    for i in range(n_workers):
        a = {"tests": str(Path(__file__).parent), "ready": str(tmp_path / f"ready{i}"),
             "go": str(tmp_path / "go"), "sleep": 0.05, "crash_at": -1, **kw}
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(a)], cwd=tmp_path,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = time.time() + 300  # imports (Keras, JAX, optuna) on a loaded 2-core machine
    while not all((tmp_path / f"ready{i}").exists() for i in range(n_workers)):
        assert time.time() < deadline, "workers did not start"
        assert all(p.poll() is None for p in procs), [p.communicate()[0] for p in procs if p.poll() is not None]
        time.sleep(0.05)
    (tmp_path / "go").touch()
    return procs


def wait(procs, timeout=60):
    outs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            outs.append((p.returncode, out))
    finally:
        for p in procs:
            if p.poll() is None:  # a hung worker: end it (only the ones this test started)
                p.kill()
                p.wait()
    return outs


# --------------------------------------------------------------------------- workers
def test_two_workers_share_one_study(tmp_path):
    url, n = f"sqlite:///{tmp_path}/study.db", 12
    procs = start_workers(tmp_path, 2, n=n, storage=url, out=str(tmp_path / "runs"))
    for rc, out in wait(procs):
        assert rc == 0, out
    trials = load(url).get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    complete = [t for t in trials if t.state == S.COMPLETE]
    assert len(complete) == n
    # a trial started in a race after N were running is given up before it samples anything
    assert all(t.user_attrs.get("surplus") and not t.params for t in trials if t.state != S.COMPLETE)
    pids = {t.user_attrs["pid"] for t in complete}
    assert len(pids) == 2, "each worker should have run trials"
    for t in complete:
        cfg = Config.load(Path(t.user_attrs["out_dir"]) / "config.json")
        assert Path(t.user_attrs["out_dir"]).name == f"trial_{t.number:04d}"
        assert t.value == pytest.approx(score(cfg))
    assert Config.load(tmp_path / "runs" / "best_config.json")


def test_crashed_worker_trial_is_failed_and_retried(tmp_path):
    url, n = f"sqlite:///{tmp_path}/study.db", 6
    (rc, out), = wait(start_workers(tmp_path, 1, n=n, storage=url, out=str(tmp_path / "runs"), crash_at=3))
    assert rc == 3, out
    before = {t.number: t for t in load(url).get_trials()}
    assert [before[i].state for i in range(4)] == [S.COMPLETE] * 3 + [S.RUNNING]
    dead = before[3]

    # another worker joins with the same command; the dead trial goes stale after 1 s
    T.tune(Config(), SPACE, n, storage=url, study_name="s", objective_fn=cheap, out_dir=tmp_path / "runs",
           heartbeat_interval=1, grace_period=1, poll_interval=0.1, timeout=30)
    trials = {t.number: t for t in load(url).get_trials()}
    for i in range(3):  # nothing finished was lost
        assert trials[i].state == S.COMPLETE and trials[i].value == before[i].value
        assert trials[i].params == before[i].params
    assert trials[3].state == S.FAIL
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == 3]
    assert len(retries) == 1 and retries[0].state == S.COMPLETE
    assert retries[0].params == dead.params and retries[0].number > 3
    assert sum(t.state == S.COMPLETE for t in trials.values()) == n
    assert T.summarize(load(url))["retried"] == 1


def test_the_retry_of_a_dead_trial_resumes_its_run(tmp_path):
    """Optuna queues a dead worker's trial again with its parameters; the retry trains in the
    dead trial's folder with train.resume, continuing from that run's newest backup."""
    study = optuna.create_study(direction="maximize")
    dead = study.ask()
    for p in T.parse_space(SPACE):
        p.suggest(dead)
    dead.report(0.25, 0)  # two epochs done (and backed up) before the worker died
    dead.report(0.5, 1)
    study.tell(dead, state=S.FAIL)
    # what the heartbeat check does (tune.make_storage's callback): the dead trial queued again
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry()(study, study.trials[0])
    seen = []
    objective = T.make_objective("s", Config(), T.parse_space(SPACE), tmp_path, lambda cfg, t: seen.append(cfg) or 0.5,
                                  n_trials=10, wandb=False)
    study.optimize(objective, n_trials=2)
    retry, fresh = seen
    assert retry.train.resume and retry.train.out_dir == str(tmp_path / "trial_0000")
    assert retry.train.lr == dead.params["train.lr"]
    assert not fresh.train.resume and fresh.train.out_dir == str(tmp_path / "trial_0002")
    # the pruner sees the dead trial's epochs in the retry's curve; the fresh trial starts empty
    assert study.trials[1].intermediate_values == {0: 0.25, 1: 0.5}
    assert study.trials[2].intermediate_values == {}


def test_surplus_rank():
    study = optuna.create_study()
    for v in (0.1, 0.2):
        study.add_trial(optuna.create_trial(value=v))
    a, b = study.ask(), study.ask()  # numbers 2 and 3, RUNNING
    assert not T.search.is_surplus(study, a.number, 3)
    assert T.search.is_surplus(study, b.number, 3)
    study.tell(a, state=S.FAIL)  # a running trial failed: b is needed after all
    assert not T.search.is_surplus(study, b.number, 3)


# --------------------------------------------------------------------------- pruning
def test_pruning_callback_prunes_bad_trial():
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    first = study.ask()
    for epoch, v in enumerate((0.5, 0.6, 0.7)):
        first.report(v, epoch)
    study.tell(first, 0.7)

    good = T.OptunaPruningCallback(study.ask())
    for epoch, v in enumerate((0.55, 0.65, 0.75)):
        good.on_epoch_end(epoch, {"val_macro_f1": v, "loss": 1.0})
    assert good.trial.study.trials[-1].intermediate_values == {0: 0.55, 1: 0.65, 2: 0.75}

    bad = T.OptunaPruningCallback(study.ask())
    bad.on_epoch_end(0, {"val_macro_f1": 0.5})  # not below the median (0.5) yet
    with pytest.raises(optuna.TrialPruned, match="epoch 2"):
        bad.on_epoch_end(1, {"val_macro_f1": 0.2})
    with pytest.raises(KeyError, match="val_macro_f1"):
        bad.on_epoch_end(2, {"loss": 1.0})


def test_pruning_callback_stops_keras_fit():
    """TrialPruned raised in a callback leaves model.fit as TrialPruned (what tune counts)."""
    import keras
    import numpy as np

    class FakeF1(keras.callbacks.Callback):  # what train's own callbacks put in the logs
        def on_epoch_end(self, epoch, logs=None):
            logs["val_macro_f1"] = 0.1 * (epoch + 1)

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.25, n_warmup_steps=1))
    trial = study.ask()
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    with pytest.raises(optuna.TrialPruned, match="after epoch 2"):
        model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=5, verbose=0,
                  callbacks=[FakeF1(), T.OptunaPruningCallback(trial)])
    assert trial.study.trials[-1].intermediate_values == {0: 0.1, 1: 0.2}


def test_pruned_trials_count_towards_n(tmp_path):
    def objective(cfg, trial):
        cb = T.OptunaPruningCallback(trial)
        for epoch in range(3):
            cb.on_epoch_end(epoch, {"val_macro_f1": cfg.augment.mixup * (epoch + 1)})
        return cfg.augment.mixup * 3

    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    study = T.tune(Config(), {"augment.mixup": ("uniform", 0.0, 1.0)}, 8, storage=f"sqlite:///{tmp_path}/db.db",
                   study_name="p", pruner=pruner, seed=0, objective_fn=objective, out_dir=tmp_path / "runs")
    states = T.summarize(study)["states"]
    assert states.get("PRUNED", 0) >= 1
    assert states.get("COMPLETE", 0) + states["PRUNED"] == 8


# --------------------------------------------------------------------------- space checks
@pytest.mark.parametrize("space,match", [
    ({}, "non-empty"),
    ({"train.lr": ("lognormal", 1e-5, 1e-2)}, "unknown distribution.*'lognormal'.*did you mean 'loguniform'"),
    ({"train.lr": ("loguniform", 1e-2, 1e-5)}, "low 0.01 must be below high 1e-05"),
    ({"train.lr": ("loguniform", 0.0, 1e-2)}, "low must be > 0"),
    ({"train.lr": ("uniform", 1e-5)}, "expected"),
    ({"train.lr": ("uniform", "a", 1)}, "finite numbers"),
    ({"train.lr": 0.001}, r"expected \[kind"),
    ({"train.lrr": ("uniform", 0.1, 0.2)}, "unknown train option 'lrr'.*did you mean 'lr'"),
    ({"trian.lr": ("uniform", 0.1, 0.2)}, "unknown config section 'trian'"),
    ({"loss.name": ("categorical", [])}, "at least one choice"),
    ({"loss.name": ("categorical", ["ce", "ce"])}, "duplicate"),
    ({"train.batch_size": ("uniform", 16, 64)}, "integer option"),
    ({"train.batch_size": ("int", 16, 64.5)}, "integers"),
    ({"train.batch_size": ("int", 16, 64, 0)}, "step must be >= 1"),
    ({"train.mixed_precision": ("int", 0, 1)}, "yes/no"),
    ({"train.out_dir": ("categorical", ["a", "b"])}, "out_dir cannot be searched"),
])
def test_bad_space_fails_before_any_trial(tmp_path, space, match):
    calls = []
    with pytest.raises(ConfigError, match=match):
        T.tune(Config(), space, 3, storage=f"sqlite:///{tmp_path}/db/study.db", study_name="s",
               objective_fn=lambda cfg, trial: calls.append(1) or 0.0)
    assert not calls and not (tmp_path / "db").exists()


def test_space_file_and_storage_errors(tmp_path):
    (tmp_path / "space.json").write_text(json.dumps({"train.lr": ["loguniform", 1e-5, 1e-2]}))
    assert T.load_space(tmp_path / "space.json") == {"train.lr": ["loguniform", 1e-5, 1e-2]}
    with pytest.raises(ConfigError, match="not found"):
        T.load_space(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{'train.lr': 1}")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        T.load_space(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="not a database URL"):
        T.make_storage("runs/study.db")
    with pytest.raises(ConfigError, match="psycopg2-binary") as e:
        T.make_storage("postgresql://me:s3cret@localhost/tune")
    assert "s3cret" not in str(e.value)


def test_joining_needs_same_space_and_direction(tmp_path):
    url = f"sqlite:///{tmp_path}/db.db"
    T.open_study(url, "s", space=SPACE)
    T.open_study(url, "s", space=json.loads(json.dumps(SPACE)))  # the same space from a JSON file
    with pytest.raises(ConfigError, match="another search space"):
        T.open_study(url, "s", space={"train.lr": ("uniform", 0.1, 0.2)})
    with pytest.raises(ConfigError, match="maximize, not minimize"):
        T.open_study(url, "s", direction="minimize", space=SPACE)


# --------------------------------------------------------------------------- results
def test_best_config_written_and_loadable(tmp_path):
    root = tmp_path / "runs"
    study = T.tune(Config(), SPACE, 5, storage=f"sqlite:///{tmp_path}/db.db", study_name="b", seed=1,
                   objective_fn=cheap, out_dir=root)
    trials = study.get_trials(states=(S.COMPLETE,))
    assert len(trials) == 5
    best = max(trials, key=lambda t: t.value)
    cfg = Config.load(root / "best_config.json")
    assert score(cfg) == pytest.approx(best.value)
    assert cfg == Config.load(Path(best.user_attrs["out_dir"]) / "config.json").override(
        **{"train.out_dir": str(root / "best")})
    assert isinstance(cfg.preprocess.image_size, tuple)
    s = T.summarize(study)
    assert s["best_trial"] == best.number and s["best_value"] == best.value
    assert s["best_params"]["preprocess.image_size"] in ([128, 96], [64, 48])
    assert s["states"] == {"COMPLETE": 5}
    assert (root / "trials.csv").read_text().count("\n") == 6


def test_seed_reproduces_the_search(tmp_path):
    url = f"sqlite:///{tmp_path}/db.db"
    runs = [T.tune(Config(), SPACE, 3, storage=url, study_name=name, seed=7, objective_fn=cheap,
                   out_dir=tmp_path / name) for name in ("a", "b")]
    assert [t.params for t in runs[0].trials] == [t.params for t in runs[1].trials]


def test_wandb_trials_grouped_by_study(tmp_path):
    seen = []

    def objective(cfg, trial):
        seen.append((cfg.train.wandb, os.environ.get("WANDB_RUN_GROUP")))
        return 0.0

    T.tune(Config(), SPACE, 1, storage=f"sqlite:///{tmp_path}/db.db", study_name="grp", wandb=True,
           objective_fn=objective, out_dir=tmp_path / "runs")
    assert seen == [(True, "grp")]
    assert "WANDB_RUN_GROUP" not in os.environ


def test_worker_gives_up_after_repeated_failures(tmp_path):
    def broken(cfg, trial):
        raise RuntimeError("pipeline missing")

    url = f"sqlite:///{tmp_path}/db.db"
    with pytest.raises(T.TuneError, match="2 trials failed in a row.*pipeline missing"):
        T.tune(Config(), SPACE, 5, storage=url, study_name="f", objective_fn=broken, max_failures=2,
               out_dir=tmp_path / "runs")
    assert [t.state for t in load(url, "f").trials] == [S.FAIL, S.FAIL]


def test_cli_tune(tmp_path, capsys, monkeypatch):
    import argparse

    from mask_keras.cli import add_tune_parser  # the command line lives in cli.py; tune/ does not import it

    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.json").write_text(json.dumps({"train.lr": ["loguniform", 1e-4, 1e-2],
                                                     "loss.name": ["categorical", ["ce", "focal"]]}))
    p = argparse.ArgumentParser()
    add_tune_parser(p.add_subparsers(dest="cmd"))
    args = p.parse_args(["tune", "--space", "space.json", "--trials", "3", "--study", "cli",
                         "--set", "augment.mixup=0.2", "--image-size", "64x48", "--sampler-seed", "0"])
    args.func(args, objective_fn=cheap)
    out = json.loads(capsys.readouterr().out)
    assert out["study"] == "cli" and out["states"] == {"COMPLETE": 3}
    assert (tmp_path / "runs" / "tune" / "study.db").exists()  # the default SQLite storage
    best = Config.load(tmp_path / "runs" / "tune" / "cli" / "best_config.json")
    assert best.augment.mixup == 0.2 and best.preprocess.image_size == (64, 48)
    assert best.loss.name == out["best_params"]["loss.name"]


def test_timeout_starts_no_trial(tmp_path, caplog):
    study = T.tune(Config(), SPACE, 5, storage=f"sqlite:///{tmp_path}/db.db", study_name="t", timeout=0,
                   objective_fn=cheap, out_dir=tmp_path / "runs")
    assert study.trials == []
    assert not (tmp_path / "runs" / "best_config.json").exists()
    assert "no best_config.json" in caplog.text


@pytest.mark.slow
def test_tune_trains_real_trials(tmp_path):
    """Two real (tiny) training trials through train(): artifacts, reported epochs, best config."""
    pytest.importorskip("mask_keras.pipeline")
    from mask_keras.data.synth import generate

    generate(tmp_path / "data", people=12, eval_people=0, seed=0, image_size=(64, 48), workers=1, progress=False)
    base = Config().override(**{
        "data.data_dir": str(tmp_path / "data"), "model.backbone": "tiny_cnn", "model.weights": None,
        "preprocess.crop": "none", "preprocess.image_size": (32, 24), "train.epochs": 2,
        "train.batch_size": 8, "train.steps_per_epoch": 2, "train.verbose": 0, "train.cache": "none"})
    study = T.tune(base, {"train.lr": ("loguniform", 1e-4, 1e-2)}, 2, storage=f"sqlite:///{tmp_path}/db.db",
                   study_name="real", pruner="none", seed=0, out_dir=tmp_path / "runs")
    trials = study.get_trials(states=(S.COMPLETE,))
    assert len(trials) == 2
    for t in trials:
        out = Path(t.user_attrs["out_dir"])
        assert (out / "model.keras").exists()
        assert Config.load(out).train.lr == t.params["train.lr"]
        assert t.value == pytest.approx(json.loads((out / "metrics.json").read_text())["macro_f1"])
        assert sorted(t.intermediate_values) == [0, 1]  # val_macro_f1 reported after each epoch
    assert Config.load(tmp_path / "runs" / "best_config.json").train.lr == study.best_params["train.lr"]


def test_search_names_resolve_on_first_use():
    """The package imports its search loop (the training code) only when one of its names is used."""
    import mask_keras.tune as tune_pkg

    assert tune_pkg.search.TuneError is tune_pkg.TuneError and callable(tune_pkg.tune)
    assert set(tune_pkg._SEARCH) <= set(tune_pkg.__all__)
    with pytest.raises(AttributeError, match="has no attribute 'tunes'"):
        tune_pkg.tunes  # noqa: B018
