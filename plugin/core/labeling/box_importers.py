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

Rows that cannot be boxes of the raster (a class the file does not define, an empty box, one
wholly outside the image) are skipped with a warning naming the file and rows, boxes reaching
beyond the image are clipped to it; when no box remains, or the file is malformed (a coordinate
that is not a number, a COCO file without image ids…), UserError names the file, the row and the
fix, and nothing is written.

Pixel → map coordinates through the raster's affine transform. An ungeoreferenced image (a PNG
or JPEG without world file) cannot be placed on a map: a GeoTIFF copy of it in *pixel
coordinates* (x = column, y = −row, 1 unit per pixel, a local engineering CRS) is written next to
the project and labelled instead, with a warning.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
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
Box = tuple[str, float, float, float, float]
SHOWN = 5   # rows named in a warning or refusal, then "and N more"


class Found:
    """What a parser read from one annotation file for one image: ``boxes`` (class name, x0,
    y0, x1, y1 in pixel edges), ``where`` (each box's place in the file, e.g. "line 3",
    "object 2 ('tree')") and ``skipped`` (rows left out, each "where: why")."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.boxes: list[Box] = []
        self.where: list[str] = []
        self.skipped: list[str] = []

    def add(self, where: str, name: str, x0: float, y0: float, x1: float, y1: float) -> None:
        self.boxes.append((name, x0, y0, x1, y1))
        self.where.append(where)

    def skip(self, where: str, why: str) -> None:
        self.skipped.append(f"{where}: {why}")

    def bad(self, where: str, what: str, fix: str) -> UserError:
        """The refusal of a malformed file: the file, the row and the fix."""
        return UserError(f"{self.path.name}, {where}: {what}", fix)


def listing(items: list[str]) -> str:
    """The first :data:`SHOWN` items joined with '; ', then how many more."""
    more = f"; and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return "; ".join(items[:SHOWN]) + more


def _number(found: Found, where: str, key: str, value) -> float:
    """``value`` as a float, else the refusal naming the file, row and field."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise found.bad(where, f"{key} {value!r} is not a number.",
                        f"Correct {key} there (a number of pixels) or delete that row, "
                        "then import again.") from None


def _same_image(named: str, image_name: str) -> bool:
    """True when a file name from an annotation file names the image (its name or stem)."""
    n = Path(str(named).replace("\\", "/")).name
    return n == image_name or Path(n).stem == Path(image_name).stem


