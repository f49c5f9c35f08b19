"""Processing provider ``dltrainer``: generated parameters, runs, cancel, errors, qgis_process."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from qgis.core import (
    QgsApplication,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
)

from plugin.core.families import job_kinds
from plugin.core.jobs import Job
from plugin.core.params import spec
from plugin.processing.job_algorithm import JobAlgorithm
from plugin.processing.provider import DeepLearningTrainerProvider

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def provider(qgis_processing):
    registry = QgsApplication.processingRegistry()
    own = registry.providerById("dltrainer") is None
    p = DeepLearningTrainerProvider()
    if own:
        registry.addProvider(p)
    yield registry.providerById("dltrainer")
    if own:
        registry.removeProvider(p)


@pytest.fixture
def processing_run(provider):
    import processing

    return processing.run


class Recorder(QgsProcessingFeedback):
    """Keeps progress and messages; cancels once ``cancel_at`` percent is reached."""

    def __init__(self, cancel_at: float | None = None) -> None:
        super().__init__()
        self.progress: list[float] = []
        self.infos: list[str] = []
        self.cancel_at = cancel_at
        self.progressChanged.connect(self._progress)

    def _progress(self, value: float) -> None:
        self.progress.append(value)
        if self.cancel_at is not None and value >= self.cancel_at:
            self.cancel()

    def pushInfo(self, info: str) -> None:
        self.infos.append(info)
        super().pushInfo(info)


def test_self_test_runs_with_progress(processing_run):
    feedback = Recorder()
    result = processing_run("dltrainer:selftest", {"STEPS": 3, "DELAY": 0.01},
                            feedback=feedback)
    assert result["completed"] == 3 and result["cancelled"] is False
    assert feedback.progress[-1] == 100 and feedback.progress == sorted(feedback.progress)
    assert any(info.startswith("[step 3/3] step 3 value=9") for info in feedback.infos)


def test_environment_report(processing_run):
    result = processing_run("dltrainer:environmentreport", {})
    assert result["executable"] == os.environ["DLTRAINER_PYTHON"]
    assert result["libraries"]["torch"]  # this environment has torch
    assert isinstance(result["cuda_devices"], list)


def test_cancel_through_feedback_keeps_the_partial_result(processing_run):
    feedback = Recorder(cancel_at=1)
    result = processing_run("dltrainer:selftest", {"STEPS": 2000, "DELAY": 0.01},
                            feedback=feedback)
    assert result["CANCELLED"] is True
    assert 1 <= result["completed"] < 2000


def test_bad_values_give_a_clear_exception(processing_run):
    with pytest.raises(QgsProcessingException, match=r"Steps \(STEPS\) is 0: use 1 or more\."):
        processing_run("dltrainer:selftest", {"STEPS": 0})
    with pytest.raises(QgsProcessingException, match="exited with code 139"):
        processing_run("dltrainer:selftest", {"STEPS": 3, "DELAY": 0, "CRASH_AT": 2})


# -- parameters generated from the specs --------------------------------------------------------
@dataclasses.dataclass
class AllKindsJob(Job):
    """A job using every parameter kind (not registered)."""

    kind = "all_kinds"
    title = "All kinds"
    group = "Test jobs"

    count: int = spec(3, "COUNT", "Count", "int", minimum=1, maximum=9)
    rate: float = spec(0.5, "RATE", "Rate", "float", minimum=0, advanced=True)
    flag: bool = spec(True, "FLAG", "Flag", "bool")
    mode: str = spec("fast", "MODE", "Mode", "enum", choices=("slow", "fast"),
                     choice_labels=("Slow and careful", "Fast"))
    note: str = spec("", "NOTE", "Note", "str")
    image: str = spec("", "IMAGE", "Image", "raster_in")
    labels: str = spec("", "LABELS", "Labels", "vector_in", optional=True)
    images: list = spec([], "IMAGES", "Images", "raster_list", optional=True)
    vectors: list = spec([], "VECTORS", "Vectors", "vector_list", optional=True)
    model: str = spec("", "MODEL", "Model", "model_in", optional=True,
                      file_filter="Models (*.safetensors)")
    config: str = spec("", "CONFIG", "Config", "file_in", optional=True)
    project: str = spec("", "PROJECT", "Project", "project_in", optional=True)
    source_folder: str = spec("", "SOURCE_FOLDER", "Source folder", "folder_in", optional=True)
    out_file: str = spec("", "OUT_FILE", "Output file", "file_out",
                         file_filter="GeoTIFF (*.tif)")
    out_model: str = spec("", "OUT_MODEL", "Output model", "model_out", optional=True)
    out_project: str = spec("", "OUT_PROJECT", "Output project", "project_out", optional=True)
    out_folder: str = spec("", "OUT_FOLDER", "Output folder", "folder_out", optional=True)
    names: list = spec(["a", "b"], "NAMES", "Names", "str_list")
    ids: list = spec([1, 2], "IDS", "Ids", "int_list")
    weights: list = spec([], "WEIGHTS", "Weights", "float_list", optional=True)
    extra: dict = spec({"1": 1.0}, "EXTRA", "Extra", "dict", advanced=True)


def test_parameters_follow_the_specs(qgis_processing):
    alg = JobAlgorithm(AllKindsJob)
    alg.initAlgorithm({})
    p = {d.name(): d for d in alg.parameterDefinitions()}
    expected = {
        "COUNT": QgsProcessingParameterNumber, "RATE": QgsProcessingParameterNumber,
        "FLAG": QgsProcessingParameterBoolean, "MODE": QgsProcessingParameterEnum,
        "NOTE": QgsProcessingParameterString, "IMAGE": QgsProcessingParameterRasterLayer,
        "LABELS": QgsProcessingParameterVectorLayer,
        "IMAGES": QgsProcessingParameterMultipleLayers,
        "VECTORS": QgsProcessingParameterMultipleLayers, "MODEL": QgsProcessingParameterFile,
        "CONFIG": QgsProcessingParameterFile, "PROJECT": QgsProcessingParameterFile,
        "SOURCE_FOLDER": QgsProcessingParameterFile,
        "OUT_FILE": QgsProcessingParameterFileDestination,
        "OUT_MODEL": QgsProcessingParameterFileDestination,
        "OUT_PROJECT": QgsProcessingParameterFileDestination,
        "OUT_FOLDER": QgsProcessingParameterFolderDestination,
        "NAMES": QgsProcessingParameterString, "IDS": QgsProcessingParameterString,
        "WEIGHTS": QgsProcessingParameterString, "EXTRA": QgsProcessingParameterString,
    }
    assert {name: type(d) for name, d in p.items()} == expected
    assert p["COUNT"].dataType() == QgsProcessingParameterNumber.Integer
    assert (p["COUNT"].minimum(), p["COUNT"].maximum(), p["COUNT"].defaultValue()) == (1, 9, 3)
    assert p["RATE"].dataType() == QgsProcessingParameterNumber.Double
    assert p["RATE"].flags() & QgsProcessingParameterDefinition.FlagAdvanced
    assert p["LABELS"].flags() & QgsProcessingParameterDefinition.FlagOptional
    assert not p["IMAGE"].flags() & QgsProcessingParameterDefinition.FlagOptional
    assert p["MODE"].options() == ["Slow and careful", "Fast"]  # labels shown, not values
    assert p["MODE"].defaultValue() == 1
    assert p["SOURCE_FOLDER"].behavior() == QgsProcessingParameterFile.Folder
    assert p["MODEL"].behavior() == QgsProcessingParameterFile.File
    assert p["MODEL"].fileFilter() == "Models (*.safetensors);;All files (*)"  # by content
    assert p["IMAGES"].layerType() == 3  # QgsProcessing.TypeRaster
    assert p["NAMES"].defaultValue() == "a, b" and p["EXTRA"].defaultValue() == '{"1": 1.0}'
    assert alg.name() == "allkinds" and alg.displayName() == "All kinds"
    assert (alg.group(), alg.groupId()) == ("Test jobs", "testjobs")
    help_text = alg.shortHelpString()
    assert "A job using every parameter kind" in help_text
    assert "<b>Count</b></dt><dd>(from 1 to 9)" in help_text


@pytest.mark.parametrize("kind", job_kinds())
def test_processing_defaults_give_the_jobs_defaults(qgis_processing, kind):
    """A Processing run that sets nothing trains and classifies with exactly the job's defaults
    (what the dialog, `dltrain` and the bench scripts get), for every family's jobs."""
    alg = JobAlgorithm.for_kind(kind)
    alg.initAlgorithm()
    defaults = {p.name(): p.defaultValue() for p in alg.parameterDefinitions()}
    job = alg.job_from_parameters(defaults, QgsProcessingContext())
    reference = alg.job_cls()
    assert {f.name: getattr(job, f.name) for f in dataclasses.fields(job)} == \
        {f.name: getattr(reference, f.name) for f in dataclasses.fields(reference)}


