"""Team 000 (AI Tech 4 CV03): three per-task models combined into the 18 classes.

Trains the mask, gender and age models of the three team 000 recipes
(``efficientnet_mask.py``: EfficientNet-B0; ``efficientnet_gender.py``: EfficientNet-B3;
``resnet152_age.py``: ResNet152 with 60+ oversampling, MixUp and age threshold 59) --
or loads existing ones with ``--load mask=DIR --load gender=DIR --load age=DIR`` -- then
predicts ``eval/`` with each and combines them: class = mask*6 + gender*3 + age, from the
product of the task probabilities (the team's "label weights" 6/3/1), with horizontal
flip TTA. Writes ``runs/three_task_ensemble/submission.csv``; on a synthetic set (which
ships ``eval/gt.csv``) prints the score, per task and overall, and each model's own.

Full scale: ``--data-dir DIR``. Without flags: demo scale on the embedded synthetic set,
each member with its own recipe's demo settings (``tiny_cnn`` from scratch at 96x64:
the team's backbones take too long on CPU at their sizes and learn little from scratch).
"""
from mask_keras import recipe
from mask_keras.config import Config


def get_config(demo: bool = False) -> Config:
    c = Config()
    c.train.out_dir = "runs/three_task_ensemble"
    # each member is trained by its own recipe file (recipes/<recipe>.py), at this run's scale
    c.ensemble.members = (("mask", "efficientnet_mask"), ("gender", "efficientnet_gender"),
                          ("age", "resnet152_age"))
    c.ensemble.vote = "soft"
    c.ensemble.level = "task"
    c.ensemble.tta = True
    if demo:
        recipe.apply_demo(c)
    return c


def main(argv=None):
    return recipe.run_ensemble(get_config, argv, __doc__)


if __name__ == "__main__":
    main()
