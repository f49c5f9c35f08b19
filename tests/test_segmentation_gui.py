"""QGIS side of pixel segmentation: the Train dialog (same job as Processing, validation, job
files, live summary), the Training Model window, Classify Pixels and output styling."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from osgeo import gdal, ogr, osr
from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProject,
)

from plugin.core.errors import UserError
from plugin.core.jobs import Job
from plugin.core.labeling.project import LabelingProject
from plugin.core.modelfile import read_model_card
from plugin.core.segmentation.jobs import ClassifyPixelsJob, TrainPixelSegmentationJob
from plugin.gui.classify_pixels_dialog import ClassifyPixelsDialog
from plugin.gui.output_layers import add_classification
from plugin.gui.task import pump_until
from plugin.gui.train_segmentation_dialog import (
    TrainSegmentationDialog,
    open_train_segmentation,
    valid_patch_size,
)
from plugin.gui.training_window import TrainingWindow, format_duration
from plugin.processing.job_algorithm import JobAlgorithm

CLASSES = [{"id": 0, "name": "background", "color": "#000000"},
           {"id": 1, "name": "building", "color": "#e6194b"},
           {"id": 2, "name": "water", "color": "#4363d8"},
           {"id": 3, "name": "trees", "color": "#3cb44b"}]


def make_project(scene, folder: Path) -> LabelingProject:
    """A labeling project with the scene's raster, classes (roads get distances) and labels."""
    project = LabelingProject.create(folder / "labels.gpkg", scene.crs)
    for cid, name, color in scene.classes:
        solid, blur = (2.0, 1.0) if "road" in name else (0.0, 0.0)
        assert project.add_class(name, color, solid, blur).id == cid
    project.add_raster(scene.raster)
    project.add_features([(f["class_id"], f["geometry"]) for f in scene.features])
    return project


@pytest.fixture
def labeled(synthetic_scene, tmp_path):
    return make_project(synthetic_scene, tmp_path)


def train_dialog(project_path=None, **kw) -> TrainSegmentationDialog:
    kw = {"remember": False, "live_summary": False, "probe_devices": False, **kw}
    return TrainSegmentationDialog(None, plugin=None, project_path=project_path, **kw)


# -- Train dialog ----------------------------------------------------------------------------------
def test_dialog_builds_the_job_the_processing_algorithm_builds(qgis_processing, labeled,
                                                               tmp_path):
    dialog = train_dialog(str(labeled.path))
    ids = [c.id for c in labeled.classes()]
    assert dialog.class_table.rowCount() == len(ids)
    # the defaults users know (network: automatic, U-Net/ResNet-18 on the CPU; issue 9)
    job = dialog.job()
    assert (job.architecture, job.encoder, job.background_patch_ratio, job.epochs) == (
        "auto", "auto", 0.15, 25)
    assert (job.loss, job.unlabelled_pixels) == ("auto", "background")
    assert "Training length: 25 epochs" in dialog.length_label.text()
    road = next(c.id for c in labeled.classes() if "road" in c.name)
    assert job.solid_distances[str(road)] == 2.0 and job.blur_distances[str(road)] == 1.0
    # non-default values through the widgets
    dialog.arch_combo.setCurrentIndex(dialog.arch_combo.findData("deeplabv3plus"))
    dialog.encoder_combo.setCurrentIndex(dialog.encoder_combo.findData("resnet18"))
    dialog.weights_imagenet.setChecked(True)
    dialog.patch_spin.setValue(64)
    dialog.split_slider.setValue(70)
    dialog.shuffle_check.setChecked(True)
    dialog.seed_spin.setValue(7)
    dialog.feature_spin.setValue(0.4)
    dialog.background_spin.setValue(0.5)
    dialog.epochs_spin.setValue(3)
    dialog.batch_spin.setValue(2)
    dialog.lr_spin.setValue(0.0005)
    dialog.scale_check.setChecked(False)
    dialog.flip_check.setChecked(False)
    dialog.set_all(1, 3.0)
    dialog.class_table.cellWidget(0, 2).setValue(4.0)
    dialog.cw_min_spin.setValue(2.0)
    dialog.cw_max_spin.setValue(3.0)
    dialog.loss_spin.setValue(0.25)
    dialog.loss_combo.setCurrentIndex(dialog.loss_combo.findData("focal"))
    dialog.unlabelled_combo.setCurrentIndex(dialog.unlabelled_combo.findData("unknown"))
    dialog.patience_spin.setValue(5)
    assert not dialog.search_spin.isEnabledTo(dialog.advanced_box)   # only with a search
    dialog.trials_spin.setValue(6)
    dialog.search_spin.setValue(12.5)
    assert dialog.search_spin.isEnabledTo(dialog.advanced_box)
    dialog.device_combo.setCurrentIndex(dialog.device_combo.findData("cpu"))
    best, last = str(tmp_path / "m.dltmodel.safetensors"), str(tmp_path / "m_last.safetensors")
    dialog.output_edit.setText(best)
    dialog.output_last_edit.setText(last)
    assert dialog.split_spin.value() == 70  # the slider drives the field

    blur = {str(i): (4.0 if k == 0 else (1.0 if i == road else 0.0)) for k, i in enumerate(ids)}
    parameters = {
        "PROJECT": str(labeled.path), "ARCHITECTURE": 3, "ENCODER": "resnet18",
        "START_WEIGHTS": "imagenet", "INIT_MODEL": "", "PATCH_SIZE": 64, "SPLIT": 70,
        "SHUFFLE": True, "SEED": 7, "FEATURE_PATCH_PERCENTAGE": 0.4,
        "BACKGROUND_PATCH_RATIO": 0.5, "EPOCHS": 3, "BATCH_SIZE": 2, "LEARNING_RATE": 0.0005,
        "AUGMENT_ROTATION": True, "AUGMENT_SCALE": False, "AUGMENT_FLIP": False,
        "SOLID_DISTANCES": json.dumps({str(i): 3 for i in ids}),
        "BLUR_DISTANCES": json.dumps(blur),
        "CLASS_WEIGHT_MIN": 2, "CLASS_WEIGHT_MAX": 3, "LOSS_WEIGHT": 0.25, "PATIENCE": 5,
        "TRIALS": 6, "SEARCH_MINUTES": 12.5, "LOSS": "focal", "UNLABELLED_PIXELS": "unknown",
        "DEVICE": "cpu", "OUTPUT_MODEL": best, "OUTPUT_LAST_MODEL": last,
    }
    algorithm = JobAlgorithm.for_kind("train_pixel_segmentation")
    expected = algorithm.job_from_parameters(parameters, QgsProcessingContext())
    assert dialog.job() == expected
    assert dialog.job().problems() == [] and dialog.problems() == []
    assert dialog.ok_button.isEnabled()
    # fine-tuning: the model file is what the job starts from
    model = tmp_path / "base.dltmodel.safetensors"
    model.write_bytes(b"x")
    dialog.init_model_edit.setText(str(model))
    assert dialog.weights_model.isChecked()
    assert dialog.job().init_model == str(model) and dialog.job().start_weights == "random"
    parameters.update(INIT_MODEL=str(model), START_WEIGHTS="random")
    assert dialog.job() == algorithm.job_from_parameters(parameters, QgsProcessingContext())
    # a Processing call (or model) of an earlier version: ENCODER_WEIGHTS as START_WEIGHTS
    del parameters["START_WEIGHTS"]
    parameters.update(ENCODER_WEIGHTS=1)   # the enum index of imagenet then
    assert algorithm.job_from_parameters(parameters, QgsProcessingContext()).start_weights == (
        "imagenet")
    # a weights file: its radio button and path
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    dialog.start_file_edit.setText(str(weights))
    assert dialog.weights_file.isChecked() and dialog.job().start_weights == str(weights)
    dialog.set_job(dialog.job())
    assert dialog.weights_file.isChecked() and dialog.start_file_edit.text() == str(weights)


