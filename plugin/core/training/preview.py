"""The model on the map while it trains (issue 20): after a validation, the averaged network is
run on the part of one raster the map canvas shows, and the result is written as a small
georeferenced file the desktop shows as one temporary layer.

- What the map shows: a small JSON file (PREVIEW_EXTENT_FILE) the desktop rewrites when the
  user pans: ``{"extent": [xmin, ymin, xmax, ymax]`` in the raster's CRS, ``"width"`` and
  ``"height"``: the canvas in screen pixels``}``. It is read again whenever its modification time
  changes (:class:`ViewFile`); without it the whole raster is previewed.
- The window read is clipped to the raster and bounded: at most :data:`MAX_PIXELS` pixels and
  no more than the canvas has; a larger window (zoomed out) is read coarser, decimated by
  rasterio's ``out_shape`` (:func:`preview_window`).
- The family draws the window: its optional module ``<package>/preview.py`` has
  ``render_preview(network, task, image, valid, window, device)`` (the family table's
  ``previews``; ``window``: the :class:`Window` read) returning a :class:`ClassRaster`
  (segmentation) or :class:`Boxes` (detection boxes, grid cells), in the window's pixels.
- Written atomically to ``<log folder>/preview/epoch_<n>.tif`` (class raster with the classes'
  colour table, 255 = nodata) or ``epoch_<n>.gpkg`` (layer ``preview``: class_id, class, score,
  epoch), announced by ``ctx.artifact("preview", path, epoch=n, style=…, classes=…)`` (how to
  draw it: :func:`style_of`, and the task's classes with their colours); the files of older epochs
  are removed (the one before stays: the map may still be drawing it).
- Cost: the first preview follows the first validation; the next ones come at most every
  PREVIEW_SECONDS and only while all previews together, the next one included (estimated by
  the last one's time), stay within :data:`COST_SHARE` (5 %) of the time since training
  started, so training slows by less than 10 % (beyond the first preview of a very short run). A
  failing preview is logged once and switched off: it never stops training.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: The most pixels one preview reads (about one megapixel, issue 20).
MAX_PIXELS = 1_000_000
#: The largest share of training time previews may take: half the 10 % issue 20 allows, which
#: leaves room for the first preview (taken at once) and for timing noise (bench/preview_cost.py,
#: 15 epochs on 2 CPU cores: previews took 4.0 % (segmentation), 3.9 % (detection) and 4.1 %
#: (grid) of the training time, on / off 1.01, 1.00 and 1.03).
COST_SHARE = 0.05
FOLDER = "preview"
LAYER = "preview"
NODATA = 255


@dataclass(frozen=True)
class View:
    """What the map canvas shows: ``extent`` (xmin, ymin, xmax, ymax) in the raster's CRS
    (None: the whole raster) and the canvas size in screen pixels (0: unknown)."""

    extent: tuple[float, float, float, float] | None = None
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class Window:
    """The part of the raster a preview reads: ``col``, ``row``, ``width``, ``height`` in the
    raster's pixels (inside it), read as ``shape`` (rows, cols) pixels whose grid is
    ``transform``; ``scale``: raster pixels per preview pixel (≥ 1, the same both ways up to
    rounding)."""

    col: int
    row: int
    width: int
    height: int
    shape: tuple[int, int]
    transform: object
    scale: float


@dataclass
class ClassRaster:
    """A class per preview pixel: ``classes`` (h, w) uint8 class ids, :data:`NODATA` outside
    valid pixels."""

    classes: np.ndarray


@dataclass
class Boxes:
    """Rectangles in the window's pixels: ``boxes`` (K, 4) float xyxy (columns, rows),
    ``labels`` (K,) class ids (0: none of the classes, e.g. a background grid cell),
    ``scores`` (K,) 0–1; ``cells``: a grid's cells (filled by class on the map), else objects'
    boxes (outlined)."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    cells: bool = False


