"""Suggest Areas to Label (active learning): where a trained model is least sure, for every family
whose row in the family table ``suggests``.

Candidate windows are the squares of the model's window size (its patch, grid cell or chip, from
the family's ``suggest.window_size(card)``) laid edge to edge over each raster of a labeling
project, leaving out:

- rasters whose role is ``validation``, and the validation areas the model file records
  (``card["validation_areas"]``: ``{raster path: [[xmin, ymin, xmax, ymax], …]}`` in the
  raster's CRS), so validation figures stay honest from one round to the next;
- windows overlapping a label (any layer; sharing an edge is not overlapping) or a suggestion the
  user skipped, and windows with less than :data:`MIN_VALID` valid pixels.

At most :data:`MAX_CANDIDATES` windows are scored (a seeded random subset beyond that); the
family's ``suggest.uncertainty(predictor, card, batch, valid)`` gives each a score in [0, 1]
(1: the model cannot tell), its most likely class and a reason. The top COUNT are picked greedily
for diversity (uncertainty sampling with a diversity rule, as in Settles 2009, "Active Learning
Literature Survey", §6.1 and Brinker 2003): no two suggestions overlap, each earlier pick that a
candidate touches (shares an edge or a corner with) weighs it down by :data:`NEIGHBOUR`, and
each pick from a raster or of a class already picked weighs the next ones down by
:data:`SPREAD`, so suggestions spread over rasters and classes without the whole neighbourhood
of an uncertain place being ruled out. A share :data:`EXPLORE` of the picks (every fourth) is
drawn at random among the windows still allowed instead: a model trained on a few labels is
confidently wrong in places its uncertainty never points to, and mixing random picks into
uncertainty sampling finds them (Osugi, Kim & Scott 2005, "Balancing Exploration and
Exploitation: A New Algorithm for Active Machine Learning", ICDM; with very few labels, picks
that represent the data beat the most uncertain ones: Hacohen, Dekel & Weinshall 2022, "Active
Learning on a Budget: Opposite Strategies Suit High and Low Budgets", ICML).

The suggestions are the layer ``label_suggestions`` of the project (polygons in the project's
CRS): rank, score, reason, raster, class, status (open / done / skipped), model. A new run
replaces the open suggestions and keeps the done and skipped ones (they are the user's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from .errors import UserError
from .job_fields import MODEL_FILTER, device_field
from .jobs import Job, JobContext, register_job
from .params import spec

LAYER = "label_suggestions"
STATUSES = ("open", "done", "skipped")
#: Share of a window's pixels that must be valid (not nodata) for it to be suggested.
MIN_VALID = 0.5
#: Windows scored at most per run (a seeded random subset of the candidates beyond that): about
#: a minute on a CPU for a ResNet-18 U-Net on 128² windows.
MAX_CANDIDATES = 2000
#: Weight of each earlier pick from the same raster, and of the same class, on a candidate's
#: score while picking (0.8: a second pick in a raster needs a score 25 % higher to win).
SPREAD = 0.8
#: Weight of each earlier pick touching a candidate (an edge or a corner in common) on its score
#: while picking (0.5: a neighbour of a pick needs twice the score of a window further away).
NEIGHBOUR = 0.5
#: Share of the picks drawn at random among the windows still allowed (every fourth pick; see
#: the module text).
EXPLORE = 0.25
BATCH = 16
#: Objects scored below this share of the score threshold are not counted (background).
OBJECT_FLOOR = 0.25


@register_job
@dataclass
class SuggestLabelsJob(Job):
    """Score windows of a labeling project's rasters by a trained model's uncertainty and write
    the most useful places to label next as the project's layer ``label_suggestions``."""

    kind: ClassVar[str] = "suggest_labels"
    title: ClassVar[str] = "Suggest Areas to Label"
    group: ClassVar[str] = "Tools"
    runner: ClassVar[str] = "suggest_labels:suggest_labels"
    progress_phases: ClassVar[tuple[tuple[str, float], ...]] = (("windows", 0.1),
                                                                ("score", 0.9))

    project: str = spec("", "PROJECT", "Labeling project", "project_in",
                        help="The labeling project whose rasters are searched; the suggestions "
                             "are written into it as the layer label_suggestions.")
    model: str = spec("", "MODEL", "Model", "model_in", file_filter=MODEL_FILTER,
                      help="A trained model of the project's classes (pixel segmentation, "
                           "object detection, grid model or chip classifier).")
    count: int = spec(20, "COUNT", "Number of suggestions", "int", minimum=1, maximum=1000,
                      help="How many places to suggest (the most uncertain, spread out).")
    window_size: int = spec(0, "WINDOW_SIZE", "Window size (px, 0 = the model's)", "int",
                            minimum=0, maximum=8192, advanced=True,
                            help="Side of each suggested square in pixels; automatic: the "
                                 "model's patch, grid cell or chip size.")
    seed: int = spec(0, "SEED", "Random seed", "int", minimum=0, advanced=True,
                     help="Seeds the subset of windows scored when there are more than "
                          f"{MAX_CANDIDATES}.")
    device: str = device_field("scoring")

    def problems(self) -> list[str]:
        """The project and model must exist (each a sentence with its fix)."""
        out = super().problems()
        if not self.project:
            out.append("Labeling project (PROJECT) is required: choose the project to label.")
        elif not Path(self.project).is_file():
            out.append(f"The labeling project {self.project} does not exist: check PROJECT.")
        if not self.model:
            out.append("Model (MODEL) is required: choose a trained model.")
        elif not Path(self.model).is_file():
            out.append(f"The model {self.model} does not exist: check MODEL.")
        return out


