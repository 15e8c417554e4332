"""Team 000 (AI Tech 4 CV03): the mask-state model.

EfficientNet-B0 on the mask task (easy: ~99% for every team), Adam 1e-4, colour
augmentation for the rare bandana masks. Full scale: ``--data-dir DIR``. Without
flags: demo scale on the embedded synthetic set.
"""
from mask_keras import recipe
from mask_keras.config import Config

FULL = Config().override(**{
    "train.task": "mask", "model.backbone": "efficientnet_b0", "model.weights": "imagenet",
    "preprocess.crop": "center", "preprocess.crop_size": (400, 300), "preprocess.image_size": (256, 192),
    "augment.preset": "team000", "data.relabel": "certain",
    "train.optimizer": "adam", "train.lr": 1e-4, "train.epochs": 10, "train.batch_size": 64,
    "train.early_stopping": 3, "train.out_dir": "runs/efficientnet_mask",
})

if __name__ == "__main__":
    recipe.run(FULL, description=__doc__)
