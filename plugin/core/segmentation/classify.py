"""Classify Pixels: tiled inference over rasters of any size with bounded memory.

Tiles of ``T`` px overlap by ``O`` px (stride ``T − O``); the last tile of a row or column is
aligned with the raster's edge. Each tile's class probabilities are weighted by a smooth 2-D
window ``w(y, x) = h(y) · h(x)``, ``h(i) = sin²(π (i + ½) / T)`` (positive everywhere, so edge
pixels covered by one tile keep their prediction), accumulated and divided by the summed weights.
Only a band of ``T`` rows × raster width is held: once a tile row is done, the rows no later tile
touches are written out and the band moves down, so memory does not grow with the raster size.
With TTA every tile is also predicted turned and flipped (the 8 symmetries of the square) and the
probabilities are averaged.

On the CPU the forward pass runs through onnxruntime when it is installed (the model is exported
once to a cache folder); on CUDA through torch with bf16/fp16 autocast and channels-last.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..errors import JobCancelled, UserError
from ..jobs import JobContext
from ..outputs import gdal_write_guard
from ..validpixels import data_band_count, read_data, valid_mask
from .blend import CLASS_NODATA  # noqa: F401  (255: no class; imported from here too)

PIXEL_SIZE_TOLERANCE = 1.5     # ratio to the training pixel size that triggers a warning


# -- tiling -------------------------------------------------------------------------------------
def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Starts covering ``[0, length)`` with tiles of ``tile`` (last one flush with the end)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def window_1d(n: int, smooth: bool) -> np.ndarray:
    if not smooth:
        return np.ones(n, np.float32)
    i = np.arange(n, dtype=np.float64)
    return (np.sin(np.pi * (i + 0.5) / n) ** 2).astype(np.float32)


def _ceil32(n: int) -> int:
    return max(32, -(-n // 32) * 32)


def network_window(card: dict, tile_size: int, batch_size: int) -> tuple[int, int]:
    """(window edge the network sees, windows per forward pass).

    The network always sees windows of the patch size it was trained on. A CNN's deepest
    features cover 32 × 32 px: trained on 32 px patches they are one value per patch, computed
    from the zero padding around it; on 256 px tiles they become 8 × 8 maps of interior context
    the network never saw, and its answers change (issue 9: 92.7 % on 32 px windows, 33 % on
    256 px tiles of the same pixels). So ``tile_size`` (TILE_SIZE) no longer changes the
    windows: it sets how many pixels go through one forward pass, ``batch_size × (tile_size /
    patch)²`` windows, and the answer stays the same up to blending noise."""
    patch = int(card.get("patch_size") or 256)
    scale = max(1, (tile_size // patch) ** 2) if tile_size else 1
    return patch, max(1, batch_size) * scale   # batch_size 0 (auto): see blend.auto_windows


# -- forward engines ----------------------------------------------------------------------------
class TorchEngine:
    """Probabilities of a batch (N, bands, H, W float32) with the torch predictor."""

    name = "torch"

    def __init__(self, predictor, device: str) -> None:
        import torch

        self.device = device
        self.cuda = device.startswith("cuda")
        self.predictor = predictor.to(device).eval()
        if self.cuda:
            self.predictor = self.predictor.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """NumPy probabilities (N, C, H, W float32) of ``batch`` (copied back to the host)."""
        return self.tensor(batch).cpu().numpy()

    def tensor(self, batch: np.ndarray, tta: bool = False):
        """Probabilities (N, C, H, W) float32 of ``batch`` as a tensor on the device; ``tta``:
        the mean over the 8 turns/flips of the windows, done on the device."""
        import torch

        try:
            with torch.inference_mode():
                x = torch.from_numpy(batch)
                if self.cuda:
                    x = x.pin_memory().to(self.device, non_blocking=True)
                if not tta:
                    return self._forward(x)
                total = None
                for flip in (False, True):
                    xf = x.flip(-1) if flip else x
                    for k in range(4):
                        y = torch.rot90(self._forward(torch.rot90(xf, k, (-2, -1))), -k,
                                        (-2, -1))
                        y = y.flip(-1) if flip else y
                        total = y if total is None else total + y
                return total / 8.0
        except torch.OutOfMemoryError:
            raise UserError("The GPU ran out of memory while classifying.",
                            "Use fewer tiles per batch (BATCH_SIZE) or a smaller "
                            "TILE_SIZE.") from None

    def _forward(self, x):
        import torch

        if not self.cuda:
            return self.predictor(x.contiguous()).float()
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=self.dtype):
            return self.predictor(x).float()


class OrtEngine:
    """Probabilities of a batch with onnxruntime on the CPU."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, threads: int | None = None,
                 cache: bool = False) -> None:
        """``threads``: intra-op threads (default: the cores this process may use);
        ``cache``: ``onnx_path`` is a cached export (:func:`.ort_cache.session`)."""
        from ..training.runtime import available_cpus
        from .ort_cache import session

        self.session = session(onnx_path, threads or available_cpus(), cache)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"image": np.ascontiguousarray(batch, np.float32)})[0]