def test_bad_patch_size_disables_ok_with_the_reason_and_a_fix(qgis_app, labeled, tmp_path):
    dialog = train_dialog(str(labeled.path))
    dialog.output_edit.setText(str(tmp_path / "m.dltmodel.safetensors"))
    dialog.patch_spin.setValue(64)
    assert dialog.ok_button.isEnabled(), dialog.problems()
    dialog.patch_spin.setValue(100)
    assert not dialog.ok_button.isEnabled()
    assert "Patch size 100 is not a multiple of 32: use 96." in dialog.reason_label.text()
    assert dialog.ok_button.toolTip() == dialog.reason_label.text()
    assert dialog.patch_fix_button.isVisibleTo(dialog)
    assert dialog.patch_fix_button.text() == "Use 96"
    dialog.patch_spin.setValue(256)  # a multiple of 32, but larger than the 128 px raster
    assert not dialog.ok_button.isEnabled()
    assert "Patch size 256 px is larger than the raster scene (128 × 128 px): use 128." in \
        dialog.reason_label.text()
    dialog.patch_fix_button.click()
    assert dialog.patch_spin.value() == 128
    assert dialog.ok_button.isEnabled() and not dialog.reason_label.text()
    assert not dialog.patch_fix_button.isVisibleTo(dialog)
    assert (valid_patch_size(250, None), valid_patch_size(500, 300), valid_patch_size(10, 40)) \
        == (256, 288, 32)


def test_summary_that_cannot_train_blocks_ok(qgis_app, labeled, tmp_path):
    dialog = train_dialog(str(labeled.path))
    dialog.output_edit.setText(str(tmp_path / "m.dltmodel.safetensors"))
    dialog.patch_spin.setValue(64)
    empty = {"patch_size": 64, "patches": {"train": {"feature": 0, "background": 0, "total": 0},
                                           "validation": {"feature": 0, "background": 0,
                                                          "total": 0}},
             "pixels": {"train": {}, "validation": {}}, "sources": [{}], "warnings": ["w1"]}
    dialog.set_summary(empty)
    assert not dialog.ok_button.isEnabled()
    assert "No training patch was selected" in dialog.reason_label.text()
    assert "w1" in dialog.summary_view.toPlainText()
    good = {**empty, "patches": {"train": {"feature": 3, "background": 1, "total": 4},
                                 "validation": {"feature": 1, "background": 0, "total": 1}},
            "pixels": {"train": {"0": 900, "1": 300}, "validation": {"0": 50, "1": 20}},
            "warnings": []}
    dialog.set_summary(good)
    assert dialog.ok_button.isEnabled()
    text = dialog.summary_view.toPlainText()
    assert "Feature patches" in text and "building" in text and "900" in text


