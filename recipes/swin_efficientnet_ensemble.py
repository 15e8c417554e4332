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
from mask_keras.errors import unknown_choice

#: member -> (full-scale backbone, demo backbone)
BACKBONES = {"swin": ("swin", "tiny_cnn"), "efficientnet": ("efficientnetv2_s", "efficientnet_b0")}


def get_config(demo: bool = False, member: str = "swin") -> Config:
    """The ensemble's config; ``member`` (``swin`` or ``efficientnet``) picks the backbone."""
    if member not in BACKBONES:
        raise unknown_choice("member", member, BACKBONES)
    c = Config()
    c.train.task = "multi"
    c.model.backbone = BACKBONES[member][0]
    c.model.weights = "imagenet"
    c.model.head = "shallow"
    c.model.head_units = 256
    c.model.freeze_epochs = 2
    c.loss.name = "ce"
    c.augment.preset = "base"
    c.preprocess.crop = "center"
    c.preprocess.crop_size = (400, 300)
    c.preprocess.image_size = (320, 240)
    c.train.optimizer = "adam"
    c.train.lr = 1e-4
    c.train.epochs = 10
    c.train.batch_size = 32
    c.train.out_dir = "runs/swin_efficientnet_ensemble"
    # the two members are this recipe's two variants; they soft-vote on the 18 classes, with flip TTA
    c.ensemble.members = (("swin", "swin_efficientnet_ensemble:swin"),
                          ("efficientnet", "swin_efficientnet_ensemble:efficientnet"))
    c.ensemble.vote = "soft"
    c.ensemble.level = "class"
    c.ensemble.tta = True
    if demo:
        recipe.apply_demo(c)
        c.model.backbone = BACKBONES[member][1]
    return c


def main(argv=None):
    return recipe.run_ensemble(get_config, argv, __doc__)


if __name__ == "__main__":
    main()
