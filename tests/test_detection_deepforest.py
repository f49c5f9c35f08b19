"""Real data: DeepForest's NEON tiles. The two YELL PNG crops' VOC annotations (853 trees,
ungeoreferenced: imported in pixel coordinates) train a light detector from random weights in a
CI-sized run (150 steps, no validation split); Detect Objects then runs over the georeferenced
OSBS_029.tif, held out of training (another site), and its mAP50 against the tile's 61 DeepForest
boxes is measured and printed.

Measured (one run each, loaded 2-core machine): mAP50 0.053 (P/R 0.10/0.31 at 0.3); 0.033 with
the first crop alone; 0.009–0.014 before patches were kept inside their raster (the sample
planner's last grid row ended past the raster edge: patches of mostly fill with boxes) and when
SOAP_061's Alive/Dead classes split the trees into three classes. A single run per setting is no
basis for a floor, so the figure is printed; the test asserts the real-data path (boxes in the
held-out tile's CRS, within it). Automatic tiles (three overlaps wide) cut Detect Objects on the
400 px tile from 1225 tiles of 128 px to 4."""

from __future__ import annotations

import pytest

from plugin.core.detection.jobs import DetectObjectsJob, TrainObjectDetectionJob
from plugin.core.jobs import RecordingContext
from plugin.core.labeling.box_importers import import_box_annotations, read_boxes

TRAIN_TILES = ("2019_YELL_2_541000_4977000_image_crop", "2019_YELL_2_528000_4978000_image_crop2")


def held_out_map50(found_gpkg, tif, truth_csv) -> dict:
    """mAP50 (torchmetrics) of the GeoPackage boxes against the CSV boxes, in pixels."""
    import rasterio
    import torch
    from osgeo import ogr

    from plugin.core.detection.metrics import DetectionMetrics

    with rasterio.open(tif) as ds:
        inv = ~ds.transform
    ds = ogr.Open(str(found_gpkg))
    boxes, scores = [], []
    for f in ds.GetLayer(0):
        x0, x1, y0, y1 = f.GetGeometryRef().GetEnvelope()
        (c0, r0), (c1, r1) = inv * (x0, y1), inv * (x1, y0)
        boxes.append([c0, r0, c1, r1])
        scores.append(f.GetField("score"))
    truth = [b[1:] for b in read_boxes(truth_csv, tif)]
    m = DetectionMetrics([1], 0.3)
    pred = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "labels": torch.ones(len(boxes), dtype=torch.int64)}
    m.update([pred], [{"boxes": torch.tensor(truth, dtype=torch.float32),
                       "labels": torch.ones(len(truth), dtype=torch.int64)}])
    return m.compute()


@pytest.mark.slow
def test_deepforest_trees_held_out_osbs(deepforest_dir, tmp_path):
    project = tmp_path / "trees.gpkg"
    for name in TRAIN_TILES:
        import_box_annotations(project, deepforest_dir / f"{name}.xml",
                               deepforest_dir / f"{name}.png")
    job = TrainObjectDetectionJob(
        project=str(project), architecture="fcos_resnet18", patch_size=128, split=100,
        epochs=10, steps_per_epoch=15, batch_size=4, learning_rate=0.001,
        background_patch_ratio=0.0, device="cpu", num_workers=0,
        output_model=str(tmp_path / "trees.safetensors"))
    trained = job.run(RecordingContext())
    tif = deepforest_dir / "OSBS_029.tif"
    out = tmp_path / "osbs_trees.gpkg"
    DetectObjectsJob(input=str(tif), model=job.output_model, output=str(out),
                     score_threshold=0.05, device="cpu").run(RecordingContext())
    r = held_out_map50(out, tif, deepforest_dir / "OSBS_029.csv")
    print(f"\nDeepForest OSBS_029 held out: mAP50 {r['map50']:.3f}, mAP {r['map']:.3f}, "
          f"P/R/F1 at 0.3: {r['precision']:.3f}/{r['recall']:.3f}/{r['f1']:.3f}; "
          f"validation mAP50 {trained['metrics'].get('val_map50', 0):.3f}")
    # a few CPU minutes from random weights find few crowns (mAP50 0.03–0.05 measured), so the
    # figure is printed, not asserted; what must hold is the path on real data: a model, and
    # boxes in the held-out tile's CRS lying within it
    import pyogrio
    import rasterio

    assert trained["output_model"] and 0.0 <= r["map50"] <= 1.0
    info = pyogrio.read_info(str(out))
    with rasterio.open(tif) as ds:
        left, bottom, right, top = ds.bounds
        assert info["crs"] and rasterio.crs.CRS.from_user_input(info["crs"]) == ds.crs
    x0, y0, x1, y1 = info["total_bounds"]
    assert info["features"] > 0
    assert left - 1 <= x0 and x1 <= right + 1 and bottom - 1 <= y0 and y1 <= top + 1
