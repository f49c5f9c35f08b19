"""The demo: label -> train -> classify on the bundled (seeded synthetic) sample, headless.

Each step is the job a dialog or Processing algorithm would build, run in a worker process as
QGIS runs it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .jobs import Job, JobContext

#: The sample paints trees as discs of radius 2 px and roads 3 px wide.
SOLID_DISTANCES = {"tree": 2, "road": 1}


def make_sample_project(folder: str | Path, size: int = 256, run=None) -> tuple:
    """The sample scene and its labeling project (made by `dltrainer:importlabels`'s job, with
    the solid distances the sample's points and lines need); returns (scene, project path)."""
    from .labeling.jobs import ImportLabelsJob
    from .labeling.project import LabelingProject
    from .synthetic import make_scene

    folder = Path(folder).resolve()
    scene = make_scene(folder / "sample", size=size, bands=3, seed=0)
    project = folder / "labeling_project.gpkg"
    project.unlink(missing_ok=True)
    job = ImportLabelsJob(project=str(project), rasters=[str(scene.raster)],
                          labels=str(scene.labels), class_field="class_name")
    if run is None:
        from .jobs import RecordingContext

        job.validate()
        job.run(RecordingContext())
    else:
        run(job, "1/4 label")
    opened = LabelingProject.open(project)
    for cls in opened.classes():
        if cls.name in SOLID_DISTANCES:
            opened.update_class(cls.id, solid_distance=SOLID_DISTANCES[cls.name])
    return scene, project


def run_demo(output: str | Path, ctx: JobContext, epochs: int = 16, size: int = 256,
             detector_epochs: int = 15) -> dict:
    """Run the product's main job on the sample scene into ``output``; return what was written.

    A labeling project is made from the sample's labels (as `dltrainer:importlabels` does), label
    rasters are built, a small U-Net is trained (GPU when there is one) and the sample is
    classified into a class raster, probabilities and polygons; then a grid model and a chip
    classifier are trained on the same project and applied (``classification/demo.py``), and a
    light detector is trained on a synthetic object scene and Detect Objects writes the boxes it
    finds on a third one; a light Mask R-CNN does the same with polygons
    (``instances/demo.py``); a pixel regression model learns the values of a
    synthetic scene and Predict Values maps them (``regression/demo.py``).
    """
    from .basic_jobs import EnvironmentReportJob
    from .labeling.jobs import BuildLabelRastersJob
    from .runner import run_in_worker
    from .segmentation.jobs import ClassifyPixelsJob, TrainPixelSegmentationJob

    def forward(event: dict) -> None:
        if event.get("event") in ("progress", "log", "artifact"):
            ctx.emit(event)

    def run(job: Job, step: str) -> dict:
        ctx.log(f"== {step}: {job.title}")
        job.validate()
        return run_in_worker(job, on_event=forward)

    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report = run(EnvironmentReportJob(), "0/4 environment")
    (output / "environment.json").write_text(json.dumps(report, indent=2))
    ctx.log("torch " + str(report["libraries"].get("torch")) + "; CUDA devices: "
            + (", ".join(d["name"] for d in report["cuda_devices"]) or "none"))
    scene, project = make_sample_project(output, size, run)
    labels = run(BuildLabelRastersJob(project=str(project),
                                      output_folder=str(output / "label_rasters")),
                 "2/4 label rasters")
    train = TrainPixelSegmentationJob(
        project=str(project), architecture="unet", encoder="resnet18", patch_size=64,
        split=75.0, epochs=epochs, batch_size=8, learning_rate=0.003, steps_per_epoch=10,
        background_patch_ratio=1.0, output_model=str(output / "model.dltmodel.safetensors"),
        output_last_model=str(output / "model_last.dltmodel.safetensors"))
    trained = run(train, "3/4 train")
    classified = run(ClassifyPixelsJob(
        input=str(scene.raster), model=train.output_model, output=str(output / "classes.tif"),
        output_probabilities=str(output / "probabilities.tif"),
        output_vector=str(output / "polygons.gpkg"), min_area=1.0), "4/4 classify")
    from .classification.demo import run_classifier_demo

    classifiers = run_classifier_demo(output, project, scene.raster, run,
                                      epochs=max(2, epochs // 2))
    detection = demo_detection(output / "detection", run, detector_epochs)
    from .instances.demo import demo_instances
    from .regression.demo import run_regression_demo

    instances = demo_instances(output / "instances", run, max(1, detector_epochs // 3))
    regression = run_regression_demo(output / "regression", run)
    return {**classifiers, **detection, **instances, **regression, "output_folder": str(output),
            "sample_raster": str(scene.raster),
            "labeling_project": str(project),
            "label_rasters": labels["label_rasters"],
            "model": train.output_model, "last_model": train.output_last_model,
            "report": trained.get("report"), "learning_curves": trained.get("learning_curves"),
            "tensorboard_logs": trained.get("tensorboard"), "metrics": trained.get("metrics"),
            "class_raster": classified.get("output"),
            "probabilities": classified.get("output_probabilities"),
            "polygons": classified.get("output_vector"),
            "environment_report": str(output / "environment.json"),
            "seconds": round(time.monotonic() - started, 1)}


def demo_detection(folder: Path, run, epochs: int) -> dict:
    """Train a light detector (FCOS ResNet-18) on a synthetic object scene with exact boxes and
    detect the objects of a second scene into a GeoPackage (boxes and centre points)."""
    from .detection.jobs import DetectObjectsJob, TrainObjectDetectionJob
    from .detection.synthetic import make_object_scene, scene_project

    train_scene = make_object_scene(folder / "train", size=192, n_objects=16, seed=11)
    val_scene = make_object_scene(folder / "validation", size=128, n_objects=7, seed=12)
    new_scene = make_object_scene(folder / "new", size=256, n_objects=20, seed=13)
    project = folder / "objects.gpkg"
    scene_project(train_scene, project, role="train")
    scene_project(val_scene, project, role="validation")
    train = TrainObjectDetectionJob(
        project=str(project), architecture="fcos_resnet18", patch_size=64, epochs=epochs,
        steps_per_epoch=10, batch_size=4, learning_rate=0.001, augment_scale=False,
        background_patch_ratio=0.0, output_model=str(folder / "detector.dltmodel.safetensors"))
    trained = run(train, "detection 1/2: train object detection")
    found = run(DetectObjectsJob(input=str(new_scene.raster), model=train.output_model,
                                 output=str(folder / "found.gpkg"),
                                 output_points=str(folder / "found_centres.gpkg")),
                "detection 2/2: detect objects")
    return {"detector": train.output_model, "detector_report": trained.get("report"),
            "detector_metrics": {k: v for k, v in (trained.get("metrics") or {}).items()
                                 if k.startswith("val_")},
            "detection_raster": str(new_scene.raster), "detections": found.get("output"),
            "detection_centres": found.get("output_points"),
            "detections_per_class": found.get("per_class")}
