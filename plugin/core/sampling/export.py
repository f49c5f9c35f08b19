"""Export Training Chips: plan patches (or feature chips) and write them in a chosen format.

Formats: ``segmentation`` (GeoTIFF image + mask pairs), ``coco``, ``voc``, ``yolo`` (object
detection), ``imagefolder``, ``multilabel_csv`` (patch classification) and ``gbdx`` (chips cut
around each label feature). Every export writes ``manifest.json`` (see exporters/common.py), also
when cancelled (``complete: false``; the chips written so far stay).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..jobs import JobContext
from .boxes import Box, feature_boxes
from .exporters import feature_chips
from .exporters import patches as px
from .exporters.common import MANIFEST, ExportInput, ExportOptions, ExportState, write_manifest
from .plan import (
    IGNORE,
    SampleSource,
    SamplingConfig,
    few_validation_pixels,
    n_validation,
    plan_patches,
    raster_roles,
    split_rng,
)

FORMATS = ("segmentation", "coco", "voc", "yolo", "imagefolder", "multilabel_csv", "gbdx")
DETECTION = ("coco", "voc", "yolo")


# -- output folder ------------------------------------------------------------------------------
def prepare_output(folder: str | Path, overwrite: bool) -> Path:
    """Create ``folder``; a non-empty one is a UserError unless ``overwrite`` is set and it holds
    a previous export (its contents are then replaced). Nothing else is ever deleted."""
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise UserError(f"The output {out} is a file, not a folder.", "Choose a folder.")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"The output folder {out} is not empty.",
                            "Choose a new or empty folder, or set Overwrite (OVERWRITE) to "
                            "replace a previous export.")
        if not (out / MANIFEST).is_file():
            raise UserError(f"The output folder {out} is not empty and holds no previous chip "
                            "export, so it is not cleared.", "Choose a new or empty folder.")
        for child in out.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"Cannot create the output folder {out}: {exc.strerror}.",
                        "Choose a writable folder.") from None
    return out


# -- inputs -------------------------------------------------------------------------------------
def load_project_input(project_path: str, work: str | Path, ctx: JobContext | None = None,
                       labels: bool = True, features: bool = False) -> ExportInput:
    """Sources (label rasters built into ``work``), classes and, if asked, label features."""
    from ..labeling.project import LabelingProject
    from .sources import project_classes, sources_from_project

    project = LabelingProject.open(project_path)
    if labels:
        sources = sources_from_project(project_path, str(work), ctx)
    else:
        sources = [SampleSource(r.path, "", r.role, r.name) for r in project.rasters()]
        if not sources:
            raise UserError(f"The labeling project {project.name} has no training rasters.",
                            "Add rasters in the Labeling Tool.")
    feats = None
    if features:
        by_path = {r.path: r for r in project.rasters()}
        feats = [project.features_for(by_path.get(s.image, s.image)) for s in sources]
    return ExportInput(sources, project_classes(project_path), feats)


def source_boxes(data: ExportInput, config: SamplingConfig, options: ExportOptions
                 ) -> list[list[Box]]:
    """Pixel boxes of each source's label features (points: ``box_size`` squares; padded when
    ``pad_small_features``)."""
    import rasterio

    if data.features is None:
        raise UserError("This format needs the label features, and none were given.",
                        "Export from a labeling project.")
    out = []
    for src, feats in zip(data.sources, data.features):
        with rasterio.open(src.image) as ds:
            out.append(feature_boxes(feats, ds.transform, ds.width, ds.height,
                                     point_box=options.box_size,
                                     min_size=config.min_feature_size,
                                     pad=config.pad_small_features))
    return out


def write_box_labels(source: SampleSource, boxes: list[Box], out_path: Path,
                     strip: int = 1024) -> SampleSource:
    """A label raster of the boxes (every pixel a box touches; higher class id wins), keeping
    the source label raster's ignore pixels (no label raster: the image's grid, nothing
    ignored); written strip by strip."""
    import rasterio
    from rasterio.windows import Window

    ordered = sorted(boxes, key=lambda b: b.class_id)
    with rasterio.open(source.labels or source.image) as src:
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1,
                   "dtype": "uint8", "crs": src.crs, "transform": src.transform,
                   "nodata": IGNORE}
        with rasterio.open(out_path, "w", **profile) as dst:
            for r0 in range(0, src.height, strip):
                h = min(strip, src.height - r0)
                window = Window(0, r0, src.width, h)
                if source.labels:
                    base = src.read(1, window=window)
                    arr = np.where(base == IGNORE, IGNORE, 0).astype(np.uint8)
                else:
                    arr = np.zeros((h, src.width), np.uint8)
                for b in ordered:
                    y0, y1 = max(int(np.floor(b.y0)) - r0, 0), min(int(np.ceil(b.y1)) - r0, h)
                    if y1 <= y0:
                        continue
                    x0, x1 = int(np.floor(b.x0)), int(np.ceil(b.x1))
                    sub = arr[y0:y1, x0:x1]
                    sub[sub != IGNORE] = b.class_id
                dst.write(arr, 1, window=window)
    return SampleSource(source.image, str(out_path), source.role, source.name)


# -- export -------------------------------------------------------------------------------------
def export_chips(data: ExportInput, folder: str | Path, config: SamplingConfig,
                 options: ExportOptions, ctx: JobContext | None = None,
                 parameters: dict | None = None, work: str | Path | None = None) -> dict:
    """Write the chips of ``data`` into ``folder`` (which must be ready: see
    :func:`prepare_output`); return a result with counts, the manifest path and the summary."""
    from .reader import PatchReader

    ctx = ctx or JobContext()
    if options.format not in FORMATS:
        raise UserError(f"Unknown chip format {options.format!r}.",
                        f"Use one of {', '.join(FORMATS)}.")
    state = ExportState(Path(folder), data, config, options, ctx)
    parameters = dict(parameters or {})
    if options.format == "gbdx":
        return _export_feature_chips(state, parameters)

    boxes: list[list[Box]] = []
    sources = data.sources
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        if options.format in DETECTION:
            boxes = source_boxes(data, config, options)
            sources = [write_box_labels(s, b, Path(tmp) / f"boxes_{i}.tif")
                       for i, (s, b) in enumerate(zip(data.sources, boxes))]
        plan = plan_patches(sources, config, class_names=data.class_names,
                            progress=lambda i, n, m: ctx.progress("plan", i, n, m),
                            cancelled=lambda: ctx.cancelled)
        ctx.check_cancelled()  # nothing written yet
        few = few_validation_pixels(plan) if options.format == "segmentation" else []
        for w in [*plan.warnings, *few]:
            ctx.log(w, "warning")
        summary = plan.summary()
        if not plan.patches:
            raise UserError("No patch to export: " + " ".join(plan.warnings[:2]),
                            "Check the labels and the sampling settings.")
        layout = px.LAYOUTS[options.format]
        total, cancelled = len(plan.patches), False
        import rasterio

        with rasterio.Env(), PatchReader(data.sources) as reader:  # one GDAL env for all chips
            for k, patch in enumerate(plan.patches):
                if ctx.cancelled:
                    cancelled = True
                    break
                name = state.chip_name(patch.source, patch.row, patch.col)
                if options.format == "segmentation":
                    px.write_segmentation(state, reader, patch, name)
                elif options.format in DETECTION:
                    px.write_detection(state, reader, patch, name, boxes[patch.source])
                elif options.format == "imagefolder":
                    px.write_imagefolder(state, reader, patch, name)
                else:
                    px.write_multilabel(state, reader, patch, name)
                if k % 16 == 0 or k + 1 == total:
                    ctx.progress("chips", k + 1, total, f"{k + 1} of {total} chips written")
        if options.format in DETECTION:
            px.finish_detection(state)
            summary["objects"] = _object_counts(state.items)
        elif options.format == "multilabel_csv":
            px.finish_multilabel(state)
    manifest = write_manifest(state, layout, summary, parameters, complete=not cancelled,
                              extra={"patch_size": config.patch_size, "stride": config.step})
    ctx.artifact("manifest", str(manifest))
    return _result(state, manifest, summary, cancelled)


def _object_counts(items: list[dict]) -> dict:
    """Boxes (pieces inside written chips) per class id per split."""
    out: dict[str, dict[int, int]] = {"train": {}, "validation": {}}
    for item in items:
        split = out.setdefault(item["split"], {})
        for obj in item.get("objects", []):
            split[obj["class_id"]] = split.get(obj["class_id"], 0) + 1
    return out


def _result(state: ExportState, manifest: Path, summary: dict, cancelled: bool,
            skipped: dict | None = None) -> dict:
    counts = {s: sum(i["split"] == s for i in state.items) for s in ("train", "validation")}
    return {"output_folder": str(state.folder), "format": state.options.format,
            "count": len(state.items), **counts, "manifest": str(manifest),
            "summary": summary, "skipped": skipped or {}, "cancelled": cancelled}


def _export_feature_chips(state: ExportState, parameters: dict) -> dict:
    from .reader import PatchReader

    data, config, ctx = state.data, state.config, state.ctx
    boxes = source_boxes(data, config, state.options)
    geoms = [{(getattr(f, "layer", "polygons"), f.fid): f.geometry for f in feats}
             for feats in data.features or []]
    roles = raster_roles(data.sources, config)
    rng = split_rng(config)
    jobs: list[tuple[int, Box, str]] = []
    for i, bxs in enumerate(boxes):
        if roles[i] != "auto":
            jobs.extend((i, b, roles[i]) for b in bxs)
            continue
        val = set(rng.permutation(len(bxs))[:n_validation(len(bxs), config.split)].tolist())
        jobs.extend((i, b, "validation" if k in val else "train") for k, b in enumerate(bxs))
    if not jobs:
        raise UserError("No label feature to cut chips around.",
                        "Draw labels on the project's rasters first.")
    skipped: dict[str, int] = {}
    cancelled = False
    import rasterio

    with rasterio.Env(), PatchReader(data.sources) as reader:
        for k, (i, box, split) in enumerate(jobs):
            if ctx.cancelled:
                cancelled = True
                break
            geometry = geoms[i].get((box.kind, box.fid), {})
            why = feature_chips.write_feature_chip(state, reader, i, box, geometry, split)
            if why:
                skipped[why] = skipped.get(why, 0) + 1
            if k % 16 == 0 or k + 1 == len(jobs):
                ctx.progress("chips", k + 1, len(jobs), f"{k + 1} of {len(jobs)} features")
    crs = None
    if data.sources:
        from .exporters.common import raster_info

        crs = raster_info(data.sources[0].image)["crs"]
    feature_chips.finish_feature_chips(state, crs)
    for why, n in skipped.items():
        ctx.log(f"{n} feature chip(s) skipped: {why}.", "warning")
    summary = {"features": len(jobs), "written": len(state.items), "skipped": skipped,
               "train": sum(i["split"] == "train" for i in state.items),
               "validation": sum(i["split"] == "validation" for i in state.items)}
    manifest = write_manifest(state, feature_chips.LAYOUT, summary, parameters,
                              complete=not cancelled,
                              extra={"max_side": state.options.max_side,
                                     "min_side": state.options.min_side,
                                     "resize": state.options.resize})
    ctx.artifact("manifest", str(manifest))
    return _result(state, manifest, summary, cancelled, skipped)
