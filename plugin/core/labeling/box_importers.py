"""Importing object boxes people already have: PASCAL VOC XML, COCO JSON, YOLO txt and the CSV
layout DeepForest uses, for one raster, into a labeling project as rectangle polygons.

Pixel conventions (x to the right, y down; a box is stored as pixel edges ``x0, y0, x1, y1`` so
that ``x1 − x0`` is its width in pixels):

- VOC: ``xmin, ymin, xmax, ymax`` are 1-based inclusive pixel indices (the PASCAL VOC devkit):
  ``x0 = xmin − 1``, ``x1 = xmax`` (the same rule Export Training Chips writes);
- COCO: ``bbox = [x, y, width, height]`` in 0-based pixel edges;
- YOLO: ``class x_centre y_centre width height`` as shares (0–1) of the image size; class names
  from ``data.yaml``, ``classes.txt`` or ``obj.names`` beside the file (or the folder above),
  else ``class_<index>``;
- DeepForest CSV: ``image_path, xmin, ymin, xmax, ymax, label`` in 0-based pixel edges (the
  DeepForest convention); rows of other images are left out.

Pixel → map coordinates through the raster's affine transform. An ungeoreferenced image (a PNG
or JPEG without world file) cannot be placed on a map: a GeoTIFF copy of it in *pixel
coordinates* (x = column, y = −row, 1 unit per pixel, a local engineering CRS) is written next to
the project and labelled instead, with a warning.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import warnings
from pathlib import Path
from xml.etree import ElementTree as ET

from ..errors import UserError
from ..jobs import JobContext

FORMATS = ("auto", "voc", "coco", "yolo", "deepforest_csv")
PIXEL_CRS = ('LOCAL_CS["pixel coordinates (x = column, y = -row)",LOCAL_DATUM["image",0],'
             'UNIT["metre",1],AXIS["x",EAST],AXIS["y",NORTH]]')


def detect_format(path: str | Path) -> str:
    """The annotation format from the file name (UserError when it cannot be told)."""
    suffix = Path(path).suffix.lower()
    fmt = {".xml": "voc", ".json": "coco", ".txt": "yolo", ".csv": "deepforest_csv"}.get(suffix)
    if fmt is None:
        raise UserError(f"{Path(path).name} is not a VOC .xml, COCO .json, YOLO .txt or "
                        "DeepForest .csv annotation file.", "Choose the annotation format.")
    return fmt


# -- parsers: (class name, x0, y0, x1, y1) in pixel edges ---------------------------------------
def read_voc(path: Path, image_name: str) -> list[tuple[str, float, float, float, float]]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise UserError(f"{path.name} is not valid XML ({exc}).", "Check the file.") from None
    out = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        name = (obj.findtext("name") or "").strip()
        if bb is None or not name:
            continue
        v = [float(bb.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax")]
        out.append((name, v[0] - 1, v[1] - 1, v[2], v[3]))
    return out


def read_coco(path: Path, image_name: str) -> list[tuple[str, float, float, float, float]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path.name} is not valid JSON ({exc}).", "Check the file.") from None
    images = data.get("images", [])
    cats = {c["id"]: c["name"] for c in data.get("categories", [])}
    match = [im["id"] for im in images if Path(str(im.get("file_name", ""))).name == image_name
             or Path(str(im.get("file_name", ""))).stem == Path(image_name).stem]
    if not match and len(images) == 1:
        match = [images[0]["id"]]
    if not match:
        raise UserError(f"{path.name} has no image named {image_name}.",
                        "Choose the raster the COCO file describes.")
    out = []
    for a in data.get("annotations", []):
        if a.get("image_id") in match and a.get("bbox"):
            x, y, w, h = map(float, a["bbox"])
            out.append((str(cats.get(a.get("category_id"), a.get("category_id"))),
                        x, y, x + w, y + h))
    return out


def yolo_names(path: Path) -> list[str]:
    """Class names for a YOLO label file from data.yaml / classes.txt / obj.names nearby."""
    for folder in (path.parent, path.parent.parent, path.parent.parent.parent):
        for name in ("classes.txt", "obj.names"):
            f = folder / name
            if f.is_file():
                return [ln.strip() for ln in f.read_text(encoding="utf-8").splitlines()
                        if ln.strip()]
        f = folder / "data.yaml"
        if f.is_file():
            return _yaml_names(f.read_text(encoding="utf-8"))
    return []


def _yaml_names(text: str) -> list[str]:
    """``names:`` of a YOLO data.yaml: a list ``[a, b]`` or an ``index: name`` block."""
    m = re.search(r"^names:\s*\[(.*?)\]", text, re.M | re.S)
    if m:
        return [n.strip().strip("'\"") for n in m.group(1).split(",") if n.strip()]
    names: dict[int, str] = {}
    block = re.search(r"^names:\s*\n((?:[ \t]+.*\n?)+)", text, re.M)
    for line in (block.group(1).splitlines() if block else []):
        m = re.match(r"\s*(\d+)\s*:\s*(.+?)\s*$", line)
        if m:
            names[int(m.group(1))] = m.group(2).strip("'\"")
        elif line.strip().startswith("- "):
            names[len(names)] = line.strip()[2:].strip("'\"")
    return [names[k] for k in sorted(names)]


def read_yolo(path: Path, image_name: str, width: int, height: int
              ) -> list[tuple[str, float, float, float, float]]:
    names = yolo_names(path)
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            k, cx, cy, w, h = int(parts[0]), *map(float, parts[1:5])
        except (ValueError, IndexError):
            raise UserError(f"Line {n} of {path.name} is not 'class x y width height'.",
                            "Check the YOLO file.") from None
        name = names[k] if k < len(names) else f"class_{k}"
        out.append((name, (cx - w / 2) * width, (cy - h / 2) * height,
                    (cx + w / 2) * width, (cy + h / 2) * height))
    return out


def read_deepforest_csv(path: Path, image_name: str
                        ) -> list[tuple[str, float, float, float, float]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    need = {"xmin", "ymin", "xmax", "ymax", "label"}
    if not rows or not need <= set(rows[0]):
        raise UserError(f"{path.name} does not have the DeepForest columns image_path, xmin, "
                        "ymin, xmax, ymax, label.", "Check the CSV header.")
    out = []
    for r in rows:
        img = r.get("image_path") or ""
        if img and Path(img).name != image_name and Path(img).stem != Path(image_name).stem:
            continue
        out.append((r["label"].strip(), float(r["xmin"]), float(r["ymin"]), float(r["xmax"]),
                    float(r["ymax"])))
    return out


def read_boxes(path: str | Path, image: str | Path, fmt: str = "auto", width: int = 0,
               height: int = 0) -> list[tuple[str, float, float, float, float]]:
    """(class name, x0, y0, x1, y1) pixel-edge boxes of ``image`` in annotation ``path``."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"The annotation file {p} does not exist.", "Check the path.")
    fmt = detect_format(p) if fmt == "auto" else fmt
    name = Path(image).name
    if fmt == "voc":
        return read_voc(p, name)
    if fmt == "coco":
        return read_coco(p, name)
    if fmt == "yolo":
        return read_yolo(p, name, width, height)
    if fmt == "deepforest_csv":
        return read_deepforest_csv(p, name)
    raise UserError(f"Unknown annotation format {fmt!r}.", f"Use one of: {', '.join(FORMATS)}.")