def test_live_summary_comes_from_the_sampler_in_a_worker(qgis_app, labeled, tmp_path):
    dialog = train_dialog(str(labeled.path), live_summary=True)
    dialog.output_edit.setText(str(tmp_path / "m.dltmodel.safetensors"))
    dialog.patch_spin.setValue(32)
    dialog._timer.setInterval(0)
    assert pump_until(lambda: dialog.summary_state in ("ready", "failed"), 120)
    assert dialog.summary_state == "ready", dialog.summary_error
    summary = dialog.summary
    assert summary["patch_size"] == 32
    train = summary["patches"]["train"]
    assert train["total"] > 0 and train["feature"] > 0
    assert summary["patches"]["validation"]["total"] > 0
    assert "Feature patches" in dialog.summary_view.toPlainText()
    assert dialog.ok_button.isEnabled(), dialog.problems()
    # a change of a sampling value asks again; going back uses the cached summary
    dialog.background_spin.setValue(0.0)
    assert pump_until(lambda: dialog.summary_state in ("ready", "failed"), 120)
    assert dialog.summary["patches"]["train"]["background"] == 0
    dialog.background_spin.setValue(0.15)
    assert dialog.summary_state == "ready" and dialog.summary == summary


def test_save_and_load_job_round_trip(qgis_app, labeled, tmp_path):
    dialog = train_dialog(str(labeled.path))
    dialog.epochs_spin.setValue(12)
    dialog.arch_combo.setCurrentIndex(dialog.arch_combo.findData("unet"))
    dialog.set_all(2, 5.0)
    dialog.output_edit.setText(str(tmp_path / "a.dltmodel.safetensors"))
    path = tmp_path / "job.json"
    dialog.save_job(path)
    saved = Job.load(path)
    assert isinstance(saved, TrainPixelSegmentationJob) and saved == dialog.job()
    other = train_dialog()
    assert other.job() != dialog.job()
    other.load_job(path)
    assert other.job() == dialog.job()
    assert other.class_table.rowCount() == dialog.class_table.rowCount()
    wrong = tmp_path / "wrong.json"
    ClassifyPixelsJob(input="a.tif").save(wrong)
    with pytest.raises(UserError, match="not a train_pixel_segmentation job"):
        other.load_job(wrong)


def test_values_are_remembered(qgis_app, labeled, tmp_path):
    from qgis.core import QgsSettings

    from plugin.gui.train_segmentation_dialog import SETTINGS_KEY

    before = QgsSettings().value(SETTINGS_KEY, "", type=str)
    try:
        dialog = train_dialog(str(labeled.path), remember=True)
        dialog.epochs_spin.setValue(7)
        dialog.output_edit.setText(str(tmp_path / "r.dltmodel.safetensors"))
        dialog.background_check.setChecked(True)
        dialog.remember_values()
        again = train_dialog(remember=True)
        assert again.job() == dialog.job() and again.background_check.isChecked()
        # opened for another project: its values stay, its outputs do not
        other = train_dialog(str(tmp_path / "other.gpkg"), remember=True)
        assert other.job().epochs == 7 and other.job().output_model == ""
    finally:
        QgsSettings().setValue(SETTINGS_KEY, before)


def test_remembered_settings_left_at_their_default_follow_a_new_default(qgis_app, labeled):
    """Issue 19 made LOSS auto the default: a dialog reopened after the upgrade shows auto where
    the user had left the old default (ce_dice), keeps a loss they chose, and, from now on,
    tells a value left at the default from one chosen by the defaults stored beside it."""
    from qgis.core import QgsSettings

    from plugin.core.segmentation.jobs import TrainPixelSegmentationJob as Job
    from plugin.gui.job_dialog_support import remember_job, remember_value
    from plugin.gui.train_segmentation_dialog import SETTINGS_KEY

    before = QgsSettings().value(SETTINGS_KEY, "", type=str)
    try:
        old = Job(project=str(labeled.path), epochs=7, loss="ce_dice").to_dict()
        remember_value(SETTINGS_KEY, old)                        # as an older version stored it
        job = train_dialog(remember=True).job()
        assert (job.loss, job.epochs) == ("auto", 7)
        remember_value(SETTINGS_KEY, {**old, "params": {**old["params"], "loss": "focal"}})
        assert train_dialog(remember=True).job().loss == "focal"
        remember_job(SETTINGS_KEY, Job(project=str(labeled.path), loss="ce_dice"))
        assert train_dialog(remember=True).job().loss == "ce_dice"   # chosen: auto was default
        stored = Job(project=str(labeled.path), epochs=10).to_dict()   # 10 was the default then
        remember_value(SETTINGS_KEY, {**stored, "defaults": {**stored["params"], "epochs": 10}})
        assert train_dialog(remember=True).job().epochs == Job().epochs == 25
    finally:
        QgsSettings().setValue(SETTINGS_KEY, before)


