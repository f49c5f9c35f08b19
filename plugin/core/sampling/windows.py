"""Random training windows shared by every family: validation areas hidden from training,
windows moved flush with their raster's edges, and windows centred on objects (boxes).

Family-neutral: nothing here knows labels' meaning beyond "an object is a box in raster pixel
coordinates". Areas are ``(row0, col0, row1, col1)`` pixel boxes (end exclusive), per source id.

Object-centred windows (:class:`ObjectWindowSampler`): a share ``centred`` of each epoch's
windows contains a randomly chosen object (its window origin drawn uniformly among the origins
that keep the whole object inside and lie within a quarter window of centring it), the others
lie anywhere in the training rasters. The share follows :func:`centred_share`: half the windows
for sparse objects, none when objects cover half the area or more (random windows then hold
objects anyway, and centring would only teach that objects are commoner than they are).
``background_ratio`` (ENVI's background patch ratio: background windows per window holding an
object) caps the windows holding no object centre: the excess of the random draws is drawn again
centred on objects (0: every window holds an object; None: no cap).
Windows never overlap a hidden (validation) area where a free place can be found in
:data:`MAX_TRIES` draws; a window that still does is returned, and the family's dataset must
mask the hidden pixels (:func:`hidden_in_window` gives them).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .plan import Patch

Area = tuple[int, int, int, int]     # row0, col0, row1, col1 in pixels (end exclusive)

CENTRED_MAX = 0.5   # share of feature-centred windows when features are sparse
MAX_TRIES = 20      # draws of a window before one overlapping a hidden area is accepted


def centred_share(feature_px: float, area_px: float) -> float:
    """Share of windows centred on features: :data:`CENTRED_MAX` minus the features' share of
    the training area (``feature_px`` / ``area_px``, both in pixels), at least 0."""
    return max(0.0, CENTRED_MAX - feature_px / max(area_px, 1.0))


def hidden_areas(val_patches: list[Patch], train_ids,
                 shapes: dict[int, tuple[int, int]] | None = None) -> dict[int, list[Area]]:
    """The validation patches lying on training rasters (``train_ids``: their source ids), as
    areas per source: what training must never see. With ``shapes`` (source → (height,
    width)) each area is :func:`planned_area`: the patches are the plan's, whose grid lets the
    last patch of a row or column run past the raster edge."""
    train = set(train_ids)
    out: dict[int, list[Area]] = {}
    for p in val_patches:
        if p.source in train:
            area = (planned_area(p, shapes[p.source]) if shapes is not None
                    else (p.row, p.col, p.row + p.size, p.col + p.size))
            out.setdefault(p.source, []).append(area)
    return out


def planned_area(patch: Patch, shape: tuple[int, int]) -> Area:
    """The pixels of a planned ``patch`` inside its raster (``shape``: height, width): those the
    plan counted its class pixels on, and so what the split's rules (every class keeps a
    training patch, no validation patch takes most of a class) hold for. Moving the patch flush
    with the edge (:func:`flush_patches`) would take more: on issue 19's land cover (a 443 ×
    244 px raster, patch 128) the two moved validation patches held every sediment pixel and 207
    of the 289 water pixels instead of 4 and 65."""
    h, w = shape
    return (max(patch.row, 0), max(patch.col, 0), min(patch.row + patch.size, h),
            min(patch.col + patch.size, w))


def open_area(shapes: dict[int, tuple[int, int]], hidden: dict[int, list[Area]]) -> float:
    """Pixels of the rasters (``shapes``: source → (height, width)) outside the hidden areas
    (overlapping hidden areas counted twice; at least 0)."""
    area = sum(h * w for h, w in shapes.values())
    area -= sum((r1 - r0) * (c1 - c0) for areas in hidden.values() for r0, c0, r1, c1 in areas)
    return float(max(area, 0))


def raster_shapes(sources: list, source_ids) -> dict[int, tuple[int, int]]:
    """source id → (height, width) of ``sources[id].image`` (rasterio, header only)."""
    import rasterio

    out = {}
    for sid in sorted(set(source_ids)):
        with rasterio.open(sources[sid].image) as ds:
            out[sid] = (ds.height, ds.width)
    return out


def flush_patches(patches: list[Patch], sources: list) -> list[Patch]:
    """``patches`` moved inside their rasters, flush with the right and bottom edges (the plan's
    grid lets the last patch of a row or column run past the edge, padded with ignored labels;
    the windows a network learns from and is applied to never do). A raster smaller than the
    patch keeps it at (0, 0)."""
    shapes = raster_shapes(sources, {p.source for p in patches})
    out = []
    for p in patches:
        h, w = shapes[p.source]
        out.append(dataclasses.replace(p, row=max(min(p.row, h - p.size), 0),
                                       col=max(min(p.col, w - p.size), 0)))
    return out


def overlaps(area: Area, areas) -> bool:
    """Whether ``area`` (row0, col0, row1, col1) shares a pixel with one of ``areas``."""
    row0, col0, row1, col1 = area
    return any(row0 < r1 and r0 < row1 and col0 < c1 and c0 < col1 for r0, c0, r1, c1 in areas)


def hidden_in_window(row: int, col: int, size: int, areas) -> list[tuple[slice, slice]]:
    """(rows, cols) slices, in window pixels, of the ``areas`` parts inside the window."""
    out = []
    for r0, c0, r1, c1 in areas:
        rs = slice(max(r0 - row, 0), max(min(r1 - row, size), 0))
        cs = slice(max(c0 - col, 0), max(min(c1 - col, size), 0))
        if rs.stop > rs.start and cs.stop > cs.start:
            out.append((rs, cs))
    return out


@dataclasses.dataclass
class ObjectWindowSampler:
    """Random square windows of ``size`` px drawn anew every epoch, a share ``centred`` of them
    holding a whole object (see the module docstring).

    ``shapes``: source → (height, width) of the rasters holding training area; ``objects``:
    (n, 6) float64 rows (source, class id, x0, y0, x1, y1) in raster pixels, the objects outside
    the hidden areas; ``hidden``: source → areas training must not see."""

    size: int
    shapes: dict[int, tuple[int, int]]
    objects: np.ndarray
    hidden: dict[int, list[Area]] = dataclasses.field(default_factory=dict)
    centred: float = CENTRED_MAX
    background_ratio: float | None = None

    @classmethod
    def from_boxes(cls, size: int, shapes: dict[int, tuple[int, int]],
                   boxes: dict[int, np.ndarray], hidden: dict[int, list[Area]] | None = None,
                   background_ratio: float | None = None) -> ObjectWindowSampler:
        """The sampler of the objects ``boxes`` (source → (n, 5) rows class id, x0, y0, x1, y1
        in raster pixels) of the sources in ``shapes``. Objects larger than the window or
        touching a hidden area are never centred on; ``centred`` follows
        :func:`centred_share` with the objects' summed box area (overlaps counted twice)."""
        hidden = hidden or {}
        rows, covered = [], 0.0
        for sid, arr in boxes.items():
            if sid not in shapes or not len(arr):
                continue
            arr = np.asarray(arr, np.float64).reshape(-1, 5)
            covered += float(((arr[:, 3] - arr[:, 1]) * (arr[:, 4] - arr[:, 2])).sum())
            for b in arr:
                fits = max(b[3] - b[1], b[4] - b[2]) <= size
                r0, c0 = int(np.floor(b[2])), int(np.floor(b[1]))
                r1, c1 = int(np.ceil(b[4])), int(np.ceil(b[3]))
                if fits and not overlaps((r0, c0, r1, c1), hidden.get(sid, ())):
                    rows.append([sid, *b])
        objects = np.asarray(rows, np.float64).reshape(-1, 6)
        share = centred_share(covered, open_area(shapes, hidden))
        return cls(size, dict(shapes), objects, hidden, share if len(objects) else 0.0,
                   background_ratio)

    def _centred_origin(self, rng: np.random.Generator) -> tuple[int, int, int]:
        sid, _, x0, y0, x1, y1 = self.objects[int(rng.integers(len(self.objects)))]
        sid = int(sid)
        h, w = self.shapes[sid]
        j = self.size // 4
        origin = []
        for lo_obj, hi_obj, extent in ((y0, y1, h), (x0, x1, w)):
            centre = (lo_obj + hi_obj) / 2.0 - self.size / 2.0
            lo = max(int(np.ceil(hi_obj)) - self.size, int(np.floor(centre)) - j, 0)
            hi = min(int(np.floor(lo_obj)), int(np.ceil(centre)) + j, max(extent - self.size, 0))
            origin.append(int(rng.integers(lo, hi + 1)) if hi >= lo else
                          min(max(int(round(centre)), 0), max(extent - self.size, 0)))
        return sid, origin[0], origin[1]

    def _random_origin(self, rng: np.random.Generator) -> tuple[int, int, int]:
        sids = sorted(self.shapes)
        area = np.array([self.shapes[s][0] * self.shapes[s][1] for s in sids], np.float64)
        sid = sids[int(rng.choice(len(sids), p=area / area.sum()))]
        h, w = self.shapes[sid]
        return (sid, int(rng.integers(0, max(h - self.size, 0) + 1)),
                int(rng.integers(0, max(w - self.size, 0) + 1)))

    def holds_object(self, window: Patch) -> bool:
        """Whether an object's centre lies in ``window``."""
        o = self.objects[self.objects[:, 0] == window.source]
        cx, cy = (o[:, 2] + o[:, 4]) / 2.0, (o[:, 3] + o[:, 5]) / 2.0
        return bool(((cx >= window.col) & (cx < window.col + window.size) & (cy >= window.row)
                     & (cy < window.row + window.size)).any())

    def _window(self, centred: bool, rng: np.random.Generator) -> Patch:
        for _try in range(MAX_TRIES):
            sid, r, c = (self._centred_origin if centred else self._random_origin)(rng)
            if not overlaps((r, c, r + self.size, c + self.size), self.hidden.get(sid, ())):
                break
        return Patch(sid, r, c, self.size, "train", centred, {}, 0.0)

    def draw(self, n: int, rng: np.random.Generator) -> list[Patch]:
        """``n`` windows (Patch objects of split "train", flush with the raster edges;
        ``has_features``: centred on an object)."""
        out = [self._window(len(self.objects) > 0 and rng.random() < self.centred, rng)
               for _ in range(n)]
        if self.background_ratio is not None and len(self.objects):
            allowed = int(n * self.background_ratio / (1.0 + self.background_ratio))
            empty = [i for i, w in enumerate(out) if not w.has_features
                     and not self.holds_object(w)]
            for i in empty[allowed:]:
                out[i] = self._window(True, rng)
        return out


@dataclasses.dataclass
class PatchAugment:
    """The switches of a per-patch geometric augmentation of the object families (each draw a
    random horizontal/vertical flip, a turn by a multiple of 90° and a zoom log-uniform in
    ``scale_range``, the ±20 % of ENVI's scale augmentation): a subclass's ``__call__``
    transforms an image with its boxes or masks."""

    rotation: bool = True
    scale: bool = True
    flip: bool = True
    scale_range: tuple[float, float] = (0.8, 1.25)

    @property
    def active(self) -> bool:
        return self.rotation or self.scale or self.flip
