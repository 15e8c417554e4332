"""Team 000 (AI Tech 4 CV03): the gender model of their three-model system.

EfficientNet-B3 on the gender task, Adam 1e-4, per-task augmentation, the certain
relabel fixes applied. Full scale: ``--data-dir DIR`` (the folder holding train/).
Without flags it trains at demo scale on the embedded synthetic set: EfficientNet-B0
from scratch at 96x64 for 3 epochs (a few minutes on 2 CPU cores).
"""
from mask_keras import recipe
from mask_keras.config import Config

FULL = Config().override(**{
    "train.task": "gender", "model.backbone": "efficientnet_b3", "model.weights": "imagenet",
    "preprocess.crop": "center", "preprocess.crop_size": (400, 300), "preprocess.image_size": (320, 240),
    "augment.preset": "team000", "data.relabel": "certain",
    "train.optimizer": "adam", "train.lr": 1e-4, "train.epochs": 15, "train.batch_size": 32,
    "train.early_stopping": 4, "train.out_dir": "runs/efficientnet_gender",
})
DEMO = {"model.backbone": "efficientnet_b0"}

if __name__ == "__main__":
    recipe.run(FULL, DEMO, description=__doc__)