def onnx_cache_path(model_path: str | Path) -> Path:
    """Where the ONNX export of ``model_path`` is cached (keyed by the file's content hash)."""
    from .ort_cache import content_hash

    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dltrainer"
    return base / "onnx" / f"{content_hash(model_path, base / 'hashes')[:24]}.onnx"


def _prune_cache(folder: Path, keep: int = 6) -> None:
    """Keep the ``keep`` most recently used ONNX exports (and their optimised graphs)."""
    files = sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        for opt in folder.glob(f"{old.stem}.*.opt"):
            opt.unlink(missing_ok=True)
    for old in files[keep:]:
        try:
            old.unlink()
        except OSError:
            pass


def make_engine(model_path: str | Path, predictor, device: str, choice: str = "auto",
                ctx: JobContext | None = None):
    """``choice`` 'auto': onnxruntime on the CPU when installed (faster there), torch
    otherwise; 'torch' or 'onnxruntime' (CPU only) force one. ``predictor`` is the torch
    network or a function returning it: it is only called for the torch engine, so that a CPU
    run on onnxruntime with a cached export never imports torch (about 4 s and 1 GB less)."""
    if choice == "onnxruntime" and device != "cpu":
        raise UserError("The onnxruntime engine runs on the CPU only.",
                        "Set DEVICE to cpu or ENGINE to auto/torch.")
    if device == "cpu" and choice in ("auto", "onnxruntime"):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            if choice == "onnxruntime":
                raise UserError("onnxruntime is not installed.",
                                "Install it in the ML environment or set ENGINE to auto."
                                ) from None
        else:
            from .modelfile import export_onnx

            path = onnx_cache_path(model_path)
            if not path.is_file():
                if ctx:
                    ctx.log("Preparing the model for fast CPU inference (once per model).")
                export_onnx(model_path, path)
                _prune_cache(path.parent)
            else:
                path.touch()
            return OrtEngine(path, cache=True)
    return TorchEngine(predictor() if callable(predictor) and not hasattr(predictor, "forward")
                       else predictor, device)


def tta_predict(engine: Callable[[np.ndarray], np.ndarray], batch: np.ndarray) -> np.ndarray:
    """Mean probabilities over the 8 rotations/flips of the tiles."""
    total = None
    for flip in (False, True):
        x = batch[..., ::-1] if flip else batch
        for k in range(4):
            y = engine(np.ascontiguousarray(np.rot90(x, k, axes=(-2, -1))))
            y = np.rot90(y, -k, axes=(-2, -1))
            if flip:
                y = y[..., ::-1]
            total = y.copy() if total is None else total + y
    return total / 8.0