class FakePlugin:
    """What dialogs use of the plugin: ``jobs.start`` (recorded), ``iface``, ``windows``."""

    def __init__(self) -> None:
        self.iface, self.windows, self.started = None, {}, []
        self.jobs = self

    def start(self, job, description, **_kw):
        self.started.append((job, description))
        return FakeTask()


def test_ok_starts_training_and_opens_the_training_window(qgis_app, labeled, tmp_path):
    plugin = FakePlugin()
    dialog = TrainSegmentationDialog(None, plugin=plugin, project_path=str(labeled.path),
                                     remember=False, live_summary=False, probe_devices=False)
    dialog.tensorboard_check.setChecked(False)
    dialog.patch_spin.setValue(64)
    dialog.output_edit.setText(str(tmp_path / "m.dltmodel.safetensors"))
    dialog.output_last_edit.setText(str(tmp_path / "m_last.dltmodel.safetensors"))
    dialog.accept()
    (job, description), = plugin.started
    assert job == dialog.job() and description == "Training m.dltmodel.safetensors"
    assert dialog.result() == dialog.Accepted
    assert dialog.window is not None and dialog.window.isVisible()
    assert dialog.window.windowTitle() == "Training Model — m.dltmodel.safetensors"
    dialog.window.task.event.emit({"event": "progress", "phase": "epoch", "step": 1,
                                   "total": 25, "message": "", "metrics": {"train_loss": 1.5}})
    assert dialog.window.train_label.text() == "1.5000"
    dialog.window.close()
    # in the background: no window
    dialog2 = TrainSegmentationDialog(None, plugin=plugin, project_path=str(labeled.path),
                                      remember=False, live_summary=False, probe_devices=False)
    dialog2.tensorboard_check.setChecked(False)
    dialog2.background_check.setChecked(True)
    dialog2.patch_spin.setValue(64)
    dialog2.output_edit.setText(str(tmp_path / "n.dltmodel.safetensors"))
    dialog2.accept()
    assert len(plugin.started) == 2 and not dialog2.window.isVisible()  # kept for the menu


# -- Training Model window -------------------------------------------------------------------------
class _Signal:
    def __init__(self) -> None:
        self.slots = []

    def connect(self, slot) -> None:
        self.slots.append(slot)

    def emit(self, *args) -> None:
        for slot in self.slots:
            slot(*args)


class FakeTask:
    def __init__(self) -> None:
        self.event, self.succeeded = _Signal(), _Signal()
        self.failed, self.cancelled = _Signal(), _Signal()
        self.cancel_calls = 0

    def cancel(self) -> None:
        self.cancel_calls += 1


def test_training_window_follows_the_events(qgis_app, tmp_path):
    now = [100.0]
    job = TrainPixelSegmentationJob(epochs=4, output_model=str(tmp_path / "m.safetensors"))
    task = FakeTask()
    window = TrainingWindow(task, job, clock=lambda: now[0])
    assert window.epoch_label.text() == "0 / 4" and window.remaining_label.text() == "—"
    task.event.emit({"event": "progress", "phase": "prepare", "step": 0, "total": 3,
                     "message": "Building label rasters", "metrics": {}})
    assert window.status_label.text() == "Building label rasters"
    for epoch in (1, 2):
        for b in (1, 2, 3, 4):
            now[0] += 5
            task.event.emit({"event": "progress", "phase": "batch", "step": b, "total": 4,
                             "message": f"epoch {epoch}", "metrics": {"loss": 1.0 / epoch}})
        if epoch == 1:
            task.event.emit({"event": "artifact", "name": "best_model", "path": job.output_model})
        task.event.emit({"event": "progress", "phase": "epoch", "step": epoch, "total": 4,
                         "message": f"epoch {epoch}/4", "metrics": {
                             "train_loss": 0.9 / epoch, "val_loss": 0.5 + 0.1 * (epoch == 2),
                             "val_miou": 0.6, "lr": 0.001}})
    assert window.epoch_label.text() == "2 / 4"
    assert window.batch_label.text() == "4 / 4"
    assert window.train_label.text() == "0.4500"
    assert window.val_label.text() == "0.6000  (best 0.5000)"
    assert "mean IoU 0.600" in window.metrics_label.text()
    assert window.chart.train == [(1.0, 0.9), (2.0, 0.45)]
    assert window.chart.val == [(1.0, 0.5), (2.0, 0.6)]
    assert window.elapsed_label.text() == "0:40"
    assert window.remaining_label.text() == "0:40"  # half done in 40 s
    assert window.progress.value() == 500
    now[0] += 5
    task.event.emit({"event": "progress", "phase": "batch", "step": 1, "total": 4,
                     "message": "epoch 3", "metrics": {"loss": 0.3}})
    assert window.epoch_label.text() == "3 / 4" and window.batch_label.text() == "1 / 4"
    assert window.fraction_done() == pytest.approx(2.25 / 4)
    window.show()
    image = window.chart.grab().toImage()  # the chart paints its two series
    colours = {image.pixelColor(x, y).name() for x in range(0, image.width(), 2)
               for y in range(0, image.height(), 2)}
    assert "#1f77b4" in colours and "#ff7f0e" in colours
    window.close()  # closing the window leaves the task running
    assert task.cancel_calls == 0 and window.state == "running"
    window.cancel_button.click()
    assert task.cancel_calls == 1 and not window.cancel_button.isEnabled()
    task.cancelled.emit(None)
    assert window.state == "cancelled" and "2 finished epochs" in window.status_label.text()
    assert job.output_model in window.status_label.text()
    window.close()
    assert format_duration(3725) == "1:02:05" and format_duration(None) == "—"


