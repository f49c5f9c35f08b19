"""Every CUDA path run and measured: one command, one table.

    python bench/gpu_suite.py [--device auto] [--tiny] [--only FAMILY,...] [--skip-processes]
        [--json FILE]

For every model family (``plugin.core.families``):

* training: patches (samples) per second of the family's epoch loader feeding the engine's
  ``train_batch`` (bf16 autocast and channels-last on CUDA) against the same model and step on
  one in-memory batch already on the device, at each batch size (batch 32 and 128 on a GPU);
* its classify tool, run as its job (``ClassifyPixelsJob``, ``DetectObjectsJob``,
  ``ClassifyGridJob``, ``ClassifyChipsJob``), against bare forward passes of the same engine
  over the same tiles, cells or chips on in-memory arrays: MPix/s (chips/s for chips) and the
  peak GPU memory. The rasters are ``size``² uint8 RGB GeoTIFFs (8192² on a GPU); Classify
  Pixels runs with BATCH_SIZE 0 (chosen from free GPU memory) and with fixed sizes.

Then a forced out-of-memory (Classify Pixels, Detect Objects, Classify Grid, Classify Chips and
segmentation training with a batch far too large for the memory they may use) that must end in
a clear ``UserError`` (or a smaller batch), never a traceback: on CUDA the process may use
``OOM_LIMIT_MIB`` of the GPU (``torch.cuda.set_per_process_memory_fraction``), so the
allocator's own out-of-memory error is raised; on the CPU, where nothing runs out, every module
given more than ``OOM_TINY_LIMIT`` samples at once raises ``torch.OutOfMemoryError``, which
is what the CUDA allocator raises. Last, ``dltrain run train.json --processes 1`` (torchrun,
NCCL on CUDA, gloo on the CPU, DistributedDataParallel) trains two steps.

``--tiny`` (the CPU default) uses sizes that run in seconds, so CI keeps the suite working; the
table ends with the paths this run could not exercise (no GPU, a missing library).
Ratios are ours / bare; targets (issue 22, on an H100/H200): training ≥ 0.9 at batch 128,
Classify Pixels ≥ 0.85 and ≥ 100 MPix/s (U-Net/ResNet-34, 8192²), detection and the
classifiers ≥ 0.85.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

OOM_LIMIT_MIB = 2048       # GPU memory the forced out-of-memory runs may use (CUDA)
TRAIN_TARGET = 0.9         # pipeline / bare step (issue 22, H100/H200, batch 128)
CLASSIFY_TARGET = 0.85     # classify job / bare forward passes (issue 22)
OOM_TINY_LIMIT = 4        # samples per forward beyond which the CPU stand-in raises OOM
FAMILIES = ("pixel_segmentation", "object_detection", "grid", "chip_classification")
# libraries each family's code paths import (wheels a bare CUDA machine lacks: build.py gpu-wheels)
NEEDS = {"pixel_segmentation": ("rasterio", "segmentation_models_pytorch", "pyogrio", "shapely",
                                "pyproj", "safetensors", "torchmetrics", "tensorboard"),
         "object_detection": ("rasterio", "torchvision", "pyogrio", "shapely", "safetensors",
                              "torchmetrics", "matplotlib", "tensorboard"),
         "grid": ("rasterio", "timm", "pyogrio", "shapely", "safetensors", "torchmetrics"),
         "chip_classification": ("rasterio", "timm", "pyogrio", "safetensors", "torchmetrics")}


@dataclass(frozen=True)
class Sizes:
    """Sizes of one suite run (px unless said)."""

    raster: int                  # side of the classify raster
    scene: int                   # side of the synthetic training scene
    patch: int                   # segmentation / detection training patch
    batches: tuple[int, ...]     # training batch sizes
    steps: int                   # timed training steps (after warm-up)
    rounds: int                  # alternating bare/pipeline rounds (best kept)
    encoder: str                 # U-Net encoder
    window: int                  # Classify Pixels window (the model's patch size)
    classify_batches: tuple[int, ...]   # Classify Pixels BATCH_SIZE (0: automatic)
    det_arch: str
    det_tile: int
    det_batch: int
    cell: int                    # grid cell / chip side
    cls_arch: str
    cls_batch: int               # Classify Grid / Classify Chips batch
    chips_per_class: int         # chips of each class to classify
    oom_batch: int               # "far too large" batch of the forced out-of-memory runs
    det_patch: int               # detection training patch (the largest synthetic object: 40)
    warm_jobs: bool              # run each classify job once before timing it


FULL = Sizes(raster=8192, scene=2048, patch=256, batches=(32, 128), steps=20, rounds=2,
             encoder="resnet34", window=256, classify_batches=(0, 16, 64),
             det_arch="fcos_resnet18", det_tile=512, det_batch=8, cell=224, cls_arch="resnet50",
             cls_batch=64, chips_per_class=500, oom_batch=256, det_patch=256,
             warm_jobs=True)
TINY = Sizes(raster=256, scene=256, patch=32, batches=(2,), steps=2, rounds=1,
             encoder="resnet18", window=64, classify_batches=(0, 2), det_arch="fcos_resnet18",
             det_tile=128, det_batch=2, cell=32, cls_arch="resnet18", cls_batch=8,
             chips_per_class=8, oom_batch=4 * OOM_TINY_LIMIT, det_patch=64,
             warm_jobs=False)


@dataclass
class Row:
    """One line of the table: ``ours`` and ``bare`` in ``unit``; ``ratio`` = ours / bare."""

    family: str
    path: str
    ours: float | None = None
    bare: float | None = None
    unit: str = ""
    peak_mib: float | None = None
    note: str = ""
    ok: bool = True

    @property
    def ratio(self) -> float | None:
        return self.ours / self.bare if self.ours and self.bare else None

    @property
    def target(self) -> float | None:
        """Issue 22's ratio target: 0.9 for training, 0.85 for the classify tools."""
        if self.ratio is None:
            return None
        return TRAIN_TARGET if self.path.startswith("train") else CLASSIFY_TARGET