@dataclass
class Window:
    """A candidate: raster index, pixel row/column of its top-left corner, side (px), its
    polygon's bounds in the raster's CRS (``crs``, WKT), and after scoring its score, class id
    and reason."""

    raster: int
    row: int
    col: int
    size: int
    bounds: tuple[float, float, float, float]
    score: float = 0.0
    class_id: int = 0
    reason: str = ""
    crs: str = ""


def suggest_labels(job: SuggestLabelsJob, ctx: JobContext) -> dict:
    """Run :class:`SuggestLabelsJob` (see the module text); returns the layer's path and the
    suggestions written. UserError for a model of a family that cannot suggest, a project
    without rasters to search, or a raster whose bands do not fit the model."""
    from .families import load_function, suggest_module, suggesting_titles
    from .labeling.project import LabelingProject
    from .modelfile import read_model_card
    from .training.runtime import resolve_device

    card = read_model_card(job.model)
    hook = suggest_module(card["task"])
    if hook is None:
        raise UserError(f"Models of this family ({card['task']}) cannot suggest areas to label.",
                        "Use a model of one of: " + ", ".join(suggesting_titles()) + ".")
    project = LabelingProject.open(job.project)
    rasters = [r for r in project.rasters() if r.role != "validation"]
    if not rasters:
        raise UserError("The labeling project has no raster to search: all are validation "
                        "rasters or there are none.",
                        "Add a raster to the project, or set a raster's role to auto or train.")
    size = job.window_size or int(hook.window_size(card))
    kept = read_suggestions(job.project)
    skipped = [s for s in kept if s["status"] == "skipped"]
    kept = [s for s in kept if s["status"] in ("done", "skipped")]
    predictor, card = load_function(card["task"], job.model)(job.model, card)
    device = resolve_device(job.device)
    predictor = predictor.to(device)
    windows, paths = [], []
    for i, raster in enumerate(rasters):
        ctx.progress("windows", i, len(rasters), f"raster {raster.name}")
        mine = [_bounds_in(s["bounds"], project.crs, _raster_crs(raster.path))
                for s in skipped if s["raster"] == raster.path]
        windows += candidate_windows(i, raster, project, card, size, mine, ctx)
        paths.append(raster.path)
    if not windows:
        raise UserError("No window is left to suggest: every part of the rasters is labelled, "
                        "in a validation area, or nodata.",
                        "Add rasters to the project, or train and validate on what you have.")
    if len(windows) > MAX_CANDIDATES:
        pick = np.random.default_rng(job.seed).choice(len(windows), MAX_CANDIDATES,
                                                      replace=False)
        windows = [windows[i] for i in sorted(pick)]
    score_windows(windows, paths, predictor, card, hook, device, ctx)
    chosen = pick_diverse(windows, job.count, job.seed)
    names = {int(c["id"]): c["name"] for c in card["classes"]}
    new = [{"bounds": w.bounds, "rank": k + 1, "score": round(w.score, 4), "reason": w.reason,
            "raster": paths[w.raster], "class": names.get(w.class_id, str(w.class_id)),
            "status": "open", "model": str(job.model),
            "crs": w.crs} for k, w in enumerate(chosen)]
    if len(new) < job.count:
        ctx.log(f"Only {len(new)} of the {job.count} suggestions asked for fit: suggestions "
                "never overlap each other, labels or validation areas.", "warning")
    path = write_suggestions(job.project, project.crs, kept, new)
    ctx.artifact("suggestions", f"{path}|layername={LAYER}")
    ctx.log(f"{len(new)} suggestions written to the layer {LAYER} of {Path(path).name} "
            f"(scored {len(windows)} windows of {size} px)"
            + (f"; {len(kept)} done or skipped kept" if kept else "") + ".")
    return {"output": f"{path}|layername={LAYER}", "suggestions": len(new),
            "windows_scored": len(windows), "window_size": size,
            "top": [{k: s[k] for k in ("rank", "score", "reason", "raster", "class")}
                    for s in new[:5]]}