def test_loss_chart_uses_a_log_axis(qgis_app):
    from plugin.gui.training_window import LossChart, log_ticks

    assert log_ticks(0.03, 4.2) == [0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5]
    assert log_ticks(0.31, 0.35) == [0.3, 0.4]  # within one mantissa step: 1–9 mantissas
    assert log_ticks(1e-4, 1e3) == [1e-4, 1e-3, 0.01, 0.1, 1, 10, 100, 1000]
    chart = LossChart()
    chart.resize(400, 240)
    chart.epochs = 10
    for epoch, loss in enumerate([40.0, 0.5, 0.4, 0.35, 0.3], start=1):
        chart.add(epoch, loss, loss * 1.1)
    image = chart.grab().toImage()
    assert chart.log_scale
    # on a log axis epochs 2–5 (0.5 → 0.3) span a visible height: > 10 % of the plot
    rows = [y for y in range(image.height()) for x in range(60, image.width(), 3)
            if image.pixelColor(x, y).name() == "#1f77b4"]
    assert max(rows) - min(rows) > 0.5 * image.height()
    chart.add(6, 0.0, None)  # a zero loss: linear axis
    chart.grab()
    assert not chart.log_scale


def test_training_window_offers_classify_after_cancel_and_reopens_from_the_menu(qgis_app,
                                                                               tmp_path):
    from plugin.gui.training_window import open_training_window

    class Plugin:
        iface, windows = None, {}

    task = FakeTask()
    model = tmp_path / "best.dltmodel.safetensors"
    model.write_bytes(b"x")
    window = TrainingWindow(task, TrainPixelSegmentationJob(epochs=5, output_model=str(model)),
                            plugin=Plugin)
    task.cancelled.emit({"output_model": str(model), "cancelled": True})
    assert window.state == "cancelled"
    assert window.classify_button.isVisibleTo(window) and window.best_model == str(model)
    with pytest.raises(UserError, match="No training has run"):
        open_training_window(Plugin)
    Plugin.windows["training_window_1"] = window
    assert open_training_window(Plugin) is window and window.isVisible()
    window.close()


def test_training_window_shows_failure_and_success(qgis_app):
    task = FakeTask()
    window = TrainingWindow(task, TrainPixelSegmentationJob(epochs=2))
    task.failed.emit("The GPU ran out of memory.", "Use a smaller patch size.")
    assert window.state == "failed" and "smaller patch size" in window.status_label.text()
    ok = FakeTask()
    window = TrainingWindow(ok, TrainPixelSegmentationJob(epochs=2))
    ok.succeeded.emit({"epochs_run": 2, "best_epoch": 2, "output_model": "/m.safetensors",
                       "report": "/r.md"})
    assert window.state == "succeeded" and window.remaining_label.text() == "0:00"
    assert "/m.safetensors" in window.model_label.text() and window.epoch_label.text() == "2 / 2"


# -- model card, Classify Pixels, output styling ---------------------------------------------------
def write_fake_model(path: Path, card: dict, tensor_bytes: bytes = b"\0" * 16) -> Path:
    """A safetensors file (header by hand: 8-byte length + JSON) holding a model card."""
    header = {"__metadata__": {"format": "dltrainer-model", "format_version": "1",
                               "card": json.dumps(card)},
              "w": {"dtype": "F32", "shape": [4], "data_offsets": [0, len(tensor_bytes)]}}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + tensor_bytes)
    return path


def card(**kw) -> dict:
    return {"format": "dltrainer-model", "format_version": 1, "task": "pixel_segmentation",
            "architecture": "unetplusplus", "encoder": "resnet34", "classes": CLASSES,
            "num_outputs": 4, "bands": 3, "mean": [0, 0, 0], "std": [1, 1, 1],
            "patch_size": 64, "pixel_size": [0.5, 0.5], "crs": "EPSG:32631", **kw}


def test_model_card_is_read_without_torch(tmp_path):
    model = write_fake_model(tmp_path / "m.dltmodel.safetensors", card())
    assert read_model_card(model)["classes"] == CLASSES
    other = write_fake_model(tmp_path / "d.safetensors", card(task="object_detection"))
    with pytest.raises(UserError, match="'object_detection'.*needs .*'pixel_segmentation'"):
        read_model_card(other, "pixel_segmentation")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(UserError, match="is not a Deep Learning Trainer model file"):
        read_model_card(junk)
    plain = tmp_path / "plain.safetensors"
    raw = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    plain.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
    with pytest.raises(UserError, match="safetensors file but not a Deep Learning Trainer"):
        read_model_card(plain)


