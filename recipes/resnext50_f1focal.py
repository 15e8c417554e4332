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

FULL = Config().override(**{
    "train.task": "multi", "model.backbone": "resnext50", "model.weights": "imagenet",
    "model.head": "shallow", "model.head_units": 128,
    "loss.terms": (("f1", 0.4), ("focal", 0.6)), "loss.gamma": 2.0,
    "sampling.balance": "class", "sampling.class_weights": True, "data.age_upper": 58,
    "preprocess.crop": "center", "preprocess.crop_size": (400, 200), "preprocess.image_size": (400, 200),
    "augment.preset": "team001", "train.mixed_precision": True,
    "train.optimizer": "adam", "train.lr": 1e-4, "train.epochs": 15, "train.batch_size": 32,
    "train.out_dir": "runs/resnext50_f1focal",
})
DEMO = {"preprocess.image_size": (96, 48)}  # the 400x200 crop's 2:1


def main(argv=None):
    return recipe.run_ensemble({"resnext50": (FULL, DEMO)}, argv, __doc__, tta=True)


if __name__ == "__main__":
    main()