def test_bench_land_cover_trains_the_job_of_the_issues_processing_run(qgis_processing,
                                                                        tmp_path):
    """Issue 19: bench/learn_real_imagery.py's land-cover case trains the job a Processing run
    with only PROJECT, UNLABELLED_PIXELS=unknown, DEVICE and OUTPUT_MODEL builds; the bench adds
    only its last model (SEED 0 is the default)."""
    import argparse
    import importlib.util

    from plugin.core.segmentation.jobs import TrainPixelSegmentationJob

    spec_ = importlib.util.spec_from_file_location("learn_real_imagery",
                                                   ROOT / "bench" / "learn_real_imagery.py")
    bench = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(bench)
    args = argparse.Namespace(seed=0, epochs=0, steps_per_epoch=0, patch_size=0, batch_size=0,
                              set=[])
    project = str(tmp_path / "labels.gpkg")
    job = bench.train_job(project, tmp_path, args, UNLABELLED_PIXELS="unknown")
    users = TrainPixelSegmentationJob(project=project, unlabelled_pixels="unknown",
                                      device="cpu",
                                      output_model=str(tmp_path / "model.dltmodel.safetensors"))
    assert job.output_last_model == str(tmp_path / "last.dltmodel.safetensors")
    assert dataclasses.replace(job, output_last_model="") == users
    assert bench.train_job(project, tmp_path, argparse.Namespace(
        seed=2, epochs=3, set=["loss=\"focal\""]), UNLABELLED_PIXELS="unknown") == \
        dataclasses.replace(job, seed=2, epochs=3, loss="focal")


