"""Team 004 (RecSys-06): ResNet34, weighted cross-entropy, early stopping, K-fold, MixUp on 60+.

One 18-way ResNet34 (keras-hub ResNet34-vd: keras-hub ships no plain ResNet34 preset)
with class-weighted cross-entropy, MixUp applied only to pairs involving a >=60 face
(``augment.mix_old_only``), albumentations-like augmentation (preset ``team004``), the
full 512x384 images, early stopping on the validation loss (the best checkpoint is still
chosen by validation macro F1), person-level stratified 5-fold; the fold models
soft-vote the submission ("one model run several times, soft voting").

Full scale: ``--data-dir DIR``. Without flags: demo scale on the embedded synthetic set
(``tiny_cnn`` from scratch at 96x64, 3 folds of 4 epochs: ResNet34 at 512x384 takes too
long on CPU); writes ``runs/resnet34_weighted_ce/submission.csv`` and its score.
"""
from mask_keras import recipe
from mask_keras.config import Config

FULL = Config().override(**{
    "train.task": "multi", "model.backbone": "resnet34", "model.weights": "imagenet",
    "loss.name": "ce", "sampling.class_weights": True,
    "augment.preset": "team004", "augment.mixup": 0.5, "augment.mix_old_only": True,
    "preprocess.crop": "none", "preprocess.image_size": (512, 384),
    "data.folds": 5, "train.early_stopping": 3, "train.early_stopping_monitor": "val_loss",
    "train.optimizer": "adam", "train.lr": 1e-4, "train.epochs": 20, "train.batch_size": 32,
    "train.out_dir": "runs/resnet34_weighted_ce",
})
DEMO = {"data.folds": 3}


def main(argv=None):
    return recipe.run_ensemble({"resnet34": (FULL, DEMO)}, argv, __doc__, vote="soft")


if __name__ == "__main__":
    main()
