"""Labeling jobs: import labels (vector or classified raster) and build label rasters.

Nothing heavy at import time: rasterio is imported inside the functions ``run`` calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..jobs import Job, JobContext, register_job
from ..params import spec

_PROJECT_FILTER = "Labeling project (*.gpkg)"


LABEL_FORMATS = ("auto", "vector", "voc", "coco", "yolo", "deepforest_csv")


def guess_label_format(path: str) -> str:
    """'voc', 'coco', 'yolo', 'deepforest_csv' or 'vector' from a labels file's name (and, for
    .json, whether it holds COCO 'annotations'); reads at most 64 kB. A .json whose top level is
    an array is no GeoJSON (always an object): 'coco', whose reader names what is wrong."""
    suffix = Path(str(path).split("|")[0]).suffix.lower()
    if suffix in (".xml", ".txt"):
        return "voc" if suffix == ".xml" else "yolo"
    if suffix == ".csv":
        return "deepforest_csv"
    if suffix == ".json":
        try:
            with open(path, encoding="utf-8") as fh:
                head = fh.read(65536)
        except OSError:
            return "vector"
        coco = '"annotations"' in head and '"images"' in head or head.lstrip().startswith("[")
        return "coco" if coco else "vector"
    return "vector"


def _existing_project(path: str, label: str) -> list[str]:
    if path and not Path(path).is_file():
        return [f"The labeling project {path} does not exist: check {label}, or create it "
                "with the Labeling Tool or 'Import labels'."]
    return []


@register_job
@dataclass
class ImportLabelsJob(Job):
    """Import a vector layer with a class field into a labeling project (created if missing)."""

    kind = "import_labels"
    title = "Import Labels"
    group = "Labeling"

    project: str = spec("", "PROJECT", "Labeling project (created if missing)", "project_out",
                        help="The labeling project GeoPackage; created in the first raster's "
                             "CRS when it does not exist.", file_filter=_PROJECT_FILTER)
    rasters: list = spec([], "RASTERS", "Training rasters", "raster_list", optional=True,
                         help="Rasters to add to the project (the labels are drawn on them).")
    labels: str = spec("", "LABELS", "Labels (vector layer or box annotation file)",
                       "vector_or_file_in",
                       help="Polygons, points or lines with a class field (GeoPackage, "
                            "Shapefile, GeoJSON…), or boxes in a VOC .xml, COCO .json, YOLO "
                            ".txt or DeepForest .csv file.")
    class_field: str = spec("", "CLASS_FIELD", "Class field", "str", optional=True,
                            help="Each distinct value (number or text) becomes a class (vector "
                                 "layers only; box annotations carry their class names).")
    format: str = spec("auto", "FORMAT", "Labels format", "enum", choices=LABEL_FORMATS,
                       help="auto: from the file (.xml VOC, .json COCO when it has "
                            "'annotations', .txt YOLO, .csv DeepForest, else a vector layer). "
                            "Box annotations are in pixels of the one raster in RASTERS.")

    def label_format(self) -> str:
        """The format of LABELS: FORMAT, or told from the file when auto."""
        if self.format != "auto":
            return self.format
        return guess_label_format(self.labels)

    def problems(self) -> list[str]:
        out = super().problems()
        if self.project and not self.project.lower().endswith(".gpkg"):
            out.append("The labeling project (PROJECT) must be a .gpkg file: change its name.")
        fmt = self.label_format()
        if fmt != "vector":
            if self.labels and not Path(self.labels).is_file():
                out.append(f"The labels file {self.labels} does not exist: check LABELS.")
            if len(self.rasters) != 1:
                out.append(f"{fmt.upper()} box annotations are in pixels of one image: give "
                           "exactly that raster in RASTERS.")
            return out
        if not (self.class_field or "").strip():
            out.append("Class field (CLASS_FIELD) is required: name the field holding classes.")
        if self.project and not Path(self.project).exists() and not self.rasters:
            out.append("The project does not exist yet and no raster was given to take its CRS "
                       "from: add the training rasters (RASTERS).")
        return out

    def run(self, ctx: JobContext) -> dict:
        from .importers import import_vector_labels

        fmt = self.label_format()
        if fmt != "vector":
            from .box_importers import import_box_annotations

            return import_box_annotations(self.project, self.labels, str(self.rasters[0]),
                                          fmt, ctx)
        return import_vector_labels(self.project, self.labels, self.class_field.strip(),
                                    [str(r) for r in self.rasters], ctx)


@register_job
@dataclass
class BuildLabelRastersJob(Job):
    """Burn the project's labels onto each training raster's grid (one uint8 GeoTIFF each)."""

    kind = "build_label_rasters"
    title = "Build Label Rasters"
    group = "Labeling"

    project: str = spec("", "PROJECT", "Labeling project", "project_in",
                        file_filter=_PROJECT_FILTER)
    output_folder: str = spec("", "OUTPUT_FOLDER", "Output folder", "folder_out",
                              help="Receives <raster>_r<id>_labels.tif per raster and "
                                   "label_rasters.json.")

    def problems(self) -> list[str]:
        out = super().problems() + _existing_project(self.project, "PROJECT")
        if not self.output_folder:
            out.append("Output folder (OUTPUT_FOLDER) is required: choose a folder.")
        return out

    def run(self, ctx: JobContext) -> dict:
        from .labelraster import MANIFEST, build_label_rasters
        from .project import LabelingProject

        project = LabelingProject.open(self.project)
        reports = build_label_rasters(project, self.output_folder, ctx)
        return {"label_rasters": [r["label_raster"] for r in reports],
                "manifest": str(Path(self.output_folder) / MANIFEST), "reports": reports}


@register_job
@dataclass
class ImportLabelRasterJob(Job):
    """Label rasters from a classified raster (land-cover map) through a value → class table."""

    kind = "import_label_raster"
    title = "Import Labels from a Classified Raster"
    group = "Labeling"

    project: str = spec("", "PROJECT", "Labeling project", "project_in",
                        file_filter=_PROJECT_FILTER)
    classified_raster: str = spec("", "CLASSIFIED_RASTER", "Classified raster", "raster_in",
                                  help="A land-cover map: one class value per pixel.")
    value_classes: dict | str = spec(
        {}, "VALUE_CLASSES", "Value → class table", "dict",
        help='e.g. {"1": "water", "2": "forest"} or 1=water, 2=forest; other values become '
             "background.")
    output_folder: str = spec("", "OUTPUT_FOLDER", "Output folder", "folder_out")

    def problems(self) -> list[str]:
        out = super().problems() + _existing_project(self.project, "PROJECT")
        if not self.value_classes:
            out.append("The value → class table (VALUE_CLASSES) is empty: map raster values to "
                       "class names, e.g. 1=water, 2=forest.")
        if not self.output_folder:
            out.append("Output folder (OUTPUT_FOLDER) is required: choose a folder.")
        return out

    def run(self, ctx: JobContext) -> dict:
        from .importers import import_label_raster
        from .labelraster import MANIFEST
        from .project import LabelingProject

        project = LabelingProject.open(self.project)
        reports = import_label_raster(project, self.classified_raster, self.value_classes,
                                      self.output_folder, ctx)
        return {"label_rasters": [r["label_raster"] for r in reports],
                "manifest": str(Path(self.output_folder) / MANIFEST), "reports": reports}
