"""Bad-input sweep (issue 8): feed faults through ``dltrain`` and ``qgis_process.bin`` and count
how each ends: clear (a one-line cause and fix), traceback, wrong result, data lost.

    .venv/bin/python bench/bad_input_sweep.py [--work DIR] [--skip-qgis]

Prints one row per case and the totals. Small synthetic inputs; about 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
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
ROWS: list[tuple[str, str, str]] = []


def record(case: str, outcome: str, note: str = "") -> None:
    ROWS.append((case, outcome, note))
    print(f"{outcome:12s} {case}  {note}"[:220], flush=True)


def classify_output(done: subprocess.CompletedProcess, expect: str | None = None,
                    ok: bool = False) -> tuple[str, str]:
    text = done.stdout + done.stderr
    if "Traceback" in text or "Error:" in text.split("error:")[0] and "Traceback" in text:
        return "traceback", text.strip().splitlines()[-1][:150]
    if ok:
        return ("clear" if done.returncode == 0 else "unexpected"), _last_error(text)
    if done.returncode != 0 and (expect is None or expect.lower() in text.lower()):
        return "clear", _last_error(text)
    return "unexpected", f"rc={done.returncode} {_last_error(text)}"


def _last_error(text: str) -> str:
    for line in text.splitlines():
        if line.startswith(("error:", "ERROR:")) or "Error" in line[:30]:
            return line[:200]
    return text.strip().splitlines()[-1][:200] if text.strip() else ""


def dltrain(job: dict, work: Path, name: str, **kw) -> subprocess.CompletedProcess:
    path = work / f"{name}.json"
    path.write_text(json.dumps(job))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(ROOT / ".venv/bin/dltrain"), "run", str(path)], cwd=kw.pop(
        "cwd", work), capture_output=True, text=True, timeout=600, env=env, **kw)


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
    from plugin.core.segmentation.network import build_network

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


def kept_layers(done: subprocess.CompletedProcess, gpkg: Path, own: str) -> tuple[str, str]:
    """'data lost' when the user's layer ``roads`` of ``gpkg`` is gone, else the outcome."""
    import pyogrio

    layers = {str(n) for n, _ in pyogrio.list_layers(gpkg)} if gpkg.is_file() else set()
    if "roads" not in layers:
        return "data lost", f"layers left: {sorted(layers)}"
    if done.returncode:
        return classify_output(done)
    return ("clear" if own in layers else "unexpected"), f"layers: {sorted(layers)}"


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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default="")
    parser.add_argument("--skip-qgis", action="store_true")
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
    first = subprocess.Popen([str(ROOT / ".venv/bin/dltrain"), "run", str(work / "t1.json")],
                             cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
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
    done = dltrain(job("classify_pixels", input=str(geo), model=str(model),
                       output=str(work / "geo_out.tif"), output_vector=str(work / "geo.gpkg"),
                       min_area=1, engine="torch", device="cpu"), work, "geo")
    kept = json.loads(done.stdout[done.stdout.index("{"):])["result"]["polygons"] \
        if done.returncode == 0 else 0
    record("dltrain classify EPSG:4326 raster, MIN_AREA=1 m²", "clear" if kept else
           "wrong result", f"{kept} polygons kept")

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
        env = qgis_env(work)
        deploy = subprocess.run([sys.executable, "build.py", "deploy", "--link"], cwd=ROOT,
                                env=env, capture_output=True, text=True, timeout=120)
        assert deploy.returncode == 0, deploy.stderr
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

    totals = {k: sum(1 for _, o, _ in ROWS if o == k)
              for k in ("clear", "traceback", "wrong result", "data lost", "unexpected")}
    print(f"\ncases tried {len(ROWS)} / " + " / ".join(f"{k} {v}" for k, v in totals.items()))
    print(f"work folder: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