# -- into a project -----------------------------------------------------------------------------
def pixel_copy(image: Path, folder: Path) -> Path:
    """A GeoTIFF copy of an ungeoreferenced image in pixel coordinates (see the module)."""
    import rasterio
    from rasterio.transform import Affine

    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{image.stem}_pixels.tif"
    with _quiet(), rasterio.open(image) as src:
        data = src.read()
        profile = {"driver": "GTiff", "width": src.width, "height": src.height,
                   "count": src.count, "dtype": src.dtypes[0], "crs": PIXEL_CRS,
                   "transform": Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)}
    with _quiet(), rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


@contextlib.contextmanager
def _quiet():
    """Silence rasterio's NotGeoreferencedWarning (the caller warns the user once)."""
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


def import_box_annotations(project_path: str | Path, annotations: str | Path,
                           raster: str | Path, fmt: str = "auto",
                           ctx: JobContext | None = None) -> dict:
    """Add the boxes of ``annotations`` on ``raster`` to the project (created if missing) as
    rectangle polygons; each label name becomes a class (reused by name). Boxes entirely
    outside the raster are skipped; a report lists classes, counts and warnings."""
    import rasterio

    from .importers import open_or_create

    ctx = ctx or JobContext()
    raster = Path(raster)
    if not raster.is_file():
        raise UserError(f"The raster {raster} does not exist.", "Check RASTERS.")
    with _quiet(), rasterio.open(raster) as ds:
        width, height = ds.width, ds.height
        georef = ds.crs is not None
    boxes = read_boxes(annotations, raster, fmt, width, height)
    warnings = []
    target = raster
    if not georef:
        target = pixel_copy(raster, Path(project_path).parent / "pixel_rasters")
        warnings.append(f"{raster.name} is not georeferenced: its labels are in pixel "
                        f"coordinates on the copy {target.name} (x = column, y = −row).")
    inside = [b for b in boxes if b[3] > 0 and b[4] > 0 and b[1] < width and b[2] < height
              and b[3] > b[1] and b[4] > b[2]]
    if len(inside) < len(boxes):
        warnings.append(f"{len(boxes) - len(inside)} box(es) lie outside {raster.name} or are "
                        "empty and were skipped.")
    if not inside:
        raise UserError(f"{Path(annotations).name} holds no box on {raster.name}.",
                        "Check that the annotations belong to this raster.")
    project, created = open_or_create(project_path, [str(target)])
    with rasterio.open(target) as ds:
        transform = ds.transform
    ids = {c.name: c.id for c in project.classes()}
    for name in sorted({b[0] for b in inside}):
        if name not in ids:
            ids[name] = project.add_class(name).id
    items = []
    for name, x0, y0, x1, y1 in inside:
        corners = [transform * (x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
        ring = [list(c) for c in corners] + [list(corners[0])]
        items.append((ids[name], {"type": "Polygon", "coordinates": [ring]}))
    rid = next((r.id for r in project.rasters()
                if Path(r.path).resolve() == Path(target).resolve()), None)
    project.add_features(items, raster_id=rid)   # these boxes belong to this image only
    for w in warnings:
        ctx.log(w, "warning")
    counts: dict[str, int] = {}
    for b in inside:
        counts[b[0]] = counts.get(b[0], 0) + 1
    return {"project": str(project.path), "created": created, "raster": str(target),
            "classes": {n: ids[n] for n in sorted(counts)}, "boxes": counts,
            "skipped": len(boxes) - len(inside), "warnings": warnings}