def write_raster(path: Path, bands: int = 3, pixel: float = 0.5, size: int = 32,
                 values=None) -> Path:
    ds = gdal.GetDriverByName("GTiff").Create(str(path), size, size, bands, gdal.GDT_Byte)
    ds.SetGeoTransform((500000, pixel, 0, 4500000, 0, -pixel))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    ds.SetProjection(srs.ExportToWkt())
    if values is not None:
        ds.GetRasterBand(1).WriteArray(values)
    ds = None
    return path


def test_classify_dialog_shows_the_card_and_checks_bands_and_pixel_size(qgis_app, tmp_path):
    model = write_fake_model(tmp_path / "m.dltmodel.safetensors", card())
    image = write_raster(tmp_path / "image.tif")
    dialog = ClassifyPixelsDialog(None, remember=False, project=QgsProject())
    assert not dialog.ok_button.isEnabled()
    dialog.set_input(str(image))
    dialog.model_edit.setText(str(model))
    text = dialog.card_view.toPlainText()
    assert "water" in text and "U-Net++ / resnet34" in text and "64 px" in text
    assert dialog.output_edit.text() == str(tmp_path / "image_classes.tif")
    assert dialog.ok_button.isEnabled(), dialog.problems()
    assert dialog.warnings() == []
    dialog.vector_check.setChecked(True)
    dialog.min_area_spin.setValue(2.5)
    assert dialog.tta_check.isChecked()   # TTA on by default
    dialog.tta_check.setChecked(False)
    assert dialog.job() == ClassifyPixelsJob(
        input=str(image), model=str(model), output=str(tmp_path / "image_classes.tif"),
        output_vector=str(tmp_path / "image_classes.gpkg"), min_area=2.5, overlap=0.25,
        tta=False, batch_size=4, device=dialog.job().device)
    dialog.set_input(str(write_raster(tmp_path / "two.tif", bands=2, pixel=2.0)))
    assert not dialog.ok_button.isEnabled()
    assert "has 2 bands but the model was trained on 3" in dialog.reason_label.text()
    assert "far from the training pixel size (0.5)" in dialog.warnings()[0]
    dialog.set_input(str(write_raster(tmp_path / "coarse.tif", bands=3, pixel=2.0)))
    assert dialog.ok_button.isEnabled() and dialog.warning_label.text()
    dialog.model_edit.setText(str(image))
    assert not dialog.ok_button.isEnabled()
    assert "not a Deep Learning Trainer model file" in dialog.reason_label.text()


def test_classify_reopened_on_the_raster_it_classified_last(qgis_iface, tmp_path, monkeypatch):
    """The remembered input is the layer the combo shows already (no layerChanged): it is read
    all the same, Classify is enabled, and output names follow a newly chosen raster."""
    from qgis.core import QgsRasterLayer

    from plugin.gui import raster_model_dialog as cpd  # the base that remembers the job

    model = write_fake_model(tmp_path / "m.dltmodel.safetensors", card())
    image = write_raster(tmp_path / "image.tif")
    project = QgsProject.instance()  # the layer combo lists this one's layers before QGIS 3.24
    layer = QgsRasterLayer(str(image), "image")
    project.addMapLayer(layer)
    monkeypatch.setattr(cpd, "remembered_job", lambda key, default: ClassifyPixelsJob(
        input=str(image), model=str(model), output=str(tmp_path / "old.tif")))
    dialog = ClassifyPixelsDialog(None, remember=True, project=project)
    assert dialog.input_combo.currentLayer() is layer
    assert dialog.input_info is not None and "GDAL cannot" not in dialog.input_label.text()
    assert dialog.output_edit.text() == str(tmp_path / "image_classes.tif")
    assert dialog.ok_button.isEnabled(), dialog.problems()
    dialog.set_input(str(layer.source()))  # chosen again: still readable
    assert dialog.ok_button.isEnabled(), dialog.problems()
    other = write_raster(tmp_path / "other.tif")
    dialog.set_input(str(other))
    assert dialog.output_edit.text() == str(tmp_path / "other_classes.tif")
    assert dialog.vector_edit.text() == str(tmp_path / "other_classes.gpkg")
    dialog.output_edit.setText(str(tmp_path / "mine.tif"))  # typed by the user: kept
    dialog.set_input(str(image))
    assert dialog.output_edit.text() == str(tmp_path / "mine.tif")
    (tmp_path / "other_classes.tif").write_bytes(b"")  # an earlier run's output: not reused
    dialog.output_edit.setText("")
    dialog.set_input(str(other))
    assert dialog.output_edit.text() == str(tmp_path / "other_classes_2.tif")
    assert dialog.min_area_spin.suffix() == " m²"
    project.removeMapLayer(layer.id())


def test_dialog_messages_use_field_labels(qgis_app, tmp_path):
    dialog = ClassifyPixelsDialog(None, remember=False, project=QgsProject())
    dialog.set_input(str(write_raster(tmp_path / "image.tif")))
    dialog.output_edit.setText("")
    text = " ".join(dialog.problems())
    assert "Output class raster is required" in text
    assert "(OUTPUT)" not in text and "OUTPUT" not in text.replace("Output", "")


