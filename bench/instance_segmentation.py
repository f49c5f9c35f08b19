"""Instance segmentation on real trees, held out spatially: Mask R-CNN (Segment Objects) against
the connected components of a pixel segmentation model trained the same way.

    python bench/instance_segmentation.py [--image 2019_YELL_2_541000_4977000_image_crop]
        [--epochs 10] [--steps 20] [--batch 2] [--patch 128] [--seed 0] [--device cpu]

Data: DeepForest 2.1.0's NEON aerial crop (RGB, 10 cm) with its tree boxes (VOC XML), fetched
once into the sample-data cache (:mod:`plugin.core.sampledata`), never committed. The package
ships boxes, not outlines: each box is a rectangle instance (a crown's outline is close to its
box, but mask IoU here is box-shape IoU). The PNG has no georeference: it is written as a
GeoTIFF at 10 cm in UTM 12N from the tile name's corner (metrics are unaffected).

Split by columns: the left 65 % is training (its bottom 20 % rows validation), the right 35 %
the held-out test raster; test truths are the boxes whose centre lies in it, clipped to it.
Both models: a labeling project of the box polygons, the same patch size, epochs, steps per
epoch, batch size and seed from random weights; Mask R-CNN (ResNet-18 FPN) vs U-Net (ResNet-18)
whose class raster's 4-connected components (≥ 20 px) are the baseline's objects.
Printed: precision, recall and F1 of one polygon per tree at IoU ≥ 0.5
(:func:`plugin.core.instances.metrics.polygon_f1`), side by side, with the ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MIN_COMPONENT_PX = 20


def write_parts(image_name: str, folder: Path):
    """(train, validation, test GeoTIFFs, box polygons in map coordinates)."""
    import xml.etree.ElementTree as ET

    import rasterio
    import shapely
    from PIL import Image
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from plugin.core.sampledata import deepforest_dir

    data = deepforest_dir()
    rgb = np.asarray(Image.open(data / f"{image_name}.png").convert("RGB")).transpose(2, 0, 1)
    _, H, W = rgb.shape
    parts = image_name.split("_")
    x0, y0 = float(parts[3]), float(parts[4])
    tf = from_origin(x0, y0 + H * 0.1, 0.1, 0.1)
    boxes = []
    for obj in ET.parse(data / f"{image_name}.xml").getroot().iter("object"):
        b = obj.find("bndbox")
        c0, r0, c1, r1 = (float(b.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
        (mx0, my1), (mx1, my0) = tf * (c0, r0), tf * (c1, r1)
        boxes.append(shapely.box(mx0, my0, mx1, my1))
    split_col, split_row = int(W * 0.65), int(H * 0.8)
    windows = {"train": Window(0, 0, split_col, split_row),
               "validation": Window(0, split_row, split_col, H - split_row),
               "test": Window(split_col, 0, W - split_col, H)}
    paths = {}
    for name, w in windows.items():
        path = folder / f"{name}.tif"
        r, c = slice(w.row_off, w.row_off + w.height), slice(w.col_off, w.col_off + w.width)
        with rasterio.open(path, "w", driver="GTiff", width=w.width, height=w.height, count=3,
                           dtype="uint8", crs="EPSG:32612",
                           transform=rasterio.windows.transform(w, tf)) as dst:
            dst.write(rgb[:, r, c])
        paths[name] = path
    return paths, boxes


def test_truths(path: Path, boxes: list) -> list:
    """Boxes whose centre lies in the raster ``path``, clipped to it, as (1, polygon)."""
    import rasterio
    import shapely

    with rasterio.open(path) as ds:
        frame = shapely.box(*ds.bounds)
    return [(1, b.intersection(frame)) for b in boxes if frame.contains(b.centroid)]


def components(class_raster: Path) -> list:
    """(1, score 1, polygon) per 4-connected component of class 1 (≥ MIN_COMPONENT_PX)."""
    import rasterio
    import shapely
    from rasterio.features import shapes
    from scipy.ndimage import label

    with rasterio.open(class_raster) as ds:
        classes, tf = ds.read(1), ds.transform
    parts, n = label(classes == 1)
    sizes = np.bincount(parts.ravel(), minlength=n + 1)
    keep = np.where(sizes[parts] >= MIN_COMPONENT_PX, parts, 0).astype(np.int32)
    return [(1, 1.0, shapely.geometry.shape(g)) for g, v in shapes(keep, mask=keep > 0,
                                                                    transform=tf) if v]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", default="2019_YELL_2_541000_4977000_image_crop")
    # 1000 steps: 200 left Mask R-CNN from random weights finding nothing (validation mask
    # mAP50 0.04, F1 0.00); 1000 gave F1@0.5 0.41 in 9 minutes on a shared 2-core CPU
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import shapely
    from pyogrio.raw import read

    from plugin.core.instances.jobs import SegmentObjectsJob, TrainInstanceSegmentationJob
    from plugin.core.instances.metrics import polygon_f1
    from plugin.core.jobs import RecordingContext
    from plugin.core.labeling.project import LabelingProject
    from plugin.core.segmentation.jobs import ClassifyPixelsJob, TrainPixelSegmentationJob

    with tempfile.TemporaryDirectory(prefix="dlt-instances-bench-") as tmp:
        folder = Path(tmp)
        paths, boxes = write_parts(args.image, folder)
        project = LabelingProject.create(folder / "trees.gpkg", "EPSG:32612")
        project.add_class("tree", "#33a02c")
        for role in ("train", "validation"):
            project.add_raster(str(paths[role]), role=role)
        project.add_features([(1, shapely.geometry.mapping(b)) for b in boxes])
        truths = test_truths(paths["test"], boxes)
        common = {"project": str(project.path), "patch_size": args.patch,
                  "epochs": args.epochs, "steps_per_epoch": args.steps,
                  "batch_size": args.batch, "seed": args.seed, "device": args.device,
                  "num_workers": 0}
        rows = {}
        t0 = time.monotonic()
        inst = TrainInstanceSegmentationJob(
            architecture="maskrcnn_resnet18", learning_rate=0.002, score_threshold=0.5,
            output_model=str(folder / "instances.dltmodel.safetensors"), **common)
        trained = inst.run(RecordingContext())
        out = folder / "objects.gpkg"
        SegmentObjectsJob(input=str(paths["test"]), model=inst.output_model, output=str(out),
                          device=args.device).run(RecordingContext())
        meta, _, wkb, fields = read(str(out))
        values = dict(zip(meta["fields"], fields))
        preds = [(1, float(s), g) for s, g in zip(values["score"], shapely.from_wkb(wkb))]
        rows["Mask R-CNN (Segment Objects)"] = (polygon_f1(preds, truths),
                                                time.monotonic() - t0,
                                                trained["metrics"].get("val_mask_map50"))
        t0 = time.monotonic()
        seg = TrainPixelSegmentationJob(
            architecture="unet", encoder="resnet18", learning_rate=0.003,
            output_model=str(folder / "pixels.dltmodel.safetensors"), **common)
        seg.run(RecordingContext())
        classes = folder / "classes.tif"
        ClassifyPixelsJob(input=str(paths["test"]), model=seg.output_model,
                          output=str(classes), device=args.device).run(RecordingContext())
        rows["U-Net + connected components"] = (polygon_f1(components(classes), truths),
                                                time.monotonic() - t0, None)
    print(f"{args.image}: {len(truths)} test trees (right 35 %), {len(boxes)} in all; "
          f"{args.epochs} epochs × {args.steps} steps × {args.batch} patches of {args.patch} px, "
          f"seed {args.seed}, {args.device}")
    print(f"{'model':32s} {'objects':>7s} {'precision':>9s} {'recall':>7s} {'F1@0.5':>7s} "
          f"{'seconds':>8s}")
    for name, (m, secs, _) in rows.items():
        print(f"{name:32s} {m['tp'] + m['fp']:7d} {m['precision']:9.3f} {m['recall']:7.3f} "
              f"{m['f1']:7.3f} {secs:8.1f}")
    (a, _, vmap), (b, _, _) = rows.values()
    print(f"F1 ratio Mask R-CNN / components: "
          f"{a['f1'] / b['f1'] if b['f1'] else float('inf'):.2f}; Mask R-CNN validation mask "
          f"mAP50 {vmap if vmap is not None else float('nan'):.3f}")


if __name__ == "__main__":
    main()