def _bounds_in(bounds, src_crs: str, dst_crs: str) -> tuple:
    """``bounds`` (xmin, ymin, xmax, ymax) in ``src_crs`` as bounds in ``dst_crs``."""
    if not src_crs or not dst_crs:
        return tuple(bounds)
    from pyproj import CRS
    from pyproj.transformer import Transformer

    if CRS.from_user_input(src_crs).equals(CRS.from_user_input(dst_crs)):
        return tuple(bounds)
    return Transformer.from_crs(src_crs, dst_crs, always_xy=True).transform_bounds(*bounds)


def _raster_crs(path: str) -> str:
    import rasterio

    with rasterio.open(path) as src:
        return src.crs.to_wkt() if src.crs else ""


def candidate_windows(index: int, raster, project, card: dict, size: int,
                      skipped: list, ctx: JobContext) -> list[Window]:
    """Windows of ``size`` px laid edge to edge over ``raster`` (a project raster), without the
    ones touching a label, a validation area of ``card`` or a ``skipped`` suggestion's bounds
    (in the raster's CRS), or holding less than :data:`MIN_VALID` valid pixels. Checks the
    raster against the card first (:func:`.raster_input.check_input`)."""
    from shapely import STRtree, box
    from shapely.geometry import shape

    from .raster_input import check_input, open_raster

    with open_raster(raster.path, f"raster {raster.name}") as src:
        check_input(src, card, ctx.log)
        crs = src.crs.to_wkt() if src.crs else ""
        taken = [shape(f.geometry).buffer(0) if f.geometry["type"].endswith("Polygon")
                 else shape(f.geometry) for f in project.features_for(raster)]
        areas = (card.get("validation_areas") or {}).get(raster.path, [])
        taken += [box(*b) for b in areas] + [box(*b) for b in skipped]
        tree = STRtree(taken) if taken else None
        rows, cols = math.ceil(src.height / size), math.ceil(src.width / size)
        out = []
        for r in range(rows):
            for c in range(cols):
                # the last row and column end flush with the raster (as tiles do)
                r0 = min(r * size, max(src.height - size, 0))
                c0 = min(c * size, max(src.width - size, 0))
                x0, y1 = src.transform * (c0, r0)
                x1, y0 = src.transform * (c0 + size, r0 + size)
                bounds = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
                if tree is not None and any(_overlaps(taken[i], box(*bounds))
                                            for i in tree.query(box(*bounds), "intersects")):
                    continue
                out.append(Window(index, r0, c0, size, bounds, crs=crs))
    return out


def _overlaps(geometry, window) -> bool:
    """Whether ``geometry`` covers part of ``window``'s inside: an area of it for polygons
    (a polygon that only shares an edge does not), any inside point for points and lines."""
    if geometry.area > 0:
        return geometry.intersection(window).area > 1e-9 * window.area
    return geometry.intersects(window) and not geometry.touches(window)