# -- the tiled loop -----------------------------------------------------------------------------
def _read_tile(ds, r0: int, c0: int, th: int, tw: int, fill: np.ndarray,
               scale: tuple[float, float] = (1.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """(data float32 (bands, th, tw), valid (th, tw)) of the tile at raster row ``r0``, column
    ``c0`` of the open dataset ``ds``; the data is ``a·x + b`` for ``scale`` (a, b), invalid
    pixels and a band's nodata hold ``fill``, a tile crossing the raster's edge is mirrored."""
    from rasterio.windows import Window

    h, w = min(th, ds.height - r0), min(tw, ds.width - c0)
    win = Window(c0, r0, w, h)
    data = read_data(ds, window=win)
    valid = valid_mask(ds, data, win)
    band_nodata = (data == ds.nodata) if ds.nodata is not None else None
    data = data.astype(np.float32)
    if scale != (1.0, 0.0):
        data = data * np.float32(scale[0]) + np.float32(scale[1])
    np.copyto(data, fill, where=~valid[None])
    if band_nodata is not None:   # one band's nodata: that band's mean, as in training
        np.copyto(data, np.broadcast_to(fill, data.shape), where=band_nodata)
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        np.copyto(data, np.broadcast_to(fill, data.shape), where=~np.isfinite(data))
    if h < th or w < tw:
        data = np.pad(data, ((0, 0), (0, th - h), (0, tw - w)), mode="symmetric")
        valid = np.pad(valid, ((0, th - h), (0, tw - w)))
    return data, valid


def _read_tiles(src, rows: list[int], cols: list[int], th: int, tw: int,
                fill: np.ndarray, tile_rows: range | None = None,
                scale: tuple[float, float] = (1.0, 0.0)
                ) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """(row index, col, data, valid) of :func:`_read_tile` tile by tile in this thread, for the
    tile rows ``tile_rows`` (all by default); Detect Objects reads this way."""
    for ri in tile_rows if tile_rows is not None else range(len(rows)):
        for c0 in cols:
            yield ri, c0, *_read_tile(src, rows[ri], c0, th, tw, fill, scale)


def _batches(tiles: Iterator, batch: int) -> Iterator[list]:
    """Groups of ``batch`` tiles to predict (item[4]; tiles entirely nodata or outside the
    cells a grid model flagged pass through without a forward pass); groups may span tile
    rows."""
    group: list = []
    n_work = 0
    for item in tiles:
        group.append(item)
        n_work += bool(item[4])
        if n_work == batch:
            yield group
            group, n_work = [], 0
    if group:
        yield group


def _stacked(groups: Iterator[list]) -> Iterator[tuple[list, np.ndarray | None]]:
    """Each group of :func:`_batches` with the stacked data of its tiles to predict (None when
    none is)."""
    for group in groups:
        work = [it[2] for it in group if it[4]]
        yield group, np.stack(work) if work else None


def _prefetch(gen: Iterator, depth: int = 2) -> Iterator:
    """Run ``gen`` in a thread (reading overlaps the forward pass)."""
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for item in gen:
                if stop.is_set():
                    return
                q.put(item)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put(exc)
        q.put(done)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(0.05)


def tile_grid(height: int, width: int, tile: int, overlap: float
              ) -> tuple[int, int, int, int, list[int], list[int]]:
    """(tile height, tile width, overlap rows, overlap cols, tile row starts, tile col starts)
    of a ``height`` × ``width`` raster (pixels)."""
    th, tw = min(tile, _ceil32(height)), min(tile, _ceil32(width))
    ov_h, ov_w = (int(round(overlap * t / 2)) * 2 for t in (th, tw))
    rows = tile_starts(height, th, max(th - ov_h, 1))
    cols = tile_starts(width, tw, max(tw - ov_w, 1))
    return th, tw, ov_h, ov_w, rows, cols


def rank_rows(height: int, width: int, tile: int, overlap: float, rank: int,
              world: int) -> tuple[range, int, int]:
    """The share of rank ``rank`` of ``world`` processes: (tile rows whose finished rows it
    writes, first raster row, end raster row). Shares are contiguous, in rank order, and cover
    the raster exactly once; a rank may get none (range empty, first == end)."""
    rows = tile_grid(height, width, tile, overlap)[4]
    a, b = len(rows) * rank // world, len(rows) * (rank + 1) // world
    y0 = rows[a] if a < len(rows) else height
    y1 = rows[b] if b < len(rows) else height
    return range(a, b), y0, y1


def predict_raster(src, engine: Callable[[np.ndarray], np.ndarray], num_classes: int,
                   fill: list[float], tile: int, overlap: float, batch: int, tta: bool,
                   on_rows: Callable[[int, np.ndarray, np.ndarray, np.ndarray], None],
                   progress: Callable[[int, int], None] = lambda d, t: None,
                   cancelled: Callable[[], bool] = lambda: False,
                   part: range | None = None,
                   scale: tuple[float, float] = (1.0, 0.0),
                   cell_mask: Callable[[int, int, int, int], np.ndarray] | None = None,
                   probs: str | None = "float", readers: int | None = None) -> dict:
    """Tiled, blended prediction of the open rasterio dataset ``src`` (its values mapped to
    ``a·x + b`` for ``scale`` (a, b) before the network).

    ``on_rows(row0, probs, classes (n, W) uint8, valid (n, W) bool)`` receives finished rows top
    to bottom, in a writer thread of its own; ``probs`` is (C, n, W) float32 (``probs="float"``),
    uint8 ``rint(p · 255)`` with 0 outside valid pixels (``"uint8"``) or None. ``part``: only
    the rows finished by these tile rows (:func:`rank_rows`), from every tile that overlaps them,
    so they equal those of a whole run. ``cell_mask(row0, col0, h, w)``: (h, w) bool of the
    pixels to predict (a grid model's flagged cells); the other valid pixels come out as
    background (class 0, its probability 1) and tiles without any are not run. Returns counts
    (tiles, tiles run, tiles skipped for the grid model, seconds in the forward pass).

    Tiles are read by ``readers`` threads (default :func:`.tile_io.reader_threads`), each with
    its own handle on ``src.name``; an engine with a ``tensor`` method (:class:`TorchEngine`)
    keeps blending, argmax and quantisation on its device (:class:`.blend.TorchBand`), any
    other callable returns NumPy probabilities (:class:`.blend.NumpyBand`). Errors in a reader
    or the writer are raised here; cancel (:class:`JobCancelled`) stops both.
    """
    from ..training.runtime import available_cpus
    from .blend import NumpyBand, TorchBand
    from .tile_io import BackgroundWriter, OrderedReader, reader_threads

    H, W = src.height, src.width
    th, tw, ov_h, ov_w, rows, cols = tile_grid(H, W, tile, overlap)
    part = part if part is not None else range(len(rows))
    if not part:
        return {"tiles": 0, "tiles_run": 0, "tiles_skipped_by_grid": 0, "tile_height": th,
                "tile_width": tw, "forward_seconds": 0.0}
    # the band starts at the first tile row that reaches into the part's first row
    first = next(ri for ri in range(len(rows)) if rows[ri] + th > rows[part.start])
    win2d = np.outer(window_1d(th, ov_h > 0), window_1d(tw, ov_w > 0))
    fill_a = np.asarray(fill, np.float32)[:, None, None]
    total = (part.stop - first) * len(cols)
    on_device = hasattr(engine, "tensor")
    with _inference(on_device):
        band = (TorchBand(num_classes, th, W, win2d, probs, engine.device) if on_device
                else NumpyBand(num_classes, th, W, win2d, probs))
        background = band.background(th, tw)

    def read(key, ds):
        ri, c0 = key
        data, valid = _read_tile(ds, rows[ri], c0, th, tw, fill_a, scale)
        work = valid.any() and (cell_mask is None or bool(
            (valid & cell_mask(rows[ri], c0, th, tw)).any()))
        return ri, c0, data, valid, work

    def write(rows_of) -> None:
        r = rows_of()
        on_rows(r.r0, r.probs, r.classes, r.valid)

    def flush(ri: int) -> None:
        """Hand the rows finished before tile row ``ri + 1`` to the writer; move the band."""
        r0 = rows[ri]
        n = min((rows[ri + 1] if ri + 1 < len(rows) else H) - r0, H - r0)
        if n <= 0:
            return
        if ri not in part:
            band.take(r0, n)
            return
        off = ~cell_mask(r0, 0, n, W) if cell_mask is not None else None
        writer.put(write, band.take(r0, n, off))

    keys = [(ri, c0) for ri in range(first, part.stop) for c0 in cols]
    n_readers = readers or reader_threads(available_cpus())
    reader = OrderedReader(keys, read, lambda: _open_again(src), n_readers,
                           depth=batch + 2 * n_readers)
    writer = BackgroundWriter()
    tiles = _prefetch(_stacked(_batches(iter(reader), batch)))
    done = run = skipped = 0
    forward_s = 0.0
    current = first
    try:
        with _inference(on_device):
            for group, x in tiles:
                if cancelled():
                    raise JobCancelled()
                run += sum(1 for it in group if it[4])
                skipped += sum(1 for it in group if not it[4] and it[3].any())
                results = iter(())
                if x is not None:
                    t0 = time.perf_counter()
                    if on_device:
                        results = iter(engine.tensor(x, tta))
                    else:
                        results = iter(tta_predict(engine, x) if tta else engine(x))
                    forward_s += time.perf_counter() - t0
                for ri, c0, _, valid, worked in group:
                    while current < ri:
                        flush(current)
                        current += 1
                    if not valid.any():
                        continue
                    p = next(results) if worked else background
                    band.add(p, c0, min(th, H - rows[ri]), min(tw, W - c0), valid)
                done += len(group)
                progress(done, total)
            while current < part.stop:
                flush(current)
                current += 1
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        tiles.close()      # stops the batching thread, then the readers
        reader.close()
    return {"tiles": total, "tiles_run": run, "tiles_skipped_by_grid": skipped,
            "tile_height": th, "tile_width": tw, "forward_seconds": forward_s}


def _open_again(src):
    """A second handle on the dataset ``src`` (GDAL handles must not be shared by threads)."""
    import rasterio

    return rasterio.open(src.name)


def _inference(on_device: bool):
    """torch.inference_mode for the device-side band, nothing otherwise."""
    if not on_device:
        return contextlib.nullcontext()
    import torch

    return torch.inference_mode()


# -- outputs ------------------------------------------------------------------------------------
def _rgba(color: str) -> tuple[int, int, int, int]:
    h = (color or "#000000").lstrip("#")
    return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16), 255)


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def _profile(src, count: int, dtype: str, nodata, rows: tuple[int, int] | None = None) -> dict:
    """GeoTIFF profile on ``src``'s grid, or on its raster rows ``rows`` = (first, end)."""
    from rasterio.transform import Affine

    bs = 256
    y0, y1 = rows or (0, src.height)
    prof = {"driver": "GTiff", "width": src.width, "height": max(y1 - y0, 1), "count": count,
            "dtype": dtype, "crs": src.crs, "transform": src.transform * Affine.translation(0, y0),
            "nodata": nodata, "compress": "deflate", "BIGTIFF": "IF_SAFER"}
    if src.width >= bs and src.height >= bs:
        prof.update(tiled=True, blockxsize=bs, blockysize=bs)
    return prof


