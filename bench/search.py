"""Does the hyperparameter search (TRIALS) beat the defaults? One run, side by side.

    python bench/search.py [landcover|trees] [--trials N] [--minutes M] [--seed S]

Trains pixel segmentation on the left half of a real scene and classifies the right half
(``bench/learn_real_imagery.py``'s cases and baselines), twice: once with every default, once
with TRIALS=N in a SEARCH_MINUTES=M budget (the issue's case: 10 minutes). Prints the held-out
figure of each beside the case's baseline, their ratio and the training minutes. The data is
downloaded once into the sample-data cache and never committed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import learn_real_imagery as case  # noqa: E402  (the sibling bench script)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("which", nargs="?", default="landcover", choices=("landcover", "trees"))
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    run = getattr(case, args.which)
    rows = []
    for label, extra in (("defaults", []),
                         (f"search ({args.trials} trials, {args.minutes:g} min)",
                          [f"trials={args.trials}", f"search_minutes={args.minutes}"])):
        opts = argparse.Namespace(epochs=0, steps_per_epoch=0, patch_size=0, batch_size=0,
                                  seed=args.seed, keep="", set=extra)
        print(f"{args.which}, {label}:", flush=True)
        (best, _last), base = run(opts)
        rows.append((label, best, base, opts.minutes))
    measure = "accuracy" if args.which == "landcover" else "tree IoU"
    print(f"\n{'run':<34}{measure:>10}{'baseline':>10}{'ours/base':>10}{'minutes':>9}")
    for label, best, base, minutes in rows:
        print(f"{label:<34}{best:10.3f}{base:10.3f}{best / max(base, 1e-9):10.2f}"
              f"{minutes:9.1f}")
    print(f"search / defaults: {rows[1][1] / max(rows[0][1], 1e-9):.2f}")


if __name__ == "__main__":
    main()
