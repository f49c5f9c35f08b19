"""Chip folders: read the chips a chip classifier learns from, in any of the layouts
Export Training Chips writes (with or without its ``manifest.json``):

- ImageFolder: ``<class>/<chip>`` or ``<split>/<class>/<chip>`` (split: train, validation/val,
  test); one class per chip.
- GBDX: ``ref.geojson`` (one feature per chip with ``feature_id`` and ``class_name``; optional
  ``split``) and the chips as ``chips/<feature_id>.tif`` or ``<feature_id>.tif``.
- Multi-label CSV (Planet): ``labels.csv`` with columns ``image_name`` and ``tags`` (space-
  separated class names; ``background`` alone = no tag) and the chips in ``images/`` or the
  folder itself, ``<image_name>.<tif|tiff|png|jpg>``.

Chip images are GeoTIFF, PNG or JPEG (read with rasterio). Bad input raises UserError before
training: a folder in no known layout, chips missing, classes asked for that no chip has,
chips of different band counts.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..training.logfolder import is_training_log
from ..validpixels import data_band_count

EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
SPLIT_NAMES = {"train": "train", "training": "train", "validation": "validation",
               "val": "validation", "valid": "validation", "test": "test"}
NO_TAG = "background"


@dataclass
class Chip:
    """One chip: its file, its class names (one, or the tags) and the split it came with;
    :func:`check_chips` fills its side and, for a georeferenced chip, its centre and width in
    map units (the spatial validation split of ``chipsplit.py``)."""

    path: Path
    labels: list[str]
    split: str = "auto"          # auto | train | validation | test
    side: tuple[int, int] | None = None   # (width, height) px, filled by :func:`check_chips`
    centre: tuple[float, float] | None = None   # (x, y) map units; None: not georeferenced
    extent: float = 0.0          # width in map units (0: not georeferenced)

    def rel(self, root: Path) -> str:
        try:
            return self.path.relative_to(root).as_posix()
        except ValueError:
            return str(self.path)


@dataclass
class ChipSet:
    root: Path
    layout: str                   # imagefolder | gbdx | multilabel_csv
    chips: list[Chip]
    class_names: list[str]        # every class found, sorted (ImageFolder: folder order)
    colors: dict[str, str] = field(default_factory=dict)
    bands: int = 0
    dtype: str = ""
    crs: str | None = None
    pixel_size: tuple[float, float] | None = None


def detect_layout(folder: Path) -> str:
    """'imagefolder', 'gbdx' or 'multilabel_csv'; UserError for anything else."""
    manifest = folder / "manifest.json"
    if manifest.is_file():
        try:
            fmt = json.loads(manifest.read_text(encoding="utf-8")).get("format")
        except (json.JSONDecodeError, UnicodeDecodeError):
            fmt = None
        if fmt in ("imagefolder", "gbdx", "multilabel_csv"):
            return fmt
        if fmt:
            raise UserError(f"{folder} holds a {fmt!r} chip export, not classification chips.",
                            "Export the chips as ImageFolder, multi-label CSV or GBDX chips.")
    if (folder / "ref.geojson").is_file():
        return "gbdx"
    if (folder / "labels.csv").is_file():
        return "multilabel_csv"
    if any(_images(d) for d in _class_dirs(folder)) or any(
            _images(s) for d in _class_dirs(folder) for s in _class_dirs(d)):
        return "imagefolder"
    raise UserError(f"{folder} is in no chip layout this tool reads.",
                    "Use a folder from Export Training Chips, or one in the ImageFolder "
                    "(<class>/<chip>.tif), GBDX (ref.geojson + chips/) or multi-label CSV "
                    "(labels.csv + images/) layout.")


def _class_dirs(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` that can hold chips: not hidden, not a training's log
    folder (its learning curves would be read as chips of a class named like the folder)."""
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")
                  and not is_training_log(d))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)


def _manifest_colors(folder: Path) -> dict[str, str]:
    try:
        data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return {str(c["name"]): c.get("color", "#808080") for c in data.get("classes", [])}


def read_imagefolder(folder: Path) -> list[Chip]:
    out = []
    subdirs = _class_dirs(folder)
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_NAMES]
    if split_dirs and len(split_dirs) == len(subdirs):
        for sd in split_dirs:
            for cd in _class_dirs(sd):
                out += [Chip(p, [cd.name], SPLIT_NAMES[sd.name.lower()]) for p in _images(cd)]
    else:
        for cd in subdirs:
            out += [Chip(p, [cd.name]) for p in _images(cd)]
    return out