def style_of(result) -> str:
    """How the desktop draws a preview: ``classes`` (class raster), ``boxes`` or ``cells``."""
    if isinstance(result, ClassRaster):
        return "classes"
    return "cells" if result.cells else "boxes"


def write_view(path: str | Path, view: View) -> None:
    """Write ``view`` as the JSON file :func:`read_view` reads (atomically: the worker never
    sees half a file)."""
    from ..atomic import atomic_write

    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps({
            "extent": list(view.extent) if view.extent else None,
            "width": int(view.width), "height": int(view.height)}), encoding="utf-8")


def read_view(path: str | Path) -> View | None:
    """The view in the JSON file ``path``; None when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        extent = data.get("extent")
        box = tuple(float(v) for v in extent) if extent else None
        if box is not None and (len(box) != 4 or not all(map(math.isfinite, box))):
            return None
        return View(box, int(data.get("width") or 0), int(data.get("height") or 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


class ViewFile:
    """The view file of a run, read again when its modification time changes. ``path`` "":
    no file, the whole raster."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self._mtime: float | None = None
        self.view = View()
        self.reads = 0

    def current(self) -> View:
        """The latest view (the file read again only when it changed)."""
        if self.path is None:
            return self.view
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError:
            return self.view
        if mtime != self._mtime:
            view = read_view(self.path)
            self._mtime = mtime
            if view is not None:
                self.view = view
                self.reads += 1
        return self.view


def preview_window(height: int, width: int, transform, view: View,
                   max_pixels: int = MAX_PIXELS) -> Window | None:
    """The window of a ``height`` × ``width`` raster with geotransform ``transform`` that
    ``view`` shows, clipped to the raster, and the shape to read it as: at most
    ``max_pixels`` pixels, and no more than the canvas's pixels when the view gives them.
    None when the view lies outside the raster."""
    from rasterio.transform import Affine
    from rasterio.windows import from_bounds

    if view.extent is None:
        c0, r0, c1, r1 = 0, 0, width, height
    else:
        win = from_bounds(*view.extent, transform=transform)
        c0 = max(0, math.floor(win.col_off))
        r0 = max(0, math.floor(win.row_off))
        c1 = min(width, math.ceil(win.col_off + win.width))
        r1 = min(height, math.ceil(win.row_off + win.height))
        if c1 <= c0 or r1 <= r0:
            return None
    w, h = c1 - c0, r1 - r0
    factor = max(1.0, math.sqrt(w * h / max_pixels))
    if view.width > 0 and view.height > 0:   # no finer than the screen shows it
        factor = max(factor, w / view.width, h / view.height)
    ow, oh = max(1, int(w / factor)), max(1, int(h / factor))
    grid = transform * Affine.translation(c0, r0) * Affine.scale(w / ow, h / oh)
    return Window(c0, r0, w, h, (oh, ow), grid, max(w / ow, h / oh))


