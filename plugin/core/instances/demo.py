"""The instance segmentation part of the demo: a light Mask R-CNN learns a synthetic scene with
exact polygons and Segment Objects outlines the objects of a second scene."""

from __future__ import annotations

from pathlib import Path


def demo_instances(folder: Path, run, epochs: int) -> dict:
    """Train Mask R-CNN (ResNet-18 FPN) for ``epochs`` × 8 steps on a synthetic scene of
    crowns (validated on a second one) and write one polygon per object of a third scene into a
    GeoPackage; ``run(job, step)`` runs a job as QGIS does. Returns the outputs."""
    from .jobs import SegmentObjectsJob, TrainInstanceSegmentationJob
    from .synthetic import make_instance_scene, scene_project

    folder = Path(folder)
    train_scene = make_instance_scene(folder / "train", size=192, n_objects=20, seed=11)
    val_scene = make_instance_scene(folder / "validation", size=128, n_objects=10, seed=12)
    new_scene = make_instance_scene(folder / "new", size=256, n_objects=30, seed=13)
    project = folder / "crowns.gpkg"
    project.unlink(missing_ok=True)
    scene_project(train_scene, project, role="train")
    scene_project(val_scene, project, role="validation")
    train = TrainInstanceSegmentationJob(
        project=str(project), architecture="maskrcnn_resnet18", patch_size=64, epochs=epochs,
        steps_per_epoch=8, batch_size=2, learning_rate=0.002, background_patch_ratio=0.0,
        output_model=str(folder / "instances.dltmodel.safetensors"))
    trained = run(train, "instances 1/2: train instance segmentation")
    found = run(SegmentObjectsJob(input=str(new_scene.raster), model=train.output_model,
                                  output=str(folder / "objects.gpkg")),
                "instances 2/2: segment objects")
    return {"instance_model": train.output_model, "instance_report": trained.get("report"),
            "instance_metrics": {k: v for k, v in (trained.get("metrics") or {}).items()
                                 if k.startswith("val_mask")},
            "instance_raster": str(new_scene.raster), "objects": found.get("output"),
            "objects_per_class": found.get("per_class")}