@dataclass
class Suite:
    """What a run found: the rows and the paths it could not exercise."""

    device: str
    sizes: Sizes
    rows: list[Row] = field(default_factory=list)
    not_exercised: list[str] = field(default_factory=list)
    prepared: dict = field(default_factory=dict)   # (family, batch) → (job, task)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(f"  {row.family:<20s} {row.path:<34s} {format_row(row)}", flush=True)
        return row

    def skip(self, what: str) -> None:
        if what not in self.not_exercised:
            self.not_exercised.append(what)


# -- helpers -------------------------------------------------------------------------------------
def cuda(device: str) -> bool:
    return device.startswith("cuda")


def sync(device: str) -> None:
    import torch

    if cuda(device):
        torch.cuda.synchronize()


@contextlib.contextmanager
def peak_memory(device: str, into: dict):
    """Peak GPU memory (MiB) allocated by torch inside the block → ``into["mib"]`` (None on the
    CPU)."""
    import torch

    if cuda(device):
        sync(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if cuda(device):
        sync(device)
        into["mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        into["mib"] = None


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def missing_libraries(family: str) -> list[str]:
    return [m for m in NEEDS[family] if importlib.util.find_spec(m) is None]


def ns(**kw) -> SimpleNamespace:
    return SimpleNamespace(**kw)


# -- training: pipeline against the bare step ----------------------------------------------------
def train_segmentation(suite: Suite, folder: Path) -> None:
    import train_segmentation as bench

    s = suite.sizes
    for b in s.batches:
        args = ns(size=s.scene, patch=s.patch, steps=s.steps, rounds=s.rounds, workers=-1,
                  encoder=s.encoder, architecture="unet", device=suite.device, before=False)
        mem: dict = {}
        with peak_memory(suite.device, mem):
            _, bare, _before, pipe = bench.run(args, b)
        suite.add(Row("pixel_segmentation", f"train unet/{s.encoder} batch {b}", pipe, bare,
                      "patches/s", mem["mib"], f"patch {s.patch}"))


def train_detection(suite: Suite, folder: Path) -> None:
    import detect_objects as bench

    s = suite.sizes
    for b in s.batches:
        args = ns(architecture=s.det_arch, patch=s.det_patch, train_batch=b, steps=s.steps,
                  device=suite.device)
        mem: dict = {}
        with peak_memory(suite.device, mem):
            pipe_s, bare_s, n = bench.bench_train(folder / f"train{b}", args)
        suite.add(Row("object_detection", f"train {s.det_arch} batch {b}", n / pipe_s,
                      n / bare_s, "patches/s", mem["mib"], f"patch {s.det_patch}"))


def classifier_task(family: str, folder: Path, suite: Suite, batch: int):
    """(job, task, network, optimizer, scaler) of a grid model or chip classifier prepared on
    synthetic data (bench/train_classifier.py's data; once per batch size), a fresh network on
    the device."""
    import torch
    import train_classifier as bench

    s = suite.sizes
    args = ns(architecture=s.cls_arch, batch=batch, device=suite.device, workers=-1,
              size=s.cell)
    if (family, batch) not in suite.prepared:
        suite.prepared[family, batch] = bench.make_task(
            "grid" if family == "grid" else "chips", folder, args)
    job, task = suite.prepared[family, batch]
    network = task.build_network(None).to(suite.device)
    if cuda(suite.device):
        network = network.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3, fused=True)   # as the engine
    scaler = torch.amp.GradScaler("cuda", enabled=False)   # bf16 needs no scaling
    return job, task, network.train(), optimizer, scaler


def train_classifier(suite: Suite, folder: Path, family: str) -> None:
    import train_classifier as bench

    s = suite.sizes
    for b in s.batches:
        mem: dict = {}
        with peak_memory(suite.device, mem):
            _, task, net, opt, scaler = classifier_task(family, folder / f"{family}{b}", suite, b)
            first = next(iter(task.train_loader(0, suite.device)))
            on_device = tuple(t.to(suite.device) for t in first)
            bare = pipe = 0.0
            for _ in range(s.rounds):
                bare = max(bare, bench.measure(task, net, opt, scaler,
                                               itertools.repeat(on_device), suite.device,
                                               s.steps))
                epochs = (batch for e in itertools.count()
                          for batch in task.train_loader(e, suite.device))
                pipe = max(pipe, bench.measure(task, net, opt, scaler, epochs, suite.device,
                                               s.steps))
        suite.add(Row(family, f"train {s.cls_arch} batch {b}", pipe, bare, "samples/s",
                      mem["mib"], f"{s.cell} px"))


# -- classify tools: the job against bare forward passes ----------------------------------------
def classify_pixels(suite: Suite, folder: Path, raster: Path) -> None:
    import classify_pixels as bench

    from plugin.core.blend import auto_windows
    from plugin.core.inference import make_engine
    from plugin.core.segmentation.modelfile import load_model
    from plugin.core.tiling import tile_starts

    s = suite.sizes
    model = seg_model(folder, suite)
    predictor, _card = load_model(model)
    engine = engine_choice(suite.device)
    forward = make_engine(model, predictor, suite.device, engine)
    stride = s.window - int(round(0.25 * s.window / 2)) * 2
    n_tiles = len(tile_starts(s.raster, s.window, stride)) ** 2
    mpix = s.raster ** 2 / 1e6
    for b in s.classify_batches:
        args = ns(tile=s.window, overlap=0.25, batch=b, device=suite.device, engine=engine)
        if s.warm_jobs:
            bench.run_job(raster, model, folder / "warm.tif", args)    # caches, allocator
        mem: dict = {}
        with peak_memory(suite.device, mem):
            secs = bench.run_job(raster, model, folder / "c.tif", args)
        windows = b or auto_windows(suite.device, s.window, 3, len(bench.CLASSES))
        x = np.random.default_rng(0).random((windows, 3, s.window, s.window), np.float32) * 255
        bare = bare_forward(forward.tensor, x, n_tiles, windows, suite.device)
        suite.add(Row("pixel_segmentation",
                      f"classify_pixels BATCH_SIZE {b or f'0 (auto: {windows})'}",
                      mpix / secs, mpix / bare, "MPix/s", mem["mib"],
                      f"{forward.name}, {n_tiles} windows of {s.window}"))


def engine_choice(device: str) -> str:
    """torch everywhere: on the CPU it runs the device-side blending path CUDA uses."""
    return "torch"


def seg_model(folder: Path, suite: Suite) -> Path:
    import classify_pixels as bench

    path = folder / "seg.dltmodel.safetensors"
    if not path.exists():
        bench.make_model(path, "unet", suite.sizes.encoder, suite.sizes.window)
    return path


def detect_objects(suite: Suite, folder: Path) -> None:
    import detect_objects as bench

    s = suite.sizes
    args = ns(size=s.raster, tile=s.det_tile, batch=s.det_batch, patch=s.det_patch,
              architecture=s.det_arch, device=suite.device)
    mem: dict = {}
    with peak_memory(suite.device, mem):
        job_s, bare_s, tiles, engine = bench.bench_detect(folder, args)
    mpix = s.raster ** 2 / 1e6
    suite.add(Row("object_detection", f"detect_objects batch {s.det_batch}", mpix / job_s,
                  mpix / bare_s, "MPix/s", mem["mib"], f"{engine}, {tiles} tiles of {s.det_tile}"))


def classifier_model(family: str, folder: Path, suite: Suite) -> tuple[Path, object, dict]:
    """A model file of the family made from a prepared task (random weights): (path,
    predictor, card)."""
    from plugin.core import modelfile
    from plugin.core.classification.network import load_classifier

    b = suite.sizes.batches[0]   # the task prepared for training (any batch size would do)
    _, task, net, _, _ = classifier_task(family, folder / f"{family}{b}", suite, b)
    card = modelfile.make_card(task=task.name, classes=task.classes, bands=task.bands,
                               mean=task.mean, std=task.std, nodata=task.nodata,
                               pixel_size=task.pixel_size, crs=task.crs, dtype=task.dtype,
                               **task.card_fields())
    path = modelfile.save_model(folder / f"{family}.dltmodel.safetensors", net.cpu(), card)
    predictor, card = load_classifier(path, family)
    return path, predictor.to(suite.device).eval(), card


def bare_forward(forward, x: np.ndarray, n: int, batch: int, device: str) -> float:
    """Seconds of ``n`` samples through ``forward`` (NumPy batch → anything) in batches of
    ``batch`` from the in-memory float32 array ``x`` (batch, bands, h, w); the device is
    synchronised once after the last batch (a Classify Pixels engine's ``tensor`` leaves its
    probabilities on the device)."""
    import torch

    with torch.inference_mode():
        forward(x[:1])
        sync(device)
        t0 = time.perf_counter()
        for k in range(0, n, batch):
            forward(x[:min(batch, n - k)])
        sync(device)
    return time.perf_counter() - t0


def scores(predictor, device: str):
    """A classifier's forward as Classify Grid / Classify Chips run it: the batch copied to
    the device, the scores back to the host."""
    import torch

    return lambda a: predictor(torch.from_numpy(a).to(device)).float().cpu()


def measured_job(job, suite: Suite) -> tuple[float, dict, dict]:
    """(seconds, result, {"mib": peak GPU memory}) of one ``job.execute`` as users run it,
    after a warm-up run at full sizes (caches, allocator)."""
    from plugin.core.jobs import JobContext

    if suite.sizes.warm_jobs:
        job.execute(JobContext())
    mem: dict = {}
    with peak_memory(suite.device, mem):
        secs, result = timed(lambda: job.execute(JobContext()))
    return secs, result, mem


def classify_grid(suite: Suite, folder: Path, raster: Path) -> None:
    from plugin.core.classification.jobs import ClassifyGridJob

    s = suite.sizes
    model, predictor, card = classifier_model("grid", folder, suite)
    job = ClassifyGridJob(input=str(raster), model=str(model), output=str(folder / "g.gpkg"),
                          batch_size=s.cls_batch, device=suite.device)
    secs, result, mem = measured_job(job, suite)
    cells = (-(-s.raster // s.cell)) ** 2
    x = np.random.default_rng(0).random((s.cls_batch, 3, s.cell, s.cell), np.float32) * 255
    bare = bare_forward(scores(predictor, suite.device), x, cells, s.cls_batch, suite.device)
    mpix = s.raster ** 2 / 1e6
    suite.add(Row("grid", f"classify_grid batch {s.cls_batch}", mpix / secs, mpix / bare,
                  "MPix/s", mem["mib"], f"{cells} cells of {s.cell}"))


def classify_chips(suite: Suite, folder: Path) -> None:
    from plugin.core.classification.jobs import ClassifyChipsJob
    from plugin.core.classification.synthetic import make_chip_folder

    s = suite.sizes
    model, predictor, card = classifier_model("chip_classification", folder, suite)
    chips = folder / "to_classify"
    make_chip_folder(chips, "imagefolder", per_class=s.chips_per_class, size=s.cell, seed=5)
    job = ClassifyChipsJob(input=str(chips), model=str(model), output=str(folder / "c.csv"),
                           batch_size=s.cls_batch, device=suite.device)
    secs, result, mem = measured_job(job, suite)
    n = result["chips"]
    side = int(card["max_side"])
    x = np.random.default_rng(0).random((s.cls_batch, 3, side, side), np.float32) * 255
    bare = bare_forward(scores(predictor, suite.device), x, n, s.cls_batch, suite.device)
    suite.add(Row("chip_classification", f"classify_chips batch {s.cls_batch}", n / secs,
                  n / bare, "chips/s", mem["mib"], f"{n} chips of {s.cell} (a chips folder)"))


# -- forced out-of-memory ------------------------------------------------------------------------
@contextlib.contextmanager
def scarce_memory(device: str):
    """Inside the block a batch far too large runs out of memory: on CUDA torch may allocate
    only OOM_LIMIT_MIB; on the CPU every module given more than OOM_TINY_LIMIT samples raises
    ``torch.OutOfMemoryError`` (the CUDA allocator's error)."""
    import torch

    if cuda(device):
        sync(device)
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(OOM_LIMIT_MIB * 2**20 / total, device)
        try:
            yield
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, device)
            torch.cuda.empty_cache()
        return

    def too_many(_module, inputs):
        x = inputs[0] if inputs else None
        if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[0] > OOM_TINY_LIMIT:
            raise torch.OutOfMemoryError(f"(suite stand-in) {x.shape[0]} samples at once")

    from torch.nn.modules.module import register_module_forward_pre_hook

    handle = register_module_forward_pre_hook(too_many)
    try:
        yield
    finally:
        handle.remove()


def forced_oom(suite: Suite, folder: Path, raster: Path, jobs: dict) -> None:
    """Run each job of ``jobs`` (path → job) with too little memory; a clear UserError or a
    finished run (a smaller batch chosen) passes, anything else is a crash."""
    from plugin.core.errors import UserError
    from plugin.core.jobs import JobContext

    how = (f"GPU limited to {OOM_LIMIT_MIB} MiB" if cuda(suite.device) else
           f"CPU stand-in: OOM above {OOM_TINY_LIMIT} samples")
    for path, (family, job) in jobs.items():
        with scarce_memory(suite.device):
            try:
                job.execute(JobContext())
                note, ok = f"finished: no out-of-memory (or a smaller batch); {how}", True
            except UserError as exc:
                note, ok = f"UserError: {exc.message} | fix: {exc.fix}; {how}", True
            except Exception as exc:   # noqa: BLE001 (what the suite is here to find)
                last = traceback.format_exception(exc)[-1].strip()
                note, ok = f"CRASH {last}; {how}", False
        suite.add(Row(family, path, note=note, ok=ok))


def oom_jobs(suite: Suite, folder: Path, raster: Path, families) -> dict:
    """The forced out-of-memory cases of the selected families (path → (family, job))."""
    s, dev = suite.sizes, suite.device
    out: dict = {}
    if "pixel_segmentation" in families:
        import train_segmentation as bench

        from plugin.core.segmentation.jobs import ClassifyPixelsJob, TrainPixelSegmentationJob

        out[f"OOM classify_pixels BATCH_SIZE {s.oom_batch}"] = ("pixel_segmentation",
            ClassifyPixelsJob(input=str(raster), model=str(seg_model(folder, suite)),
                              output=str(folder / "oom.tif"), tile_size=s.window,
                              batch_size=s.oom_batch, device=dev, engine="torch"))
        out[f"OOM train BATCH_SIZE {s.oom_batch}"] = ("pixel_segmentation",
            TrainPixelSegmentationJob(
                project=bench.make_project(folder / "oom_train", s.scene), architecture="unet",
                encoder=s.encoder, patch_size=s.patch, batch_size=s.oom_batch, device=dev,
                epochs=1, steps_per_epoch=1, num_workers=0, split=100,
                background_patch_ratio=1.0,
                output_model=str(folder / "oom_train" / "m.dltmodel.safetensors")))
    if "object_detection" in families:
        from plugin.core.detection.jobs import DetectObjectsJob

        det = folder / "det.safetensors"   # made by detect_objects()
        if det.exists():
            out[f"OOM detect_objects BATCH_SIZE {s.oom_batch}"] = ("object_detection",
                DetectObjectsJob(input=str(raster), model=str(det),
                                 output=str(folder / "oom.gpkg"), tile_size=s.det_tile,
                                 batch_size=s.oom_batch, device=dev, engine="torch"))
    if "grid" in families and (folder / "grid.dltmodel.safetensors").exists():
        from plugin.core.classification.jobs import ClassifyGridJob

        out[f"OOM classify_grid BATCH_SIZE {s.oom_batch}"] = ("grid", ClassifyGridJob(
            input=str(raster), model=str(folder / "grid.dltmodel.safetensors"),
            output=str(folder / "oom_grid.gpkg"), batch_size=s.oom_batch, device=dev))
    chips = folder / "to_classify"
    if "chip_classification" in families and chips.exists():
        from plugin.core.classification.jobs import ClassifyChipsJob

        out[f"OOM classify_chips BATCH_SIZE {s.oom_batch}"] = ("chip_classification",
            ClassifyChipsJob(input=str(chips),
                             model=str(folder / "chip_classification.dltmodel.safetensors"),
                             output=str(folder / "oom_chips.csv"), batch_size=s.oom_batch,
                             device=dev))
    return out


# -- several processes: dltrain run --processes 1 ------------------------------------------------
def processes_run(suite: Suite, folder: Path) -> None:
    """``dltrain run train.json --processes 1``: torchrun, NCCL on CUDA (gloo on the CPU),
    DistributedDataParallel, two training steps."""
    import train_segmentation as bench

    s = suite.sizes
    job = {"kind": "train_pixel_segmentation", "version": 1, "params": {
        "project": bench.make_project(folder / "ddp", s.scene), "architecture": "unet",
        "encoder": s.encoder, "patch_size": s.patch, "split": 100.0, "epochs": 1,
        "batch_size": s.batches[0], "steps_per_epoch": 2, "num_workers": 0,
        "device": suite.device, "background_patch_ratio": 1.0,
        "output_model": str(folder / "ddp" / "m.dltmodel.safetensors")}}
    (folder / "ddp.json").write_text(json.dumps(job))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "plugin.cli", "run", str(folder / "ddp.json"), "--processes",
           "1", "--json"]
    secs, done = timed(lambda: subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                                              text=True, timeout=600))
    backend = "nccl" if cuda(suite.device) else "gloo"
    logs = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    distributed = any("1 processes" in str(e.get("message", "")) for e in logs)
    results = [e["result"] for e in logs if e.get("event") == "result"]
    ok = done.returncode == 0 and distributed and bool(results) and results[-1].get("steps") == 2
    note = (f"{backend}, DistributedDataParallel, {secs:.0f} s" if ok else
            f"FAILED rc {done.returncode}: " + (done.stderr.strip().splitlines() or ["?"])[-1]
            + ("" if distributed else " (did not run distributed)"))
    suite.add(Row("pixel_segmentation", "dltrain run --processes 1", note=note, ok=ok))
    if not cuda(suite.device):
        suite.skip("NCCL (dltrain run --processes 1 ran on gloo): no GPU")


