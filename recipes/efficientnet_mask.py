"""Team 000 (AI Tech 4 CV03): the mask-state model.

EfficientNet-B0 on the mask task (easy: ~99% for every team), Adam 1e-4, colour
augmentation for the rare bandana masks. Full scale: ``--data-dir DIR``. Without
flags: demo scale on the embedded synthetic set.
"""
from mask_keras import recipe
from mask_keras.config import Config


def get_config(demo: bool = False) -> Config:
    c = Config()
    c.train.task = "mask"
    c.model.backbone = "efficientnet_b0"
    c.model.weights = "imagenet"
    c.preprocess.crop = "center"
    c.preprocess.crop_size = (400, 300)
    c.preprocess.image_size = (256, 192)
    c.augment.preset = "team000"
    c.data.relabel = "certain"
    c.train.optimizer = "adam"
    c.train.lr = 1e-4
    c.train.epochs = 10
    c.train.batch_size = 64
    c.train.early_stopping = 3
    c.train.out_dir = "runs/efficientnet_mask"
    if demo:
        recipe.apply_demo(c)
    return c


def main(argv=None):
    return recipe.run(get_config, argv, __doc__)


if __name__ == "__main__":
    main()
