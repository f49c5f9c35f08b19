"""Does the desktop stay responsive while the map preview updates and while suggestions are
computed (issue 20: no event-loop stall over 200 ms)? Measured in the real QGIS desktop.

    flock /work/heavy.lock .venv/bin/python bench/ui_stall.py [--display 95] [--epochs 10]
                                                              [--shots DIR]

Deploys the plugin (linked) into a temporary QGIS profile, writes DeepForest's OSBS_029 (400 ×
400 px RGB) with a labeling project (tree / ground, three labelled 100 px squares), starts QGIS
on an Xvfb display (1366 × 768) and runs, inside QGIS:

1. idle: 3 s with the raster and the Labeling Tool open (the baseline);
2. training: Pixel Segmentation with "Preview on the map" on this raster (PREVIEW_SECONDS=0:
   the budget rule alone spaces previews), the Training Model window shown, the canvas zoomed
   in or out every 2 s (the view file is rewritten, the preview layer drawn again); at the
   end the preview layer is removed (the keep question answered No);
3. suggest: the Labeling Tool's Suggest… with the model just trained, then Next;
4. with ``--shots``: Suggest… and Next with a model of every other family that suggests (random
   weights, ``tests/family_models.py``, renamed to this project's classes: the screenshots
   show the loop, not a good model) and a screenshot of each, and one of the preview layer
   mid-training.

A QTimer ticks every 20 ms on the GUI thread; the longest gap between two ticks in each phase is
the worst stall (a tick that follows a screenshot taken by the probe itself is not counted). The
slots of the plugin that run on the GUI thread are timed too: MapPreview.handle_event (the
preview layer re-pointed and styled), SuggestionLoop._suggested (the suggestions layer loaded)
and next (zoom), and the Training Model window's handle_event (every progress event). Prints
each phase's worst gap (and which of these slots ran inside it, if any) and the slot times, in
ms; the warnings and errors QGIS logged are printed too.

Measured on 2 shared CPU cores, Xvfb 1366 × 768, 10 epochs (2026-12-05), two runs (the
second after the preview became see-through and the Labeling Tool stopped asking GDAL for a
suggestions layer the project does not have yet): the worst gap in ms (none over 200 ms in any
phase) and the plugin's slots, ms per call:

    phase                       worst gap    plugin slot (each call, run 1 / run 2)
    idle                          24 / 22
    training with preview         49 / 102   preview layer re-pointed: 4, 5, 4, 8 / 6, 4, 6, 6
    Suggest… (trained U-Net)      46 / 59    suggestions layer loaded: 28 / 29
    Next (zoom), all families     27 / 29    7–10 / 8–12
    Suggest… detection            32 / 35    11 / 12
    Suggest… instances            49 / 44    15 / 15
    Suggest… grid                 30 / 31    15 / 12
    Suggest… chips                28 / 37    12 / 12

A third run (the Training Model window's slot timed, and the slot inside each worst gap named):
worst gaps 27 idle, 48 training (no plugin slot inside it), 47 Suggest… (inside: the
suggestions layer loaded, 23 ms), 26–31 the other phases; the window's slot took 0.2 ms median,
3 ms at most over 129 events. In run 2 (102 ms) the slots timed then took at most 8 ms.

Nothing our code runs on the GUI thread comes near 200 ms, so nothing was moved off it: the
work (training, previews, scoring windows) runs in the worker process, and the slots only
re-point one layer or load the small suggestions layer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

PROBE = r'''
import dataclasses, json, time, traceback
from pathlib import Path
from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer, QgsSettings
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface, plugins

CFG = json.loads(Path(CONFIG).read_text())
OUT = Path(CFG["result"])
state = {"phase": "start", "last": None, "skip": False, "gaps": {}, "slots": {}, "log": [],
         "shots": [], "notes": [], "recent": ("", 0.0)}

def save():
    OUT.write_text(json.dumps({k: state[k] for k in ("phase", "gaps", "slots", "log", "shots",
                                                        "notes")}))

def tick():
    now = time.perf_counter()
    if state["last"] is not None and not state["skip"]:
        g = state["gaps"].setdefault(state["phase"], {"worst": 0.0, "ticks": 0, "over": 0})
        gap = (now - state["last"]) * 1000
        g["ticks"] += 1
        if gap > g["worst"]:   # which plugin slot ran inside the gap, if any
            name, ended = state["recent"]
            g["worst"], g["during"] = gap, name if ended > state["last"] else "no plugin slot"
        g["over"] += gap > 200
    state["skip"] = False
    state["last"] = now

def timed(name, fn):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            end = time.perf_counter()
            state["slots"].setdefault(name, []).append((end - t) * 1000)
            state["recent"] = (name, end)
    return wrapper

def shot(name):
    if not CFG["shots"]:
        return
    path = str(Path(CFG["shots"]) / f"{name}.png")
    QApplication.primaryScreen().grabWindow(0).save(path)
    state["shots"].append(path)
    state["skip"] = True

def logged(message, tag, level):
    if level in (Qgis.Warning, Qgis.Critical):
        state["log"].append(f"[{tag}] {message}"[:400])
QgsApplication.messageLog().messageReceived.connect(logged)

timer = QTimer()
timer.setInterval(20)
timer.timeout.connect(tick)
S = {}

def later(ms, fn):
    def run():
        try:
            fn()
        except Exception:
            state["notes"].append(traceback.format_exc())
            finish()
    QTimer.singleShot(ms, run)

def finish():
    state["phase"] = "done"
    save()

def setup():
    iface.mainWindow().showMaximized()   # no window manager on Xvfb: the whole screen
    iface.mainWindow().setGeometry(QApplication.primaryScreen().geometry())
    S["plugin"] = plugins["deep_learning_trainer"]
    from deep_learning_trainer.gui.labeling.dock import open_labeling_tool
    S["dock"] = dock = open_labeling_tool(S["plugin"])
    dock.open_project(CFG["project"])
    loop = dock.suggestions
    loop._suggested = timed("suggestions layer (_suggested)", loop._suggested)
    loop.next = timed("Next (zoom)", loop.next)
    S["raster"] = next(l for l in QgsProject.instance().mapLayers().values()
                       if isinstance(l, QgsRasterLayer))
    iface.mapCanvas().setExtent(S["raster"].extent())
    iface.mapCanvas().refresh()
    timer.start()
    state["phase"] = "idle"
    later(3000, train)

def train():
    from deep_learning_trainer.core.jobs import Job
    from deep_learning_trainer.gui.map_preview import MapPreview
    from deep_learning_trainer.gui.training_dialog_parts import start_training, training_window
    from deep_learning_trainer.gui.training_window import TrainingWindow
    TrainingWindow.handle_event = timed("Training Model window (handle_event)",
                                        TrainingWindow.handle_event)
    state["phase"] = "training"
    mp = MapPreview(iface.mapCanvas(), S["raster"], ask=lambda title, text: False)
    shown, other = timed("preview layer (handle_event)", mp.handle_event), mp.handle_event
    mp.handle_event = lambda e: (shown if e.get("name") == "preview" else other)(e)
    job = dataclasses.replace(mp.job_for(Job.load(CFG["job"])), preview_seconds=0.0)
    task = start_training(S["plugin"], job)
    task.map_preview = mp
    task.event.connect(mp.handle_event)
    for signal in (task.succeeded, task.failed, task.cancelled):
        signal.connect(mp.finish)
    window = training_window(S["plugin"], task, job)
    window.resize(430, 420)
    window.move(560, 330)
    window.show()
    S.update(task=task, mp=mp, window=window, zoom=0, shot_epoch=0, t0=time.monotonic())
    task.succeeded.connect(lambda *_: later(1500, suggest_trained))
    task.failed.connect(lambda *a: (state["notes"].append(f"training failed: {a}"), finish()))
    later(2000, pan)

def pan():
    task = S["task"]
    if state["phase"] != "training":
        return
    canvas, extent = iface.mapCanvas(), S["raster"].extent()
    S["zoom"] += 1
    if S["zoom"] % 2:
        extent.scale(0.6)
    canvas.setExtent(extent)
    canvas.refresh()
    mp = S["mp"]
    if mp.layer is not None and mp.epoch >= 2 and not S["shot_epoch"]:
        S["shot_epoch"] = mp.epoch
        later(1500, lambda: shot("preview_mid_training"))
    save()
    if time.monotonic() - S["t0"] > CFG["train_limit"]:
        state["notes"].append("training ran past the limit: cancelled")
        task.cancel()
        return
    later(2000, pan)

def suggest_trained():
    S["window"].hide()
    state["phase"] = "suggest (trained segmentation)"
    run_suggest(CFG["trained_model"], "suggest_pixel_segmentation", list(CFG["models"]))

def run_suggest(model, name, rest):
    dock = S["dock"]
    task = dock.suggestions.suggest(model=model)
    if task is None:
        state["notes"].append(f"{name}: Suggest… started nothing")
        return after_suggest(name, rest)
    task.succeeded.connect(lambda *_: later(1000, lambda: after_suggest(name, rest)))
    task.failed.connect(lambda *a: (state["notes"].append(f"{name} failed: {a}"),
                                    later(3000, lambda: after_suggest(name, rest, False))))

def after_suggest(name, rest, ok=True):
    if ok:
        state["phase"] = "next"
        S["dock"].suggestions.next()
        later(2500, lambda: (shot(name), go_on(rest)))
    else:
        shot(name + "_failed")
        go_on(rest)

def go_on(rest):
    save()
    if not rest:
        return finish()
    task, model = rest[0]
    state["phase"] = f"suggest ({task})"
    iface.mapCanvas().setExtent(S["raster"].extent())
    iface.mapCanvas().refresh()
    later(1500, lambda: run_suggest(model, "suggest_" + task, rest[1:]))

later(4000, setup)
'''


def prepare(work: Path, epochs: int, shots: bool) -> dict:
    """The raster, labeling project, training job and (with ``shots``) the other families'
    models; the probe's configuration."""
    import learn_real_imagery as data
    import numpy as np
    import rasterio
    from rasterio.features import shapes
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    from plugin.core import (
        job_catalog,  # noqa: F401  (registers every job class)
        modelfile,
    )
    from plugin.core.labeling.project import LabelingProject
    from plugin.core.segmentation.jobs import TrainPixelSegmentationJob

    image, profile, crs, mask, _ = data.trees_data()
    raster = work / "OSBS_029.tif"
    with rasterio.open(raster, "w", **profile) as dst:
        dst.write(image)
    project = LabelingProject.create(work / "trees.gpkg", crs)
    project.add_class("tree", "#33a02c")
    project.add_class("ground", "#b15928")
    project.add_raster(raster)
    features = []
    for r0, c0 in ((0, 0), (0, 100), (100, 0)):
        part = mask[r0:r0 + 100, c0:c0 + 100].astype(np.uint8)
        tf = window_transform(Window(c0, r0, 100, 100), profile["transform"])
        features += [(1 if v else 2, g) for g, v in shapes(part, transform=tf)]
    project.add_features(features)
    job = TrainPixelSegmentationJob(
        project=str(project.path), device="cpu", unlabelled_pixels="unknown", patch_size=64,
        epochs=epochs, steps_per_epoch=10, num_workers=0,
        output_model=str(work / "trees.dltmodel.safetensors"))
    job.save(work / "job.json")
    models = []
    if shots:
        import torch

        from plugin.core.families import FAMILIES
        from tests.family_models import BUILDERS

        names = {1: ("tree", "#33a02c"), 2: ("ground", "#b15928")}
        with rasterio.open(raster) as ds:
            pixel = (abs(ds.transform.a), abs(ds.transform.e))
        for fam in FAMILIES:
            if not fam.suggests or fam.task == "pixel_segmentation" or fam.task not in BUILDERS:
                continue
            torch.manual_seed(0)
            network, card = BUILDERS[fam.task]()
            for c in card["classes"]:
                if int(c["id"]) in names:
                    c["name"], c["color"] = names[int(c["id"])]
            card.update(pixel_size=pixel, crs=crs,
                        mean=[float(v) for v in image.reshape(3, -1).mean(1)],
                        std=[float(v) for v in image.reshape(3, -1).std(1)])
            path = work / f"{fam.task}.dltmodel.safetensors"
            modelfile.save_model(path, network, card)
            models.append((fam.task, str(path)))
    return {"project": str(project.path), "job": str(work / "job.json"),
            "trained_model": job.output_model, "models": models}


