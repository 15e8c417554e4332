"""Team 000 (AI Tech 4 CV03): the age model.

ResNet152 on the age task with the rare >=60 people oversampled (x3) and MixUp,
trained with the age threshold 59 (validation still scores with 60). Full scale:
``--data-dir DIR``. Without flags: demo scale on the embedded synthetic set with
``tiny_cnn`` from scratch (ResNet152 compiles for minutes on CPU and, without pretrained
weights, learns little in a demo's minutes).
"""
from mask_keras import recipe
from mask_keras.config import Config


def get_config(demo: bool = False) -> Config:
    c = Config()
    c.train.task = "age"
    c.model.backbone = "resnet152"
    c.model.weights = "imagenet"
    c.preprocess.crop = "center"
    c.preprocess.crop_size = (400, 300)
    c.preprocess.image_size = (320, 240)
    c.augment.preset = "team000"
    c.augment.mixup = 0.5
    c.sampling.old_factor = 3.0
    c.data.relabel = "certain"
    c.data.age_upper = 59
    c.train.optimizer = "adam"
    c.train.lr = 1e-4
    c.train.epochs = 15
    c.train.batch_size = 32
    c.train.early_stopping = 4
    c.train.out_dir = "runs/resnet152_age"
    if demo:
        recipe.apply_demo(c)
    return c


def main(argv=None):
    return recipe.run(get_config, argv, __doc__)


if __name__ == "__main__":
    main()
