"""Team 002 (AI Tech 6 CV-02): EfficientNet-B2, F1 loss, stratified 5-fold, hard voting.

One 18-way EfficientNet-B2 trained on the relabeled data (``data.relabel="all"``: the
certain fixes plus the less certain gender/age ones; +0.007 F1 for them) with the soft
macro-F1 loss (it beat focal and label smoothing), their imgaug-style augmentation
(preset ``team002``: rotate +-5, flip, Gaussian blur, Gaussian noise, colour jitter), on
person-level stratified 5-fold; the five fold models hard-vote the submission (tie:
highest mean probability among the tied classes). The OOF macro F1 is reported.

Full scale: ``--data-dir DIR``. Without flags: demo scale on the embedded synthetic set
(``tiny_cnn`` from scratch at 96x64, 3 folds of 4 epochs: B2 from scratch learns little in
a CPU demo's minutes, and five folds take too long); writes
``runs/efficientnet_b2_f1/submission.csv`` and its score.
"""
from mask_keras import recipe
from mask_keras.config import Config


def get_config(demo: bool = False) -> Config:
    c = Config()
    c.train.task = "multi"
    c.model.backbone = "efficientnet_b2"
    c.model.weights = "imagenet"
    c.loss.name = "f1"
    c.data.relabel = "all"
    c.data.folds = 5
    c.augment.preset = "team002"
    c.preprocess.crop = "center"
    c.preprocess.crop_size = (400, 300)
    c.preprocess.image_size = (320, 240)
    c.train.optimizer = "adam"
    c.train.lr = 1e-4
    c.train.epochs = 10
    c.train.batch_size = 32
    c.train.out_dir = "runs/efficientnet_b2_f1"
    c.ensemble.vote = "hard"  # the fold models hard-vote the submission
    if demo:
        recipe.apply_demo(c)
        c.data.folds = 3
    return c


def main(argv=None):
    return recipe.run_ensemble(get_config, argv, __doc__)


if __name__ == "__main__":
    main()
