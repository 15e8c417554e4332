"""Every team recipe runs end to end at a tiny scale: trains, writes a submission that evaluate scores."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mask_keras import recipe
from mask_keras.config import Config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
TEAM_RECIPES = ["three_task_ensemble", "resnext50_f1focal", "efficientnet_b2_f1", "swin_efficientnet_ensemble",
                "resnet34_weighted_ce"]
#: shrink any recipe: the fast CPU backbone, tiny images, few people, one epoch
TINY = ["--epochs", "1", "--image-size", "32x24", "--max-people", "20", "--set", "model.backbone=tiny_cnn",
        "--set", "model.weights=null", "--set", "train.verbose=0"]


def _run(name, root, out, *extra):
    mod = recipe.load_recipe(RECIPES / f"{name}.py")
    return mod, mod.main(["--data-dir", str(root), "--out-dir", str(out), *TINY, *extra])


def _check_submission(res, root):
    from mask_keras.cli import main

    sub = pd.read_csv(res.out_dir / "submission.csv")
    info = pd.read_csv(root / "eval" / "info.csv")
    assert sub["ImageID"].tolist() == info["ImageID"].tolist() and sub["ans"].between(0, 17).all()
    assert main(["evaluate", "--gt", str(root / "eval" / "gt.csv"), "--pred", str(res.out_dir / "submission.csv"),
                 "--json"]) == 0
    summary = json.loads((res.out_dir / "ensemble.json").read_text())
    assert summary["score"]["macro_f1"] == pytest.approx(res.metrics["macro_f1"])
    # the bar a learned model must clear: the training set's most frequent class for every eval image
    from mask_keras import labels as L
    from mask_keras.data import read_train
    from mask_keras.evaluate import evaluate

    majority = int(read_train(root)["label"].value_counts().idxmax())
    const = evaluate(root / "eval" / "gt.csv", sub.assign(ans=majority))
    assert summary["constant_answer"] == {"class": L.class_name(majority), "label": majority,
                                          "macro_f1": pytest.approx(const["macro_f1"]),
                                          "accuracy": pytest.approx(const["accuracy"])}
    assert (res.out_dir / "eval" / "report.txt").is_file() and (res.out_dir / "comparison.csv").is_file()
    return summary


@pytest.mark.parametrize("name", sorted(p.stem for p in RECIPES.glob("*.py")))
def test_demo_configs_validate(name):
    """The demo and full configs of every recipe and of its members are valid (without training or data)."""
    mod = recipe.load_recipe(RECIPES / f"{name}.py")
    for demo in (False, True):
        mod.get_config(demo=demo).validate()
        for cfg in recipe.member_configs(mod.get_config, demo).values():
            cfg.validate()
    assert mod.__doc__ and "demo" in mod.__doc__.lower() and callable(mod.main)


#: the shared demo scale as the recipes stated it before get_config (recipe.DEMO)
DEMO = {"preprocess.image_size": (96, 64), "data.max_people": 300, "train.epochs": 4, "train.batch_size": 32,
        "model.weights": None, "model.backbone": "tiny_cnn", "train.mixed_precision": False, "train.lr": 3e-3,
        "train.warmup_epochs": 0.5, "model.bn_momentum": 0.9}


def test_get_config_keeps_the_teams_values():
    """get_config() and get_config(demo=True) give the values the recipes stated as FULL/DEMO overrides."""
    from mask_keras.config import EnsembleConfig

    age = {"train.task": "age", "model.backbone": "resnet152", "model.weights": "imagenet",
           "preprocess.crop": "center", "preprocess.crop_size": (400, 300), "preprocess.image_size": (320, 240),
           "augment.preset": "team000", "augment.mixup": 0.5, "sampling.old_factor": 3.0,
           "data.relabel": "certain", "data.age_upper": 59,
           "train.optimizer": "adam", "train.lr": 1e-4, "train.epochs": 15, "train.batch_size": 32,
           "train.early_stopping": 4, "train.out_dir": "runs/resnet152_age"}
    mod = recipe.load_recipe(RECIPES / "resnet152_age.py")
    assert mod.get_config() == Config().override(**age)
    assert mod.get_config(demo=True) == Config().override(**{**age, **DEMO})

    common = {"train.task": "multi", "model.weights": "imagenet", "model.head": "shallow", "model.head_units": 256,
              "model.freeze_epochs": 2, "loss.name": "ce", "augment.preset": "base",
              "preprocess.crop": "center", "preprocess.crop_size": (400, 300), "preprocess.image_size": (320, 240),
              "train.optimizer": "adam", "train.lr": 1e-4, "train.epochs": 10, "train.batch_size": 32,
              "train.out_dir": "runs/swin_efficientnet_ensemble"}
    ens = EnsembleConfig(members=(("swin", "swin_efficientnet_ensemble:swin"),
                                  ("efficientnet", "swin_efficientnet_ensemble:efficientnet")),
                         vote="soft", level="class", tta=True)
    mod = recipe.load_recipe(RECIPES / "swin_efficientnet_ensemble.py")
    for demo, backbones in ((False, {"swin": "swin", "efficientnet": "efficientnetv2_s"}),
                            (True, {"swin": "tiny_cnn", "efficientnet": "efficientnet_b0"})):
        assert mod.get_config(demo=demo).ensemble == ens
        members = recipe.member_configs(mod.get_config, demo)
        assert list(members) == ["swin", "efficientnet"]
        for name, cfg in members.items():
            want = Config().override(**{**common, **(DEMO if demo else {}), "model.backbone": backbones[name]})
            assert cfg.to_dict() == {**want.to_dict(), "ensemble": cfg.to_dict()["ensemble"]}, (demo, name)

    # members from other recipes keep their own settings; a recipe without members is its own one member
    mod = recipe.load_recipe(RECIPES / "three_task_ensemble.py")
    assert mod.get_config().ensemble == EnsembleConfig(
        members=(("mask", "efficientnet_mask"), ("gender", "efficientnet_gender"), ("age", "resnet152_age")),
        vote="soft", level="task", tta=True)
    assert recipe.member_configs(mod.get_config, demo=True)["age"] == Config().override(**{**age, **DEMO})
    for name, member, ens in (("efficientnet_b2_f1", "efficientnet_b2", EnsembleConfig(vote="hard")),
                              ("resnet34_weighted_ce", "resnet34", EnsembleConfig()),
                              ("resnext50_f1focal", "resnext50", EnsembleConfig(tta=True))):
        mod = recipe.load_recipe(RECIPES / f"{name}.py")
        assert list(recipe.member_configs(mod.get_config)) == [member] and mod.get_config().ensemble == ens


def test_ensemble_settings_come_from_the_config_and_the_flags_override_them(tmp_path):
    """Nothing trained (every member loaded, --no-submit): the resolved ensemble and member configs."""
    mod = recipe.load_recipe(RECIPES / "three_task_ensemble.py")
    loads = [f"--load={t}={tmp_path / t}" for t in ("mask", "gender", "age")]
    res = mod.main(["--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "e"), "--no-submit", *loads])
    assert (res.ensemble.vote, res.ensemble.level, res.ensemble.tta) == ("soft", "task", True)
    assert {n: (c.train.task, c.train.out_dir) for n, c in res.configs.items()} == {
        t: (t, str(tmp_path / "e" / t)) for t in ("mask", "gender", "age")}
    res = mod.main(["--data-dir", str(tmp_path), "--no-submit", *loads, "--vote", "hard", "--level", "class",
                    "--no-tta", "--set", "ensemble.crops=[0.9, 1.1]"])
    assert (res.ensemble.vote, res.ensemble.level, res.ensemble.tta, res.ensemble.crops) == (
        "hard", "class", False, (0.9, 1.1))
    assert res.out_dir == Path("runs/three_task_ensemble")  # the recipe's train.out_dir
    from mask_keras.config import ConfigError

    with pytest.raises(ConfigError, match=r"unknown ensemble.vote 'hrd' \(did you mean 'hard'\?\); choose one of: soft, hard"):
        mod.main(["--data-dir", str(tmp_path), "--no-submit", *loads, "--set", "ensemble.vote=hrd"])


@pytest.mark.slow
def test_three_task_ensemble_end_to_end_then_loads(synth_root, tmp_path, capsys, monkeypatch):
    out = tmp_path / "t000"
    _, res = _run("three_task_ensemble", synth_root, out)
    summary = _check_submission(res, synth_root)
    assert {n: m["task"] for n, m in summary["members"].items()} == {"mask": "mask", "gender": "gender", "age": "age"}
    assert summary["tta"] and summary["level"] == "task"
    text = capsys.readouterr().out
    for line in ("macro F1:", "F1 mask:", "F1 gender:", "F1 age:", "ensemble against each model"):
        assert line in text
    table = pd.read_csv(out / "comparison.csv")
    assert table["model"].tolist() == ["mask", "gender", "age", "ensemble"]
    m = res.metrics
    ens = table.set_index("model").loc["ensemble"]
    assert [ens[k] for k in ("macro_f1", "f1_mask", "f1_gender", "f1_age")] == pytest.approx(
        [m[k] for k in ("macro_f1", "f1_mask", "f1_gender", "f1_age")])
    # the members keep their own recipe's settings (age: threshold 59, 60+ oversampling, MixUp)
    age = Config.load(out / "age")
    assert (age.data.age_upper, age.sampling.old_factor, age.augment.mixup) == (59, 3.0, 0.5)

    # loading the three artifacts instead of training them gives the same submission
    import mask_keras.train

    monkeypatch.setattr(mask_keras.train, "train", lambda *a, **k: pytest.fail("trained instead of loading"))
    _, again = _run("three_task_ensemble", synth_root, tmp_path / "loaded",
                    *[f"--load={t}={out / t}" for t in ("mask", "gender", "age")])
    assert again.prediction.submission.equals(res.prediction.submission)
    loaded = json.loads((tmp_path / "loaded" / "ensemble.json").read_text())["members"]
    assert all(m["loaded"] for m in loaded.values()) and loaded["age"]["dir"] == str(out / "age")


@pytest.mark.slow
@pytest.mark.parametrize("name,extra,check", [
    ("resnext50_f1focal", [], {"loss.terms": (("f1", 0.4), ("focal", 0.6)), "sampling.balance": "class",
                               "sampling.class_weights": True, "data.age_upper": 58,
                               "preprocess.crop_size": (400, 200), "augment.preset": "team001",
                               "train.mixed_precision": True, "model.head": "shallow"}),
    ("efficientnet_b2_f1", ["--folds", "2"], {"loss.name": "f1", "data.relabel": "all",
                                              "augment.preset": "team002", "data.folds": 2}),
    ("swin_efficientnet_ensemble", [], {"model.head": "shallow", "model.freeze_epochs": 2}),
    ("resnet34_weighted_ce", ["--folds", "2"], {"sampling.class_weights": True, "augment.mix_old_only": True,
                                                "train.early_stopping": 3, "data.folds": 2}),
])
def test_team_recipe_end_to_end(name, extra, check, synth_root, tmp_path):
    _, res = _run(name, synth_root, tmp_path / name, *extra)
    summary = _check_submission(res, synth_root)
    for cfg in res.configs.values():
        d = cfg.to_dict()
        for key, want in check.items():
            section, opt = key.split(".")
            got = d[section][opt]
            assert (tuple(map(tuple, got)) if key == "loss.terms" else tuple(got) if isinstance(got, list)
                    else got) == want, key
    if name == "efficientnet_b2_f1":
        assert summary["vote"] == "hard" and len(summary["models"]) == 2  # the two folds vote
        assert json.loads((res.out_dir / "kfold_summary.json").read_text())["k"] == 2
    if name == "swin_efficientnet_ensemble":
        assert list(summary["members"]) == ["swin", "efficientnet"] and summary["level"] == "class"
        assert pd.read_csv(res.out_dir / "comparison.csv")["model"].tolist() == ["swin", "efficientnet", "ensemble"]
    if name == "resnet34_weighted_ce":
        assert summary["vote"] == "soft" and len(summary["models"]) == 2


def test_load_of_an_unknown_member_is_a_clear_error(tmp_path):
    from mask_keras.config import ConfigError

    mod = recipe.load_recipe(RECIPES / "three_task_ensemble.py")
    with pytest.raises(ConfigError, match=r"--load: unknown member\(s\) \['colour'\]; members: mask, gender, age"):
        mod.main(["--data-dir", str(tmp_path), "--load", f"colour={tmp_path}"])