def score_windows(windows: list[Window], paths: list[str], predictor, card: dict, hook,
                  device: str, ctx: JobContext) -> None:
    """Fill each window's score, class and reason with the family's ``uncertainty``, reading
    the windows as the classify tools read tiles (:func:`.tiling.read_tile`: card band means
    where invalid, the card's input scaling)."""
    import torch

    from .raster_input import input_scaling
    from .tiling import read_tile

    fill = np.asarray(card["mean"], np.float32)[:, None, None]
    by_raster: dict[int, list[Window]] = {}
    for w in windows:
        by_raster.setdefault(w.raster, []).append(w)
    done = 0
    for index, group in by_raster.items():
        import rasterio

        with rasterio.open(paths[index]) as src:
            scale = input_scaling(src, card)[:2]
            for k in range(0, len(group), BATCH):
                ctx.check_cancelled()
                part = group[k:k + BATCH]
                tiles = [read_tile(src, w.row, w.col, w.size, w.size, fill, scale) for w in part]
                batch = np.stack([t[0] for t in tiles]).astype(np.float32)
                valid = np.stack([t[1] for t in tiles])
                with torch.no_grad():
                    scores, classes, reasons = hook.uncertainty(predictor, card, batch, valid,
                                                                device)
                for w, s, c, why, ok in zip(part, scores, classes, reasons, valid):
                    w.score, w.class_id, w.reason = float(s), int(c), why
                    if ok.mean() < MIN_VALID:    # mostly nodata: never suggested
                        w.score = -1.0
                done += len(part)
                ctx.progress("score", done, len(windows), "scoring windows")


def pick_diverse(windows: list[Window], count: int, seed: int = 0) -> list[Window]:
    """Up to ``count`` windows of ``windows`` (scored; a score below 0 is never picked), none
    overlapping another. Greedy: each pick is the window of the largest weighted score, the score
    times :data:`NEIGHBOUR` per earlier pick it touches and :data:`SPREAD` per earlier pick from
    its raster and per earlier pick of its class (ties go to the earlier window: raster order,
    then row, then column); picks number 4, 8, … (a share :data:`EXPLORE`) are drawn at random
    with ``seed`` among the windows still allowed instead (their reason says so). See the module
    text for the sources."""
    rng = np.random.default_rng(seed)
    left = [w for w in windows if w.score >= 0]
    picked: list[Window] = []
    per_raster: dict[int, int] = {}
    per_class: dict[int, int] = {}
    while left and len(picked) < count:
        def weight(w: Window) -> float:
            near = sum(_touch(w, p) for p in picked)
            return w.score * NEIGHBOUR ** near * SPREAD ** (per_raster.get(w.raster, 0)
                                                           + per_class.get(w.class_id, 0))

        n = len(picked)
        if math.floor((n + 1) * EXPLORE) > math.floor(n * EXPLORE):
            best = int(rng.integers(len(left)))
            left[best].reason = "picked at random (one in " \
                f"{round(1 / EXPLORE)}, to explore); " + left[best].reason
        else:
            best = max(range(len(left)), key=lambda i: (weight(left[i]), -i))
        w = left.pop(best)
        picked.append(w)
        per_raster[w.raster] = per_raster.get(w.raster, 0) + 1
        per_class[w.class_id] = per_class.get(w.class_id, 0) + 1
        left = [o for o in left if not _overlap(o, w)]
    return picked


def _touch(a: Window, b: Window) -> bool:
    """Windows in one CRS whose squares overlap or share an edge or a corner (rasters side by
    side included)."""
    return (a.crs == b.crs and a.bounds[0] <= b.bounds[2] and b.bounds[0] <= a.bounds[2]
            and a.bounds[1] <= b.bounds[3] and b.bounds[1] <= a.bounds[3])


def _overlap(a: Window, b: Window) -> bool:
    """Windows in one CRS whose squares have inside points in common (sharing an edge or a
    corner is not overlapping)."""
    return (a.crs == b.crs and a.bounds[0] < b.bounds[2] and b.bounds[0] < a.bounds[2]
            and a.bounds[1] < b.bounds[3] and b.bounds[1] < a.bounds[3])