def test_job_from_parameters_maps_values_back(qgis_processing, synthetic_scene, tmp_path):
    alg = JobAlgorithm(AllKindsJob)
    context = QgsProcessingContext()
    out = str(tmp_path / "out.tif")
    job = alg.job_from_parameters({
        "COUNT": 5, "RATE": 0.25, "FLAG": False, "MODE": 0, "NOTE": "hello",
        "IMAGE": str(synthetic_scene.raster), "LABELS": str(synthetic_scene.labels),
        "IMAGES": [str(synthetic_scene.raster)], "OUT_FILE": out,
        "NAMES": "water, trees", "IDS": "3,4", "WEIGHTS": "0.5, 2", "EXTRA": '{"2": 0.5}',
    }, context)
    assert job == AllKindsJob(
        count=5, rate=0.25, flag=False, mode="slow", note="hello",
        image=str(synthetic_scene.raster), labels=job.labels, images=[str(synthetic_scene.raster)],
        out_file=out, names=["water", "trees"], ids=[3, 4], weights=[0.5, 2.0],
        extra={"2": 0.5})
    assert job.labels.split("|")[0] == str(synthetic_scene.labels)
    assert alg.job_from_parameters(alg.parameters_from_job(job), context) == job
    assert alg.job_from_parameters({"MODE": "slow and careful", "OUT_FILE": out},
                                   context).mode == "slow"  # a label is accepted too
    # the choice itself is accepted for an enum; defaults fill what is not given
    job = alg.job_from_parameters({"MODE": "slow", "IMAGE": str(synthetic_scene.raster)},
                                  context)
    assert (job.mode, job.count, job.names, job.extra) == ("slow", 3, ["a", "b"], {"1": 1.0})
    with pytest.raises(QgsProcessingException, match=r"Ids \(IDS\) is '1, x'.*whole numbers"):
        alg.job_from_parameters({"IDS": "1, x"}, context)
    with pytest.raises(QgsProcessingException, match=r"Extra \(EXTRA\) is not valid JSON"):
        alg.job_from_parameters({"EXTRA": "{nope"}, context)
    # a job survives the trip through Processing parameter values
    again = alg.job_from_parameters(alg.parameters_from_job(job), context)
    assert again == job
    ok, message = alg.checkParameterValues({"COUNT": 12, "IMAGE": str(synthetic_scene.raster),
                                            "OUT_FILE": out}, context)
    assert not ok and message == "Count (COUNT) is 12: use 9 or less."


# -- qgis_process ---------------------------------------------------------------------------------
QGIS_PROCESS = "/usr/bin/qgis_process.bin"


