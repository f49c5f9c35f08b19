"""The model on the map while it trains (issue 20): the window read is bounded and clipped, the
extent file is read again when it changes, previews honour PREVIEW_SECONDS and their share of
the time, and every family that has a preview writes one georeferenced file per validation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from plugin.core import job_catalog  # noqa: F401  (registers every job class)
from plugin.core.families import FAMILIES, preview_function
from plugin.core.jobs import RecordingContext
from plugin.core.training import preview
from plugin.core.training.preview import (
    MAX_PIXELS,
    Boxes,
    ClassRaster,
    Previewer,
    View,
    ViewFile,
    preview_window,
    read_window,
    write_view,
)
from tests.family_models import rgba_project, train_job


def _raster(path: Path, size: int, pixel: float = 1.0, origin=(1000.0, 9000.0)) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    data = np.tile(np.arange(1, size + 1, dtype=np.uint16)[None, None, :], (2, size, 1))
    data[:, :40, :40] = 0   # nodata corner
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=2,
                       dtype="uint16", crs="EPSG:32631", nodata=0, tiled=True,
                       transform=from_origin(*origin, pixel, pixel)) as dst:
        dst.write(data)
    return path


def test_a_zoomed_out_view_of_a_large_raster_is_read_coarser_and_bounded():
    from rasterio.transform import from_origin

    t = from_origin(0.0, 100_000.0, 1.0, 1.0)          # 100 000 × 100 000 px, 10 gigapixels
    whole = preview_window(100_000, 100_000, t, View((0, 0, 100_000, 100_000), 0, 0))
    assert whole.shape[0] * whole.shape[1] <= MAX_PIXELS
    assert whole.shape[0] * whole.shape[1] > 0.9 * MAX_PIXELS   # about one megapixel
    assert whole.scale == pytest.approx(100, rel=0.01)
    # a canvas of 800 × 600 screen pixels: no more than it shows
    shown = preview_window(100_000, 100_000, t, View((0, 0, 100_000, 100_000), 800, 600))
    assert shown.shape[1] <= 800 and shown.shape[0] <= 600
    # the view reaches past the raster: the window stops at its edges, the grid stays on it
    edge = preview_window(100_000, 100_000, t, View((99_000, 99_500, 101_000, 101_000)))
    assert (edge.col, edge.row, edge.width, edge.height) == (99_000, 0, 1000, 500)
    assert edge.shape == (500, 1000) and edge.scale == 1
    assert edge.transform * (0, 0) == (99_000, 100_000)
    assert edge.transform * (1000, 500) == (100_000, 99_500)
    # a view beside the raster: nothing to preview
    assert preview_window(100_000, 100_000, t, View((-50, -50, -10, -10))) is None
    # no view: the whole raster, bounded
    assert preview_window(100_000, 100_000, t, View()).width == 100_000


def test_a_decimated_read_keeps_valid_pixels_and_georeferencing(tmp_path):
    import rasterio

    path = _raster(tmp_path / "big.tif", 2000)
    with rasterio.open(path) as ds:
        window = preview_window(ds.height, ds.width, ds.transform, View(), max_pixels=10_000)
        image, valid = read_window(ds, window, [7.0, 7.0])
    assert image.shape == (2, 100, 100) and image.dtype == np.float32
    assert window.scale == 20
    # column c of the preview shows raster column ~20 c (nearest pixel of its 20 × 20 block)
    assert abs(image[0, 50, 50] - 1000) <= 20
    assert not valid[0, 0] and image[0, 0, 0] == 7.0     # the nodata corner, filled
    assert valid[50:, 50:].all()
    assert window.transform * (100, 100) == pytest.approx((3000.0, 7000.0))


def test_the_extent_file_is_read_again_only_after_it_changed(tmp_path):
    path = tmp_path / "view.json"
    views = ViewFile(path)
    assert views.current() == View()                    # no file yet: the whole raster
    write_view(path, View((1, 2, 3, 4), 800, 600))
    assert views.current() == View((1.0, 2.0, 3.0, 4.0), 800, 600)
    assert views.current() == View((1.0, 2.0, 3.0, 4.0), 800, 600) and views.reads == 1
    write_view(path, View((5, 6, 7, 8), 400, 300))
    os.utime(path, ns=(1, 10**18))                        # a later time, whatever the clock
    assert views.current() == View((5.0, 6.0, 7.0, 8.0), 400, 300) and views.reads == 2
    path.write_text("{broken")                            # half a file: the last view stays
    os.utime(path, ns=(1, 2 * 10**18))
    assert views.current() == View((5.0, 6.0, 7.0, 8.0), 400, 300)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _task(classes=({"id": 0, "name": "background", "color": "#000000"},
                   {"id": 1, "name": "tree", "color": "#00ff00"})):
    class Task:
        mean, std, bands = [0.0, 0.0], [1.0, 1.0], 2

    Task.classes = list(classes)
    return Task()


def test_previews_honour_preview_seconds_and_a_tenth_of_the_time(tmp_path):
    clock = _Clock()
    raster = _raster(tmp_path / "r.tif", 64)
    cost = {"s": 0.0}

    def render(network, task, image, valid, window, device):
        clock.now += cost["s"]
        return ClassRaster((image[0] > 30).astype(np.uint8))

    def run(p, epochs):
        ctx, ran = RecordingContext(), []
        for epoch in range(1, epochs + 1):   # an epoch every 4 s
            if p.after_validation(None, _task(), epoch, "cpu", ctx) is not None:
                ran.append(epoch)
            clock.now += 4
        return ran, ctx

    quick = Previewer(str(raster), ViewFile(None), tmp_path / "a", render, seconds=10,
                      clock=clock)
    ran, ctx = run(quick, 7)
    assert ran == [1, 4, 7]                  # every 10 s at most
    assert [e["epoch"] for e in ctx.events if e["event"] == "artifact"] == [1, 4, 7]
    assert ctx.events[0]["style"] == "classes" and ctx.events[0]["classes"][1]["name"] == "tree"
    # only the last two files stay (the map may still draw the one before)
    assert sorted(f.name for f in (tmp_path / "a").iterdir()) == ["epoch_4.tif", "epoch_7.tif"]

    cost["s"] = 5.0                          # slow previews: at most 5 % of the time
    clock.now = 0.0
    slow = Previewer(str(raster), ViewFile(None), tmp_path / "b", render, seconds=0,
                     clock=clock)
    ran, _ = run(slow, 80)
    # the first after the first validation; then only once 5 s more stays within 5 %
    assert preview.COST_SHARE == 0.05 and ran == [1, 50, 74]
    assert slow.spent == 15 and slow.spent - 5 <= 0.05 * clock.now


def test_a_failing_preview_is_switched_off_with_one_warning(tmp_path):
    raster = _raster(tmp_path / "r.tif", 64)

    def render(*_args):
        raise RuntimeError("boom")

    p = Previewer(str(raster), ViewFile(None), tmp_path / "preview", render, seconds=0)
    ctx = RecordingContext()
    assert p.after_validation(None, _task(), 1, "cpu", ctx) is None
    assert p.after_validation(None, _task(), 2, "cpu", ctx) is None
    warnings = [e["message"] for e in ctx.events if e.get("level") == "warning"]
    assert len(warnings) == 1 and "boom" in warnings[0] and "goes on" in warnings[0]


def test_class_rasters_and_boxes_are_written_on_the_rasters_grid(tmp_path):
    import pyogrio
    import rasterio

    raster = _raster(tmp_path / "r.tif", 400, pixel=0.5)
    with rasterio.open(raster) as ds:
        view = View((1050.0, 8900.0, 1100.0, 8950.0))      # 100 × 100 px from col 100, row 100
        window = preview_window(ds.height, ds.width, ds.transform, view)
        crs = ds.crs
    classes = _task().classes
    classes_img = np.zeros((100, 100), np.uint8)
    classes_img[:, 50:] = 1
    tif = preview.write_preview(tmp_path / "p", 3, ClassRaster(classes_img), window, crs,
                                classes)
    with rasterio.open(tif) as out:
        assert out.crs == crs and out.bounds == pytest.approx((1050, 8900, 1100, 8950))
        assert out.nodata == 255 and out.colormap(1)[1] == (0, 255, 0, 255)
        assert (out.read(1) == classes_img).all()
    boxes = Boxes(np.array([[10, 20, 30, 40]], float), np.array([1]), np.array([0.9]))
    gpkg = preview.write_preview(tmp_path / "p", 3, boxes, window, crs, classes)
    info = pyogrio.read_info(gpkg, layer=preview.LAYER)
    assert info["features"] == 1
    assert tuple(info["total_bounds"]) == pytest.approx((1055, 8930, 1065, 8940))
    from pyogrio.raw import read

    _meta, _fids, _geoms, fields = read(gpkg, layer=preview.LAYER)
    assert list(fields[1]) == ["tree"] and list(fields[3]) == [3]


PREVIEWING = [f for f in FAMILIES if f.previews]


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.task)
def test_every_trainer_has_the_preview_fields_off_by_default(family, tmp_path):
    from plugin.core.jobs import job_class

    job = job_class(family.train_kind)(output_model=str(tmp_path / "m.dltmodel.safetensors"))
    assert job.preview_raster == "" and job.preview_extent_file == ""   # off: Processing, CLI
    job.preview_raster = str(tmp_path / "missing.tif")
    assert any("PREVIEW_RASTER" in p for p in job.problems())


def test_the_family_table_says_which_families_preview():
    assert {f.task for f in PREVIEWING} == {"pixel_segmentation", "object_detection", "grid",
                                            "instance_segmentation", "chip_classification"}
    assert preview_function("pixel_regression") is None
    assert all(callable(preview_function(f.task)) for f in PREVIEWING)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return rgba_project(tmp_path_factory.mktemp("preview_project"))


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.task)
def test_training_writes_a_preview_per_validation_with_its_epoch(family, project, tmp_path,
                                                                  monkeypatch):
    import rasterio

    monkeypatch.setattr(preview, "COST_SHARE", 1e9)   # tiny epochs: a preview every epoch
    raster = sorted(Path(project).parent.rglob("*.tif"))[0]
    with rasterio.open(raster) as ds:
        crs, bounds, res = ds.crs, ds.bounds, ds.res
    views = tmp_path / "view.json"   # the left half of the raster, on a large canvas
    write_view(views, View((bounds.left, bounds.bottom, (bounds.left + bounds.right) / 2,
                            bounds.top), 1000, 1000))
    job = train_job(family.task, project, tmp_path / "m.dltmodel.safetensors")
    job.epochs, job.preview_raster = 2, str(raster)
    job.preview_extent_file, job.preview_seconds = str(views), 0.0
    ctx = RecordingContext()
    result = job.run(ctx)
    shown = [e for e in ctx.events if e["event"] == "artifact" and e["name"] == "preview"]
    if not family.previews:
        assert not shown and any("no map preview" in e["message"] for e in ctx.events
                                 if e["event"] == "log")
        assert result["preview_seconds"] is None
        return
    assert [e["epoch"] for e in shown] == [1, 2]
    # the previews' own time, reported for bench/preview_cost.py: part of the training's
    assert 0 < result["preview_seconds"] < result["seconds"] + 0.05
    path = Path(shown[-1]["path"])
    assert path.parent == Path(job.resolved_log_folder()) / "preview"
    if path.suffix == ".tif":
        with rasterio.open(path) as out:
            assert out.crs == crs and out.res == pytest.approx(res)
            assert out.bounds.left == pytest.approx(bounds.left)
            assert out.bounds.right == pytest.approx((bounds.left + bounds.right) / 2, abs=res[0])
            assert set(np.unique(out.read(1))) <= {0, 1, 2, 255}
    else:
        import pyogrio

        info = pyogrio.read_info(path, layer=preview.LAYER)
        assert info["features"] > 0 or family.task == "object_detection"   # untrained: none
        if info["features"]:
            left, _b, right, _t = info["total_bounds"]
            assert left >= bounds.left - 1e-6
            assert right <= (bounds.left + bounds.right) / 2 + (32 * res[0] if family.task ==
                                                                  "grid" else 1e-6)
