"""Run every benchmark with its defaults (``make bench``); tables go to stdout and bench/results/.

    python bench/run_all.py            # input pipeline, training, inference, serving (~30-40 min on 2 CPU cores)
    python bench/run_all.py --quick    # smaller: 700 images, demo model only (~8 min)

Copy the printed tables into bench/README.md with the date and the machine.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--mixed-precision", action="store_true", help="training benchmark with mixed_bfloat16")
    a = ap.parse_args(argv)
    import inference
    import input_pipeline
    import train_step

    common.ensure_data()
    quick = ["--limit", "700", "--repeats", "2"] if a.quick else []
    input_pipeline.main(quick)
    models = ["--models", "demo"] if a.quick else []
    train_step.main(models + (["--mixed-precision"] if a.mixed_precision else []))
    inference.main(models)
    import serve

    if (common.ROOT / "runs" / "efficientnet_gender").exists():
        serve.main(["--quick"] if a.quick else [])
    else:
        print("serve: skipped (no runs/efficientnet_gender: run make demo first)")
    print(f"\ntables: {common.RESULTS}/*.md")


if __name__ == "__main__":
    main()