def deployed_env(tmp_path: Path) -> dict:
    """Environment for qgis_process with the plugin deployed (linked) into a fresh profile."""
    home = tmp_path / "home"
    profiles = home / ".local/share/QGIS/QGIS3/profiles"
    env = {**os.environ, "HOME": str(home), "QGIS_PROFILES_DIR": str(profiles),
           "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(tmp_path / "xdg")}
    env.pop("QGIS_CUSTOM_CONFIG_PATH", None)  # set by pytest-qgis; it would hide the profile
    deploy = subprocess.run([sys.executable, "build.py", "deploy", "--link"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert (profiles / "default/python/plugins/deep_learning_trainer/metadata.txt").exists()
    return env


@pytest.mark.skipif(not Path(QGIS_PROCESS).exists(), reason="qgis_process is not installed")
def test_qgis_process_runs_the_self_test(tmp_path):
    home = tmp_path / "home"
    env = deployed_env(tmp_path)
    done = subprocess.run([QGIS_PROCESS, "--json", "run", "dltrainer:selftest", "--",
                           "STEPS=3", "DELAY=0"], env=env, capture_output=True, text=True,
                          timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    import json

    answer = json.loads(done.stdout[done.stdout.index("{"):])
    assert answer["results"]["completed"] == 3
    shutil.rmtree(home, ignore_errors=True)


def test_classify_outputs_are_layers_qgis_loads_and_optional_ones_are_skipped(qgis_processing):
    from qgis.core import (
        QgsProcessingParameterRasterDestination,
        QgsProcessingParameterVectorDestination,
    )

    alg = JobAlgorithm.for_kind("classify_pixels")
    alg.initAlgorithm({})
    p = {d.name(): d for d in alg.parameterDefinitions()}
    assert isinstance(p["OUTPUT"], QgsProcessingParameterRasterDestination)
    assert isinstance(p["OUTPUT_PROBABILITIES"], QgsProcessingParameterRasterDestination)
    assert isinstance(p["OUTPUT_VECTOR"], QgsProcessingParameterVectorDestination)
    assert p["OUTPUT"].createByDefault()
    assert not p["OUTPUT_PROBABILITIES"].createByDefault()  # "skip" unless asked for
    assert not p["OUTPUT_VECTOR"].createByDefault()
    assert {o.name() for o in alg.outputDefinitions()} >= {"OUTPUT", "OUTPUT_VECTOR"}
    assert p["DEVICE"].options()[:3] == ["Automatic (first GPU if available)", "CPU",
                                         "CUDA (first GPU)"]
    assert p["ENGINE"].options() == ["Automatic", "PyTorch", "ONNX Runtime"]
    assert "0 = automatic" in p["TILE_SIZE"].description()
    train = JobAlgorithm.for_kind("train_pixel_segmentation")
    train.initAlgorithm({})
    t = {d.name(): d for d in train.parameterDefinitions()}
    assert t["ARCHITECTURE"].options() == ["Automatic (U-Net on CPU, U-Net++ on GPU)", "U-Net++",
                                           "U-Net", "DeepLabV3+"]
    assert t["START_WEIGHTS"].defaultValue() == "random"
    assert "imagenet: segmentation-models-pytorch" in train.shortHelpString()
    legacy = t["ENCODER_WEIGHTS"]   # earlier versions' setting: hidden, still read
    assert legacy.flags() & legacy.FlagHidden
    assert t["SPLIT"].metadata() == {"widget_wrapper": {"decimals": 0}}
    assert "manifest.json" in t["PROJECT"].fileFilter()


def test_relative_paths_are_made_absolute_before_the_job_leaves(qgis_processing,
                                                                synthetic_scene, tmp_path,
                                                                monkeypatch):
    import shutil as sh

    monkeypatch.chdir(tmp_path)
    sh.copy(synthetic_scene.raster, tmp_path / "rel_in.tif")
    (tmp_path / "m.dltmodel.safetensors").write_bytes(b"x")
    alg = JobAlgorithm.for_kind("classify_pixels")
    job = alg.job_from_parameters({"INPUT": "rel_in.tif", "MODEL": "m.dltmodel.safetensors",
                                   "OUTPUT": "rel_out.tif", "OUTPUT_VECTOR": "sub/p.gpkg"},
                                  QgsProcessingContext())
    assert job.input == str(tmp_path / "rel_in.tif")
    assert job.model == str(tmp_path / "m.dltmodel.safetensors")
    assert job.output == str(tmp_path / "rel_out.tif")
    assert job.output_vector == str(tmp_path / "sub" / "p.gpkg")
    assert job.output_probabilities == ""  # optional and not given: skipped
    chips = tmp_path / "chips"
    chips.mkdir()
    (chips / "manifest.json").write_text("{}")
    train = JobAlgorithm.for_kind("train_pixel_segmentation")
    job = train.job_from_parameters({"PROJECT": "chips/manifest.json", "OUTPUT_MODEL": "m2",
                                     "DEVICE": "cpu"}, QgsProcessingContext())
    assert job.project == str(chips)
    assert job.output_model == str(tmp_path / "m2.dltmodel.safetensors")   # Train names models
    assert job.device == "cpu"


def test_algorithm_names_and_the_hidden_self_test(provider):
    names = {a.id(): a for a in provider.algorithms()}
    for alg in names.values():
        words = [w for w in alg.displayName().replace("-", " ").split()
                 if w not in ("from", "a", "to", "of", "the")]
        assert all(w[0].isupper() or not w[0].isalpha() for w in words), alg.displayName()
    hidden = QgsProcessingAlgorithm.FlagHideFromToolbox
    assert names["dltrainer:selftest"].flags() & hidden
    assert not names["dltrainer:classifypixels"].flags() & hidden


@pytest.mark.skipif(not Path(QGIS_PROCESS).exists(), reason="qgis_process is not installed")
def test_qgis_process_writes_relative_outputs_in_the_callers_folder(tmp_path, make_synthetic):
    """``--OUTPUT=rel_out.tif`` lands in the caller's working directory (it used to be written
    in the worker's temporary folder and deleted); relative INPUT and MODEL are found too."""
    import json

    import torch

    from plugin.core import modelfile
    from plugin.core.segmentation.network import build_network

    scene = make_synthetic("rel", size=64, bands=3, seed=1)
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(scene.raster, work / "rel_in.tif")
    torch.manual_seed(0)
    classes = [{"id": 0, "name": "background", "color": "#000000"},
               {"id": 1, "name": "bright", "color": "#ff0000"}]
    card = modelfile.make_card(task="pixel_segmentation",
                               architecture="unet", encoder="resnet18", classes=classes, bands=3,
                               mean=[100.0] * 3, std=[50.0] * 3, nodata=None, patch_size=64,
                               pixel_size=(0.5, 0.5), crs="EPSG:32631")
    modelfile.save_model(work / "m.dltmodel.safetensors",
                         build_network("unet", "resnet18", 3, 2), card)
    env = deployed_env(tmp_path)
    done = subprocess.run([QGIS_PROCESS, "--json", "run", "dltrainer:classifypixels",
                           "--INPUT=rel_in.tif", "--MODEL=m.dltmodel.safetensors",
                           "--OUTPUT=rel_out.tif", "--OUTPUT_VECTOR=out/rel.gpkg",
                           "--DEVICE=cpu", "--TILE_SIZE=64"], env=env, capture_output=True,
                          text=True, timeout=300, cwd=work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    answer = json.loads(done.stdout[done.stdout.index("{"):])
    assert (work / "rel_out.tif").is_file() and (work / "out" / "rel.gpkg").is_file()
    assert answer["results"]["OUTPUT"] == str(work / "rel_out.tif")
    assert not answer["results"].get("OUTPUT_PROBABILITIES")  # optional: skipped by default
    shutil.rmtree(tmp_path / "home", ignore_errors=True)


def test_classifier_algorithms_run_from_paths(processing_run, tmp_path):
    """traingridmodel → classifygrid and trainchipclassifier → classifychips with the paths and
    a tiny network (every other parameter at its default)."""
    from plugin.core.classification.synthetic import make_chip_folder, make_grid_scene

    scene = make_grid_scene(tmp_path / "scene", cells=4, cell=32, feature_share=0.6)
    grid = processing_run("dltrainer:traingridmodel", {
        "PROJECT": str(scene.project), "ARCHITECTURE": "resnet18", "GRID_SIZE": 32,
        "EPOCHS": 1, "OUTPUT_MODEL": str(tmp_path / "grid.dltmodel.safetensors")})
    assert grid["task"] == "grid" and Path(grid["output_model"]).is_file()
    cells = processing_run("dltrainer:classifygrid", {
        "INPUT": str(scene.raster), "MODEL": grid["output_model"],
        "OUTPUT": str(tmp_path / "cells.gpkg")})
    assert cells["cells_classified"] == 16 and Path(cells["output"]).is_file()
    make_chip_folder(tmp_path / "chips", "imagefolder", per_class=6, size=16)
    chips = processing_run("dltrainer:trainchipclassifier", {
        "INPUT": str(tmp_path / "chips"), "ARCHITECTURE": "resnet18", "EPOCHS": 1,
        "OUTPUT_MODEL": str(tmp_path / "chips.dltmodel.safetensors")})
    assert chips["task"] == "chip_classification" and chips["test"]["count"] == 1  # a tenth
    out = processing_run("dltrainer:classifychips", {
        "INPUT": str(tmp_path / "chips"), "MODEL": chips["output_model"],
        "OUTPUT": str(tmp_path / "chips.csv")})
    assert out["chips"] == 18 and Path(out["output"]).read_text().startswith("chip,class,score")


def _family_classify_kinds() -> list[str]:
    from plugin.core.families import FAMILIES

    return [k for fam in FAMILIES for k in fam.classify_kinds]


def _map_file(path: Path, raster: bool, layer_name: str = "out") -> Path:
    """A 1-band class raster, or a GeoPackage with a user's layer ``other`` first and the layer
    ``layer_name`` of one square per class with ``class_id`` and ``class`` (what the classify
    jobs write)."""
    from osgeo import gdal, ogr, osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    if raster:
        ds = gdal.GetDriverByName("GTiff").Create(str(path), 8, 8, 1, gdal.GDT_Byte)
        ds.SetGeoTransform((500000, 1, 0, 4500000, 0, -1))
        ds.SetProjection(srs.ExportToWkt())
        ds = None
        return path
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    ds.CreateLayer("other", srs, ogr.wkbPoint)      # QGIS opens the first layer of a file
    layer = ds.CreateLayer(layer_name, srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
    layer.CreateField(ogr.FieldDefn("class", ogr.OFTString))
    for cid, name in ((1, "car"), (2, "tree")):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("class_id", cid)
        feature.SetField("class", name)
        x = 500000 + 10 * cid
        feature.SetGeometry(ogr.CreateGeometryFromWkt(
            f"POLYGON(({x} 4500000,{x + 5} 4500000,{x + 5} 4499995,{x} 4499995,{x} 4500000))"))
        layer.CreateFeature(feature)
    ds = None
    return path


@pytest.mark.parametrize("kind", _family_classify_kinds())
def test_every_familys_classify_outputs_are_loaded_in_class_colours(qgis_processing, tmp_path,
                                                                     kind):
    """For each model family's classify job, the outputs it declares as map layers are loaded
    when Processing completes, styled by class with the model's colours (Classify Pixels used
    to be the only one)."""
    import json
    import struct

    from family_cards import CARD_FIELDS
    from qgis.core import (
        QgsCategorizedSymbolRenderer,
        QgsPalettedRasterRenderer,
        QgsProcessingFeedback,
        QgsProject,
        QgsRasterLayer,
        QgsVectorLayer,
    )

    from plugin.core.families import family_of_kind
    from plugin.core.params import param_fields
    from plugin.gui.output_layers import MAP_OUTPUTS

    classes = [{"id": 0, "name": "background", "color": "#000000"},
               {"id": 1, "name": "car", "color": "#e31a1c"},
               {"id": 2, "name": "tree", "color": "#33a02c"}]
    card = {"format": "dltrainer-model", "format_version": 1, "task": family_of_kind(kind).task,
            "classes": classes, "num_outputs": 3, "bands": 3, "mean": [0, 0, 0],
            "std": [1, 1, 1], "patch_size": 64, **CARD_FIELDS[family_of_kind(kind).task]}
    raw = json.dumps({"__metadata__": {"format": "dltrainer-model", "format_version": "1",
                                       "card": json.dumps(card)},
                      "w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    model = tmp_path / "m.dltmodel.safetensors"
    model.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 16)

    alg = JobAlgorithm.for_kind(kind)
    declared = MAP_OUTPUTS.get(kind)
    assert declared, f"{kind}: no map outputs declared in gui.output_layers.MAP_OUTPUTS"
    specs = {ps.name: (f.name, ps) for f, ps in param_fields(alg.job_cls)}
    assert set(declared) <= set(specs)
    values, context = {"model": str(model)}, QgsProcessingContext()
    context.setProject(QgsProject.instance())
    job_defaults = alg.job_cls()
    expected = []
    for name in declared:
        field, ps = specs[name]
        raster = ps.kind == "raster_out" or ".tif" in ps.file_filter
        layer_name = (getattr(job_defaults, f"{field}_layer", None)
                      or getattr(job_defaults, "output_layer", None))
        path = _map_file(tmp_path / f"{name.lower()}{'.tif' if raster else '.gpkg'}", raster,
                         layer_name or "out")
        values[field] = str(path)
        expected.append(str(path) if raster or not layer_name
                        else f"{path}|layername={layer_name}")
        if ps.kind in ("raster_out", "vector_out"):   # what QGIS registers when asked to open
            context.addLayerToLoadOnCompletion(str(path), QgsProcessingContext.LayerDetails(
                path.stem, QgsProject.instance(), name))
    job = alg.job_cls(**values)

    loaded = alg.load_outputs(job, context)

    assert sorted(loaded) == sorted(expected)      # our layer of a GeoPackage, not the file
    assert set(loaded) <= set(context.layersToLoadOnCompletion())
    for path in loaded:
        details = context.layerToLoadOnCompletionDetails(path)
        layer = (QgsRasterLayer(path, "out") if path.endswith(".tif")
                 else QgsVectorLayer(path, "out", "ogr"))
        assert layer.isValid() and details.postProcessor() is not None
        details.postProcessor().postProcessLayer(layer, context, QgsProcessingFeedback())
        renderer = layer.renderer()
        if isinstance(renderer, QgsPalettedRasterRenderer):
            assert [c.color.name() for c in renderer.classes()][1:] == ["#e31a1c", "#33a02c"]
        elif details.outputName == "OUTPUT_PROBABILITIES" or kind == "predict_values":
            assert renderer.type() == "singlebandpseudocolor"   # a ramp: values, not classes
        else:
            assert isinstance(renderer, QgsCategorizedSymbolRenderer), (kind, details.outputName)
            colours = {c.label().split()[-1]: (c.symbol().color().name(),  # fill or outline
                                               c.symbol().symbolLayer(0).strokeColor().name())
                       for c in renderer.categories()}
            assert "#e31a1c" in colours["car"] and "#33a02c" in colours["tree"], colours


def test_a_classified_chips_table_is_not_loaded_as_a_map_layer(qgis_processing, tmp_path):
    from plugin.core.classification.jobs import ClassifyChipsJob

    table = tmp_path / "chips.csv"
    table.write_text("chip,class,score\na.tif,car,0.9\n")
    job = ClassifyChipsJob(input=str(tmp_path), model="", output=str(table))
    context = QgsProcessingContext()
    assert JobAlgorithm.for_kind("classify_chips").load_outputs(job, context) == []
    assert context.layersToLoadOnCompletion() == {}


def test_classify_chips_output_must_be_named_as_the_format_written(qgis_processing, tmp_path):
    """A vector INPUT gives a GeoPackage: an OUTPUT named .csv is refused before the run (it
    used to be a GeoPackage named .csv); a chips folder gives a CSV."""
    vector = _map_file(tmp_path / "features.gpkg", raster=False)
    raster = _map_file(tmp_path / "scene.tif", raster=True)
    model = tmp_path / "m.dltmodel.safetensors"
    model.write_bytes(b"x")
    alg = JobAlgorithm.for_kind("classify_chips")
    ok, message = alg.checkParameterValues(
        {"INPUT": str(vector), "RASTER": str(raster), "MODEL": str(model),
         "OUTPUT": str(tmp_path / "out.csv")}, QgsProcessingContext())
    assert not ok and "does not end in .gpkg" in message and "out.gpkg" in message
    ok, message = alg.checkParameterValues(
        {"INPUT": str(tmp_path), "MODEL": str(model), "OUTPUT": str(tmp_path / "o.gpkg")},
        QgsProcessingContext())
    assert not ok and "does not end in .csv" in message
    job = alg.job_from_parameters({"INPUT": str(vector), "RASTER": str(raster),
                                   "MODEL": str(model), "OUTPUT": str(tmp_path / "out.gpkg")},
                                  QgsProcessingContext())
    assert not [p for p in job.problems() if "OUTPUT" in p]
