"""Team 001 (rank 6/200): one 18-way model, 0.4 * F1 + 0.6 * Focal loss.

ResNeXt50-32x4d + Linear(128) + classifier in the original; ResNeXt is in neither
keras.applications nor keras-hub, so the backbone is ``resnext50`` = ResNet50 (same
depth and stage layout, no grouped convolutions; see
``mask_keras.models.backbones.describe_backbones()``) with a shallow 128-unit head.
Class-balanced sampling (their weighted sampler) *and* a class-weighted loss, age
threshold 58 for training (validation and evaluation use 60), centre crop 400x200,
brightness augmentation (preset ``team001``), mixed precision (bfloat16), then the
submission from the single model with flip TTA (their 2-3 model voting: pass
``--set train.seed=N`` runs to ``mask-keras predict``).

Full scale: ``--data-dir DIR``. Without flags: demo scale on the embedded synthetic set
(``tiny_cnn`` from scratch at 96x48 on the 400x200 crop, 4 epochs, full precision since
CPUs gain nothing from bfloat16: ResNet50 from scratch scored 0.004 here); writes
``runs/resnext50_f1focal/submission.csv`` and its score against ``eval/gt.csv``.
"""
from mask_keras import recipe
from mask_keras.config import Config


def get_config(demo: bool = False) -> Config:
    c = Config()
    c.train.task = "multi"
    c.model.backbone = "resnext50"
    c.model.weights = "imagenet"
    c.model.head = "shallow"
    c.model.head_units = 128
    c.loss.terms = (("f1", 0.4), ("focal", 0.6))
    c.loss.gamma = 2.0
    c.sampling.balance = "class"
    c.sampling.class_weights = True
    c.data.age_upper = 58
    c.preprocess.crop = "center"
    c.preprocess.crop_size = (400, 200)
    c.preprocess.image_size = (400, 200)
    c.augment.preset = "team001"
    c.train.mixed_precision = True
    c.train.optimizer = "adam"
    c.train.lr = 1e-4
    c.train.epochs = 15
    c.train.batch_size = 32
    c.train.out_dir = "runs/resnext50_f1focal"
    c.ensemble.tta = True  # the single model's submission with flip TTA
    if demo:
        recipe.apply_demo(c)
        c.preprocess.image_size = (96, 48)  # the 400x200 crop's 2:1
    return c


def main(argv=None):
    return recipe.run_ensemble(get_config, argv, __doc__)


if __name__ == "__main__":
    main()