def objects_uncertainty(outputs: list[dict], card: dict
                        ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Window scores of the object families (detection, instance segmentation) from their
    torchvision outputs (per window ``{"scores": (K,), "labels": (K,)}``): each object scored
    near the card's ``score_threshold`` t (what the apply tools keep by default) weighs
    ``1 − |s − t| / max(t, 1 − t)`` (1 at the threshold; objects under :data:`OBJECT_FLOOR`·t
    are background and not counted), and the window's score is ``1 − exp(−Σ weights)`` in
    [0, 1): several borderline objects count more than one (least confidence per detection,
    summed over the image as in Brust et al. 2019, "Active Learning for Deep Object
    Detection"). Returns (scores (N,), class id of the most borderline object (0: none),
    reasons)."""
    thr = float(card.get("score_threshold") or 0.5)
    names = {int(c["id"]): c["name"] for c in card["classes"]}
    scores, classes, reasons = [], [], []
    for out in outputs:
        s = out["scores"].float().cpu().numpy()
        labels = out["labels"].cpu().numpy()
        keep = s >= OBJECT_FLOOR * thr
        s, labels = s[keep], labels[keep]
        weight = np.clip(1 - np.abs(s - thr) / max(thr, 1 - thr), 0, 1)
        scores.append(1 - np.exp(-float(weight.sum())))
        if len(s):
            k = int(weight.argmax())
            classes.append(int(labels[k]))
            reasons.append(f"{int((weight > 0.5).sum())} object(s) scored near the threshold "
                           f"{thr:.2f} (closest: {names.get(int(labels[k]), labels[k])} "
                           f"{s[k]:.2f})")
        else:
            classes.append(0)
            reasons.append("no object near the threshold")
    return np.asarray(scores), np.asarray(classes), reasons


def read_suggestions(project_path: str) -> list[dict]:
    """The rows of the project's ``label_suggestions`` layer (bounds in the layer's CRS, rank,
    score, reason, raster, class, status, model); [] when there is none."""
    import pyogrio

    try:
        layers = {name for name, _ in pyogrio.list_layers(project_path)}
    except Exception:   # noqa: BLE001 - an unreadable project is reported by the open before
        return []
    if LAYER not in layers:
        return []
    from shapely import from_wkb

    meta, _fids, geoms, values = pyogrio.raw.read(project_path, layer=LAYER)
    fields = list(meta["fields"])
    out = []
    for i, wkb in enumerate(geoms):
        row = {name: values[k][i] for k, name in enumerate(fields)}
        row["bounds"] = from_wkb(wkb).bounds if wkb is not None else (0, 0, 0, 0)
        row["status"] = str(row.get("status") or "open")
        out.append(row)
    return out


def write_suggestions(project_path: str, project_crs: str, kept: list[dict],
                      new: list[dict]) -> str:
    """Write ``kept`` rows (as read) and ``new`` suggestions (bounds in their raster's CRS,
    ``crs``) as the project's layer, polygons in the project CRS; other layers are untouched
    (:func:`.vector_output.write_vector_layer`)."""
    from pyproj import CRS, Transformer
    from shapely import box, to_wkb
    from shapely.ops import transform

    from .vector_output import write_vector_layer

    target = CRS.from_user_input(project_crs)
    geoms = [box(*s["bounds"]) for s in kept]
    for s in new:
        g = box(*s["bounds"])
        if s["crs"] and not CRS.from_user_input(s["crs"]).equals(target):
            g = transform(Transformer.from_crs(s["crs"], target, always_xy=True).transform, g)
        geoms.append(g)
    rows = kept + new
    fields = {
        "rank": np.array([int(r.get("rank") or 0) for r in rows], np.int32),
        "score": np.array([float(r.get("score") or 0) for r in rows], np.float64),
        "reason": np.array([str(r.get("reason") or "") for r in rows], object),
        "raster": np.array([str(r.get("raster") or "") for r in rows], object),
        "class": np.array([str(r.get("class") or "") for r in rows], object),
        "status": np.array([str(r.get("status") or "open") for r in rows], object),
        "model": np.array([str(r.get("model") or "") for r in rows], object),
    }
    write_vector_layer(project_path, LAYER, [to_wkb(g) for g in geoms], fields,
                       target.to_wkt(), "Polygon")
    return project_path
