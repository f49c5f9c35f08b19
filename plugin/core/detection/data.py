"""Detection training data: label boxes, the sample plan, the box dataset and its augmentation.

Labels → boxes (pixel coordinates of each training raster, see :mod:`..sampling.boxes`):

- polygons and lines give their bounding box; points a square whose half-size is the class's
  solid distance in pixels (0: a 25 px square);
- "Pad small features" (ENVI): boxes smaller than 25 px in x or y grow to 25 px around their
  centre.

Planning reuses the patch planner on a label raster of the boxes (every pixel a box covers holds
its class), so "feature patches" are those touching a box, and the split, feature patch
percentage and background patch ratio work as for segmentation.

In a patch, a box keeps its part inside the patch when that part is at least
:data:`MIN_VISIBLE` of its area and 2 px in x and y (objects cut by the patch edge still teach
the detector; slivers would not). The visible part of every other box the window shows (cut
below MIN_VISIBLE, or dropped for touching a validation area) is an object shown without its
label: in training it is an ignore region (``CUT_IGNORE``: the detector's classification loss
skips the background locations inside it, :mod:`.network`) or, for a detector without ignore
regions (Faster R-CNN), blanked (``CUT_BLANK``: filled with the band means).

Training windows are drawn anew every epoch (:class:`..sampling.windows.ObjectWindowSampler`:
up to half of them holding a whole object, the rest anywhere, at most BACKGROUND_PATCH_RATIO
windows without an object per window with one) with their own augmentation;
validation patches are the plan's fixed grid (read moved flush with the raster edge where the
grid's last patch runs past it), and where they lie on a training raster training windows avoid
their planned in-raster area (its pixels are filled with the band means and its boxes dropped
when a window cannot avoid it); validation scores only that area of each patch.

PATCH_SIZE 0 (automatic, :func:`auto_patch_size`): :data:`OBJECTS_ACROSS` median objects across,
a multiple of 32, within [:data:`AUTO_PATCH_MIN`, :data:`AUTO_PATCH_MAX`] px and no larger than
the smallest raster, always larger than the largest object.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..jobs import JobContext
from ..sampling import Patch, PatchReader, SampleSource
from ..sampling.boxes import Box
from ..sampling.windows import PatchAugment, hidden_in_window, overlaps

#: Share of a box's area that must lie inside a window for the box to be kept (clipped): half.
#: Less of an object is rarely recognisable as one (a crown's edge) and Detect Objects never
#: needs fragments (it drops boxes at tile edges and finds the object whole in the overlapping
#: tile). OSBS_029 (bench/detection_real.py, one seed each, noisy): F1 0.54 at 0.5, 0.34 at 0.3
#: (fragment boxes: precision 0.22). A box cut below it must not be shown as background: without
#: a rule for it the synthetic test's validation mAP50 fell from 1.0 to 0.50 (64 px windows of
#: 25–34 px objects). Blanking its visible part (the first rule) cost OSBS_029 F1 0.54 → 0.38:
#: in a closed canopy most windows cut several crowns, and the blanked rectangles covered much
#: of each window, pixels Detect Objects never sees; an ignore region hides nothing (CUT_IGNORE).
MIN_VISIBLE = 0.5
#: What training does with the visible part of a box it does not label (see the module):
CUT_IGNORE = "ignore"      # an ignore region: target["ignore"] (M, 4) boxes, pixels unchanged
CUT_BLANK = "blank"        # its pixels filled with the band means (detectors without ignoring)
OBJECTS_ACROSS = 4         # automatic patch size: this many median objects across a window
AUTO_PATCH_MIN, AUTO_PATCH_MAX = 128, 512   # px: bounds of the automatic patch size
MIN_SIDE_PX = 2.0          # px: clipped boxes thinner than this are dropped
DEFAULT_POINT_BOX = 25.0   # px: box side of a point label whose class has no solid distance


@dataclass
class DetectionData:
    """What the detector trains on: per-source boxes, the plan, the classes."""

    sources: list[SampleSource]        # images (labels: the box label rasters)
    boxes: list[list[Box]]             # per source, raster pixel coordinates
    plan: object                       # SamplePlan
    classes: list[dict]                # [{id, name, color}] without background
    config: object                     # SamplingConfig
    pool: list = field(default_factory=list)
    patch_size: int = 0                # px: the job's, or the automatic one

    def box_arrays(self) -> dict[int, np.ndarray]:
        """source → (n, 5) float64 rows (class id, x0, y0, x1, y1) in raster pixels."""
        return {i: np.array([[b.class_id, b.x0, b.y0, b.x1, b.y1] for b in bs],
                            np.float64).reshape(-1, 5) for i, bs in enumerate(self.boxes)}

    def box_counts(self, split: str) -> dict[int, int]:
        """Boxes per class id in the patches of ``split`` (a box in two patches counts twice)."""
        out: dict[int, int] = {}
        for p in self.plan.split(split):
            for b, _ in patch_boxes(self.boxes[p.source], p):
                out[b.class_id] = out.get(b.class_id, 0) + 1
        return dict(sorted(out.items()))

    def largest_box(self) -> float:
        """Longest box side in pixels over every source (0 when there is none)."""
        return largest_side(self.boxes)



def patch_boxes(boxes: list[Box], patch: Patch) -> list[tuple[Box, tuple]]:
    """(box, (x0, y0, x1, y1) in patch pixels) for the boxes kept in ``patch`` (see module)."""
    s = patch.size
    out = []
    for b in boxes:
        x0, y0 = max(b.x0 - patch.col, 0.0), max(b.y0 - patch.row, 0.0)
        x1, y1 = min(b.x1 - patch.col, s), min(b.y1 - patch.row, s)
        if x1 - x0 < MIN_SIDE_PX or y1 - y0 < MIN_SIDE_PX:
            continue
        area = max(b.width * b.height, 1e-9)
        if (x1 - x0) * (y1 - y0) / area < MIN_VISIBLE:
            continue
        out.append((b, (x0, y0, x1, y1)))
    return out


def point_box_sizes(classes) -> dict[int, float]:
    """Point label box side per class id: twice the solid distance (0: 25 px)."""
    return {int(c.id): (2.0 * c.solid_distance if c.solid_distance > 0 else DEFAULT_POINT_BOX)
            for c in classes}


# -- preparation --------------------------------------------------------------------------------
def _project_boxes(job, ctx: JobContext, work: Path, config):
    from ..labeling.project import LabelingProject
    from ..sampling.export import load_project_input, source_boxes
    from ..sampling.exporters.common import ExportOptions

    project = LabelingProject.open(job.project)
    pclasses = sorted(project.classes(), key=lambda c: c.id)
    if not pclasses:
        raise UserError("The labeling project has no classes.",
                        "Add classes and draw labels with the Labeling Tool.")
    ctx.progress("prepare", 0, 3, "Reading labels")
    data = load_project_input(job.project, work / "label_rasters", ctx, features=True)
    options = ExportOptions(format="coco", box_size=point_box_sizes(pclasses))
    boxes = source_boxes(data, config, options)
    classes = [{"id": c.id, "name": c.name, "color": c.color} for c in pclasses]
    n_feats = sum(len(f) for f in data.features)
    if not any(boxes) and n_feats == 0 and project.features():
        raise UserError("No label of the project lies on a training raster.",
                        "Draw the labels over the training rasters, or add the rasters the "
                        "labels belong to.")
    return data.sources, boxes, classes


def _chips_boxes(folder: str):
    from ..sampling.sources import read_manifest

    manifest = read_manifest(folder)
    if manifest.get("format") not in ("coco", "voc", "yolo"):
        raise UserError(f"{folder} holds a {manifest.get('format')!r} export; training a "
                        "detector from a folder needs a COCO, VOC or YOLO export.",
                        "Export the chips in one of the detection formats.")
    sources, boxes = [], []
    for item in manifest.get("items", []):
        image = Path(folder) / item["image"]
        if not image.is_file():
            raise UserError(f"Chip {item['image']} listed in the manifest is missing.",
                            "Export the chips again.")
        sources.append(SampleSource(str(image), "", item.get("split", "auto"),
                                    Path(item["image"]).stem))
        boxes.append([Box(int(o.get("fid", i)), int(o["class_id"]), *map(float, o["bbox"]))
                      for i, o in enumerate(item.get("objects", []))])
    if not sources:
        raise UserError(f"The chips folder {folder} holds no chips.", "Export the chips again.")
    classes = [{"id": int(c["id"]), "name": c["name"], "color": c.get("color") or "#ff0000"}
               for c in manifest.get("classes", []) if int(c["id"]) > 0]
    return sources, boxes, classes


def prepare_detection_data(job, ctx: JobContext, work: Path) -> DetectionData:
    """Boxes, box label rasters and the sample plan of ``job`` (a TrainObjectDetectionJob).

    Raises UserError when there is no box, no box on a raster, or the patch size is smaller
    than the largest box."""
    from ..sampling import SamplingConfig
    from ..sampling.export import write_box_labels
    from ..sampling.plan import plan_training

    config = SamplingConfig(patch_size=job.patch_size, split=job.split, shuffle=job.shuffle,
                            seed=job.seed, feature_patch_percentage=job.feature_patch_percentage,
                            background_patch_ratio=job.background_patch_ratio,
                            pad_small_features=job.pad_small_features)
    if Path(job.project).is_dir():
        sources, boxes, classes = _chips_boxes(job.project)
    else:
        sources, boxes, classes = _project_boxes(job, ctx, work, config)
    if not classes:
        raise UserError("The training data has no classes.",
                        "Add classes and draw labels with the Labeling Tool.")
    if not any(boxes):
        raise UserError("There is no object to learn from: no box, polygon, point or line label "
                        "lies inside a training raster.",
                        "Draw or import labels over the training rasters.")
    patch_size = job.patch_size
    if not patch_size:
        patch_size = auto_patch_size(boxes, [s.image for s in sources])
        config = dataclasses.replace(config, patch_size=patch_size)
        ctx.log(f"Patch size {patch_size} px (automatic: {OBJECTS_ACROSS} median objects of "
                f"{median_box(boxes):.0f} px across, larger than the largest, "
                f"{largest_side(boxes):.0f} px).")
    check_patch_fits(boxes, patch_size)
    ctx.progress("prepare", 1, 3, "Planning patches")
    box_dir = work / "box_rasters"
    box_dir.mkdir(parents=True, exist_ok=True)
    planned = [write_box_labels(s, b, box_dir / f"boxes_{i}.tif")
               for i, (s, b) in enumerate(zip(sources, boxes))]
    names = {c["id"]: c["name"] for c in classes}
    plan, pool = plan_training(planned, config, ctx, "Label more objects, lower the patch size "
                               "or raise the split.", class_names=names)
    images = [SampleSource(s.image, p.labels, s.role, s.name) for s, p in zip(sources, planned)]
    return DetectionData(images, boxes, plan, classes, config, pool, patch_size)


@dataclass
class TrainingArea:
    """Where the training windows of :class:`DetectionData` come from: the validation patches
    (read flush with their raster's edges), per validation patch its planned area (raster
    pixels, :func:`..sampling.windows.planned_area`: what validation scores), the areas the
    validation patches hide on training rasters (their planned areas: what the split's rules
    were checked on; the rest of a moved window stays training area) and the training rasters'
    shapes (source → (height, width))."""

    val_patches: list[Patch]
    val_areas: list[tuple[int, int, int, int]]
    hidden: dict
    shapes: dict

    @classmethod
    def of(cls, data: DetectionData) -> TrainingArea:
        from ..sampling.windows import flush_patches, hidden_areas, planned_area, raster_shapes

        planned = data.plan.split("validation")
        train_ids = sorted({p.source for p in data.plan.split("train")})
        shapes = raster_shapes(data.sources, {p.source for p in planned} | set(train_ids))
        return cls(flush_patches(planned, data.sources),
                   [planned_area(p, shapes[p.source]) for p in planned],
                   hidden_areas(planned, train_ids, shapes), {i: shapes[i] for i in train_ids})

    def open_px(self) -> float:
        """Training pixels outside the validation areas."""
        from ..sampling.windows import open_area

        return open_area(self.shapes, self.hidden)

    def sampler(self, data: DetectionData):
        """The object-centred window sampler of the training area."""
        from ..sampling.windows import ObjectWindowSampler

        boxes = {i: b for i, b in data.box_arrays().items() if i in self.shapes}
        return ObjectWindowSampler.from_boxes(data.patch_size, self.shapes, boxes, self.hidden,
                                              data.config.background_patch_ratio)


def largest_side(boxes: list[list[Box]]) -> float:
    """Longest box side in px over every source (0 without boxes)."""
    return max((max(b.width, b.height) for bs in boxes for b in bs), default=0.0)


def median_box(boxes: list[list[Box]]) -> float:
    """Median of the boxes' longest sides in px (0 without boxes)."""
    sides = [max(b.width, b.height) for bs in boxes for b in bs]
    return float(np.median(sides)) if sides else 0.0


