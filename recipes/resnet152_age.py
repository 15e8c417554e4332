"""Team 000 (AI Tech 4 CV03): the age model.

ResNet152 on the age task with the rare >=60 people oversampled (x3) and MixUp,
trained with the age threshold 59 (validation still scores with 60). Full scale:
``--data-dir DIR``. Without flags: demo scale on the embedded synthetic set with
``tiny_cnn`` from scratch (ResNet152 compiles for minutes on CPU and, without pretrained
weights, learns little in a demo's minutes).
"""
from mask_keras import recipe
from mask_keras.config import Config

FULL = Config().override(**{
    "train.task": "age", "model.backbone": "resnet152", "model.weights": "imagenet",
    "preprocess.crop": "center", "preprocess.crop_size": (400, 300), "preprocess.image_size": (320, 240),
    "augment.preset": "team000", "augment.mixup": 0.5, "sampling.old_factor": 3.0,
    "data.relabel": "certain", "data.age_upper": 59,
    "train.optimizer": "adam", "train.lr": 1e-4, "train.epochs": 15, "train.batch_size": 32,
    "train.early_stopping": 4, "train.out_dir": "runs/resnet152_age",
})
DEMO = {}

if __name__ == "__main__":
    recipe.run(FULL, DEMO, description=__doc__)
