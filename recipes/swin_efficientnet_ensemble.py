"""Team 003 (CV-19): Swin-B + EfficientNet soft-vote ensemble, shallow heads, melting.

Two 18-way models with a "shallow" head (two dense layers) trained by "melting": the
head first on a frozen pretrained backbone (``model.freeze_epochs``), then everything.
Their best ensemble was Swin-B + EfficientNet (EfficientNet-V2 here, from
keras.applications; Swin-B from keras-hub, inputs resized to 224x224 inside the model);
the two soft-vote on the 18 classes, with flip TTA.

Full scale: ``--data-dir DIR``. Without flags: demo scale on the embedded synthetic set:
the Swin member becomes ``tiny_cnn`` and the EfficientNet member EfficientNet-B0, both from
scratch at 96x64 (Swin-B and V2-S take far too long on CPU, and melting needs pretrained
weights, so it is skipped with a warning); writes
``runs/swin_efficientnet_ensemble/submission.csv``, its score and each model's.
"""
from mask_keras import recipe
from mask_keras.config import Config

COMMON = {"train.task": "multi", "model.weights": "imagenet", "model.head": "shallow", "model.head_units": 256,
          "model.freeze_epochs": 2, "loss.name": "ce", "augment.preset": "base",
          "preprocess.crop": "center", "preprocess.crop_size": (400, 300), "preprocess.image_size": (320, 240),
          "train.optimizer": "adam", "train.lr": 1e-4, "train.epochs": 10, "train.batch_size": 32}
SWIN = Config().override(**{**COMMON, "model.backbone": "swin"})
EFFICIENTNET = Config().override(**{**COMMON, "model.backbone": "efficientnetv2_s"})
MEMBERS = {"swin": (SWIN, {"model.backbone": "tiny_cnn"}),
           "efficientnet": (EFFICIENTNET, {"model.backbone": "efficientnet_b0"})}


def main(argv=None):
    return recipe.run_ensemble(MEMBERS, argv, __doc__, out_dir="runs/swin_efficientnet_ensemble",
                               vote="soft", level="class", tta=True)


if __name__ == "__main__":
    main()
