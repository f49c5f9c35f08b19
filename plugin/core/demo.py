"""The demo: the main job of the product on the bundled (seeded synthetic) sample."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .jobs import JobContext


def run_demo(output: str | Path, ctx: JobContext) -> dict:
    """Run the product's main job on the sample scene into ``output``; return what was written."""
    from .basic_jobs import EnvironmentReportJob, SelfTestJob
    from .runner import run_in_worker
    from .synthetic import make_scene

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    scene = make_scene(output / "sample", size=256, bands=3, seed=0)
    ctx.log(f"sample scene: {scene.raster} with labels {scene.labels}")
    report = run_in_worker(EnvironmentReportJob())
    (output / "environment.json").write_text(json.dumps(report, indent=2))
    ctx.log("environment: torch " + str(report["libraries"].get("torch")) + ", CUDA devices: "
            + (", ".join(d["name"] for d in report["cuda_devices"]) or "none"))
    result = run_in_worker(SelfTestJob(steps=3, delay=0.0),
                           on_event=lambda e: ctx.emit(e) if e.get("event") == "progress" else None)
    outputs = {"sample_raster": str(scene.raster), "sample_labels": str(scene.labels),
               "environment_report": str(output / "environment.json"),
               "worker_self_test": result, "seconds": round(time.monotonic() - started, 1),
               "note": "label -> train -> classify joins the demo as those tools land"}
    return outputs