def read_gbdx(folder: Path) -> list[Chip]:
    ref = folder / "ref.geojson"
    try:
        data = json.loads(ref.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{ref} is not valid GeoJSON ({exc}).", "Export the chips again.") from None
    out = []
    for feat in data.get("features", []):
        props = feat.get("properties") or {}
        fid = props.get("feature_id", feat.get("id"))
        name = props.get("class_name")
        if fid is None or name is None:
            raise UserError(f"A feature of {ref.name} lacks feature_id or class_name.",
                            "Give every feature both properties.")
        path = None
        if props.get("image"):
            path = folder / props["image"]
        else:
            for base in (folder / "chips", folder):
                for ext in EXTENSIONS:
                    if (base / f"{fid}{ext}").is_file():
                        path = base / f"{fid}{ext}"
                        break
                if path:
                    break
        if path is None or not path.is_file():
            raise UserError(f"The chip of feature {fid} listed in {ref.name} is missing.",
                            "Export the chips again or remove the feature from ref.geojson.")
        out.append(Chip(path, [str(name)], SPLIT_NAMES.get(str(props.get("split", "")).lower(),
                                                          "auto")))
    return out


def read_multilabel_csv(folder: Path) -> list[Chip]:
    path = folder / "labels.csv"
    splits = {}
    manifest = folder / "manifest.json"
    if manifest.is_file():
        try:
            splits = {i["name"]: i.get("split", "auto") for i in
                      json.loads(manifest.read_text(encoding="utf-8")).get("items", [])}
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            splits = {}
    out = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"image_name", "tags"} <= set(reader.fieldnames):
            raise UserError(f"{path.name} needs the columns image_name and tags.",
                            "Write it as image_name,tags (tags space-separated).")
        for row in reader:
            name = row["image_name"].strip()
            img = None
            for base in (folder / "images", folder):
                for ext in ("", *EXTENSIONS):
                    cand = base / f"{name}{ext}"
                    if cand.is_file():
                        img = cand
                        break
                if img:
                    break
            if img is None:
                raise UserError(f"The chip {name} listed in {path.name} is missing.",
                                "Export the chips again or remove its row.")
            tags = [t for t in row["tags"].split() if t != NO_TAG]
            out.append(Chip(img, tags, SPLIT_NAMES.get(str(splits.get(name, "")).lower(),
                                                       "auto")))
    return out


READERS = {"imagefolder": read_imagefolder, "gbdx": read_gbdx,
           "multilabel_csv": read_multilabel_csv}


