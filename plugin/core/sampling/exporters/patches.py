"""Exports of planned patches: segmentation pairs, detection (COCO, VOC, YOLO), ImageFolder and
multi-label CSV. Each ``write_*`` writes one patch and appends its manifest item; ``finish_*``
writes the format's index files."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np

from ...validpixels import data_band_count
from ..boxes import Box, boxes_in_patch
from ..plan import IGNORE, Patch
from ..reader import PatchReader
from .common import ExportState, class_colormap, write_geotiff

LAYOUTS = {
    "segmentation": {"images": "images/<split>/<name>.tif",
                     "masks": "masks/<split>/<name>.tif (uint8: 0 background, ids, 255 ignore)"},
    "coco": {"images": "images/<split>/<name>.tif",
             "annotations": "annotations/instances_<split>.json (file_name relative to images/)"},
    "voc": {"images": "images/<split>/<name>.tif", "annotations": "Annotations/<name>.xml",
            "sets": "ImageSets/Main/<split>.txt",
            "coordinates": "1-based inclusive pixel indices: xmin = x0 + 1, xmax = x1 (x0, x1: "
                           "0-based pixel edges as in COCO)"},
    "yolo": {"images": "images/<split>/<name>.tif", "labels": "labels/<split>/<name>.txt",
             "lines": "<class index> <x centre> <y centre> <width> <height>, 0..1 of the patch",
             "names": "data.yaml (class index i ↔ i-th class of the manifest)"},
    "imagefolder": {"images": "<split>/<class name>/<name>.tif",
                    "class": "the labelled class with most pixels in the patch; background when "
                             "it holds none"},
    "multilabel_csv": {"images": "images/<name>.tif",
                       "labels": "labels.csv: image_name,tags (name without .tif, tags "
                                 "space-separated class names)"},
}


def _image(state: ExportState, reader: PatchReader, patch: Patch, path: Path,
           image: np.ndarray | None = None) -> None:
    ds = reader.image_dataset(patch.source)
    data = reader.read_image(patch) if image is None else image
    write_geotiff(path, data, ds.crs, reader.patch_transform(patch), ds.nodata,
                  state.options.compress)


def _base_item(state: ExportState, patch: Patch, name: str) -> dict:
    return {"name": name, "split": patch.split, "source": state.names[patch.source],
            "row": patch.row, "col": patch.col, "size": patch.size,
            "has_features": patch.has_features,
            "class_pixels": {str(k): v for k, v in sorted(patch.class_pixels.items())}}


# -- segmentation -------------------------------------------------------------------------------
def write_segmentation(state: ExportState, reader: PatchReader, patch: Patch, name: str) -> None:
    ds = reader.image_dataset(patch.source)
    image, labels = reader.read_pair(patch)
    image_rel = f"images/{patch.split}/{name}.tif"
    mask_rel = f"masks/{patch.split}/{name}.tif"
    transform = reader.patch_transform(patch)
    write_geotiff(state.folder / image_rel, image, ds.crs, transform, ds.nodata,
                  state.options.compress)
    write_geotiff(state.folder / mask_rel, labels, ds.crs, transform, IGNORE,
                  state.options.compress, class_colormap(state.data.classes))
    state.items.append({**_base_item(state, patch, name), "image": image_rel, "mask": mask_rel})


# -- detection ----------------------------------------------------------------------------------
def detection_boxes(state: ExportState, reader: PatchReader, patch: Patch,
                    boxes: list[Box]) -> list[dict]:
    ds = reader.image_dataset(patch.source)
    out = []
    for box, (x0, y0, x1, y1) in boxes_in_patch(boxes, patch.row, patch.col, patch.size,
                                                ds.height, ds.width):
        out.append({"fid": box.fid, "class_id": box.class_id,
                    "bbox": [round(x0, 3), round(y0, 3), round(x1, 3), round(y1, 3)],
                    "truncated": (x0, y0, x1, y1) != (box.x0 - patch.col, box.y0 - patch.row,
                                                      box.x1 - patch.col, box.y1 - patch.row)})
    return out


def write_detection(state: ExportState, reader: PatchReader, patch: Patch, name: str,
                    boxes: list[Box]) -> None:
    image_rel = f"images/{patch.split}/{name}.tif"
    _image(state, reader, patch, state.folder / image_rel)
    objects = detection_boxes(state, reader, patch, boxes)
    item = {**_base_item(state, patch, name), "image": image_rel, "objects": objects}
    fmt = state.options.format
    if fmt == "voc":
        item["annotation"] = f"Annotations/{name}.xml"
        _write_voc(state, patch, name, image_rel, objects, reader)
    elif fmt == "yolo":
        item["labels"] = f"labels/{patch.split}/{name}.txt"
        _write_yolo(state, patch, item["labels"], objects)
    state.items.append(item)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.3f}"


def _write_voc(state: ExportState, patch: Patch, name: str, image_rel: str,
               objects: list[dict], reader: PatchReader) -> None:
    names = state.data.class_names
    bands = data_band_count(reader.image_dataset(patch.source))
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = f"images/{patch.split}"
    ET.SubElement(root, "filename").text = f"{name}.tif"
    ET.SubElement(root, "path").text = image_rel
    src = ET.SubElement(root, "source")
    ET.SubElement(src, "database").text = state.names[patch.source]
    size = ET.SubElement(root, "size")
    for tag, value in (("width", patch.size), ("height", patch.size), ("depth", bands)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for obj in objects:
        x0, y0, x1, y1 = obj["bbox"]
        o = ET.SubElement(root, "object")
        ET.SubElement(o, "name").text = names.get(obj["class_id"], str(obj["class_id"]))
        ET.SubElement(o, "pose").text = "Unspecified"
        ET.SubElement(o, "truncated").text = "1" if obj["truncated"] else "0"
        ET.SubElement(o, "difficult").text = "0"
        bb = ET.SubElement(o, "bndbox")
        for tag, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(bb, tag).text = _fmt(value)
    ET.indent(root)
    path = state.folder / "Annotations" / f"{name}.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _yolo_index(state: ExportState) -> dict[int, int]:
    return {cid: i for i, (cid, _, _) in enumerate(state.data.classes)}


def _write_yolo(state: ExportState, patch: Patch, rel: str, objects: list[dict]) -> None:
    index = _yolo_index(state)
    s = float(patch.size)
    lines = []
    for obj in objects:
        x0, y0, x1, y1 = obj["bbox"]
        lines.append(f"{index[obj['class_id']]} {(x0 + x1) / 2 / s:.6f} {(y0 + y1) / 2 / s:.6f} "
                     f"{(x1 - x0) / s:.6f} {(y1 - y0) / s:.6f}")
    path = state.folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")


def finish_detection(state: ExportState) -> None:
    fmt = state.options.format
    splits = ("train", "validation")
    if fmt == "coco":
        ann_dir = state.folder / "annotations"
        ann_dir.mkdir(parents=True, exist_ok=True)
        categories = [{"id": cid, "name": name, "supercategory": "label"}
                      for cid, name, _ in state.data.classes]
        for split in splits:
            images, annotations = [], []
            for item in (i for i in state.items if i["split"] == split):
                image_id = len(images) + 1
                images.append({"id": image_id, "file_name": item["image"][len("images/"):],
                               "width": item["size"], "height": item["size"]})
                for obj in item["objects"]:
                    x0, y0, x1, y1 = obj["bbox"]
                    w, h = round(x1 - x0, 3), round(y1 - y0, 3)
                    annotations.append({
                        "id": len(annotations) + 1, "image_id": image_id,
                        "category_id": obj["class_id"], "bbox": [x0, y0, w, h],
                        "area": round(w * h, 3), "iscrowd": 0, "label_fid": obj["fid"],
                        "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]})
            data = {"info": {"description": "Deep Learning Trainer chip export"},
                    "images": images, "annotations": annotations, "categories": categories}
            (ann_dir / f"instances_{split}.json").write_text(json.dumps(data), encoding="utf-8")
    elif fmt == "voc":
        sets = state.folder / "ImageSets" / "Main"
        sets.mkdir(parents=True, exist_ok=True)
        for split in splits:
            names = [i["name"] for i in state.items if i["split"] == split]
            (sets / f"{split}.txt").write_text("".join(n + "\n" for n in names), encoding="utf-8")
    elif fmt == "yolo":
        names = "\n".join(f"  {i}: {json.dumps(name)}"
                          for i, (_, name, _) in enumerate(state.data.classes))
        (state.folder / "data.yaml").write_text(
            f"path: {json.dumps(str(state.folder))}\ntrain: images/train\n"
            f"val: images/validation\nnames:\n{names}\n", encoding="utf-8")


# -- classification -----------------------------------------------------------------------------
def dominant_class(patch: Patch) -> int:
    """The labelled class with most pixels (ties: the higher id); 0 (background) when the patch
    holds no labelled pixel."""
    labelled = [(n, cid) for cid, n in patch.class_pixels.items() if cid and n]
    return max(labelled)[1] if labelled else 0


def patch_tags(patch: Patch, names: dict[int, str], min_fraction: float) -> list[str]:
    valid = sum(patch.class_pixels.values())
    tags = [names.get(cid, str(cid)) for cid, n in sorted(patch.class_pixels.items())
            if cid and valid and n / valid >= min_fraction and n > 0]
    return tags or ["background"]


def write_imagefolder(state: ExportState, reader: PatchReader, patch: Patch, name: str) -> None:
    cid = dominant_class(patch)
    folder = safe_class(state.data.class_names.get(cid, "background" if cid == 0 else str(cid)))
    rel = f"{patch.split}/{folder}/{name}.tif"
    _image(state, reader, patch, state.folder / rel)
    state.items.append({**_base_item(state, patch, name), "image": rel, "class_id": cid,
                        "class_name": folder})


def write_multilabel(state: ExportState, reader: PatchReader, patch: Patch, name: str) -> None:
    rel = f"images/{name}.tif"
    _image(state, reader, patch, state.folder / rel)
    tags = patch_tags(patch, state.data.class_names, state.options.min_class_fraction)
    state.items.append({**_base_item(state, patch, name), "image": rel, "tags": tags})


def finish_multilabel(state: ExportState) -> None:
    with open(state.folder / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_name", "tags"])
        for item in state.items:
            writer.writerow([item["name"], " ".join(t.replace(" ", "_") for t in item["tags"])])


def safe_class(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "class"
