"""``generate``: plan, draw (in a worker pool) and write a synthetic set in the competition layout, atomically."""
from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ... import LIGHT_IMPORT_ENV
from ...environ import environ
from .plan import (
    FORMAT_VERSION,
    GENERATOR,
    MAX_PEOPLE,
    META_NAME,
    REAL_TRAIN_PEOPLE,
    STEMS,
    make_plan,
)
from .render import render_task

log = logging.getLogger(__name__)



def check_args(people, eval_people, seed, image_size, workers):
    """Check :func:`generate`'s arguments before anything is written.

    Args:
        people: train people, an integer in 1..MAX_PEOPLE.
        eval_people: eval people, an integer in 0..MAX_PEOPLE.
        seed: an integer >= 0.
        image_size: ``(height, width)`` integers, 32..4096 high, 24..4096 wide, height/width in 0.5..3.
        workers: an integer >= 1, or None (all CPUs).

    Returns:
        ``(height, width)`` as ints.

    Raises:
        ValueError: naming the first argument out of range.

    Example:
        >>> check_args(10, 0, 0, (64, 48), None)
        (64, 48)
    """
    def is_int(x):
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if not is_int(people) or people < 1:
        raise ValueError(f"synth: people must be an integer >= 1, got {people!r}")
    if people > MAX_PEOPLE:
        raise ValueError(f"synth: people must be <= {MAX_PEOPLE} (ids are six digits), got {people}")
    if not is_int(eval_people) or eval_people < 0:
        raise ValueError(f"synth: eval_people must be an integer >= 0, got {eval_people!r}")
    if eval_people > MAX_PEOPLE:
        raise ValueError(f"synth: eval_people must be <= {MAX_PEOPLE}, got {eval_people}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"synth: seed must be an integer >= 0, got {seed!r}")
    try:
        h, w = (int(v) for v in image_size)
        ok = len(tuple(image_size)) == 2 and all(is_int(v) for v in image_size)
    except (TypeError, ValueError):
        ok = False
    if not ok or not (32 <= h <= 4096 and 24 <= w <= 4096) or not (0.5 <= h / w <= 3.0):
        raise ValueError(f"synth: image_size must be (height, width) integers, 32..4096 high, 24..4096 wide, "
                         f"height/width in 0.5..3 (the real set is (512, 384)); got {image_size!r}")
    if workers is not None and (not is_int(workers) or workers < 1):
        raise ValueError(f"synth: workers must be an integer >= 1 or None (all CPUs), got {workers!r}")
    return (h, w)


def _is_synth_output(path: Path) -> bool:
    try:
        meta = json.loads((path / META_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("generator") == GENERATOR


def _mp_context():
    import multiprocessing as mp

    # fork is cheapest, but unsafe once JAX/TensorFlow started their threads in this process
    threaded = any(m in sys.modules for m in ("jax", "tensorflow", "torch"))
    if "fork" in mp.get_all_start_methods() and not threaded:
        return mp.get_context("fork")
    return mp.get_context("spawn")


def _write_csv(path: Path, header: str, rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header.split(","))
        w.writerows(rows)


def generate(out_dir, people: int = REAL_TRAIN_PEOPLE, eval_people: int = 1800, seed: int = 0,
             image_size=(512, 384), workers: int | None = None, progress: bool = True) -> dict:
    """Write a synthetic competition set to ``out_dir``; return (and print) a summary dict.

    ``out_dir`` must not exist, be empty, or hold a previous synthetic set (it is replaced,
    only once the new one is complete). Besides the layout it holds ``relabel.csv`` (the
    planted mislabels), ``eval/gt.csv`` (the eval answers) and ``synth_meta.json``.

    Args:
        out_dir: the dataset folder to write.
        people: train people (7 images each; the real set has 2700).
        eval_people: other people for ``eval/`` (7 images each; the real eval has 1800).
        seed: the same seed gives byte-identical files, whatever ``workers`` is.
        image_size: (height, width); the real images are (512, 384).
        workers: processes drawing in parallel (default ``os.cpu_count()``; 1 = in this process).
        progress: show a tqdm bar and print the summary.

    Returns:
        ``{"out", "seed", "image_size", "workers", "people", "images", "eval_people",
        "eval_images", "seconds", "images_per_s", "mislabeled" (ids), "mislabeled_detail",
        "quirks" (counts)}``.

    Raises:
        ValueError: a bad argument (:func:`check_args`).
        FileExistsError: ``out_dir`` is a file, or a non-empty folder that is no synthetic set.
    """
    size = check_args(people, eval_people, seed, image_size, workers)
    out = Path(out_dir).expanduser().absolute()
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"synth: {out} exists and is not a directory; choose another output path")
        if any(out.iterdir()) and not _is_synth_output(out):
            raise FileExistsError(f"synth: {out} is not empty and holds no {META_NAME} from a previous synthetic "
                                  f"set; refusing to write into it. Choose an empty or new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    workers = int(workers) if workers is not None else (os.cpu_count() or 1)
    t0 = time.perf_counter()
    plan = make_plan(int(people), int(eval_people), int(seed))
    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tr_img, ev_img = tmp / "train" / "images", tmp / "eval" / "images"
        tr_img.mkdir(parents=True)
        ev_img.mkdir(parents=True)
        tasks = []
        for p in plan["train"]:
            folder = tr_img / p["folder"]
            folder.mkdir()
            files = {s: str(folder / (s + p["exts"][s])) for s in STEMS}
            tasks.append((int(seed), 0, p["index"], p["true_gender"], p["drawn_age"], size, files, p["swap"],
                          p["hidden"]))
        for e in plan["eval"]:
            files = {s: str(ev_img / e["names"][s]) for s in STEMS}
            tasks.append((int(seed), 1, e["index"], e["true_gender"], e["drawn_age"], size, files, False, False))
        n_images = 7 * len(tasks)
        bar = tqdm(total=n_images, desc="synth", unit="img", disable=not progress, smoothing=0.1)
        t_draw = time.perf_counter()
        if workers == 1 or len(tasks) < 4:
            for t in tasks:
                bar.update(render_task(t))
        else:
            # workers started in the block import mask_keras without Keras and JAX (numpy and PIL draw)
            with environ({LIGHT_IMPORT_ENV: "1"}), _mp_context().Pool(min(workers, len(tasks))) as pool:
                for k in pool.imap_unordered(render_task, tasks, chunksize=2):
                    bar.update(k)
        bar.close()
        draw_s = time.perf_counter() - t_draw

        # tables last: a folder without them never passes for a complete set
        _write_csv(tmp / "train" / "train.csv", "id,gender,race,age,path",
                   [(p["id"], p["gender"], "Asian", p["age"], p["folder"]) for p in plan["train"]])
        _write_csv(tmp / "eval" / "gt.csv", "ImageID,ans", plan["eval_rows"])
        _write_csv(tmp / "eval" / "info.csv", "ImageID,ans", [(i, 0) for i, _ in plan["eval_rows"]])
        _write_csv(tmp / "relabel.csv", "id,change,value,certain,note",
                   [(m["id"], m["change"], m["value"], 1, m["note"]) for m in plan["mislabeled"]])
        quirks = plan["quirks"]
        counts = {
            "png_folders": len(quirks["png_folders"]),
            "jpeg_folders": len(quirks["jpeg_folders"]),
            "jpeg_mask5_jpg": len(quirks["jpeg_mask5_jpg"]),
            "suffixed_ids": len(quirks["suffixed_ids"]),
            "hidden_folders": len(quirks["hidden_folders"]),
            "hidden_files": 7 * len(quirks["hidden_folders"]),
        }
        meta = {
            "generator": GENERATOR, "format_version": FORMAT_VERSION, "seed": int(seed),
            "image_size": list(size), "people": int(people), "eval_people": int(eval_people),
            "mislabeled": [{k: m[k] for k in ("id", "profile", "change", "value", "note")}
                           for m in plan["mislabeled"]],
            "quirk_counts": counts, "quirks": quirks,
            "drawn_age": {p["folder"]: p["drawn_age"] for p in plan["train"] if p["drawn_age"] != p["age"]},
        }
        (tmp / META_NAME).write_text(json.dumps(meta, indent=1) + "\n")
        # swap into place; an old synthetic set is removed only after the new one is complete
        old = None
        if out.exists():
            if any(out.iterdir()):
                old = out.parent / f"{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                os.replace(out, old)
            else:
                out.rmdir()
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    summary = {
        "out": str(out), "seed": int(seed), "image_size": list(size), "workers": workers,
        "people": int(people), "images": 7 * int(people),
        "eval_people": int(eval_people), "eval_images": 7 * int(eval_people),
        "seconds": round(seconds, 3), "images_per_s": round(n_images / max(draw_s, 1e-9), 1),
        "mislabeled": [m["id"] for m in plan["mislabeled"]],
        "mislabeled_detail": meta["mislabeled"],
        "quirks": counts,
    }
    if progress:
        print(f"synth: wrote {summary['images']} train images ({people} people) and {summary['eval_images']} eval "
              f"images to {out} in {seconds:.1f} s ({summary['images_per_s']} images/s, {workers} workers); "
              f"planted mislabels: {summary['mislabeled'] or 'none'}; quirks: {counts}")
    log.debug("synth summary: %s", summary)
    return summary