def area_and_length(crs_wkt: str | None):
    """A function ``shapely geometry → (area m², perimeter m)`` for the CRS ``crs_wkt``: on the
    ellipsoid (``pyproj.Geod``, Karney's algorithm) for a geographic CRS, planar area × (metres
    per map unit)² for a projected one; map units when there is no CRS."""
    from pyproj import CRS

    crs = CRS.from_user_input(crs_wkt) if crs_wkt else None
    if crs is not None and crs.is_geographic:
        geod = crs.get_geod()

        def geodesic(geom):
            area, perimeter = geod.geometry_area_perimeter(geom)
            return abs(area), perimeter
        return geodesic
    metres = 1.0
    if crs is not None and crs.axis_info:
        metres = crs.axis_info[0].unit_conversion_factor or 1.0
    return lambda geom: (geom.area * metres ** 2, geom.length * metres)


def polygonize(class_raster: Path, out_gpkg: Path, classes: list[dict], min_area: float,
               crs_wkt: str | None, min_pixels: int = 0) -> int:
    """Class polygons (no background, no nodata) with class_id, class_name, area (m²) and
    perimeter (m) into a GeoPackage layer 'classes', dropping polygons under ``min_area`` m² (on
    the ellipsoid for geographic CRSs, :func:`area_and_length`) or of fewer than ``min_pixels``
    pixels (ENVI's aggregate minimum size); returns the number kept. GDAL's polygonize
    (4-connected, through rasterio) works on the band, not on a copy."""
    import numpy as np
    import rasterio
    import shapely
    from pyogrio.raw import write
    from rasterio.features import shapes
    from shapely.geometry import shape

    names = {int(c["id"]): c["name"] for c in classes}
    measure = area_and_length(crs_wkt)
    ids, geoms, areas, perimeters = [], [], [], []
    with rasterio.open(class_raster) as src:
        t = src.transform
        min_planar = min_pixels * abs(t.a * t.e - t.b * t.d) * (1 - 1e-9)
        for geojson, value in shapes(rasterio.band(src, 1), transform=t):
            cid = int(value)
            if cid == 0 or cid == CLASS_NODATA:
                continue
            geom = shape(geojson)
            if geom.area < min_planar:
                continue
            area, perimeter = measure(geom)
            if area < min_area:
                continue
            ids.append(cid)
            geoms.append(geom)
            areas.append(area)
            perimeters.append(perimeter)
    if out_gpkg.exists():
        out_gpkg.unlink()
    write(str(out_gpkg), shapely.to_wkb(np.array(geoms, dtype=object)),
          [np.array(ids, np.int32), np.array([names.get(i, str(i)) for i in ids], dtype=object),
           np.array(areas, np.float64), np.array(perimeters, np.float64)],
          ["class_id", "class_name", "area", "perimeter"],
          layer="classes", driver="GPKG", geometry_type="Polygon", crs=crs_wkt or None)
    return len(ids)


