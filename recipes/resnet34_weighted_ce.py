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


def get_config(demo: bool = False) -> Config:
    c = Config()
    c.train.task = "multi"
    c.model.backbone = "resnet34"
    c.model.weights = "imagenet"
    c.loss.name = "ce"
    c.sampling.class_weights = True
    c.augment.preset = "team004"
    c.augment.mixup = 0.5
    c.augment.mix_old_only = True
    c.preprocess.crop = "none"
    c.preprocess.image_size = (512, 384)
    c.data.folds = 5
    c.train.early_stopping = 3
    c.train.early_stopping_monitor = "val_loss"
    c.train.optimizer = "adam"
    c.train.lr = 1e-4
    c.train.epochs = 20
    c.train.batch_size = 32
    c.train.out_dir = "runs/resnet34_weighted_ce"
    c.ensemble.vote = "soft"  # the fold models soft-vote the submission
    if demo:
        recipe.apply_demo(c)
        c.data.folds = 3
    return c


def main(argv=None):
    return recipe.run_ensemble(get_config, argv, __doc__)


if __name__ == "__main__":
    main()