def read_voc(path: Path, image_name: str) -> Found:
    """The objects of a PASCAL VOC file; UserError when it describes another image (its
    ``<filename>``) or an object's coordinate is missing or not a number."""
    found = Found(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise UserError(f"{path.name} is not valid XML ({exc}).", "Check the file.") from None
    named = (root.findtext("filename") or "").strip()
    if named and not _same_image(named, image_name):
        raise UserError(f"{path.name} describes the image {named} (its <filename>), not "
                        f"{image_name}.", f"Choose the annotation file of {image_name}, or "
                        f"give {named} as the raster.")
    for i, obj in enumerate(root.iter("object"), 1):
        name = (obj.findtext("name") or "").strip()
        where = f"object {i}" + (f" ({name!r})" if name else "")
        bb = obj.find("bndbox")
        if not name:
            found.skip(where, "it has no <name> (its class)")
            continue
        if bb is None:
            found.skip(where, "it has no <bndbox>")
            continue
        v = []
        for k in ("xmin", "ymin", "xmax", "ymax"):
            text = bb.findtext(k)
            if text is None:
                raise found.bad(where, f"<{k}> is missing.", f"Add <{k}> to that object's "
                                "<bndbox> or delete the object, then import again.")
            v.append(_number(found, where, f"<{k}>", text.strip()))
        found.add(where, name, v[0] - 1, v[1] - 1, v[2], v[3])
    return found


def _coco_list(data: dict, key: str, path: Path) -> list[dict]:
    items = data.get(key, [])
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise UserError(f"{path.name}: '{key}' is not a list of objects, as COCO has it.",
                        "Check that the file is a COCO annotation file.")
    return items


def read_coco(path: Path, image_name: str) -> Found:
    """The boxes of ``image_name`` in a COCO file (the only image, or the one of that name);
    annotations whose ``category_id`` is not in ``categories`` are skipped. UserError for a
    file that is not COCO-shaped or an annotation of the image with a malformed ``bbox``."""
    found = Found(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path.name} is not valid JSON ({exc}).", "Check the file.") from None
    if not isinstance(data, dict):
        raise UserError(f"{path.name} is not a COCO annotation file: its top level is a "
                        f"{type(data).__name__}, not an object with 'images', 'annotations' "
                        "and 'categories'.", "Choose the COCO file (e.g. instances_*.json).")
    images = _coco_list(data, "images", path)
    cats: dict = {}
    for i, c in enumerate(_coco_list(data, "categories", path), 1):
        if "id" not in c or not str(c.get("name", "")).strip():
            raise UserError(f"{path.name}, category {i}: it lacks an 'id' or a 'name'.",
                            "Give every category an id and a name, then import again.")
        if isinstance(c["id"], (int, str)):
            cats[c["id"]] = str(c["name"]).strip()
    for i, im in enumerate(images, 1):
        if "id" not in im:
            raise UserError(f"{path.name}, image {i} ({im.get('file_name', 'no file_name')}): "
                            "it has no 'id'.", "Give every image an id (the annotations' "
                            "image_id), then import again.")
    match = [im["id"] for im in images if _same_image(str(im.get("file_name", "")), image_name)]
    if not match and len(images) == 1:
        match = [images[0]["id"]]
    if not match:
        raise UserError(f"{path.name} has no image named {image_name}.",
                        "Choose the raster the COCO file describes.")
    for i, a in enumerate(_coco_list(data, "annotations", path), 1):
        if a.get("image_id") not in match:
            continue
        where = f"annotation {i}" + (f" (id {a['id']})" if "id" in a else "")
        bbox = a.get("bbox")
        if bbox is None:
            found.skip(where, "it has no 'bbox'")
            continue
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise found.bad(where, f"bbox {bbox!r} is not [x, y, width, height].",
                            "Correct that bbox (4 numbers, pixels) or delete the annotation, "
                            "then import again.")
        x, y, w, h = (_number(found, where, f"bbox[{k}]", v) for k, v in enumerate(bbox))
        category = a.get("category_id")
        if not isinstance(category, (int, str)) or category not in cats:
            found.skip(where, f"category_id {category!r} is not in 'categories' "
                              f"({', '.join(map(str, cats)) or 'none'})")
            continue
        if w <= 0 or h <= 0:
            found.skip(where, f"width {w:g} × height {h:g} is not a box")
            continue
        found.add(where, cats[category], x, y, x + w, y + h)
    return found


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


def read_yolo(path: Path, image_name: str, width: int, height: int) -> Found:
    """The boxes of a YOLO label file on a ``width`` × ``height`` image; lines whose class
    index is negative or beyond the class names file are skipped (without a names file every
    index ≥ 0 is ``class_<index>``). UserError for a line that is not 5 numbers."""
    found = Found(path)
    names = yolo_names(path)
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            k, cx, cy, w, h = int(parts[0]), *map(float, parts[1:5])
        except (ValueError, IndexError):
            raise UserError(f"{path.name}, line {n}: {line.strip()[:60]!r} is not "
                            "'class x_centre y_centre width height'.",
                            "Correct or delete that line, then import again.") from None
        where = f"line {n}"
        if k < 0 or (names and k >= len(names)):
            known = f"0 to {len(names) - 1} in the class names file" if names else "0 or more"
            found.skip(where, f"class {k} is not a class index ({known})")
            continue
        if w <= 0 or h <= 0:
            found.skip(where, f"width {w:g} × height {h:g} is not a box")
            continue
        name = names[k] if k < len(names) else f"class_{k}"
        found.add(where, name, (cx - w / 2) * width, (cy - h / 2) * height,
                  (cx + w / 2) * width, (cy + h / 2) * height)
    return found


def read_deepforest_csv(path: Path, image_name: str) -> Found:
    """The rows of ``image_name`` (or without image_path) in a DeepForest CSV; rows without a
    label are skipped. UserError for a coordinate that is not a number."""
    found = Found(path)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    need = {"xmin", "ymin", "xmax", "ymax", "label"}
    if not rows or not need <= set(rows[0]):
        raise UserError(f"{path.name} does not have the DeepForest columns image_path, xmin, "
                        "ymin, xmax, ymax, label.", "Check the CSV header.")
    for n, r in enumerate(rows, 2):
        img = r.get("image_path") or ""
        if img and not _same_image(img, image_name):
            continue
        where = f"line {n}"
        v = [_number(found, where, k, (r[k] or "").strip()) for k in ("xmin", "ymin", "xmax",
                                                                       "ymax")]
        label = (r["label"] or "").strip()
        if not label:
            found.skip(where, "its label is empty")
            continue
        found.add(where, label, *v)
    return found


def read_found(path: str | Path, image: str | Path, fmt: str = "auto", width: int = 0,
               height: int = 0) -> Found:
    """:class:`Found` boxes of ``image`` in annotation ``path`` (``fmt`` one of FORMATS)."""
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


def read_boxes(path: str | Path, image: str | Path, fmt: str = "auto", width: int = 0,
               height: int = 0) -> list[Box]:
    """(class name, x0, y0, x1, y1) pixel-edge boxes of ``image`` in annotation ``path``, as
    written there (rows the parsers skip left out; no clipping)."""
    return read_found(path, image, fmt, width, height).boxes


def on_image(found: Found, width: int, height: int, image_name: str
             ) -> tuple[list[Box], list[str], list[str]]:
    """(boxes on the ``width`` × ``height`` image, clipped to it; the clipped rows; the skipped
    rows, the parser's and those empty or wholly outside the image), rows as "where: why"."""
    kept, clipped, skipped = [], [], list(found.skipped)
    for where, (name, x0, y0, x1, y1) in zip(found.where, found.boxes):
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            skipped.append(f"{where}: a coordinate is not a number")
        elif x1 <= x0 or y1 <= y0:
            skipped.append(f"{where}: x {x0:g}–{x1:g}, y {y0:g}–{y1:g} px is empty (the "
                           "maximum is not above the minimum)")
        elif x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            skipped.append(f"{where}: x {x0:g}–{x1:g}, y {y0:g}–{y1:g} px lies outside "
                           f"{image_name} ({width} × {height} px)")
        else:
            box = (name, max(x0, 0.0), max(y0, 0.0), min(x1, float(width)),
                   min(y1, float(height)))
            if box[1:] != (x0, y0, x1, y1):
                clipped.append(f"{where}: x {x0:g}–{x1:g}, y {y0:g}–{y1:g} px")
            kept.append(box)
    return kept, clipped, skipped


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
    rectangle polygons; each label name becomes a class (reused by name).

    Rows that cannot be boxes of this raster (unknown class, empty, wholly outside) are skipped
    and boxes reaching beyond it clipped to it, each with a warning naming the file and rows;
    UserError (naming the rows and why) when no box remains, or for a malformed file. Nothing
    is written before the file is read and checked; a project this call created is removed
    again if writing fails. Returns a report: classes, counts, skipped, warnings."""
    import rasterio

    ctx = ctx or JobContext()
    raster = Path(raster)
    if not raster.is_file():
        raise UserError(f"The raster {raster} does not exist.", "Check RASTERS.")
    with _quiet(), rasterio.open(raster) as ds:
        width, height = ds.width, ds.height
        georef = ds.crs is not None
    found = read_found(annotations, raster, fmt, width, height)
    file = Path(annotations).name
    inside, clipped, skipped = on_image(found, width, height, raster.name)
    if not inside:
        why = f": {listing(skipped)}" if skipped else " (none of its rows names this image)"
        raise UserError(f"{file} holds no box on {raster.name} to import{why}.",
                        "Check that the annotations belong to this raster, and correct the "
                        "rows named.")
    warnings = []
    if skipped:
        warnings.append(f"{len(skipped)} row(s) of {file} were skipped: {listing(skipped)}.")
    if clipped:
        warnings.append(f"{len(clipped)} box(es) of {file} reach beyond {raster.name} "
                        f"({width} × {height} px) and were clipped to it: {listing(clipped)}.")
    project_existed = Path(project_path).exists()
    target = raster
    if not georef:
        target = Path(project_path).parent / "pixel_rasters" / f"{raster.stem}_pixels.tif"
        copy_existed = target.exists()
        target = pixel_copy(raster, target.parent)
        warnings.append(f"{raster.name} is not georeferenced: its labels are in pixel "
                        f"coordinates on the copy {target.name} (x = column, y = −row).")
    try:
        report = _write_boxes(project_path, target, inside)
    except BaseException:
        if not project_existed:   # nothing half-made left behind
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{project_path}{suffix}").unlink(missing_ok=True)
        if not georef and not copy_existed:
            target.unlink(missing_ok=True)
        raise
    for w in warnings:
        ctx.log(w, "warning")
    return {**report, "skipped": len(skipped), "clipped": len(clipped), "warnings": warnings}


def _write_boxes(project_path: str | Path, target: Path, boxes: list[Box]) -> dict:
    """Open or create the project, add the classes and the boxes as rectangles on ``target``
    (pixel edges → map through its transform); the report's project, classes and counts."""
    import rasterio

    from .importers import open_or_create

    project, created = open_or_create(project_path, [str(target)])
    with rasterio.open(target) as ds:
        transform = ds.transform
    ids = {c.name: c.id for c in project.classes()}
    for name in sorted({b[0] for b in boxes}):
        if name not in ids:
            ids[name] = project.add_class(name).id
    items = []
    for name, x0, y0, x1, y1 in boxes:
        corners = [transform * (x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
        ring = [list(c) for c in corners] + [list(corners[0])]
        items.append((ids[name], {"type": "Polygon", "coordinates": [ring]}))
    rid = next((r.id for r in project.rasters()
                if Path(r.path).resolve() == Path(target).resolve()), None)
    project.add_features(items, raster_id=rid)   # these boxes belong to this image only
    counts: dict[str, int] = {}
    for b in boxes:
        counts[b[0]] = counts.get(b[0], 0) + 1
    return {"project": str(project.path), "created": created, "raster": str(target),
            "classes": {n: ids[n] for n in sorted(counts)}, "boxes": counts}