def classify_pixels(job, ctx: JobContext) -> dict:
    """Run a ClassifyPixelsJob (see the module docstring)."""
    import rasterio
    from rasterio.windows import Window

    from .. import distributed
    from ..environment import resolve_device
    from .blend import auto_windows
    from .classify_parts import assemble, part_path
    from .input_range import input_scaling
    from .modelfile import load_model, read_model_card

    started = time.monotonic()
    card = read_model_card(job.model)
    device = distributed.device_for(resolve_device(job.device))
    distributed.setup(device)   # several processes (torchrun): each classifies a share of rows
    classes = card["classes"]
    num_classes = int(card["num_outputs"])
    out_path = Path(job.output)
    prob_path = Path(job.output_probabilities) if job.output_probabilities else None
    vec_path = Path(job.output_vector) if job.output_vector else None
    try:
        src = rasterio.open(job.input)
    except rasterio.errors.RasterioIOError as exc:
        raise UserError(f"Cannot read the input raster {job.input}: {exc}.",
                        "Choose a raster file GDAL can read.") from None
    tmps: list[Path] = []
    try:
        with src:
            if data_band_count(src) != int(card["bands"]):
                raise UserError(f"The input raster has {data_band_count(src)} band(s) of "
                                "data (an alpha band is a mask, not data) but the model was "
                                f"trained on {card['bands']}.",
                                "Classify a raster with the same bands as the training rasters.")
            px = card.get("pixel_size")
            if px and px[0]:
                ratio = abs(src.res[0]) / float(px[0])
                if ratio > PIXEL_SIZE_TOLERANCE or ratio < 1 / PIXEL_SIZE_TOLERANCE:
                    ctx.log(f"The input pixel size ({abs(src.res[0]):g}) is far from the "
                            f"training pixel size ({float(px[0]):g}): results may be poor. "
                            "Resample the raster to the training pixel size.", "warning")
            scale_a, scale_b, note = input_scaling(src, card, job.rescale)
            if note:
                ctx.log(note)
            tile, batch = network_window(card, job.tile_size, job.batch_size)
            if not job.batch_size:   # auto: from the free GPU memory
                batch = auto_windows(device, tile, int(card["bands"]), num_classes)
                ctx.log(f"{batch} windows of {tile} px per forward pass (BATCH_SIZE auto).")
            cells = None
            if getattr(job, "grid_model", ""):
                from ..classification.optimized import grid_filter

                cells = grid_filter(src, job.grid_model, job.grid_threshold, 16, device, ctx)
            with distributed.main_first():   # one ONNX export into the shared cache
                engine = make_engine(job.model, lambda: load_model(job.model)[0], device,
                                     job.engine, ctx=ctx)
            rank, world = distributed.rank(), distributed.world_size()
            part, y0, y1 = rank_rows(src.height, src.width, tile, job.overlap, rank, world)
            ctx.log(f"Classifying {src.width} × {src.height} px with {engine.name} on {device}, "
                    f"tiles of {tile} px, overlap {job.overlap:g}" + (", TTA" if job.tta else ""))
            out_path.parent.mkdir(parents=True, exist_ok=True)
            tmp_cls = part_path(out_path, rank) if world > 1 else _tmp(out_path)
            tmps.append(tmp_cls)
            written = " and ".join(str(p) for p in (out_path, prob_path) if p)
            guard = gdal_write_guard(written)   # errors GDAL signals when blocks are flushed
            guard.__enter__()
            dst = rasterio.open(tmp_cls, "w", **_profile(src, 1, "uint8", CLASS_NODATA, (y0, y1)))
            dst.write_colormap(1, {int(c["id"]): _rgba(c["color"]) for c in classes})
            pdst = None
            if prob_path:
                prob_path.parent.mkdir(parents=True, exist_ok=True)
                tmp_prob = part_path(prob_path, rank) if world > 1 else _tmp(prob_path)
                tmps.append(tmp_prob)
                pdst = rasterio.open(tmp_prob, "w",
                                     **_profile(src, num_classes, "uint8", None, (y0, y1)))
                for c in classes:
                    pdst.set_band_description(int(c["id"]) + 1, f"{c['id']} {c['name']}")
            counts = np.zeros(256, np.int64)

            def on_rows(r0, p8, cls, valid) -> None:   # in the writer thread
                win = Window(0, r0 - y0, src.width, cls.shape[0])
                dst.write(cls, 1, window=win)
                counts[:] += np.bincount(cls.ravel(), minlength=256)
                if pdst is not None:
                    pdst.write(p8, window=win)

            try:
                stats = predict_raster(
                    src, engine, num_classes, card["mean"], tile, job.overlap,
                    batch, job.tta, on_rows,
                    progress=lambda d, t: ctx.progress("tile", d, t, "Classifying"),
                    cancelled=lambda: ctx.cancelled, part=part, scale=(scale_a, scale_b),
                    cell_mask=cells.mask if cells is not None else None,
                    probs="uint8" if pdst is not None else None)
            except Exception as exc:
                if type(exc).__name__ != "OutOfMemoryError":   # torch's, without importing it
                    raise
                raise UserError("The GPU ran out of memory while classifying.",
                                "Use fewer tiles per batch (BATCH_SIZE) or a smaller "
                                "TILE_SIZE.") from None
            finally:
                dst.close()
                if pdst is not None:
                    pdst.close()
                guard.__exit__(*sys.exc_info())   # raises only when nothing else did
            if world > 1:   # rank 0 puts the ranks' parts together; the others are done
                counts[:] = np.sum(distributed.gather(counts), axis=0)
                stats["tiles"] = sum(distributed.gather(stats["tiles"]))
                tmps.remove(tmp_cls)   # rank 0 reads, then deletes every part
                if prob_path:
                    tmps.remove(tmp_prob)
                distributed.barrier()
                if not distributed.is_main():
                    distributed.barrier()   # until rank 0 has read the parts
                    return {"rank": rank, "rows": [y0, y1], "tiles": stats["tiles"]}
                spans = [rank_rows(src.height, src.width, tile, job.overlap, r, world)[1:]
                         for r in range(world)]
                try:
                    for final, count, nodata in ((out_path, 1, CLASS_NODATA),
                                                 (prob_path, num_classes, None)):
                        if final is None:
                            continue
                        parts = [part_path(final, r) for r in range(world)]
                        tmps += [*parts, _tmp(final)]
                        assemble(parts, spans, _tmp(final),
                                 _profile(src, count, "uint8", nodata))
                finally:
                    distributed.barrier()
                tmp_cls = _tmp(out_path)
                tmp_prob = _tmp(prob_path) if prob_path else None
            os.replace(tmp_cls, out_path)
            ctx.artifact("class_raster", str(out_path))
            if prob_path:
                os.replace(tmp_prob, prob_path)
                ctx.artifact("probabilities", str(prob_path))
            crs_wkt = src.crs.to_wkt() if src.crs else None
        n_polygons = None
        if vec_path:
            ctx.progress("polygons", 0, 1, "Vectorising")
            vec_path.parent.mkdir(parents=True, exist_ok=True)
            tmp_vec = _tmp(vec_path)
            tmps.append(tmp_vec)
            n_polygons = polygonize(out_path, tmp_vec, classes, job.min_area, crs_wkt,
                                    job.min_pixels)
            os.replace(tmp_vec, vec_path)
            ctx.artifact("polygons", str(vec_path))
            ctx.progress("polygons", 1, 1, "Done")
    finally:
        for t in tmps:
            if t.exists():
                t.unlink()
    names = {int(c["id"]): c["name"] for c in classes}
    pixels = {names.get(i, str(i)): int(counts[i]) for i in sorted(names) if counts[i]}
    optimized = {}
    if cells is not None:
        per_tile = stats["forward_seconds"] / max(stats["tiles_run"], 1)
        optimized = {"grid_cells": cells.cells, "grid_cells_skipped_share":
                     round(cells.share_skipped, 4), "grid_seconds": round(cells.seconds, 2),
                     "tiles_skipped": stats["tiles_skipped_by_grid"],
                     "seconds_saved": round(per_tile * stats["tiles_skipped_by_grid"]
                                            - cells.seconds, 2)}
        ctx.log(f"Optimized classification: {optimized['grid_cells_skipped_share']:.0%} of the "
                f"grid cells skipped, {optimized['tiles_skipped']} of {stats['tiles']} tiles not "
                f"run, about {optimized['seconds_saved']:g} s saved.")
        if not optimized["tiles_skipped"] and cells.share_skipped > 0:
            ctx.log(f"Every tile holds a flagged grid cell, so none was skipped: use tiles of "
                    f"the grid size (TILE_SIZE {cells.size}) or a higher GRID_THRESHOLD.",
                    "warning")
    return {**optimized, "output": str(out_path),
            "output_probabilities": str(prob_path) if prob_path else None,
            "output_vector": str(vec_path) if vec_path else None, "polygons": n_polygons,
            "engine": engine.name, "device": device, "pixels_per_class": pixels,
            "nodata_pixels": int(counts[CLASS_NODATA]), "tiles": stats["tiles"],
            "seconds": round(time.monotonic() - started, 2)}
