"""Instance segmentation training data: polygon labels as instances, the sample plan, the
dataset of patches with one mask per object, and its augmentation.

- Every polygon label of a labeling project is one instance (a multipolygon: one instance of
  its parts). Point and line labels carry no outline: a project holding them is refused
  (:func:`refuse_points_and_lines`), before any work.
- Planning reuses the patch planner on a label raster of the instances' boxes
  (:func:`..sampling.export.write_box_labels`), so "feature patches" are those touching an
  object, and the split, feature patch percentage and background patch ratio work as for
  detection and segmentation.
- In a patch, an object's mask holds the pixels whose centre lies inside its polygon
  (``rasterio.features.rasterize``). An object cut by the patch edge keeps its visible part when
  that is at least :data:`MIN_VISIBLE` of its area (objects cut by tile edges must still be
  found); smaller slivers are ``iscrowd`` (COCO's ignore flag: in validation neither found nor
  missed; in training left out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..jobs import JobContext
from ..sampling import Patch, PatchReader, SampleSource
from ..sampling.boxes import Box
from ..sampling.windows import PatchAugment

MIN_VISIBLE = 0.3   # share of an object's area that must lie inside a patch to be learnt


@dataclass(frozen=True)
class Instance:
    """One object of a training raster: class id, shapely polygon in raster pixel coordinates
    (x right, y down) and its box."""

    class_id: int
    polygon: object
    box: Box


@dataclass
class InstanceData:
    """What Mask R-CNN trains on: per-source instances, the plan, the classes."""

    sources: list[SampleSource]        # images (labels: the box label rasters)
    objects: list[list[Instance]]      # per source
    plan: object                       # SamplePlan
    classes: list[dict]                # [{id, name, color}] without background
    config: object                     # SamplingConfig
    pool: list = field(default_factory=list)

    def object_counts(self, split: str) -> dict[int, int]:
        """Objects per class id touching the patches of ``split`` (one in two patches counts
        twice)."""
        out: dict[int, int] = {}
        for p in self.plan.split(split):
            for o in self.objects[p.source]:
                b = o.box
                if b.x1 > p.col and b.x0 < p.col + p.size and b.y1 > p.row \
                        and b.y0 < p.row + p.size:
                    out[o.class_id] = out.get(o.class_id, 0) + 1
        return dict(sorted(out.items()))

    def largest_object(self) -> float:
        """Longest box side of any object in pixels (0 when there is none)."""
        return max((max(o.box.width, o.box.height) for os_ in self.objects for o in os_),
                   default=0.0)

    def epoch_patches(self, epoch: int) -> list[Patch]:
        """Training patches of ``epoch`` (later epochs redraw the subsample from the pool)."""
        from ..sampling.plan import epoch_patches

        return epoch_patches(self.plan, self.pool, self.config, epoch)


def refuse_points_and_lines(project) -> None:
    """UserError when the labeling project holds point or line labels (instance masks need
    outlines), naming how many and the fix."""
    counts = {"points": 0, "lines": 0}
    for per_layer in project.label_counts(by_layer=True).values():
        for layer in counts:
            counts[layer] += int(per_layer.get(layer, 0))
    if counts["points"] or counts["lines"]:
        raise UserError(
            f"Instance segmentation learns each object's outline from polygon labels, but the "
            f"labeling project {Path(project.path).name} holds {counts['points']} point and "
            f"{counts['lines']} line label(s), which have no outline.",
            "Draw the objects as polygons (or move the point and line labels to another "
            "project: Object Detection and Pixel Segmentation train from them).")


def raster_instances(features, transform, width: int, height: int) -> list[Instance]:
    """Instances of polygon label features (with ``class_id`` and a GeoJSON ``geometry`` in
    the raster's CRS) on a raster of ``width`` × ``height`` px with affine ``transform``:
    polygons in pixel coordinates, those with nothing inside the raster dropped."""
    import shapely
    from shapely import affinity

    inv = ~transform
    frame = shapely.box(0, 0, width, height)
    out = []
    for f in features:
        if getattr(f, "layer", "polygons") != "polygons" or not f.geometry:
            continue
        poly = affinity.affine_transform(shapely.geometry.shape(f.geometry),
                                         [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f])
        if not poly.is_valid:
            poly = shapely.make_valid(poly)
        if poly.is_empty or not poly.intersects(frame):
            continue
        x0, y0, x1, y1 = poly.bounds
        box = Box(int(f.fid), int(f.class_id), max(x0, 0.0), max(y0, 0.0),
                  min(x1, float(width)), min(y1, float(height)))
        out.append(Instance(int(f.class_id), poly, box))
    return out


def prepare_instance_data(job, ctx: JobContext, work: Path) -> InstanceData:
    """Instances, box label rasters and the sample plan of ``job`` (a
    TrainInstanceSegmentationJob). Raises UserError for points or lines in the project, no
    class, or no polygon on a training raster."""
    import rasterio

    from ..labeling.project import LabelingProject
    from ..sampling import SamplingConfig
    from ..sampling.export import load_project_input, write_box_labels
    from ..sampling.plan import plan_training

    project = LabelingProject.open(job.project)
    refuse_points_and_lines(project)
    classes = [{"id": c.id, "name": c.name, "color": c.color}
               for c in sorted(project.classes(), key=lambda c: c.id)]
    if not classes:
        raise UserError("The labeling project has no classes.",
                        "Add classes and draw polygons with the Labeling Tool.")
    config = SamplingConfig(patch_size=job.patch_size, split=job.split, shuffle=job.shuffle,
                            seed=job.seed, feature_patch_percentage=job.feature_patch_percentage,
                            background_patch_ratio=job.background_patch_ratio,
                            pad_small_features=False)
    ctx.progress("prepare", 0, 3, "Reading labels")
    data = load_project_input(job.project, work / "label_rasters", ctx, features=True)
    objects = []
    for src, feats in zip(data.sources, data.features):
        with rasterio.open(src.image) as ds:
            objects.append(raster_instances(feats, ds.transform, ds.width, ds.height))
    if not any(objects):
        raise UserError("There is no object to learn from: no polygon label lies inside a "
                        "training raster.",
                        "Draw or import polygons over the training rasters.")
    ctx.progress("prepare", 1, 3, "Planning patches")
    box_dir = work / "box_rasters"
    box_dir.mkdir(parents=True, exist_ok=True)
    planned = [write_box_labels(s, [o.box for o in objs], box_dir / f"boxes_{i}.tif")
               for i, (s, objs) in enumerate(zip(data.sources, objects))]
    plan, pool = plan_training(planned, config, ctx, "Label more objects, lower the patch size "
                               "or raise the split.",
                               class_names={c["id"]: c["name"] for c in classes})
    images = [SampleSource(s.image, p.labels, s.role, s.name)
              for s, p in zip(data.sources, planned)]
    return InstanceData(images, objects, plan, classes, config, pool)


def patch_masks(objects: list[Instance], row: int, col: int, size: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(masks uint8 (K, size, size), class ids int64 (K,), crowd bool (K,)) of the objects
    touching the patch at ``row``, ``col``: pixels whose centre lies inside the polygon;
    ``crowd`` where less than :data:`MIN_VISIBLE` of the object lies in the patch."""
    import shapely
    from rasterio.features import rasterize
    from shapely import affinity

    frame = shapely.box(col, row, col + size, row + size)
    masks, ids, crowd = [], [], []
    for o in objects:
        b = o.box
        if b.x1 <= col or b.x0 >= col + size or b.y1 <= row or b.y0 >= row + size:
            continue
        local = affinity.translate(o.polygon, -col, -row)
        mask = rasterize([(local, 1)], out_shape=(size, size), dtype="uint8")
        if not mask.any():
            continue
        area = max(o.polygon.area, 1e-9)
        masks.append(mask)
        ids.append(o.class_id)
        crowd.append(o.polygon.intersection(frame).area / area < MIN_VISIBLE)
    if not masks:
        return (np.zeros((0, size, size), np.uint8), np.zeros(0, np.int64),
                np.zeros(0, bool))
    return np.stack(masks), np.asarray(ids, np.int64), np.asarray(crowd, bool)


def mask_boxes(masks):
    """(K, 4) float32 xyxy px boxes around the K masks (K, H, W) (torchvision's
    ``masks_to_boxes`` + 1 on the far edges: a box covers its pixels' area)."""
    import torch
    from torchvision.ops import masks_to_boxes

    if len(masks) == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    boxes = masks_to_boxes(masks.bool()).float()
    boxes[:, 2:] += 1.0
    return boxes


# -- augmentation -------------------------------------------------------------------------------
class MaskAugment(PatchAugment):
    """Random flips, 90° turns and zoom of an image patch with its masks."""

    def __call__(self, image, masks, rng: np.random.Generator, fill: np.ndarray):
        """``image``: float32 tensor (C, S, S) of raw pixels; ``masks``: uint8 (K, S, S);
        ``fill``: (C,) value of new pixels (the band means). Returns both transformed."""
        import torch
        from torch.nn import functional

        if self.flip and rng.random() < 0.5:
            image, masks = image.flip(-1), masks.flip(-1)
        if self.flip and rng.random() < 0.5:
            image, masks = image.flip(-2), masks.flip(-2)
        if self.rotation:
            k = int(rng.integers(4))
            image, masks = torch.rot90(image, k, (-2, -1)), torch.rot90(masks, k, (-2, -1))
        if self.scale:
            z = float(math.exp(rng.uniform(*np.log(self.scale_range))))
            s = image.shape[-1]
            n = max(1, int(round(s * z)))
            if n != s:
                image = functional.interpolate(image[None], size=(n, n), mode="bilinear",
                                               align_corners=False)[0]
                masks = (functional.interpolate(masks[None].float(), size=(n, n),
                                                mode="nearest")[0].to(torch.uint8)
                         if len(masks) else masks.new_zeros((0, n, n)))   # no object here
                image, masks = _crop_or_pad(image, masks, s, fill)
        return image.contiguous(), masks.contiguous()


def _crop_or_pad(image, masks, s: int, fill: np.ndarray):
    """The central ``s`` × ``s`` of a zoomed image and masks (padded with ``fill`` / 0)."""
    import torch

    n = image.shape[-1]
    if n >= s:
        o = (n - s) // 2
        return image[:, o:o + s, o:o + s], masks[:, o:o + s, o:o + s]
    o = (s - n) // 2
    out = torch.as_tensor(fill, dtype=image.dtype).view(-1, 1, 1).expand(-1, s, s).clone()
    out[:, o:o + n, o:o + n] = image
    m = torch.zeros((masks.shape[0], s, s), dtype=masks.dtype)
    m[:, o:o + n, o:o + n] = masks
    return out, m


# -- dataset ------------------------------------------------------------------------------------
class InstanceDataset:
    """Map-style dataset of patches with their objects: ``(image float32 (C, S, S) raw pixel
    values with nodata set to the band means, {"boxes": (K, 4) float32 xyxy px, "labels": (K,)
    int64, "masks": (K, S, S) uint8, "iscrowd": (K,) int64})``. ``jitter`` shifts training
    patches by up to that share of their size; every patch lies inside its raster. With
    ``drop_crowd`` (training) the ``iscrowd`` slivers are left out."""

    def __init__(self, sources: list[SampleSource], objects: list[list[Instance]],
                 patches: list[Patch], mean: list[float], augment: MaskAugment | None = None,
                 jitter: float = 0.0, seed: int = 0, drop_crowd: bool = False) -> None:
        self.reader = PatchReader(sources)
        self.objects = objects
        self.patches = list(patches)
        self.fill = np.asarray(mean, np.float32)
        self.augment, self.jitter, self.seed = augment, jitter, seed
        self.drop_crowd = drop_crowd
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, index: int):
        import torch

        patch = self.patches[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        row, col = patch.row, patch.col
        if self.jitter > 0:
            j = int(patch.size * self.jitter)
            dr, dc = (int(v) for v in rng.integers(-j, j + 1, 2))
            row, col = row + dr, col + dc
        patch = self.reader.moved_inside(patch, row, col)
        image, _ = self.reader.read_filled(patch, self.fill)
        masks, labels, crowd = patch_masks(self.objects[patch.source], patch.row, patch.col,
                                           patch.size)
        if self.drop_crowd:
            masks, labels, crowd = masks[~crowd], labels[~crowd], crowd[~crowd]
        img, m = torch.from_numpy(image), torch.from_numpy(masks)
        if self.augment is not None and self.augment.active:
            img, m = self.augment(img, m, rng, self.fill)
        keep = (m.flatten(1) > 0).any(1)
        m = m[keep]
        return img, {"boxes": mask_boxes(m), "labels": torch.from_numpy(labels)[keep],
                     "masks": m, "iscrowd": torch.from_numpy(crowd.astype(np.int64))[keep]}


def collate(batch):
    """(list of images, list of targets): Mask R-CNN takes lists (objects differ per image)."""
    return [b[0] for b in batch], [b[1] for b in batch]
