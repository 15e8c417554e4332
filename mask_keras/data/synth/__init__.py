"""Synthetic stand-in for the private competition set: same layout, size, statistics, quirks.

``generate(out_dir, people=2700, eval_people=1800)`` writes::

    OUT/train/train.csv                       id,gender,race,age,path (one row per person)
    OUT/train/images/<id>_<gender>_Asian_<age>/{mask1..mask5,incorrect_mask,normal}.<ext>
    OUT/eval/info.csv                         ImageID,ans (ans all 0, shuffled order)
    OUT/eval/gt.csv                           ImageID,ans (the true class 0..17)
    OUT/eval/images/<40-hex-hash>.jpg
    OUT/relabel.csv                           the planted mislabels, in data/relabel.csv format
    OUT/synth_meta.json                       seed, sizes, planted mislabels and quirks

What it imitates (see ``data/README.md``):

* people per (gender, age group) cell follow the real train table, scaled to ``people`` by
  largest-remainder rounding (every cell kept once ``people >= 12``); ages 18..60 with the
  >=60 group recorded as exactly 60 (their *drawn* age is 60..80, like the real set where
  older people were recorded as 60), mass at 29/30/31 and 55..59 so the group borders are hard;
* quirks scaled from the real counts (at least one each once ``people >= 20``): ``.png``
  folders (73/2700), ``.jpeg`` folders (51/2700) of which some (3/2700) hold ``mask5.jpg``,
  ids with a ``-1``/``-2`` suffix that reuse another person's number (41/2700), and macOS
  ``._<name>`` resource-fork files beside the images of some folders (5%);
* planted mislabels (15/2700, at least one once ``people >= 20``): the folder/CSV gender is the
  opposite of the drawn one, or the ``incorrect_mask`` and ``normal`` images are swapped, or the
  age is recorded 59 for a person drawn as 60+. They take the ids of the *certain* rows of the
  package's ``relabel.csv`` (so ``read_train(root, relabel=True)`` undoes exactly them; no other
  synthetic person uses an id listed there) and are listed in ``OUT/relabel.csv`` and
  ``synth_meta.json``;
* faces drawn procedurally with PIL: head and shoulders on random backgrounds, a mask over nose
  and mouth (surgical, KF94, cloth with patterns, bandana triangle) for ``mask1..5``, a lowered
  mask (under the nose or on the chin) for ``incorrect_mask``, none for ``normal``; gender from
  overlapping cues (hair length, face width, jaw, brows, shoulders, lips...), age from continuous
  cues tied to the age number (wrinkles, grey hair, skin tone, eye bags, hairline). A person's 7
  images share everything but the mask and a small pose/lighting jitter.

Output is byte-identical for a seed, whatever ``workers`` is: every person draws from its own
RNG seeded by ``(seed, split, index)``, the plan (demographics, ids, quirks) from one seeded by
``seed``. The set is built in ``OUT.tmp-*`` beside ``OUT`` and renamed into place at the end, so
an interrupted run never leaves a complete-looking ``OUT``.

The package: ``plan.py`` (demographics, ids, quirks, mislabels), ``render.py`` (the drawing),
``write.py`` (``generate``: the files, the worker pool, the atomic rename).
"""
from __future__ import annotations

from .plan import (  # noqa: F401
    DEMOGRAPHICS,
    FORMAT_VERSION,
    GENERATOR,
    HIDDEN_RATE,
    JPEG_QUALITY,
    MAX_PEOPLE,
    META_NAME,
    MIN_PEOPLE_FOR_QUIRKS,
    MIN_PEOPLE_PER_CELL,
    MISLABEL_COUNT,
    QUIRK_COUNTS,
    REAL_TRAIN_PEOPLE,
    STEMS,
    make_plan,
    sample_ages,
    sample_demographics,
    scale_counts,
)
from .render import person_params, render_person, render_task  # noqa: F401
from .write import generate  # noqa: F401