def read_window(ds, window: Window, fill) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 (bands, h, w), valid (h, w) bool) of ``window`` of the open rasterio
    dataset ``ds``: its data bands (:mod:`..validpixels`), read decimated to ``window.shape``
    (nearest pixel); invalid pixels hold ``fill`` (one value per band: the band means, as the
    training patches)."""
    from rasterio.windows import Window as RioWindow

    from ..validpixels import data_bands, valid_mask

    win = RioWindow(window.col, window.row, window.width, window.height)
    bands = data_bands(ds)
    data = ds.read(bands, window=win, out_shape=(len(bands), *window.shape))
    valid = valid_mask(ds, data, win, out_shape=window.shape)
    image = data.astype(np.float32)
    fill_a = np.broadcast_to(np.asarray(fill, np.float32)[:, None, None], image.shape)
    bad = ~valid[None] | ~np.isfinite(image)
    if ds.nodata is not None:
        bad = bad | (data == ds.nodata)
    np.copyto(image, fill_a, where=bad)
    return image, valid


def tiles(image: np.ndarray, size: int) -> list[tuple[int, int, np.ndarray]]:
    """(row, col, tile (bands, size, size)) covering ``image`` (bands, h, w) with
    non-overlapping tiles of ``size`` px, the last row and column flush with the edge; an image
    smaller than ``size`` is padded by mirroring (its tile then reaches past the edge)."""
    from ..tiling import tile_starts

    _, h, w = image.shape
    if h < size or w < size:
        image = np.pad(image, ((0, 0), (0, max(0, size - h)), (0, max(0, size - w))),
                       mode="symmetric" if min(h, w) > 1 else "edge")
    H, W = image.shape[1:]
    return [(r, c, image[:, r:r + size, c:c + size])
            for r in tile_starts(H, size, size) for c in tile_starts(W, size, size)]


def object_outputs(network, image: np.ndarray, size: int, batch: int, device: str
                   ) -> list[tuple[int, int, dict]]:
    """(row, col, torchvision output dict) of each :func:`tiles` tile of ``image`` run through
    an object network (detection, Mask R-CNN: raw pixels, a list of (bands, size, size)
    tensors; it normalises inside), ``batch`` tiles at a time on ``device``."""
    import torch

    parts = tiles(image, size)
    out = []
    for k in range(0, len(parts), batch):
        group = parts[k:k + batch]
        outputs = network([torch.from_numpy(np.ascontiguousarray(t)).to(device)
                           for _, _, t in group])
        out += [(r, c, o) for (r, c, _), o in zip(group, outputs)]
    return out


def write_preview(folder: Path, epoch: int, result, window: Window, crs, classes: list[dict]
                  ) -> Path:
    """Write ``result`` (:class:`ClassRaster` or :class:`Boxes`) of ``window`` as
    ``folder/epoch_<epoch>.tif`` / ``.gpkg`` (atomically); the path."""
    from ..atomic import atomic_write

    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(result, ClassRaster):
        import rasterio

        target = folder / f"epoch_{epoch}.tif"
        oh, ow = result.classes.shape
        with atomic_write(target) as tmp, rasterio.open(
                tmp, "w", driver="GTiff", width=ow, height=oh, count=1, dtype="uint8",
                crs=crs, transform=window.transform, nodata=NODATA) as dst:
            dst.write(result.classes.astype(np.uint8), 1)
            dst.write_colormap(1, {int(c["id"]): _rgba(c.get("color")) for c in classes
                                   if 0 <= int(c["id"]) < NODATA})
        return target
    return _write_boxes(folder / f"epoch_{epoch}.gpkg", epoch, result, window, crs, classes)


def _write_boxes(target: Path, epoch: int, result: Boxes, window: Window, crs,
                 classes: list[dict]) -> Path:
    import shapely

    from ..atomic import atomic_write
    from ..vector_output import write_vector_layer

    t = window.transform
    names = {int(c["id"]): c["name"] for c in classes}
    geoms = [shapely.Polygon([t * (x0, y0), t * (x1, y0), t * (x1, y1), t * (x0, y1)])
             for x0, y0, x1, y1 in np.asarray(result.boxes, np.float64).reshape(-1, 4)]
    labels = np.asarray(result.labels, np.int32).reshape(-1)
    fields = {"class_id": labels,
              "class": np.array([names.get(int(k), "background") for k in labels], object),
              "score": np.asarray(result.scores, np.float64).reshape(-1),
              "epoch": np.full(len(labels), epoch, np.int32)}
    with atomic_write(target) as tmp:
        tmp.unlink(missing_ok=True)
        write_vector_layer(tmp, LAYER, shapely.to_wkb(np.array(geoms, dtype=object)), fields,
                           crs.to_wkt() if crs else None, "Polygon")
    return target


def _rgba(color: str | None) -> tuple[int, int, int, int]:
    h = (color or "#000000").lstrip("#")
    return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), 255)


@dataclass
class Previewer:
    """The previews of one training run (rank 0). Build it with :func:`previewer_for`; call
    :meth:`after_validation` once per epoch."""

    raster: str
    views: ViewFile
    folder: Path
    render: object                  # the family's render_preview
    seconds: float = 30.0           # PREVIEW_SECONDS: the least time between two previews
    max_pixels: int = MAX_PIXELS
    clock: object = time.monotonic
    since: float | None = None      # when training started (clock time; default: creation)
    last_start: float | None = None
    last_cost: float = 0.0
    spent: float = 0.0              # seconds of every preview so far
    written: list[Path] = field(default_factory=list)
    enabled: bool = True
    style: str = ""

    def __post_init__(self) -> None:
        if self.since is None:
            self.since = self.clock()

    def due(self) -> bool:
        """Whether a preview may run now: the first one at once, then PREVIEW_SECONDS after
        the previous one started, and only while the previews so far plus one more (as long
        as the last) take at most :data:`COST_SHARE` of the time since training started."""
        if not self.enabled:
            return False
        if self.last_start is None:
            return True
        now = self.clock()
        return (now - self.last_start >= self.seconds
                and self.spent + self.last_cost <= COST_SHARE * (now - self.since))

    def after_validation(self, network, task, epoch: int, device: str, ctx) -> Path | None:
        """Preview ``network`` (the averaged model, in eval mode) for ``epoch`` (1-based) when
        :meth:`due`; the file written or None. Errors switch previews off with a warning."""
        if not self.due():
            return None
        start = self.clock()
        self.last_start = start
        try:
            path = self._preview(network, task, epoch, device)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - a preview must never stop training
            self.enabled = False
            ctx.log(f"The map preview failed ({type(exc).__name__}: {exc}); training goes on "
                    "without it.", "warning")
            return None
        finally:
            self.last_cost = self.clock() - start
            self.spent += self.last_cost
        if path is None:
            return None
        ctx.artifact("preview", str(path), epoch=epoch, style=self.style,
                     classes=list(task.classes))
        self.written.append(path)
        for old in self.written[:-2]:   # the one before may still be on the map
            old.unlink(missing_ok=True)
        self.written = self.written[-2:]
        return path

    def _preview(self, network, task, epoch: int, device: str) -> Path | None:
        import rasterio
        import torch

        from . import runtime

        with rasterio.open(self.raster) as ds:
            window = preview_window(ds.height, ds.width, ds.transform, self.views.current(),
                                    self.max_pixels)
            if window is None:
                return None
            image, valid = read_window(ds, window, task.mean)
            crs = ds.crs
        with torch.no_grad(), runtime.autocast(device):
            result = self.render(network, task, image, valid, window, device)
        self.style = style_of(result)
        return write_preview(self.folder, epoch, result, window, crs, task.classes)


def previewer_for(job, task, log_folder: Path, ctx,
                  since: float | None = None) -> Previewer | None:
    """The run's :class:`Previewer`, or None: PREVIEW_RASTER empty, the family draws no
    preview, or the raster does not fit the model (a warning says why; training goes on).
    ``since``: when training started (``time.monotonic()``)."""
    raster = getattr(job, "preview_raster", "")
    if not raster:
        return None
    from ..families import preview_function

    render = preview_function(task.name)
    if render is None:
        ctx.log(f"{task.title or task.name} models have no map preview.", "warning")
        return None
    try:
        import rasterio

        from ..validpixels import data_band_count

        with rasterio.open(raster) as ds:
            bands = data_band_count(ds)
    except Exception as exc:  # noqa: BLE001 - any unreadable raster: no preview
        ctx.log(f"The preview raster {raster} cannot be read ({exc}): no map preview.",
                "warning")
        return None
    if bands != int(task.bands):
        ctx.log(f"The preview raster {Path(raster).name} has {bands} bands, the model "
                f"{task.bands}: no map preview.", "warning")
        return None
    return Previewer(raster, ViewFile(getattr(job, "preview_extent_file", "")),
                     Path(log_folder) / FOLDER, render,
                     float(getattr(job, "preview_seconds", 30.0)), since=since)