def test_outputs_are_added_in_the_model_colours(qgis_app, tmp_path):
    import numpy as np

    values = np.repeat(np.arange(4, dtype=np.uint8), 8)[None, :].repeat(32, 0)
    classes_tif = write_raster(tmp_path / "classes.tif", bands=1, values=values)
    gpkg = tmp_path / "polygons.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(gpkg))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    layer = ds.CreateLayer("polygons", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
    for cid in (1, 2):
        feat = ogr.Feature(layer.GetLayerDefn())
        feat.SetField("class_id", cid)
        x = 500000 + cid * 4
        feat.SetGeometry(ogr.CreateGeometryFromWkt(
            f"POLYGON (({x} 4499990, {x + 4} 4499990, {x + 4} 4499994, {x} 4499990))"))
        layer.CreateFeature(feat)
    ds = None
    project = QgsProject()
    added = add_classification({"output": str(classes_tif), "output_vector": str(gpkg)},
                               CLASSES, "run1", project)
    assert len(added) == 2 and len(project.mapLayers()) == 2
    raster = next(lyr for lyr in added if lyr.type() == 1)
    renderer = raster.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    assert [(c.value, c.color.name(), c.label) for c in renderer.classes()] == [
        (c["id"], c["color"], f"{c['id']} {c['name']}") for c in CLASSES]
    # the background draws transparent over the imagery; the classes opaque
    assert [c.color.alpha() for c in renderer.classes()] == [0, 255, 255, 255]
    vector = next(lyr for lyr in added if lyr.type() == 0)
    cat = vector.renderer()
    assert isinstance(cat, QgsCategorizedSymbolRenderer) and cat.classAttribute() == "class_id"
    assert {c.value(): c.symbol().color().name() for c in cat.categories()} == {
        c["id"]: c["color"] for c in CLASSES if c["id"]}
    group = project.layerTreeRoot().findGroup("run1")
    assert group is not None and len(group.findLayers()) == 2


def test_probabilities_layer_is_styled_in_the_class_colour(qgis_app, tmp_path):
    from qgis.core import QgsSingleBandPseudoColorRenderer

    classes_tif = write_raster(tmp_path / "classes.tif", bands=1)
    probs = write_raster(tmp_path / "probabilities.tif", bands=4)
    project = QgsProject()
    added = add_classification({"output": str(classes_tif), "output_probabilities": str(probs)},
                               CLASSES, "run2", project)
    layer = next(lyr for lyr in added if lyr.name() == "run2 probabilities")
    renderer = layer.renderer()
    assert isinstance(renderer, QgsSingleBandPseudoColorRenderer) and renderer.band() == 2
    items = renderer.shader().rasterShaderFunction().colorRampItemList()
    assert [(i.value, i.color.name(), i.color.alpha()) for i in items] == [
        (0, CLASSES[1]["color"], 0), (255, CLASSES[1]["color"], 255)]


class WorkerPlugin:
    """A plugin stand-in whose jobs really run in worker processes."""

    def __init__(self) -> None:
        from plugin.gui.task import JobManager

        self.iface, self.windows = None, {}
        self.jobs = JobManager()


def test_train_then_classify_from_the_dialogs_end_to_end(qgis_app, make_synthetic, tmp_path):
    from plugin.gui.task import wait_for

    scene = make_synthetic("e2e", size=64, bands=3, seed=0)
    project = make_project(scene, tmp_path)
    plugin = WorkerPlugin()
    dialog = TrainSegmentationDialog(None, plugin=plugin, project_path=str(project.path),
                                     remember=False, live_summary=False, probe_devices=False)
    dialog.tensorboard_check.setChecked(False)
    dialog.arch_combo.setCurrentIndex(dialog.arch_combo.findData("unet"))
    dialog.encoder_combo.setCurrentIndex(dialog.encoder_combo.findData("resnet18"))
    dialog.patch_spin.setValue(32)
    dialog.epochs_spin.setValue(2)
    dialog.batch_spin.setValue(4)
    dialog.workers_spin.setValue(0)
    dialog.device_combo.setCurrentIndex(dialog.device_combo.findData("cpu"))
    model = tmp_path / "out" / "m.dltmodel.safetensors"
    dialog.output_edit.setText(str(model))
    dialog.output_last_edit.setText(str(tmp_path / "out" / "last.dltmodel.safetensors"))
    assert dialog.problems() == []
    dialog.accept()
    window = dialog.window
    assert wait_for(dialog.task, 180) == "succeeded", window.status_label.text()
    assert window.state == "succeeded" and window.epoch_label.text() == "2 / 2"
    assert len(window.chart.train) == 2 and window.train_label.text() != "—"
    assert str(model) in window.model_label.text()
    assert window.classify_button.isVisibleTo(window)
    assert any(w is window for w in plugin.windows.values())
    window.close()
    # classify the scene with the trained model; the outputs land on the map in its colours
    qgis_project = QgsProject()
    classify = ClassifyPixelsDialog(None, plugin=plugin, remember=False, project=qgis_project)
    classify.set_input(str(scene.raster))
    classify.model_edit.setText(str(model))
    classify.output_edit.setText(str(tmp_path / "out" / "classes.tif"))
    classify.vector_check.setChecked(True)
    classify.vector_edit.setText(str(tmp_path / "out" / "classes.gpkg"))
    classify.device_combo.setCurrentIndex(classify.device_combo.findData("cpu"))
    assert classify.problems() == []
    colours = {c["id"]: c["color"] for c in read_model_card(model)["classes"]}
    assert {k: colours[k] for k, _n, _c in scene.classes} == {k: c for k, _n, c in scene.classes}
    classify.accept()
    assert wait_for(classify.task, 180) == "succeeded"
    assert pump_until(lambda: len(qgis_project.mapLayers()) == 2, 10)
    raster = next(lyr for lyr in qgis_project.mapLayers().values() if lyr.type() == 1)
    assert raster.width() == scene.width and raster.height() == scene.height
    assert {c.value: c.color.name() for c in raster.renderer().classes()} == colours


