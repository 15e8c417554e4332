import json

import pytest

from mask_keras.config import Config, ConfigError


def test_roundtrip(tmp_path):
    cfg = Config().override(**{"train.task": "age", "preprocess.image_size": [64, 48],
                               "loss.terms": [["f1", 0.4], ["focal", 0.6]]})
    cfg.save(tmp_path / "config.json")
    back = Config.load(tmp_path)
    assert back == cfg
    assert back.preprocess.image_size == (64, 48)
    assert back.loss.terms == (("f1", 0.4), ("focal", 0.6))
    assert json.loads((tmp_path / "config.json").read_text())["train"]["task"] == "age"


def test_ensemble_section_roundtrip_and_old_files_without_it(tmp_path):
    from mask_keras.config import EnsembleConfig

    cfg = Config().override(**{"ensemble.members": [["mask", "efficientnet_mask"], ["age", "resnet152_age"]],
                               "ensemble.vote": "hard", "ensemble.level": "task", "ensemble.tta": True,
                               "ensemble.crops": [0.9, 1.1]}).validate()
    cfg.save(tmp_path / "config.json")
    back = Config.load(tmp_path)
    assert back == cfg and back.ensemble.members == (("mask", "efficientnet_mask"), ("age", "resnet152_age"))
    assert back.ensemble.crops == (0.9, 1.1)
    # a config.json written before the ensemble section existed loads with its defaults
    old = Config().override(**{"train.task": "gender"}).to_dict()
    del old["ensemble"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    back = Config.load(tmp_path / "old.json").validate()
    assert back.ensemble == EnsembleConfig() and back.train.task == "gender"
    assert EnsembleConfig() == EnsembleConfig(members=(), vote="soft", level="auto", tta=False, crops=())


def test_default_validates():
    Config().validate()


@pytest.mark.parametrize("key,value,match", [
    ("train.task", "ages", "unknown task 'ages'.*did you mean 'age'"),
    ("model.backbone", "efficientnet_b9", "unknown backbone"),
    ("loss.name", "focall", "unknown loss 'focall'.*did you mean 'focal'"),
    ("loss.terms", [["f1", 0.4], ["dice", 0.6]], "unknown loss 'dice'"),
    ("augment.preset", "heavy", "unknown augmentation preset"),
    ("train.optimizer", "lion", "unknown optimizer"),
    ("preprocess.crop", "face_crop", "unknown crop"),
    ("preprocess.image_size", [512, 256], "does not fit the centre crop"),
    ("preprocess.image_size", [64], "height, width"),
    ("augment.mixup", 1.5, "probabilities"),
    ("sampling.old_factor", 0.5, "old_factor"),
    ("data.relabel", "some", "unknown data.relabel"),
    ("ensemble.vote", "hrd", r"unknown ensemble.vote 'hrd' \(did you mean 'hard'\?\); choose one of: soft, hard$"),
    ("ensemble.level", "classes",
     r"unknown ensemble.level 'classes' \(did you mean 'class'\?\); choose one of: auto, task, class$"),
    ("ensemble.tta", "yes", "ensemble.tta must be true or false"),
    ("ensemble.crops", [0.9, 5.0], r"ensemble.crops must be scales in \[0.3, 3.0\]"),
    ("ensemble.members", [["mask"]], r"ensemble.members must be \(name, recipe\) pairs"),
    ("ensemble.members", [["m", "a"], ["m", "b"]], r"name\(s\) \['m'\] are given twice"),
])
def test_bad_values_fail_before_training(key, value, match):
    with pytest.raises(ConfigError, match=match):
        Config().override(**{key: value}).validate()


def test_unknown_keys():
    with pytest.raises(ConfigError, match="unknown option in config.train 'epoch'.*did you mean 'epochs'"):
        Config.from_dict({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match="unknown train option 'epoch'"):
        Config().override(**{"train.epoch": 3})
    with pytest.raises(ConfigError, match="unknown config section"):
        Config().override(**{"trian.epochs": 3})


def test_registry_and_did_you_mean():
    from mask_keras import errors, registry

    reg = registry.Registry("widget")

    @reg.register("round")
    def round_():
        pass

    assert reg.register("square", 2) == 2
    assert reg.get("round") is round_ and reg["square"] == 2 and "round" in reg and [1] not in reg
    assert reg.names() == ["round", "square"] and list(reg) == ["round", "square"] and len(reg) == 2
    with pytest.raises(ConfigError,
                       match=r"^unknown widget 'rund' \(did you mean 'round'\?\); choose one of: round, square$"):
        reg.get("rund")
    with pytest.raises(ConfigError, match=r"^unknown widget \['x'\]; choose one of"):
        reg.get(["x"])  # unhashable (a list from JSON): still a ConfigError
    with pytest.raises(ValueError, match="widget 'round' is already registered"):
        reg.register("round", 3)
    assert errors.ConfigError is ConfigError and errors.did_you_mean("zzz", ["round"]) == ""
    # any `import mask_keras.x` imports mask_keras first, which fills the package's registries
    assert "tiny_cnn" in registry.BACKBONES and "base" in registry.AUGMENT_PRESETS and "ce" in registry.LOSSES


def test_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Config.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Config.load(tmp_path / "bad.json")
    # an artifact of 0.1 (models took normalised images): refused with the reason, not misread
    old = Config().to_dict()
    old["preprocess"].update(mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2])
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match="mask_keras 0.1.*0..255 pixels.*Retrain"):
        Config.load(tmp_path / "old.json")
