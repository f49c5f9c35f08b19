"""Sampling jobs: ``export_chips`` (Export Training Chips) and ``sample_summary`` (the pre-flight
summary the dialogs show live). Nothing heavy at import time."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import JobCancelled
from ..jobs import Job, JobContext, register_job
from ..params import spec
from ..patchsize import patch_size_problem

_PROJECT_FILTER = "Labeling project (*.gpkg)"
FORMAT_CHOICES = ("segmentation", "coco", "voc", "yolo", "imagefolder", "multilabel_csv", "gbdx")
FORMAT_LABELS = {
    "segmentation": "Segmentation: GeoTIFF image + mask pairs",
    "coco": "Object detection: COCO JSON",
    "voc": "Object detection: PASCAL VOC XML",
    "yolo": "Object detection: YOLO txt",
    "imagefolder": "Classification: ImageFolder (one folder per class)",
    "multilabel_csv": "Classification: multi-label CSV (image_name,tags)",
    "gbdx": "Classification: chips around features + ref.geojson (GBDX)",
}


@dataclass
class _SamplingFields(Job):
    """The sampling settings shared by the export and summary jobs."""

    project: str = spec("", "PROJECT", "Labeling project", "project_in",
                        help="The labeling project (.gpkg) with rasters, classes and labels.",
                        file_filter=_PROJECT_FILTER)
    format: str = spec("segmentation", "FORMAT", "Format", "enum", choices=FORMAT_CHOICES,
                       choice_labels=FORMAT_LABELS,
                       help="; ".join(f"{k}: {v}" for k, v in FORMAT_LABELS.items()))
    patch_size: int = spec(256, "PATCH_SIZE", "Patch size (px)", "int", minimum=32,
                           maximum=8192, help="Side of the square patches: a multiple of 32, "
                                              "as training requires.")
    stride: int = spec(0, "STRIDE", "Stride (px, 0 = patch size)", "int", minimum=0,
                       maximum=8192, help="Step between patches; smaller than the patch size "
                                          "makes overlapping patches.")
    split: float = spec(80.0, "SPLIT", "Training share (%)", "float", minimum=0, maximum=100,
                        decimals=0,
                        help="Percent of the data used for training; the rest validates.")
    shuffle: bool = spec(False, "SHUFFLE", "Shuffle rasters", "bool",
                         help="Off: the same split every run. On: the split is drawn with the "
                              "seed.")
    seed: int = spec(0, "SEED", "Seed", "int", minimum=0, maximum=2**31 - 1)
    feature_patch_percentage: float = spec(
        1.0, "FEATURE_PATCH_PERCENTAGE", "Feature patch percentage (0–1)", "float", minimum=0,
        maximum=1, help="Share of the patches holding labelled features that are used "
                        "(0.4 of 50 → 20), per split.")
    background_patch_ratio: float = spec(
        0.15, "BACKGROUND_PATCH_RATIO", "Background patch ratio", "float", minimum=0,
        maximum=100, help="Background patches per feature patch used (0.15 × 20 → 3), "
                          "rounded half up, per split.")
    pad_small_features: bool = spec(True, "PAD_SMALL_FEATURES", "Pad small features", "bool",
                                    help="Grow boxes smaller than 25 px to 25 px around "
                                         "their centre.")
    box_size: float = spec(25.0, "BOX_SIZE", "Box size for point labels (px)", "float",
                           minimum=1, maximum=4096, advanced=True)
    max_nodata: float = spec(0.5, "MAX_NODATA", "Skip patches with more nodata than (0–1)",
                             "float", minimum=0, maximum=1, advanced=True)
    blocked_split: bool = spec(False, "BLOCKED_SPLIT", "Spatially blocked split", "bool",
                               advanced=True, help="Split each raster in blocks of patches with "
                                                   "a buffer between train and validation.")
    block_size: int = spec(4, "BLOCK_SIZE", "Block size (patches)", "int", minimum=1,
                           maximum=1000, advanced=True)
    buffer_patches: int = spec(1, "BUFFER_PATCHES", "Buffer between blocks (patches)", "int",
                               minimum=0, maximum=100, advanced=True)
    min_side: int = spec(0, "MIN_SIDE", "Minimum chip side (px, feature chips)", "int",
                         minimum=0, maximum=8192, advanced=True)
    max_side: int = spec(150, "MAX_SIDE", "Maximum chip side (px, feature chips)", "int",
                         minimum=1, maximum=8192, advanced=True,
                         help="Larger features are skipped, smaller ones zero-padded to it.")
    resize: int = spec(0, "RESIZE", "Resize feature chips to (px, 0 = no)", "int", minimum=0,
                       maximum=8192, advanced=True)
    min_class_fraction: float = spec(0.01, "MIN_CLASS_FRACTION",
                                     "Multi-label: minimum class share for a tag", "float",
                                     minimum=0, maximum=1, advanced=True)

    def problems(self) -> list[str]:
        out = super().problems()
        if self.project and not Path(self.project).is_file():
            out.append(f"The labeling project {self.project} does not exist: choose an existing "
                       ".gpkg (PROJECT).")
        out += patch_size_problem(self.patch_size)
        if self.stride and self.stride > self.patch_size:
            out.append(f"Stride {self.stride} is larger than the patch size {self.patch_size}: "
                       "patches would leave gaps. Use a stride up to the patch size.")
        if self.format == "gbdx" and self.min_side > self.max_side:
            out.append("The minimum chip side is larger than the maximum: lower MIN_SIDE.")
        if self.resize and self.resize > self.max_side:
            out.append("RESIZE is meant to shrink chips: use a value up to MAX_SIDE.")
        return out

    def sampling_config(self):
        from .plan import SamplingConfig

        return SamplingConfig(
            patch_size=int(self.patch_size), stride=int(self.stride) or None,
            split=float(self.split), shuffle=bool(self.shuffle), seed=int(self.seed),
            feature_patch_percentage=float(self.feature_patch_percentage),
            background_patch_ratio=float(self.background_patch_ratio),
            max_nodata_fraction=float(self.max_nodata), blocked_split=bool(self.blocked_split),
            block_size=int(self.block_size), buffer_patches=int(self.buffer_patches),
            pad_small_features=bool(self.pad_small_features))

    def export_options(self):
        from .exporters.common import ExportOptions

        return ExportOptions(format=self.format, box_size=float(self.box_size),
                             min_side=int(self.min_side), max_side=int(self.max_side),
                             resize=int(self.resize),
                             min_class_fraction=float(self.min_class_fraction))


@register_job
@dataclass
class ExportChipsJob(_SamplingFields):
    """Cut training chips from a labeling project and write them in a common format."""

    kind = "export_chips"
    progress_phases = (("plan", 0.15), ("chips", 0.85))
    title = "Export Training Chips"
    group = "Training data"

    output_folder: str = spec("", "OUTPUT_FOLDER", "Output folder", "folder_out",
                              help="A new or empty folder (see Overwrite).")
    overwrite: bool = spec(False, "OVERWRITE", "Replace a previous export in the folder",
                           "bool", help="Only a folder holding a previous chip export "
                                        "(manifest.json) is ever cleared.")

    def problems(self) -> list[str]:
        out = super().problems()
        if not self.output_folder:
            out.append("Output folder (OUTPUT_FOLDER) is required: choose a new or empty folder.")
        return out

    def run(self, ctx: JobContext) -> dict:
        from dataclasses import asdict

        from .export import DETECTION, export_chips, load_project_input, prepare_output

        folder = prepare_output(self.output_folder, self.overwrite)
        try:
            with tempfile.TemporaryDirectory(prefix="dltrainer-chips-") as work:
                fmt = self.format
                data = load_project_input(self.project, work, ctx, labels=fmt != "gbdx",
                                          features=fmt in DETECTION or fmt == "gbdx")
                ctx.check_cancelled()
                return export_chips(data, folder, self.sampling_config(), self.export_options(),
                                    ctx, parameters={"kind": self.kind, **asdict(self)},
                                    work=work)
        except JobCancelled:
            raise       # cancelling keeps the chips written so far
        except Exception:
            # a failed export (disk full, unreadable raster) leaves no partial folder behind; the
            # folder was new, empty or a previous export being replaced (prepare_output)
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
            raise


@register_job
@dataclass
class SampleSummaryJob(_SamplingFields):
    """The pre-flight summary of a sampling: patches, pixels and warnings (writes nothing the
    user keeps)."""

    kind = "sample_summary"
    title = "Sampling Summary"
    group = "Training data"

    def run(self, ctx: JobContext) -> dict:
        from .export import DETECTION, load_project_input, source_boxes, write_box_labels
        from .plan import few_validation_pixels, plan_patches

        with tempfile.TemporaryDirectory(prefix="dltrainer-summary-") as work:
            data = load_project_input(self.project, work, None,
                                      features=self.format in DETECTION)
            config = self.sampling_config()
            sources = data.sources
            if self.format in DETECTION:
                boxes = source_boxes(data, config, self.export_options())
                sources = [write_box_labels(s, b, Path(work) / f"boxes_{i}.tif")
                           for i, (s, b) in enumerate(zip(sources, boxes))]
            plan = plan_patches(sources, config, class_names=data.class_names,
                                cancelled=lambda: ctx.cancelled)
            summary = plan.summary()
            if self.format == "segmentation":   # pixel masks: the best epoch is chosen on them
                summary["warnings"] += few_validation_pixels(plan)
            return summary
