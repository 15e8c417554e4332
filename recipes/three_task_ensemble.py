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
from pathlib import Path

from mask_keras import recipe

HERE = Path(__file__).resolve().parent
MEMBERS = {task: recipe.member_from_recipe(HERE / f"{name}.py") for task, name in
           (("mask", "efficientnet_mask"), ("gender", "efficientnet_gender"), ("age", "resnet152_age"))}


def main(argv=None):
    return recipe.run_ensemble(MEMBERS, argv, __doc__, out_dir="runs/three_task_ensemble", vote="soft",
                               level="task", tta=True)


if __name__ == "__main__":
    main()
