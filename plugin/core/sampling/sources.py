"""Where patches come from: a labeling project (label rasters built on the fly) or an exported
chips folder (read back through its ``manifest.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..jobs import JobContext
from .plan import SampleSource

MANIFEST = "manifest.json"


def sources_from_project(project_path: str, label_folder: str,
                         ctx: JobContext | None = None) -> list[SampleSource]:
    """Build the label rasters of a labeling project into ``label_folder`` and pair each with its
    raster; project raster roles (auto/train/validation) are kept."""
    from ..labeling.labelraster import build_label_rasters
    from ..labeling.project import LabelingProject

    project = LabelingProject.open(project_path)
    names = {r.path: r.name for r in project.rasters()}
    reports = build_label_rasters(project, label_folder, ctx)
    out = []
    for rep in reports:
        image = str(rep["raster"])
        labels = str(rep.get("label_raster") or rep.get("label_path"))
        out.append(SampleSource(image=image, labels=labels, role=rep.get("role", "auto"),
                                name=names.get(image, Path(image).stem)))
    return out


def project_classes(project_path: str) -> list[tuple[int, str, str]]:
    """(id, name, colour) of a labeling project's classes, by id."""
    from ..labeling.project import LabelingProject

    project = LabelingProject.open(project_path)
    return [(c.id, c.name, c.color) for c in sorted(project.classes(), key=lambda c: c.id)]


def read_manifest(folder: str | Path) -> dict:
    """The ``manifest.json`` of an exported chips folder (a clear error if there is none)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UserError(f"{folder} has no {MANIFEST}: it is not an exported chips folder.",
                        "Choose a folder written by Export Training Chips.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}).",
                        "Export the chips again.") from None


def sources_from_chips_folder(folder: str | Path) -> list[SampleSource]:
    """One source per image/mask pair of a segmentation export, with the split it was exported
    in as its role (so planning with the chip size keeps that split)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest.get("format") != "segmentation":
        raise UserError(f"{folder} holds a {manifest.get('format')!r} export; training from a "
                        "folder needs a segmentation export (image + mask pairs).",
                        "Export the chips with the segmentation format.")
    out = []
    for item in manifest.get("items", []):
        image, mask = folder / item["image"], folder / item["mask"]
        if not image.is_file() or not mask.is_file():
            raise UserError(f"Chip {item['image']} listed in the manifest is missing.",
                            "Export the chips again.")
        out.append(SampleSource(str(image), str(mask), item.get("split", "auto"),
                                Path(item["image"]).stem))
    if not out:
        raise UserError(f"The chips folder {folder} holds no chips.", "Export the chips again.")
    return out