def auto_patch_size(boxes: list[list[Box]], images: list[str]) -> int:
    """The automatic patch size in px for ``boxes`` on the rasters ``images`` (see the module
    docstring): ``OBJECTS_ACROSS`` × the median box side rounded up to a multiple of 32, bounded
    by AUTO_PATCH_MIN/MAX and by the smallest raster (rounded down to 32), and always at least
    the largest box side rounded up to 32 (check_patch_fits then passes)."""
    import rasterio

    size = int(math.ceil(OBJECTS_ACROSS * median_box(boxes) / 32.0)) * 32
    size = min(max(size, AUTO_PATCH_MIN), AUTO_PATCH_MAX)
    smallest = None
    for path in images:
        with rasterio.open(path) as ds:
            side = min(ds.height, ds.width)
        smallest = side if smallest is None else min(smallest, side)
    if smallest:
        size = min(size, max(smallest // 32 * 32, 64))
    return max(size, int(math.ceil(largest_side(boxes) / 32.0)) * 32, 64)


def check_patch_fits(boxes: list[list[Box]], patch_size: int) -> None:
    """UserError when a box is larger than the patch (the detector could never see it whole)."""
    largest = largest_side(boxes)
    if largest > patch_size:
        need = int(math.ceil(largest / 32.0)) * 32
        raise UserError(f"The largest object is {largest:.0f} px across but the patch size is "
                        f"{patch_size} px.", f"Use a patch size of at least {need} px.")


# -- augmentation -------------------------------------------------------------------------------
class BoxAugment(PatchAugment):
    """Random flips, 90° turns and zoom of an image patch with its boxes."""

    def __call__(self, image, boxes, rng: np.random.Generator, fill: np.ndarray):
        """``image``: float32 tensor (C, S, S) of raw pixels; ``boxes``: float32 (K, 4) xyxy
        in pixels; ``fill``: (C,) value of new pixels (the band means). Returns both
        transformed (boxes clipped to the patch; the caller drops the degenerate ones)."""
        import torch

        s = image.shape[-1]
        if self.flip and rng.random() < 0.5:                    # left-right
            image = image.flip(-1)
            boxes = torch.stack([s - boxes[:, 2], boxes[:, 1], s - boxes[:, 0], boxes[:, 3]], 1)
        if self.flip and rng.random() < 0.5:                    # up-down
            image = image.flip(-2)
            boxes = torch.stack([boxes[:, 0], s - boxes[:, 3], boxes[:, 2], s - boxes[:, 1]], 1)
        if self.rotation:
            for _ in range(int(rng.integers(4))):               # 90° counter-clockwise
                image = torch.rot90(image, 1, (-2, -1))
                boxes = torch.stack([boxes[:, 1], s - boxes[:, 2], boxes[:, 3],
                                     s - boxes[:, 0]], 1)
        if self.scale:
            z = float(math.exp(rng.uniform(*np.log(self.scale_range))))
            if abs(z - 1.0) > 0.02:
                image, boxes = _zoom(image, boxes, z, fill)
        return image.contiguous(), boxes


def _zoom(image, boxes, z: float, fill: np.ndarray):
    """Zoom by ``z`` about the patch centre, keeping the patch size."""
    import torch
    from torch.nn import functional

    c, s, _ = image.shape
    n = max(1, int(round(s * z)))
    scaled = functional.interpolate(image[None], size=(n, n), mode="bilinear",
                                    align_corners=False)[0]
    out = torch.as_tensor(fill, dtype=image.dtype).view(c, 1, 1).expand(c, s, s).clone()
    off = (n - s) / 2.0
    if n >= s:
        o = int(round(off))
        out = scaled[:, o:o + s, o:o + s].clone()
    else:
        o = int(round(-off))
        out[:, o:o + n, o:o + n] = scaled
    shift = float(int(round(off))) if n >= s else -float(int(round(-off)))
    boxes = (boxes * (n / s) - shift).clamp(0, s)
    return out, boxes


# -- dataset ------------------------------------------------------------------------------------
class BoxDataset:
    """Map-style dataset of patches with their boxes: ``(image float32 (C, S, S) raw pixel
    values with nodata set to the band means, {"boxes": (K, 4) float32 xyxy px, "labels": (K,)
    int64 class ids})``. Every patch lies inside its raster (moved flush with the edge where it
    would stick out); each item gets its own augmentation (random generator seeded by
    (seed, epoch, index)).
    ``hidden``: source → (row0, col0, row1, col1) areas training must not see (validation
    patches): their pixels are filled with the band means and boxes touching them dropped.
    ``cut`` (training): what becomes of the visible part of the boxes not labelled (see the
    module): :data:`CUT_IGNORE` adds them to the target as ``"ignore"`` (M, 4) float32 xyxy
    px, :data:`CUT_BLANK` blanks them (:func:`blank_cut_objects`), "" leaves them.
    ``label_areas`` (validation): per patch (in the order of ``patches``) the pixel box (row0,
    col0, row1, col1 in raster pixels) that is scored, given to the target as ``"scored"``
    (4,) float32 xyxy in patch pixels: a validation patch moved flush with its raster's edge
    scores only its planned area (:func:`..sampling.windows.planned_area`; the task applies
    the patch edge rule at that area's edge)."""

    def __init__(self, sources: list[SampleSource], boxes: list[list[Box]],
                 patches: list[Patch], mean: list[float], augment: BoxAugment | None = None,
                 seed: int = 0, hidden: dict | None = None, cut: str = "",
                 label_areas: list[tuple[int, int, int, int]] | None = None) -> None:
        self.reader = PatchReader(sources)
        self.boxes = boxes
        self.patches = list(patches)
        self.fill = np.asarray(mean, np.float32)
        self.augment = augment
        self.seed = seed
        self.hidden = hidden or {}
        self.cut = cut
        self.label_areas = label_areas
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, index: int):
        import torch

        patch = self.patches[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        patch = self.reader.moved_inside(patch, patch.row, patch.col)
        image, valid = self.reader.read_filled(patch, self.fill)
        kept = patch_boxes(self.boxes[patch.source], patch)
        areas = self.hidden.get(patch.source, ())
        for rs, cs in hidden_in_window(patch.row, patch.col, patch.size, areas):
            image[:, rs, cs] = self.fill[:, None, None]
        if areas:
            kept = [(b, c) for b, c in kept if not overlaps(
                (b.y0, b.x0, b.y1, b.x1), areas)]
        if self.cut == CUT_BLANK:
            blank_cut_objects(image, self.boxes[patch.source], patch, kept, self.fill)
        boxes = torch.tensor([c for _, c in kept], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([b.class_id for b, _ in kept], dtype=torch.int64)
        ignore = torch.tensor(unlabelled_parts(self.boxes[patch.source], patch, kept)
                              if self.cut == CUT_IGNORE else [],
                              dtype=torch.float32).reshape(-1, 4)
        img = torch.from_numpy(image)
        if self.augment is not None and self.augment.active:
            img, both = self.augment(img, torch.cat([boxes, ignore]), rng, self.fill)
            boxes, ignore = both[:len(boxes)], both[len(boxes):]
            keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_SIDE_PX) & (
                (boxes[:, 3] - boxes[:, 1]) >= MIN_SIDE_PX)
            boxes, labels = boxes[keep], labels[keep]
            # a labelled box the zoom cut to a sliver is an object part shown: ignored too
            ignore = torch.cat([ignore, both[:len(keep)][~keep]])
            ignore = ignore[((ignore[:, 2] > ignore[:, 0]) & (ignore[:, 3] > ignore[:, 1]))]
        target = {"boxes": boxes, "labels": labels}
        if self.cut == CUT_IGNORE:
            target["ignore"] = ignore
        if self.label_areas is not None:
            inside = hidden_in_window(patch.row, patch.col, patch.size,
                                      [self.label_areas[index]])
            rs, cs = inside[0] if inside else (slice(0, 0), slice(0, 0))
            target["scored"] = torch.tensor([cs.start, rs.start, cs.stop, rs.stop],
                                            dtype=torch.float32)
        return img, target


def unlabelled_parts(boxes: list[Box], patch: Patch,
                     kept: list[tuple[Box, tuple]]) -> list[tuple[float, float, float, float]]:
    """(x0, y0, x1, y1) in patch pixels of the visible part of every box of ``boxes`` that
    ``patch`` shows but ``kept`` does not label (cut below MIN_VISIBLE, or dropped for another
    reason); boxes outside the patch give nothing."""
    s = patch.size
    ids = {id(b) for b, _ in kept}
    out = []
    for b in boxes:
        if id(b) in ids:
            continue
        x0, y0 = max(b.x0 - patch.col, 0.0), max(b.y0 - patch.row, 0.0)
        x1, y1 = min(b.x1 - patch.col, float(s)), min(b.y1 - patch.row, float(s))
        if x1 > x0 and y1 > y0:
            out.append((x0, y0, x1, y1))
    return out


def blank_cut_objects(image: np.ndarray, boxes: list[Box], patch: Patch,
                      kept: list[tuple[Box, tuple]], fill: np.ndarray) -> None:
    """Fill (in place, ``image`` float32 (C, S, S)) with the band means ``fill`` the visible
    part of every box the window cuts below MIN_VISIBLE, outside the kept boxes: an object
    shown but not labelled would teach the detector that object parts are background."""
    s = patch.size
    mask = np.zeros((s, s), bool)
    for x0, y0, x1, y1 in unlabelled_parts(boxes, patch, kept):
        mask[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = True
    if not mask.any():
        return
    for _, (x0, y0, x1, y1) in kept:
        mask[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))] = False
    image[:, mask] = fill[:, None]


def collate(batch):
    """(list of images, list of targets): detectors take lists (boxes differ per image)."""
    return [b[0] for b in batch], [b[1] for b in batch]
