"""The demo's grid model and chip classifier steps on the sample labeling project: train a grid
model and classify the sample cell by cell; cut chips around the labels, train a chip
classifier and classify the project's label polygons. Each step is the job a dialog or
Processing algorithm builds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..jobs import Job


def run_classifier_demo(output: Path, project: str | Path, raster: str | Path,
                        run: Callable[[Job, str], dict], epochs: int = 8) -> dict:
    from .jobs import ClassifyChipsJob, ClassifyGridJob, TrainChipClassifierJob, TrainGridModelJob

    grid = TrainGridModelJob(project=str(project), architecture="resnet18", grid_size=32,
                             epochs=epochs, batch_size=16, learning_rate=0.002,
                             background_patch_ratio=1.0, split=75.0,
                             output_model=str(output / "grid.dltmodel.safetensors"))
    grid_trained = run(grid, "grid 1/2 train")
    cells = run(ClassifyGridJob(input=str(raster), model=grid.output_model,
                                output=str(output / "grid_cells.gpkg")), "grid 2/2 classify")
    chips = TrainChipClassifierJob(input=str(project), architecture="resnet18", max_side=48,
                                   epochs=epochs, batch_size=16, learning_rate=0.002,
                                   test_size=20,
                                   output_model=str(output / "chips.dltmodel.safetensors"))
    chips_trained = run(chips, "chips 1/2 train")
    labelled = run(ClassifyChipsJob(input=str(project), raster=str(raster),
                                    model=chips.output_model,
                                    output=str(output / "chips_classified.gpkg")),
                   "chips 2/2 classify")
    return {"grid_model": grid.output_model, "grid_metrics": _slim(grid_trained),
            "grid_cells": cells.get("output"), "grid_cells_per_class": cells.get("per_class"),
            "chip_model": chips.output_model, "chip_metrics": _slim(chips_trained),
            "chip_test": chips_trained.get("test"), "chips_classified": labelled.get("output")}


def _slim(result: dict) -> dict:
    m = result.get("metrics") or {}
    return {k: v for k, v in m.items() if k.startswith("val_") and isinstance(v, float)}
