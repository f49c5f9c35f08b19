"""Bad-input sweep (issues 8 and 18): feed faults through ``dltrain`` and ``qgis_process.bin`` and
count how each ends: clear (one error line naming the cause, and its fix), traceback, wrong
result, data lost (the user's file or GeoPackage layers checked after the run).

    .venv/bin/python bench/bad_input_sweep.py [--work DIR] [--skip-qgis] [--families-only]

Every family (tiny random-weight models of tests/family_models.py): GeoPackage outputs beside
the user's layers, outputs onto what a job reads, the box importers, rasters unlike the training
raster, edited model cards, full disks (RLIMIT_FSIZE), --processes, ONNX export, kill -9.
Runs THIS checkout's dltrain (``python -m plugin.cli``). Small synthetic inputs; about 5 minutes
on 2 cores (--families-only: about 3).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plugin.core import modelfile  # noqa: E402
from plugin.core.labeling.project import LabelingProject  # noqa: E402
from plugin.core.synthetic import make_scene  # noqa: E402

QGIS_PROCESS = "/usr/bin/qgis_process.bin"
#: ``dltrain`` of THIS checkout (the virtual environment's ``dltrain`` script may point at another)
DLTRAIN = [str(ROOT / ".venv/bin/python"), "-m", "plugin.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
ROWS: list[tuple[str, str, str]] = []
#: words of a fix inside an error line ("…: use 96", "…; check LABELS")
FIX_WORDS = (r"\b(use|check|give|choose|set|change|add|remove|reproject|rename|run|pick|write|"
             r"free|delete|move|make|train|export|retrain|save|select|try|name|keep|wait|stop|"
             r"convert|takes|draw|import|lower|raise|open|close|install|update)\b")


def record(case: str, outcome: str, note: str = "") -> None:
    ROWS.append((case, outcome, note))
    print(f"{outcome:12s} {case}  {note}"[:220], flush=True)


def one_line(outcome: tuple[str, str], done: subprocess.CompletedProcess) -> tuple[str, str]:
    """A 'clear' refusal of dltrain is ONE message: a single ``error: <cause>`` line and its fix
    (a ``fix:`` line, or a clause of the error line telling what to do); no second error."""
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    if outcome[0] != "clear" or done.returncode == 0 or not errors:
        return outcome    # a success, or qgis_process (its own wording around the message)
    fixes = [ln for ln in done.stderr.splitlines() if ln.startswith("fix:")]
    told = fixes or re.search(FIX_WORDS, errors[0].split(":", 2)[-1], re.I)
    if len(errors) != 1 or not told:
        return "unexpected", f"{len(errors)} error line(s), {len(fixes)} fix: {outcome[1]}"
    return outcome[0], " ".join([errors[0], *fixes])[:300]


def classify_output(done: subprocess.CompletedProcess, expect: str | None = None,
                    ok: bool = False) -> tuple[str, str]:
    text = done.stdout + done.stderr
    if "Traceback" in text or "Error:" in text.split("error:")[0] and "Traceback" in text:
        return "traceback", text.strip().splitlines()[-1][:150]
    if ok:
        return ("clear" if done.returncode == 0 else "unexpected"), _last_error(text)
    if done.returncode != 0 and (expect is None or expect.lower() in text.lower()):
        said = next((ln.strip() for ln in text.splitlines()
                     if expect and expect.lower() in ln.lower()), _last_error(text))
        return one_line(("clear", said[:200]), done)
    return "unexpected", f"rc={done.returncode} {_last_error(text)}"


def _last_error(text: str) -> str:
    for line in text.splitlines():
        if line.startswith(("error:", "ERROR:")) or "Error" in line[:30]:
            return line[:200]
    return text.strip().splitlines()[-1][:200] if text.strip() else ""


def dltrain(job: dict, work: Path, name: str, **kw) -> subprocess.CompletedProcess:
    path = work / f"{name}.json"
    path.write_text(json.dumps(job))
    return subprocess.run([*DLTRAIN, "run", str(path)], cwd=kw.pop("cwd", work),
                          capture_output=True, text=True, timeout=600, env=ENV, **kw)


def job(kind: str, **params) -> dict:
    return {"kind": kind, "version": 1, "params": params}


def qgis_env(work: Path) -> dict:
    home = work / "home"
    profiles = home / ".local/share/QGIS/QGIS3/profiles"
    env = {**os.environ, "HOME": str(home), "QGIS_PROFILES_DIR": str(profiles),
           "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(work / "xdg"),
           "OMP_NUM_THREADS": "1"}
    env.pop("QGIS_CUSTOM_CONFIG_PATH", None)
    return env


def qgis_run(env: dict, alg: str, cwd: Path, **params) -> subprocess.CompletedProcess:
    args = [QGIS_PROCESS, "--json", "run", f"dltrainer:{alg}"]
    args += [f"--{k}={v}" for k, v in params.items()]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, cwd=cwd)


def make_model(path: Path, **card_changes) -> Path:
    import torch

    from plugin.core.segmentation.network import build_network

    torch.manual_seed(0)
    net = build_network("unet", "resnet18", 3, 3)
    card = modelfile.make_card(
        task="pixel_segmentation", architecture="unet", encoder="resnet18",
        classes=[{"id": 0, "name": "background", "color": "#000000"},
                 {"id": 1, "name": "a", "color": "#ff0000"},
                 {"id": 2, "name": "b", "color": "#00ff00"}],
        bands=3, mean=[100.0] * 3, std=[50.0] * 3, nodata=None, patch_size=64,
        pixel_size=(0.5, 0.5), crs="EPSG:32631", dtype="uint8")
    card.update(card_changes)
    modelfile.save_model(path, net, card)
    return path


def user_geopackage(path: Path) -> Path:
    """A GeoPackage of the user with a layer ``roads``."""
    import shapely
    from pyogrio.raw import write

    write(str(path), shapely.to_wkb(np.array([shapely.Point(1, 2)], dtype=object)),
          [np.array(["A1"], dtype=object)], ["name"], layer="roads", driver="GPKG",
          geometry_type="Point", crs="EPSG:32631")
    return path


def kept_layers(done: subprocess.CompletedProcess, gpkg: Path, own: str | None
                ) -> tuple[str, str]:
    """'data lost' when the user's layer ``roads`` of ``gpkg`` is gone, else the outcome
    (``own``: the layer the run writes; None: any other layer)."""
    import pyogrio

    layers = {str(n) for n, _ in pyogrio.list_layers(gpkg)} if gpkg.is_file() else set()
    if "roads" not in layers:
        return "data lost", f"layers left: {sorted(layers)}"
    if done.returncode:
        return classify_output(done)
    wrote = own in layers if own else bool(layers - {"roads"})
    return ("clear" if wrote else "unexpected"), f"layers: {sorted(layers)}"


def bad_card(path: Path, card) -> Path:
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(4, np.float32)}, str(path),
              metadata={"format": modelfile.FORMAT, "card": json.dumps(card)})
    return path


def copy_as(src: Path, dst: Path, dtype: str, factor: float, **extra) -> Path:
    import rasterio

    with rasterio.open(src) as ds:
        prof = {**ds.profile, "dtype": dtype, **extra}
        data = (ds.read().astype(np.float64) * factor).astype(dtype)
    with rasterio.open(dst, "w", **prof) as out:
        out.write(data)
    return dst


# -- issue 18: every family, the box importers, ONNX export, processes, full disks, kill -9 --------
def expect_warning(done: subprocess.CompletedProcess, phrase: str) -> tuple[str, str]:
    """'clear' when the run succeeded and warned with ``phrase`` (a skipped row, a clipped box,
    a raster unlike the training ones), else the outcome."""
    text = done.stdout + done.stderr
    if "Traceback" in text:
        return "traceback", text.strip().splitlines()[-1][:150]
    line = next((ln for ln in done.stderr.splitlines() if phrase.lower() in ln.lower()), "")
    if done.returncode == 0 and line:
        return "clear", line[:200]
    return "unexpected", f"rc={done.returncode} {_last_error(text)}"


def untouched(outcome: tuple[str, str], files: dict[Path, bytes | None]) -> tuple[str, str]:
    """'data lost' when a file of the user changed (or one that did not exist was made)."""
    for path, data in files.items():
        now = path.read_bytes() if path.exists() else None
        if now != data:
            return "data lost", f"{path.name} {'changed' if now else 'gone'}; {outcome[1]}"
    return outcome


def full_disk(size: int):
    """preexec_fn: writes beyond ``size`` bytes fail (EFBIG) like a full disk."""
    def apply() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return apply


def leftovers(folder: Path) -> list[str]:
    """Locks and temporaries a failed or killed run left in ``folder``."""
    return sorted(p.name for p in folder.iterdir()
                  if ".tmp" in p.name or p.name.endswith(".lock"))


def killed_at(job_file: Path, folder: Path, start: str, delay: float, part: str = "") -> str:
    """Run ``job_file``; kill -9 it ``delay`` s after a file whose name starts with ``start``
    (and holds ``part``) appears in ``folder``. Returns that file's name, '' when the run ended
    first."""
    proc = subprocess.Popen([*DLTRAIN, "run", str(job_file)], cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    seen = ""
    while not seen and proc.poll() is None:
        seen = next((p.name for p in folder.iterdir()
                     if p.name.startswith(start) and part in p.name), "")
        time.sleep(0.002)
    if seen:
        time.sleep(delay)
        proc.kill()
    proc.wait()
    return seen


def family_cases(work: Path, scene) -> dict:
    """The cases of issue 18 for every family (tiny random-weight models of tests/family_models);
    returns what :func:`family_qgis_cases` reuses."""
    from plugin.core.classification.synthetic import make_chip_folder
    from tests.family_models import rgba_project, tiny_model, write_features, write_raster

    fam = work / "families"
    fam.mkdir()
    models = {t: tiny_model(t, fam) for t in ("pixel_segmentation", "object_detection", "grid",
                                              "chip_classification")}
    rgb = write_raster(fam / "rgb.tif")     # the tiny models' training raster (card's CRS etc.)
    variants = {v: write_raster(fam / f"{v}.tif", v) for v in ("uint16", "coarse", "epsg4326")}
    features = write_features(fam / "features.gpkg", rgb)
    dev = {"device": "cpu"}

    # GeoPackage outputs keep the user's layers; outputs onto what the job reads
    for kind, model, extra, own in (
            ("detect_objects", "object_detection", {"engine": "torch", "tile_size": 64},
             "detections"),
            ("classify_grid", "grid", {}, "grid_cells"),
            ("classify_chips", "chip_classification",
             {"input": str(features), "raster": str(rgb)}, None)):
        mine = user_geopackage(fam / f"mine_{kind}.gpkg")
        params = {"input": str(rgb), "model": str(models[model]), "output": str(mine), **dev,
                  **extra}
        done = dltrain(job(kind, **params), fam, f"gpkg_{kind}")
        record(f"dltrain {kind} OUTPUT = a GeoPackage holding other layers",
               *kept_layers(done, mine, own))
    tags = fam / "tags"
    make_chip_folder(tags, layout="multilabel_csv", per_class=3, multi_label=True)
    labels = tags / "labels.csv"
    done = dltrain(job("classify_chips", input=str(tags), model=str(models["chip_classification"]),
                       output=str(labels), **dev), fam, "chips_labels")
    record("dltrain classify_chips (chip model) OUTPUT = the chips folder's labels.csv",
           *untouched(classify_output(done, "inside"),
                      {labels: labels.read_bytes()}))
    folder = fam / "imagefolder"
    make_chip_folder(folder, per_class=2)
    chip = next(folder.rglob("*.tif"))
    named = chip.with_name(chip.stem + "_9.tif")
    done = dltrain(job("train_chip_classifier", input=str(folder), output_model=str(named),
                       epochs=1, batch_size=4, test_size=0, num_workers=0,
                       architecture="resnet18", **dev), fam, "chip_model_in_chips")
    record("dltrain train_chip_classifier OUTPUT_MODEL inside the chips folder, named like a chip",
           *untouched(classify_output(done, "inside"),
                      {named: None, named.with_name(named.stem + ".dltmodel.safetensors"): None}))

    # box importers: skipped / clipped rows warn; malformed files are refused, no project left
    boxes = fam / "boxes"
    boxes.mkdir()
    img = boxes / "scene.tif"
    img.write_bytes(Path(scene.raster).read_bytes())

    def coco(annotations, categories=None, images=None):
        return json.dumps({"images": [{"id": 1, "file_name": "scene.tif"}] if images is None
                           else images, "annotations": annotations,
                           "categories": categories or [{"id": 1, "name": "car"}]})

    def ann(i, bbox, cat=1):
        return {"id": i, "image_id": 1, "category_id": cat, "bbox": bbox}

    def voc(objects, filename="scene.tif"):
        return (f"<annotation><filename>{filename}</filename>" + "".join(
            f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
            f"<ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objects)
            + "</annotation>")

    head = "image_path,xmin,ymin,xmax,ymax,label\n"
    # (case, file name, text, classes.txt, phrase, refused)
    box_cases = [
        ("COCO category_id missing from categories", "a.json",
         coco([ann(1, [1, 2, 10, 10]), ann(2, [20, 20, 5, 5], 7)]), None, "skipped", False),
        ("COCO only unknown category_ids", "b.json", coco([ann(1, [1, 2, 10, 10], 7)]), None,
         "category", True),
        ("VOC <filename> of another image", "c.xml", voc([("tree", 1, 1, 10, 10)], "other.jpg"),
         None, "not scene.tif", True),
        ("YOLO sizes above 1", "scene.txt", "0 0.5 0.5 3 3\n0 0.25 0.25 0.25 0.25\n", "car\n",
         "clipped", False),
        ("YOLO class -1", "scene.txt", "-1 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.2 0.2\n", "car\n",
         "class -1 is not a class index", False),
        ("YOLO class id beyond classes.txt", "scene.txt",
         "0 0.5 0.5 0.2 0.2\n9 0.5 0.5 0.1 0.1\n", "car\n", "class 9 is not a class index",
         False),
        ("COCO bbox with 3 values", "d.json", coco([ann(4, [1, 2, 3])]),
         None, "is not [x, y, width, height]", True),
        ("COCO image without id", "e.json", coco([], images=[{"file_name": "x.tif"}]), None,
         "has no 'id'", True),
        ("COCO non-numeric bbox", "f.json", coco([ann(4, [1, "two", 3, 4])]), None,
         "'two' is not a number", True),
        ("COCO top-level array", "g.json", "[1, 2]", None, "top level is a list", True),
        ("VOC <xmin>a</xmin>", "h.xml", voc([("tree", 1, 1, 9, 9), ("tree", "a", 1, 9, 9)]),
         None, "<xmin> 'a' is not a number", True),
        ("DeepForest CSV with text in xmin", "i.csv",
         head + "scene.tif,1,1,9,9,Tree\nscene.tif,abc,1,9,9,Tree\n", None,
         "xmin 'abc' is not a number", True),
        ("COCO negative width", "j.json", coco([ann(3, [30, 30, -10, 5])]), None,
         "is not a box", True),
        ("VOC xmax < xmin", "k.xml", voc([("tree", 30, 5, 10, 20)]), None, "is empty", True),
        ("DeepForest row with an empty label", "l.csv", head + "scene.tif,1,1,9,9,\n", None,
         "label is empty", True),
    ]
    for i, (case, name, text, names, phrase, refused) in enumerate(box_cases):
        sub = boxes / f"case{i}"
        sub.mkdir()
        (sub / name).write_text(text)
        if names:
            (sub / "classes.txt").write_text(names)
        project = sub / "new.gpkg"
        done = dltrain(job("import_labels", project=str(project), labels=str(sub / name),
                           rasters=[str(img)]), sub, "imp")
        if refused:
            outcome = classify_output(done, phrase)
            if project.exists():
                outcome = ("unexpected", f"a project was left behind; {outcome[1]}")
        else:
            outcome = expect_warning(done, phrase)
        record(f"dltrain import boxes: {case}", *outcome)

    # rasters unlike the training raster; edited model cards
    for variant, phrase, refused in (("uint16", "RESCALE", True),
                                     ("coarse", "far from the training pixel size", False),
                                     ("epsg4326", "Reproject", False)):
        done = dltrain(job("classify_grid", input=str(variants[variant]),
                           model=str(models["grid"]), output=str(fam / f"g_{variant}.gpkg"),
                           **dev), fam, f"grid_{variant}")
        record(f"dltrain classify_grid on a {variant} copy of its training raster",
               *(classify_output(done, phrase) if refused
                 else expect_warning(done, phrase)))
    done = dltrain(job("detect_objects", input=str(variants["uint16"]),
                       model=str(models["object_detection"]), output=str(fam / "d16.gpkg"),
                       engine="torch", **dev), fam, "det_uint16")
    record("dltrain detect_objects on a uint16 copy of its training raster",
           *classify_output(done, "RESCALE"))
    import rasterio
    from rasterio.transform import from_origin

    elsewhere = write_raster(fam / "elsewhere.tif")
    with rasterio.open(elsewhere, "r+") as ds:
        ds.transform = from_origin(510_000.0, 5_000_000.0, 0.5, 0.5)
    done = dltrain(job("classify_chips", input=str(features), raster=str(elsewhere),
                       model=str(models["chip_classification"]), output=str(fam / "off.gpkg"),
                       **dev), fam, "chips_off")
    record("dltrain classify_chips, vector layer not overlapping the raster",
           *classify_output(done, "lies on the raster"))
    from safetensors import safe_open
    from safetensors.torch import save_file

    def edited(task: str, edit) -> Path:
        with safe_open(str(models[task]), framework="pt") as f:
            meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        card = json.loads(meta["card"])
        edit(card)
        out = fam / f"edited_{task}_{len(ROWS)}.dltmodel.safetensors"
        save_file(tensors, str(out), metadata={**meta, "card": json.dumps(card)})
        return out

    def fewer(card):
        card["classes"] = card["classes"][:-1]
        if card.get("thresholds"):
            card["thresholds"] = card["thresholds"][:-1]

    other_arch = {"pixel_segmentation": "deeplabv3plus", "object_detection": "retinanet",
                  "grid": "resnet34", "chip_classification": "resnet34"}
    apply_kind = {"pixel_segmentation": ("classify_pixels", {"output": "o.tif"}),
                  "object_detection": ("detect_objects", {"output": "o.gpkg"}),
                  "grid": ("classify_grid", {"output": "o.gpkg"}),
                  "chip_classification": ("classify_chips", {"output": "o.gpkg",
                                                             "input": str(features),
                                                             "raster": str(rgb)})}
    for task in models:
        edits = {"fewer classes than the network outputs": fewer,
                 "architecture edited": lambda c, t=task: c.update(architecture=other_arch[t])}
        if task != "pixel_segmentation":
            edits["thresholds edited"] = lambda c: c.update(
                thresholds=[1.5, 0.5], score_threshold=2.0, nms_iou=-1.0)
        for name, edit in edits.items():
            kind, extra = apply_kind[task]
            out = fam / f"card_{len(ROWS)}"
            params = {"input": str(rgb), "model": str(edited(task, edit)), **dev, **extra}
            params["output"] = str(out / extra["output"])
            out.mkdir()
            done = dltrain(job(kind, **params), fam, "card")
            record(f"dltrain {kind}, model card: {name}",
                   *classify_output(done, "model"))
    rgba = rgba_project(fam / "rgba_scene")
    done = dltrain(job("train_grid_model", project=str(rgba), grid_size=32, batch_size=16,
                       epochs=1, architecture="resnet18", num_workers=0,
                       output_model=str(fam / "rgba_grid.dltmodel.safetensors"), **dev),
                   fam, "grid_rgba")
    outcome = classify_output(done, ok=True)
    if outcome[0] == "clear":
        bands = modelfile.read_model_card(fam / "rgba_grid.dltmodel.safetensors")["bands"]
        outcome = ("clear" if bands == 3 else "wrong result", f"model of {bands} bands")
    record("dltrain train_grid_model on an RGBA raster (alpha = mask, 3 data bands)", *outcome)

    # full disks: the previous file kept, the message says disk full and names the file, and
    # nothing left that blocks the next run
    big = write_raster(fam / "big.tif")
    full_cases = [
        ("detect_objects", "detections into a GeoPackage", "object_detection",
         {"input": str(big), "engine": "torch", "tile_size": 64}, "gpkg", 60_000),
        ("classify_grid", "grid cells into a GeoPackage", "grid", {"input": str(big)}, "gpkg",
         60_000),
        ("classify_chips", "a chips CSV", "chip_classification", {"batch_size": 64}, "csv",
         10_000),
    ]
    many = fam / "many"
    make_chip_folder(many, per_class=150, size=8)
    for kind, what, task, extra, ext, size in full_cases:
        prev = fam / f"prev_{kind}.{ext}"
        if ext == "gpkg":
            user_geopackage(prev)
        else:
            prev.write_text("chip,class\nold,a\n")
            extra = {**extra, "input": str(many)}
        before = prev.read_bytes()
        params = {"model": str(models[task]), "output": str(prev), **dev, **extra}
        done = dltrain(job(kind, **params), fam, f"full_{kind}", preexec_fn=full_disk(size))
        outcome = classify_output(done)
        said = done.stderr.lower()
        if outcome[0] == "clear" and not (("disk is full" in said or "too large" in said)
                                          and prev.name in done.stderr):
            outcome = ("unexpected", f"not naming a full disk and the file: {outcome[1]}")
        outcome = untouched(outcome, {prev: before})
        left = leftovers(fam)
        if outcome[0] == "clear" and left:
            outcome = ("unexpected", f"left {left}")
        if outcome[0] == "clear":
            again = dltrain(job(kind, **params), fam, f"again_{kind}")
            if again.returncode:
                outcome = ("unexpected", f"the next run failed: {_last_error(again.stderr)}")
        record(f"dltrain {kind}, disk full while writing {what}", *outcome)

    # processes, --set, NMS_IOU, ONNX of families without an export
    project = str(work / "labels.gpkg")
    seg = dict(project=project, architecture="unet", encoder="resnet18", patch_size=64,
               epochs=1, batch_size=4, steps_per_epoch=1, num_workers=0, device="cpu",
               split=100, output_model=str(fam / "proc.dltmodel.safetensors"))
    path = fam / "proc.json"
    path.write_text(json.dumps(job("train_pixel_segmentation", **seg)))
    env = ENV
    done = subprocess.run([*DLTRAIN, "run", str(path), "--processes",
                           "64"], cwd=fam, capture_output=True, text=True, timeout=600, env=env)
    record(f"dltrain run --processes 64 on {os.cpu_count()} cores",
           *classify_output(done, "CPU core"))
    done = subprocess.run([*DLTRAIN, "run", str(path), "--processes",
                           "2", "--set", "epochs=0"], cwd=fam, capture_output=True, text=True,
                          timeout=600, env=env)
    record("dltrain run job.json --processes 2 --set epochs=0",
           *classify_output(done, "EPOCHS"))
    two = fam / "two.dltmodel.safetensors"
    done = subprocess.run([*DLTRAIN, "run", str(path), "--processes", "2", "--set",
                           f"output_model={two}", "--set", "batch_size=2"], cwd=fam,
                          capture_output=True, text=True, timeout=600, env=env)
    outcome = classify_output(done, ok=True)
    record("dltrain run job.json --processes 2 --set output_model=… --set batch_size=2",
           outcome[0] if outcome[0] != "clear" or modelfile.is_model_file(two) else
           "unexpected", outcome[1])
    done = subprocess.run([*DLTRAIN, "run", str(path), "--processes",
                           "2", "--set", "nonsense"], cwd=fam, capture_output=True, text=True,
                          timeout=600, env=env)
    record("dltrain run job.json --processes 2 --set nonsense",
           *classify_output(done, "name=value"))
    done = dltrain(job("detect_objects", input=str(rgb), model=str(models["object_detection"]),
                       output=str(fam / "nms.gpkg"), nms_iou=-0.5, **dev), fam, "nms")
    record("dltrain detect_objects NMS_IOU -0.5",
           *classify_output(done, "NMS_IOU -0.5"))
    for task in ("grid", "chip_classification"):
        done = dltrain(job("export_onnx", model=str(models[task]),
                           output=str(fam / f"{task}.onnx")), fam, f"onnx_{task}")
        record(f"dltrain export_onnx of a {task} model",
               *classify_output(done, "takes Pixel Segmentation and Object Detection"))

    # kill -9 while a training holds its lock, and while a GeoPackage layer is being written:
    # the user's layers are kept and nothing left blocks the rerun
    out = fam / "killed.dltmodel.safetensors"
    long = {**seg, "epochs": 50, "steps_per_epoch": 2, "output_model": str(out)}
    path.write_text(json.dumps(job("train_pixel_segmentation", **long)))
    seen = killed_at(path, fam, f".{out.name}.dltrainer.lock", 3.0)
    done = dltrain(job("train_pixel_segmentation", **seg | {"output_model": str(out)}), fam,
                   "after_kill")
    outcome = classify_output(done, ok=True)
    record("dltrain training killed with kill -9, then run again with the same OUTPUT_MODEL",
           outcome[0] if seen else "unexpected", f"killed {seen or 'never'}; {outcome[1]}")
    large = fam / "large.tif"        # 512 × 512 px: 256 cells, a write long enough to hit
    with rasterio.open(rgb) as src:
        profile, data = src.profile, src.read()
    with rasterio.open(large, "w", **{**profile, "width": 512, "height": 512}) as dst:
        dst.write(np.tile(data, (1, 8, 8)))
    mine = user_geopackage(fam / "mine_killed.gpkg")
    path = fam / "killgrid.json"
    params = {"input": str(large), "model": str(models["grid"]), "output": str(mine), **dev}
    path.write_text(json.dumps(job("classify_grid", **params)))
    for delay in (0.0, 0.03, 0.1):
        seen = killed_at(path, fam, ".mine_killed.", delay, ".tmp")
        lost = kept_layers(subprocess.CompletedProcess([], 0, "", ""), mine, None)
        if lost[0] == "data lost":
            break
    done = dltrain(job("classify_grid", **params), fam, "grid_after_kill")
    outcome = kept_layers(done, mine, "grid_cells")
    record("dltrain classify_grid killed with kill -9 while writing into a GeoPackage (3 times), "
           "then run again", lost[0] if lost[0] == "data lost" else
           (outcome[0] if seen else "unexpected"), f"killed {seen or 'never'}; {outcome[1]}")

    return {"models": models, "rgb": rgb, "variants": variants, "fam": fam}


def family_qgis_cases(made: dict, qgis_env_: dict) -> None:
    """The family cases through qgis_process (``--PARAM=value``)."""
    models, rgb, fam = made["models"], made["rgb"], made["fam"]
    variants = made["variants"]
    mine = user_geopackage(fam / "qmine_det.gpkg")
    done = qgis_run(qgis_env_, "detectobjects", fam, INPUT=str(rgb),
                    MODEL=str(models["object_detection"]), OUTPUT=str(mine), ENGINE=1,
                    DEVICE="cpu")
    record("qgis_process detectobjects OUTPUT = a GeoPackage holding other layers",
           *kept_layers(done, mine, "detections"))
    done = qgis_run(qgis_env_, "detectobjects", fam, INPUT=str(rgb),
                    MODEL=str(models["object_detection"]), OUTPUT=str(fam / "qn.gpkg"),
                    NMS_IOU=-0.5)
    record("qgis_process detectobjects NMS_IOU -0.5", *classify_output(done, "NMS_IOU"))
    done = qgis_run(qgis_env_, "exportonnx", fam, MODEL=str(models["grid"]),
                    OUTPUT=str(fam / "q.onnx"))
    record("qgis_process exportonnx of a grid model",
           *classify_output(done, "takes Pixel Segmentation and Object Detection"))
    done = qgis_run(qgis_env_, "classifygrid", fam, INPUT=str(variants["uint16"]),
                    MODEL=str(models["grid"]), OUTPUT=str(fam / "q16.gpkg"))
    record("qgis_process classifygrid on a uint16 copy", *classify_output(done, "RESCALE"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default="")
    parser.add_argument("--skip-qgis", action="store_true")
    parser.add_argument("--families-only", action="store_true",
                        help="only the cases of issue 18 (every family)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="dlt-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    scene = make_scene(work / "scene", size=128, seed=1)
    project = LabelingProject.create(work / "labels.gpkg", scene.crs)
    for _, name, color in scene.classes:
        project.add_class(name, color)
    project.add_raster(scene.raster)
    project.add_features([(f["class_id"], f["geometry"]) for f in scene.features])
    gpkg = str(work / "labels.gpkg")
    model = make_model(work / "m.dltmodel.safetensors")
    raster = str(scene.raster)
    train = dict(project=gpkg, architecture="unet", encoder="resnet18", patch_size=64,
                 epochs=1, batch_size=4, steps_per_epoch=1, num_workers=0, device="cpu",
                 split=100)

    made = family_cases(work, scene)
    if args.families_only:
        return finish(work, made, args)

    # -- data loss -----------------------------------------------------------------------------
    for target, what in ((raster, "training raster"), (gpkg, "labeling project")):
        before = Path(target).read_bytes()
        done = dltrain(job("train_pixel_segmentation", **train, output_model=target), work,
                       "train_on_input")
        kept = Path(target).read_bytes() == before
        out = modelfile.is_model_file(Path(target).with_name(
            Path(target).name.split(".")[0] + ".dltmodel.safetensors"))
        record(f"dltrain train OUTPUT_MODEL = {what}",
               "clear" if kept and out and done.returncode == 0 else
               ("data lost" if not kept else "unexpected"),
               "model written as .dltmodel.safetensors beside it; input kept")
    before = model.read_bytes()
    done = dltrain(job("classify_pixels", input=raster, model=str(model), output=str(model)),
                   work, "cls_model")
    outcome = classify_output(done, "would be overwritten")
    record("dltrain classify OUTPUT = MODEL", outcome[0] if model.read_bytes() == before
           else "data lost", outcome[1])
    done = dltrain(job("classify_pixels", input=raster, model=str(model),
                       output=str(work / "same.tif"),
                       output_probabilities=str(work / "same.tif")), work, "cls_same")
    record("dltrain classify OUTPUT = OUTPUT_PROBABILITIES", *classify_output(done, "same file"))
    done = dltrain(job("export_onnx", model=str(model), output=str(model)), work, "onnx_model")
    record("dltrain ONNX OUTPUT = MODEL", *classify_output(done, "would be overwritten"))
    done = dltrain(job("build_label_rasters", project=gpkg, output_folder=raster), work, "blr")
    record("dltrain build OUTPUT_FOLDER = training raster",
           *classify_output(done, "would be overwritten"))
    # two trainings with the same output
    long = dict(train, epochs=30, steps_per_epoch=2)
    same = str(work / "same.dltmodel.safetensors")
    (work / "t1.json").write_text(json.dumps(job("train_pixel_segmentation", **long,
                                                 output_model=same)))
    first = subprocess.Popen([*DLTRAIN, "run", str(work / "t1.json")], cwd=work,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    time.sleep(8)
    done = dltrain(job("train_pixel_segmentation", **train, output_model=same), work, "t2")
    record("dltrain two trainings, same OUTPUT_MODEL",
           *classify_output(done, "being written by another run"))
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=300)
    record("dltrain Ctrl+C during training", "clear" if first.returncode == 130 and
           "cancelled" in err and "Traceback" not in err else "unexpected",
           f"rc={first.returncode}; {err.strip().splitlines()[-1][:120]}")

    # -- tracebacks ----------------------------------------------------------------------------
    ro = work / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    immutable = os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(ro)]).returncode == 0
    try:
        cases = [
            ("build", job("build_label_rasters", project=gpkg, output_folder=str(ro / "l"))),
            ("train", job("train_pixel_segmentation", **train,
                          output_model=str(ro / "m.dltmodel.safetensors"))),
            ("classify", job("classify_pixels", input=raster, model=str(model),
                             output=str(ro / "c.tif"))),
            ("ONNX", job("export_onnx", model=str(model), output=str(ro / "m.onnx"))),
            ("export chips", job("export_chips", project=gpkg, output_folder=str(ro / "c"))),
        ]
        for name, j in cases:
            done = dltrain(j, work, f"ro_{name}")
            record(f"dltrain {name} into a read-only folder", *classify_output(done,
                                                                              "not writable"))
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(ro)])
        ro.chmod(0o755)
    a_file = work / "a_file"
    a_file.write_text("x")
    for name, j in (("build", job("build_label_rasters", project=gpkg,
                                  output_folder=str(a_file))),
                    ("export chips", job("export_chips", project=gpkg,
                                         output_folder=str(a_file))),
                    ("classify", job("classify_pixels", input=raster, model=str(model),
                                     output=str(a_file / "c.tif")))):
        done = dltrain(j, work, f"file_{name}")
        record(f"dltrain {name}: output folder is a file", *classify_output(done, "file"))
    big = make_scene(work / "big", size=640, noise=0.3)
    prev = work / "prev.tif"
    prev.write_bytes(b"previous")

    def limit() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
    done = dltrain(job("classify_pixels", input=str(big.raster), model=str(model),
                       output=str(prev), output_probabilities=str(work / "prevp.tif"),
                       engine="torch", device="cpu"), work, "full", preexec_fn=limit)
    outcome = classify_output(done, "failed")
    record("dltrain classify, disk full while writing", outcome[0] if prev.read_bytes() ==
           b"previous" else "data lost", outcome[1])
    done = dltrain(job("export_chips", project=gpkg, output_folder=str(work / "fullchips"),
                       patch_size=64), work, "fullchips", preexec_fn=lambda: (
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN),
        __import__("resource").setrlimit(__import__("resource").RLIMIT_FSIZE, (8000, 8000))))
    record("dltrain export chips, disk full while writing", *classify_output(done, "failed"))
    # issue 18: GeoPackage outputs keep the user's other layers; outputs inside what is read
    mine = user_geopackage(work / "mine.gpkg")
    done = dltrain(job("classify_pixels", input=raster, model=str(model),
                       output=str(work / "v.tif"), output_vector=str(mine), engine="torch",
                       device="cpu"), work, "vector_into_gpkg")
    record("dltrain classify OUTPUT_VECTOR = a GeoPackage holding other layers",
           *kept_layers(done, mine, "classes"))
    done = dltrain(job("classify_pixels", input=raster, model=str(model),
                       output=str(work / "v.tif"), output_vector=str(mine), engine="torch",
                       device="cpu"), work, "vector_full", preexec_fn=lambda: (
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN),
        __import__("resource").setrlimit(__import__("resource").RLIMIT_FSIZE, (60000, 60000))))
    outcome = classify_output(done, "disk is full")
    record("dltrain classify, disk full while writing polygons into a GeoPackage",
           outcome[0] if kept_layers(done, mine, "classes")[0] == "clear" else "data lost",
           outcome[1])
    from plugin.core.classification.synthetic import make_chip_folder

    make_chip_folder(work / "tags", layout="multilabel_csv", per_class=3, multi_label=True)
    labels = work / "tags" / "labels.csv"
    before = labels.read_bytes()
    done = dltrain(job("classify_chips", input=str(work / "tags"), model=str(model),
                       output=str(labels)), work, "chips_onto_labels")
    outcome = classify_output(done, "inside")
    record("dltrain classify chips OUTPUT = the chips folder's labels.csv",
           outcome[0] if labels.read_bytes() == before else "data lost", outcome[1])
    # model files
    data = model.read_bytes()
    (work / "trunc.dltmodel.safetensors").write_bytes(data[: len(data) // 3])
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    key = next(k for k in header if k != "__metadata__")
    header[key]["data_offsets"][1] += 10**9
    text = json.dumps(header).encode()
    (work / "past.dltmodel.safetensors").write_bytes(struct.pack("<Q", len(text)) + text +
                                                     data[8 + n:])
    good = modelfile.read_model_card(model)
    cards = {"truncated": None, "offsets past the end": None, "card is a list": [1, 2],
             "classes as a dict": {**good, "classes": {"0": "bg"}},
             "bands 'RGB'": {**good, "bands": "RGB"}, "patch size 1e12": {**good,
                                                                          "patch_size": 1e12},
             "100000 classes": {**good, "classes": [{"id": i, "name": str(i)}
                                                    for i in range(100000)]},
             "std 0": {**good, "std": [50.0, 0.0, 50.0]},
             "future format_version": {**good, "format_version": 7}}
    for name, card in cards.items():
        path = {"truncated": work / "trunc.dltmodel.safetensors",
                "offsets past the end": work / "past.dltmodel.safetensors"}.get(name)
        path = path or bad_card(work / f"card_{len(ROWS)}.dltmodel.safetensors", card)
        done = dltrain(job("classify_pixels", input=raster, model=str(path),
                           output=str(work / "o.tif")), work, "card")
        record(f"dltrain classify, model: {name}",
               *classify_output(done, "newer plugin" if "future" in name
                                else "not a valid model file"))
    broken = work / "broken.tif"
    broken.write_bytes(big.raster.read_bytes()[:5000])
    done = dltrain(job("classify_pixels", input=str(broken), model=str(model),
                       output=str(work / "o2.tif"), engine="torch", device="cpu"), work, "br")
    record("dltrain classify, input raster truncated", *classify_output(done, "broken.tif"))

    # -- silently wrong ------------------------------------------------------------------------
    import rasterio

    ref = work / "ref.tif"
    dltrain(job("classify_pixels", input=raster, model=str(model), output=str(ref),
                engine="torch", device="cpu"), work, "ref")
    for dtype, factor in (("uint16", 257.0), ("float32", 1 / 255)):
        src = copy_as(scene.raster, work / f"{dtype}.tif", dtype, factor)
        done = dltrain(job("classify_pixels", input=str(src), model=str(model),
                           output=str(work / f"{dtype}_out.tif"), engine="torch",
                           device="cpu"), work, "dt")
        record(f"dltrain classify uint8 model on {dtype} scene", *classify_output(done,
                                                                                 "RESCALE"))
        done = dltrain(job("classify_pixels", input=str(src), model=str(model),
                           output=str(work / f"{dtype}_res.tif"), engine="torch", device="cpu",
                           rescale="dtype"), work, "dt2")
        agree = ((rasterio.open(work / f"{dtype}_res.tif").read(1) ==
                  rasterio.open(ref).read(1)).mean() if done.returncode == 0 else 0)
        record(f"dltrain classify {dtype} scene with RESCALE=dtype",
               "clear" if agree > 0.99 else "wrong result", f"agreement {agree:.4f}")
    with rasterio.open(scene.raster) as ds:
        prof, data = ds.profile, ds.read()
    alpha = np.full(data.shape[1:], 255, np.uint8)
    alpha[:, :32] = 0
    rgba = work / "rgba.tif"
    with rasterio.open(rgba, "w", **{**prof, "count": 4, "photometric": "RGB",
                                     "alpha": "YES"}) as dst:
        dst.write(np.concatenate([data, alpha[None]]))
    done = dltrain(job("classify_pixels", input=str(rgba), model=str(model),
                       output=str(work / "rgba_out.tif"), engine="torch", device="cpu"),
                   work, "rgba")
    ok = done.returncode == 0 and (rasterio.open(work / "rgba_out.tif").read(1)[:, :32]
                                   == 255).all()
    record("dltrain classify RGBA orthophoto with a 3-band model", "clear" if ok else
           "wrong result", _last_error(done.stderr))
    geo = work / "geo.tif"
    with rasterio.open(geo, "w", **{**prof, "crs": "EPSG:4326", "transform":
                                    rasterio.transform.from_origin(10, 50, 1e-5, 1e-5)}) as d:
        d.write(data)
    from pyogrio.raw import read

    areas = []     # m² of each polygon (the area field) with no minimum area
    for min_area in (0, 1):
        done = dltrain(job("classify_pixels", input=str(geo), model=str(model),
                           output=str(work / f"geo_out{min_area}.tif"), min_pixels=0,
                           output_vector=str(work / f"geo{min_area}.gpkg"), min_area=min_area,
                           engine="torch", device="cpu"), work, "geo")
        if done.returncode or min_area:
            break
        meta, _, _, fields = read(str(work / "geo0.gpkg"))
        areas = fields[list(meta["fields"]).index("area")]
    kept = json.loads(done.stdout[done.stdout.index("{"):])["result"]["polygons"] \
        if done.returncode == 0 else -1
    expected = int((np.asarray(areas) >= 1).sum())
    record("dltrain classify EPSG:4326 raster, MIN_AREA=1 m²",
           "clear" if kept == expected and 0 < expected < len(areas) else "wrong result",
           f"{kept} of {len(areas)} polygons kept, {expected} of them ≥ 1 m²")

    # -- messages ------------------------------------------------------------------------------
    wrong = work / "wrong.geojson"
    wrong.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name",
                     "properties": {"name": "urn:ogc:def:crs:EPSG::32632"}}, "features": [
        {"type": "Feature", "properties": {"cls": "a"}, "geometry": f["geometry"]}
        for f in scene.features[:5]]}))
    done = dltrain(job("import_labels", project=gpkg, labels=str(wrong), class_field="cls"),
                   work, "wrong")
    record("dltrain import labels in a wrong CRS", *classify_output(done, "overlaps"))
    empty = work / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    done = dltrain(job("import_labels", project=gpkg, labels=str(empty), class_field="cls"),
                   work, "empty")
    record("dltrain import an empty label file", *classify_output(done, "is empty"))
    blank = copy_as(scene.raster, work / "blank.tif", "uint8", 0.0, nodata=0)
    p2 = LabelingProject.create(work / "blank.gpkg", scene.crs)
    p2.add_class("a")
    p2.add_raster(blank)
    p2.add_features([(1, scene.features[0]["geometry"])])
    done = dltrain(job("build_label_rasters", project=str(work / "blank.gpkg"),
                       output_folder=str(work / "blank_labels")), work, "blank")
    record("dltrain build on an all-nodata raster", "clear" if "no valid pixel" in done.stderr
           else "unexpected", _last_error(done.stderr))
    done = dltrain(job("export_chips", project=gpkg, output_folder=str(work / "p100"),
                       patch_size=100), work, "p100")
    record("dltrain export chips PATCH_SIZE=100", *classify_output(done, "use 96"))
    done = dltrain(job("train_pixel_segmentation", **train, solid_distances="1=2, 3=0.5",
                       output_model=str(work / "best.model")), work, "named")
    named = work / "best.dltmodel.safetensors"
    mode = oct(named.stat().st_mode & 0o777) if named.exists() else "missing"
    record("dltrain train OUTPUT_MODEL=best.model, SOLID_DISTANCES='1=2, 3=0.5'",
           "clear" if done.returncode == 0 and mode == "0o644" else "unexpected",
           f"written {named.name} mode {mode}")

    if not args.skip_qgis and Path(QGIS_PROCESS).exists():
        env = deployed(work)
        rel = work / "relcwd"
        rel.mkdir()
        (rel / "in.tif").write_bytes(scene.raster.read_bytes())
        (rel / "best.model").write_bytes(model.read_bytes())
        done = qgis_run(env, "classifypixels", rel, INPUT="in.tif", MODEL="best.model",
                        OUTPUT="rel_out.tif", ENGINE=1, DEVICE="cpu")
        record("qgis_process classify relative INPUT/MODEL/OUTPUT, MODEL=best.model",
               "clear" if (rel / "rel_out.tif").is_file() else "data lost",
               _last_error(done.stderr) if done.returncode else "rel_out.tif in the cwd")
        done = qgis_run(env, "classifypixels", rel, INPUT="in.tif", MODEL="best.model",
                        OUTPUT="o.tif", OUTPUT_PROBABILITIES="o.tif")
        record("qgis_process classify OUTPUT = OUTPUT_PROBABILITIES",
               *classify_output(done, "same file"))
        before = model.read_bytes()
        done = qgis_run(env, "classifypixels", work, INPUT=raster, MODEL=str(model),
                        OUTPUT=str(model))
        outcome = classify_output(done, "would be overwritten")
        record("qgis_process classify OUTPUT = MODEL", outcome[0] if model.read_bytes() ==
               before else "data lost", outcome[1])
        done = qgis_run(env, "buildlabelrasters", rel, PROJECT=gpkg, OUTPUT_FOLDER="rel_labels")
        record("qgis_process build relative OUTPUT_FOLDER",
               "clear" if (rel / "rel_labels").is_dir() else "data lost", "")
        done = qgis_run(env, "importlabelraster", work, PROJECT=gpkg,
                        CLASSIFIED_RASTER=str(ref), VALUE_CLASSES="1=water, 2=forest",
                        OUTPUT_FOLDER=str(work / "imported"))
        record("qgis_process VALUE_CLASSES='1=water, 2=forest'",
               *classify_output(done, ok=True))
        done = qgis_run(env, "trainpixelsegmentation", work, PROJECT=gpkg, ARCHITECTURE=1,
                        ENCODER=1, PATCH_SIZE=64, EPOCHS=1, BATCH_SIZE=4, STEPS_PER_EPOCH=1,
                        NUM_WORKERS=0, DEVICE="cpu", SPLIT=100, SOLID_DISTANCES="2",
                        OUTPUT_MODEL=str(work / "q.model"))
        record("qgis_process train SOLID_DISTANCES='2', OUTPUT_MODEL=q.model",
               "clear" if done.returncode == 0 and modelfile.is_model_file(
                   work / "q.dltmodel.safetensors") else "unexpected", _last_error(done.stderr))
        ro.chmod(0o555)
        imm = os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(ro)]).returncode == 0
        try:
            done = qgis_run(env, "exportonnx", work, MODEL=str(model), OUTPUT=str(ro / "m.onnx"))
            record("qgis_process ONNX into a read-only folder",
                   *classify_output(done, "not writable"))
        finally:
            if imm:
                subprocess.run(["chattr", "-i", str(ro)])
            ro.chmod(0o755)
        mine = user_geopackage(work / "qmine.gpkg")
        done = qgis_run(env, "classifypixels", work, INPUT=raster, MODEL=str(model),
                        OUTPUT=str(work / "q.tif"), OUTPUT_VECTOR=str(mine), ENGINE=1,
                        DEVICE="cpu")
        record("qgis_process classify OUTPUT_VECTOR = a GeoPackage holding other layers",
               *kept_layers(done, mine, "classes"))
        done = qgis_run(env, "exportchips", work, PROJECT=gpkg, PATCH_SIZE=100,
                        OUTPUT_FOLDER=str(work / "q100"))
        record("qgis_process export chips PATCH_SIZE=100", *classify_output(done, "use 96"))

    return finish(work, made, args)


def deployed(work: Path) -> dict:
    """The environment of a qgis_process run with the plugin deployed (linked) in it."""
    env = qgis_env(work)
    if not (work / "home").exists():
        deploy = subprocess.run([sys.executable, "build.py", "deploy", "--link"], cwd=ROOT,
                                env=env, capture_output=True, text=True, timeout=120)
        assert deploy.returncode == 0, deploy.stderr
    return env


def finish(work: Path, made: dict, args) -> int:
    """The family cases through qgis_process, then the totals."""
    if not args.skip_qgis and Path(QGIS_PROCESS).exists():
        family_qgis_cases(made, deployed(work))
    totals = {k: sum(1 for _, o, _ in ROWS if o == k)
              for k in ("clear", "traceback", "wrong result", "data lost", "unexpected")}
    print(f"\ncases tried {len(ROWS)} / " + " / ".join(f"{k} {v}" for k, v in totals.items()))
    for case, outcome, note in ROWS:
        if outcome != "clear":
            print(f"NOT CLEAR: {outcome}: {case}: {note}"[:300])
    print(f"work folder: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