def test_menu_entries_open_the_tools_and_unload_stops_tensorboard(qgis_iface, labeled,
                                                                 tmp_path, monkeypatch):
    import sys

    from qgis.core import Qgis
    from qgis.PyQt.QtWidgets import QFileDialog

    from plugin import classFactory
    from plugin.gui import tensorboard
    from plugin.gui.classify_pixels_dialog import ClassifyPixelsDialog as Classify

    monkeypatch.setenv("DLTRAINER_PYTHON", sys.executable)
    opened: list[str] = []
    monkeypatch.setattr(tensorboard, "open_in_browser", opened.append)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        staticmethod(lambda *a, **k: str(tmp_path / "runs")))
    plugin = classFactory(qgis_iface)
    plugin.initGui()
    try:
        texts = {a.text(): a for a in plugin.actions.values()}
        assert {"Pixel Segmentation…", "Classify Pixels…", "TensorBoard…"} <= set(texts)
        assert plugin.submenus["Train"].actions()[0].text() == "Pixel Segmentation…"
        # from the Labeling Tool's Train drop-down: pre-filled with its project
        plugin.labeling_project = str(labeled.path)
        dialog = open_train_segmentation(plugin)
        assert dialog.job().project == str(labeled.path) and dialog.class_table.rowCount() == 4
        assert plugin.labeling_project is None
        dialog.close()
        plugin.actions["classify_pixels"].trigger()
        assert any(isinstance(w, Classify) and w.isVisible()
                   for w in qgis_iface.mainWindow().findChildren(Classify))
        plugin.actions["tensorboard"].trigger()
        assert not qgis_iface.messageBar().get_messages(Qgis.Critical)
        manager = plugin.windows["tensorboard"]
        server = manager.server_for(tmp_path / "runs")
        assert server is not None and server.running
        assert pump_until(lambda: opened == [server.url], 90), server.output_tail
    finally:
        plugin.unload()
    assert not server.running


def test_every_field_of_the_dialogs_has_a_tooltip(qgis_app):
    from qgis.PyQt.QtWidgets import (
        QAbstractSpinBox,
        QCheckBox,
        QComboBox,
        QLineEdit,
        QRadioButton,
        QSlider,
        QTableWidget,
    )

    from plugin.gui.export_chips_dialog import ExportChipsDialog

    def in_table(w) -> bool:
        while w is not None:
            if isinstance(w, QTableWidget):  # the table itself explains its columns
                return True
            w = w.parent()
        return False

    for dialog in (train_dialog(), ExportChipsDialog(live_summary=False),
                   ClassifyPixelsDialog(None, remember=False, project=QgsProject())):
        fields = dialog.findChildren((QLineEdit, QAbstractSpinBox, QComboBox, QCheckBox,
                                      QRadioButton, QSlider))
        fields = [w for w in fields if not isinstance(w.parent(), (QAbstractSpinBox, QComboBox))
                  and not in_table(w)]
        assert len(fields) > 8
        bare = [(type(w).__name__, getattr(w, "text", lambda: "")()) for w in fields
                if not w.toolTip()]
        assert bare == [], type(dialog).__name__
        dialog.close()


def test_processing_outputs_loaded_by_qgis_get_the_class_colours(qgis_processing, tmp_path):
    """Classify Pixels run from the Processing toolbox: the layers QGIS loads on completion get a
    post-processor that styles them like the dialog's outputs."""
    from qgis.core import QgsProcessingFeedback, QgsRasterLayer

    model = write_fake_model(tmp_path / "m.dltmodel.safetensors", card())
    classes_tif = write_raster(tmp_path / "classes.tif", bands=1)
    job = ClassifyPixelsJob(input=str(classes_tif), model=str(model), output=str(classes_tif))
    context = QgsProcessingContext()
    context.addLayerToLoadOnCompletion(str(classes_tif), QgsProcessingContext.LayerDetails(
        "classes", QgsProject.instance(), "OUTPUT"))
    alg = JobAlgorithm.for_kind("classify_pixels")
    alg.load_outputs(job, context)
    post = context.layerToLoadOnCompletionDetails(str(classes_tif)).postProcessor()
    assert post is not None
    layer = QgsRasterLayer(str(classes_tif), "classes")
    post.postProcessLayer(layer, context, QgsProcessingFeedback())
    renderer = layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    assert [c.label for c in renderer.classes()] == [f"{c['id']} {c['name']}" for c in CLASSES]
