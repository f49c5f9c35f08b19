"""The demo's pixel regression steps: train a small U-Net on a synthetic scene whose target is
a known combination of its bands (:mod:`.synthetic`), then Predict Values writes the value
raster of the scene. Each step is the job a dialog or Processing algorithm builds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..jobs import Job


def run_regression_demo(folder: Path, run: Callable[[Job, str], dict], epochs: int = 4) -> dict:
    """Train on ``folder``/scene (96 px) for ``epochs`` × 6 steps and predict it; what was
    written and the validation metrics (MAE, RMSE, R², bias)."""
    from .jobs import PredictValuesJob, TrainPixelRegressionJob
    from .synthetic import make_regression_scene

    scene = make_regression_scene(Path(folder) / "scene", size=96)
    train = TrainPixelRegressionJob(
        rasters=[str(scene.raster)], targets=[str(scene.target)], target_name="height",
        target_unit="m", architecture="unet", encoder="resnet18", patch_size=64, split=75.0,
        epochs=epochs, steps_per_epoch=6, batch_size=8, learning_rate=0.003,
        output_model=str(Path(folder) / "regression.dltmodel.safetensors"))
    trained = run(train, "regression 1/2: train pixel regression")
    predicted = run(PredictValuesJob(input=str(scene.raster), model=train.output_model,
                                     output=str(Path(folder) / "values.tif")),
                    "regression 2/2: predict values")
    metrics = trained.get("metrics") or {}
    return {"regression_model": train.output_model, "regression_report": trained.get("report"),
            "regression_metrics": {k: metrics.get(k) for k in ("mae", "rmse", "r2", "bias")},
            "value_raster": predicted.get("output")}