def read_chips_folder(folder: str | Path, classes: list[str] | None = None,
                      multi_label: bool = False) -> ChipSet:
    """The chips of ``folder`` restricted to ``classes`` (names; empty: all). Single-label:
    chips of other classes are left out, a chip with several tags is an error. Multi-label:
    tags outside ``classes`` are dropped. UserError for an unknown layout, an empty folder, or a
    class name no chip has."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"The chips folder {root} does not exist.", "Check INPUT.")
    layout = detect_layout(root)
    chips = READERS[layout](root)
    if not chips:
        raise UserError(f"The chips folder {root} holds no chips.", "Export the chips again.")
    found = sorted({t for c in chips for t in c.labels})
    if layout == "imagefolder":
        found = sorted({c.labels[0] for c in chips})
    wanted = [str(c).strip() for c in (classes or []) if str(c).strip()]
    missing = [c for c in wanted if c not in found]
    if missing:
        raise UserError(f"Class(es) {', '.join(missing)} are in no chip of {root.name}.",
                        f"Choose among: {', '.join(found)}.")
    names = wanted or found
    keep = set(names)
    if multi_label:
        for c in chips:
            c.labels = [t for t in c.labels if t in keep]
    else:
        several = next((c for c in chips if len(c.labels) > 1), None)
        if several is not None:
            raise UserError(f"Chip {several.path.name} has several tags "
                            f"({' '.join(several.labels)}).",
                            "Train it as multi-label (MULTI_LABEL) or give each chip one class.")
        chips = [c for c in chips if c.labels and c.labels[0] in keep]
    if len(names) < (1 if multi_label else 2):
        raise UserError(f"Training needs at least {1 if multi_label else 2} classes; "
                        f"{root.name} gives {len(names)}.", "Add chips of more classes.")
    return ChipSet(root, layout, chips, names, _manifest_colors(root))


def check_chips(chipset: ChipSet) -> None:
    """Read every chip's header: band count (all equal, else UserError naming one chip of each
    count), size, centre and width of a georeferenced chip (:class:`Chip`), data type, CRS and
    pixel size of the first."""
    import rasterio

    from ..raster_input import is_georeferenced

    counts: dict[int, Path] = {}
    for k, chip in enumerate(chipset.chips):
        try:
            with rasterio.open(chip.path) as ds:
                counts.setdefault(data_band_count(ds), chip.path)
                chip.side = (ds.width, ds.height)
                if is_georeferenced(ds):
                    chip.centre = tuple(ds.transform * (ds.width / 2, ds.height / 2))
                    chip.extent = abs(ds.transform.a) * ds.width
                if k == 0:
                    chipset.dtype = ds.dtypes[0]
                    chipset.crs = ds.crs.to_string() if ds.crs else None
                    if ds.crs:
                        chipset.pixel_size = (abs(ds.transform.a), abs(ds.transform.e))
        except rasterio.errors.RasterioIOError:
            raise UserError(f"The chip {chip.path} cannot be read.",
                            "Remove it or export the chips again.") from None
    if len(counts) > 1:
        examples = ", ".join(f"{p.name}: {n} bands" for n, p in sorted(counts.items()))
        raise UserError(f"The chips have different band counts ({examples}).",
                        "Train on chips with the same bands.")
    chipset.bands = next(iter(counts))


def pad_resize(image: np.ndarray, side: int, resize: int) -> np.ndarray:
    """GBDX's chip geometry: zero-pad (centred) to ``side × side`` (a larger chip is
    centre-cropped), then resample bilinearly to ``resize × resize`` when ``resize`` > 0.
    ``image``: (bands, h, w) float32 → (bands, S, S) float32."""
    b, h, w = image.shape
    out = np.zeros((b, side, side), np.float32)
    r0, c0 = max((h - side) // 2, 0), max((w - side) // 2, 0)
    crop = image[:, r0:r0 + side, c0:c0 + side]
    ch, cw = crop.shape[1:]
    oy, ox = (side - ch) // 2, (side - cw) // 2
    out[:, oy:oy + ch, ox:ox + cw] = crop
    if resize and resize != side:
        import torch
        from torch.nn.functional import interpolate

        out = interpolate(torch.from_numpy(out)[None], size=(resize, resize), mode="bilinear",
                          align_corners=False)[0].numpy()
    return out


def read_chip(path: Path) -> np.ndarray:
    """(data bands, h, w) float32 of a chip file (an alpha band is a mask, not data); pixels
    that are not valid (:mod:`..validpixels`: nodata, NaN, alpha 0) are 0. UserError naming the
    chip when it cannot be read (a damaged or truncated image)."""
    import rasterio

    try:
        with rasterio.open(path) as ds:
            return valid_pixels(ds)
    except rasterio.errors.RasterioIOError as exc:
        raise UserError(f"The chip {path} cannot be read ({exc}).",
                        "Remove it or export the chips again.") from None


def valid_pixels(ds, window=None) -> np.ndarray:
    """(data bands, h, w) float32 of the open dataset ``ds`` in ``window`` (may reach outside
    the raster); pixels outside it or not valid (:mod:`..validpixels`) are 0, the chips'
    padding value."""
    from rasterio.windows import Window

    from ..validpixels import read_data, valid_mask

    if window is None:
        window = Window(0, 0, ds.width, ds.height)
    row, col, h, w = int(window.row_off), int(window.col_off), int(window.height), \
        int(window.width)
    out = np.zeros((data_band_count(ds), h, w), np.float32)
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + h, ds.height), min(col + w, ds.width)
    if r1 > r0 and c1 > c0:
        inside = Window(c0, r0, c1 - c0, r1 - r0)
        data = read_data(ds, window=inside)
        valid = valid_mask(ds, data, inside)
        part = np.where(valid[None], data.astype(np.float32), 0.0)
        out[:, r0 - row:r1 - row, c0 - col:c1 - col] = np.nan_to_num(
            part, nan=0.0, posinf=0.0, neginf=0.0)
    return out