def main() -> None:
    import build

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--display", type=int, default=95)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--shots", default="", help="folder for the screenshots (none: no shots)")
    ap.add_argument("--limit", type=int, default=540, help="seconds before giving up")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ui_stall_"))
    shots = Path(args.shots).resolve() if args.shots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    config = prepare(work, args.epochs, bool(shots))
    config.update(result=str(work / "result.json"), shots=str(shots or ""),
                  train_limit=args.limit * 0.6)
    (work / "config.json").write_text(json.dumps(config))
    (work / "probe.py").write_text(f"CONFIG = {str(work / 'config.json')!r}\n" + PROBE)
    os.environ["QGIS_PROFILES_DIR"] = str(work / "profiles")
    build.cmd_deploy(type("Args", (), {"profile": "stall", "link": True})())
    xvfb = subprocess.Popen(["Xvfb", f":{args.display}", "-screen", "0", "1366x768x24",
                             "-nolisten", "tcp"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    env.update({"DISPLAY": f":{args.display}", "DLTRAINER_PYTHON": str(ROOT / ".venv/bin/python"),
                "PATH": build.system_path()})
    time.sleep(1.5)
    qgis = subprocess.Popen(["qgis", "--profiles-path", str(work), "--profile", "stall",
                             "--nologo", "--noversioncheck", "--code", str(work / "probe.py")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    result, deadline = {}, time.monotonic() + args.limit
    try:
        while time.monotonic() < deadline:
            time.sleep(2)
            try:
                result = json.loads((work / "result.json").read_text())
            except (OSError, ValueError):
                continue
            if result.get("phase") == "done":
                break
        else:
            print(f"gave up after {args.limit} s in phase {result.get('phase')}")
    finally:
        os.killpg(qgis.pid, 9)
        xvfb.kill()
    print(f"\nworst gap between 20 ms ticks on the GUI thread, ms (issue 20: at most 200); "
          f"{args.epochs} epochs")
    for phase, g in result.get("gaps", {}).items():
        print(f"  {phase:<34}{g['worst']:8.0f}   ({g['ticks']} ticks, {g['over']} over 200 ms; "
              f"worst during: {g.get('during', '?')})")
    print("plugin slots on the GUI thread, ms (each call):")
    for name, times in result.get("slots", {}).items():
        print(f"  {name:<34}" + (", ".join(f"{t:.0f}" for t in times) if len(times) <= 12 else
                                 f"{len(times)} calls, median {statistics.median(times):.1f}, "
                                 f"max {max(times):.0f}"))
    for line in result.get("notes", []) + result.get("log", []):
        print("  note:", line)
    for path in result.get("shots", []):
        print("  shot:", path)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