# -- the whole suite -----------------------------------------------------------------------------
def make_raster(folder: Path, size: int) -> Path:
    """A ``size``² uint8 RGB tiled GeoTIFF (bench/classify_pixels.py's repeated scene)."""
    import classify_pixels as bench

    tif, _vrt = bench.make_rasters(folder, size, 512)
    return tif


def run_suite(device: str = "auto", tiny: bool | None = None, only=FAMILIES,
              processes: bool = True) -> Suite:
    """Run every selected path; returns the rows (also printed as they come)."""
    from plugin.core.environment import resolve_device

    device = resolve_device(device)
    tiny = not cuda(device) if tiny is None else tiny
    suite = Suite(device, TINY if tiny else FULL)
    if not cuda(device):
        for what in ("CUDA autocast bf16 and channels-last (training, classify)",
                     "Classify Pixels BATCH_SIZE 0 from free GPU memory (CPU default used)",
                     "CUDA-side blending, argmax and quantisation in Classify Pixels (ran the "
                     "same torch code on the CPU)",
                     "per-batch augmentation on the GPU (ran on the CPU)",
                     "peak GPU memory",
                     "a real CUDA out-of-memory (a CPU stand-in raised torch.OutOfMemoryError)"):
            suite.skip(f"{what}: no GPU")
    if tiny and cuda(device):
        suite.skip("full sizes (8192² raster, batch 32 and 128): --tiny")
    families = [f for f in only if not missing_libraries(f)]
    for f in only:
        if f not in families:
            suite.skip(f"{f}: missing {', '.join(missing_libraries(f))} "
                       "(python3 build.py gpu-wheels)")
    steps = {"pixel_segmentation": (train_segmentation, classify_pixels),
             "object_detection": (train_detection, detect_objects),
             "grid": (lambda s, f: train_classifier(s, f, "grid"), classify_grid),
             "chip_classification": (lambda s, f: train_classifier(s, f, "chip_classification"),
                                     classify_chips)}
    print(f"GPU suite on {device} ({'tiny' if tiny else 'full'} sizes)", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-suite-") as tmp:
        folder = Path(tmp)
        os.environ["XDG_CACHE_HOME"] = str(folder / "cache")   # ONNX exports stay in tmp
        raster = make_raster(folder, suite.sizes.raster)
        for fam in families:
            train, classify = steps[fam]
            for step, args in ((train, (suite, folder)),
                               (classify, (suite, folder) if fam in ("object_detection",
                                                                     "chip_classification")
                                else (suite, folder, raster))):
                guarded(suite, fam, step, args)
        guarded(suite, "all", forced_oom,
                (suite, folder, raster, oom_jobs(suite, folder, raster, families)))
        if processes and "pixel_segmentation" in families:
            guarded(suite, "pixel_segmentation", processes_run, (suite, folder))
        elif not processes:
            suite.skip("dltrain run --processes 1: --skip-processes")
    return suite


def guarded(suite: Suite, family: str, step, args) -> None:
    """Run one step of the suite; an exception becomes a failed row (the suite goes on)."""
    name = getattr(step, "__name__", "step")
    t0 = time.perf_counter()
    try:
        step(*args)
        print(f"  [{family} {name}: {time.perf_counter() - t0:.1f} s]", flush=True)
    except Exception as exc:   # noqa: BLE001 (a failure is a finding, not the suite's end)
        last = traceback.format_exception(exc)[-1].strip()
        traceback.print_exc()
        suite.add(Row(family, name, note=f"FAILED {last}", ok=False))


def format_row(row: Row) -> str:
    def num(v):
        return f"{v:10.4g}" if v is not None else f"{'':>10s}"

    ratio = f"{row.ratio:6.2f}" if row.ratio is not None else f"{'':>6s}"
    if row.target is not None:
        ratio += f" {'<' if row.ratio < row.target else '≥'}{row.target:.2f} "
    else:
        ratio += " " * 7
    peak = f"{row.peak_mib:9.0f}" if row.peak_mib is not None else f"{'':>9s}"
    return f"{num(row.ours)} {num(row.bare)} {ratio} {row.unit:<10s}{peak}  {row.note}"


def table(suite: Suite) -> str:
    """The suite's rows as one text table, then the paths not exercised."""
    head = (f"{'family':<20s} {'path':<34s} {'ours':>10s} {'bare':>10s} {'ratio':>6s} "
            f"{'target':<7s}{'unit':<10s}{'peak MiB':>9s}  note")
    lines = [f"GPU suite, device {suite.device}, "
             f"{'tiny' if suite.sizes is TINY else 'full'} sizes", head, "-" * len(head)]
    lines += [f"{r.family:<20s} {r.path:<34s} {format_row(r)}" for r in suite.rows]
    failed = [r for r in suite.rows if not r.ok]
    below = [r for r in suite.rows if r.target is not None and r.ratio < r.target]
    lines.append(f"{len(suite.rows)} rows, {len(failed)} failed, {len(below)} ratios below "
                 "target (targets hold for full sizes on an H100/H200)")
    lines.append("Not exercised:" + ("".join(f"\n  - {w}" for w in suite.not_exercised)
                                     or " none"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tiny", action="store_true", default=None,
                    help="CPU-sized run in seconds (default on a machine without CUDA)")
    ap.add_argument("--only", default=",".join(FAMILIES),
                    help="families, comma-separated: " + ", ".join(FAMILIES))
    ap.add_argument("--skip-processes", action="store_true",
                    help="leave out the dltrain run --processes 1 run")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    only = [f for f in args.only.split(",") if f]
    unknown = sorted(set(only) - set(FAMILIES))
    if unknown:
        ap.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
    suite = run_suite(args.device, args.tiny, only, not args.skip_processes)
    text = table(suite)
    print("\n" + text)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"device": suite.device, "sizes": asdict(suite.sizes),
             "rows": [{**asdict(r), "ratio": r.ratio} for r in suite.rows],
             "not_exercised": suite.not_exercised}, indent=1))
    return 1 if any(not r.ok for r in suite.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
