"""Classify Pixels: output grid, nodata, colours, probabilities, polygons, checks, engines."""

from __future__ import annotations

import numpy as np
import pytest

from plugin.core import modelfile
from plugin.core.errors import JobCancelled, UserError
from plugin.core.inference import OrtEngine, TorchEngine
from plugin.core.jobs import RecordingContext
from plugin.core.segmentation import export as segexport
from plugin.core.segmentation import modelfile as segmodel
from plugin.core.segmentation.jobs import ClassifyPixelsJob
from plugin.core.segmentation.predict import predict_raster
from plugin.core.tiling import tile_starts

CLASSES = [{"id": 0, "name": "background", "color": "#000000"},
           {"id": 1, "name": "bright", "color": "#ff0000"},
           {"id": 2, "name": "dark", "color": "#0000ff"}]


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path, monkeypatch):
    """ONNX exports for the CPU engine are cached under the test's folder, not in ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny U-Net with random weights (spatially varying output), 3 bands, 3 classes."""
    import torch

    from plugin.core.segmentation.network import build_network

    folder = tmp_path_factory.mktemp("cls_model")
    torch.manual_seed(1)
    net = build_network("unet", "resnet18", 3, 3)
    card = modelfile.make_card(task="pixel_segmentation",
                               architecture="unet", encoder="resnet18", classes=CLASSES,
                               bands=3, mean=[100.0] * 3, std=[50.0] * 3, nodata=0,
                               patch_size=64, pixel_size=(0.5, 0.5), crs="EPSG:32631")
    path = folder / "m.dltmodel.safetensors"
    modelfile.save_model(path, net, card)
    return path


@pytest.fixture
def scene(make_synthetic):
    return make_synthetic("cls", size=200, bands=3, seed=2, nodata=0)


def run(job: ClassifyPixelsJob) -> tuple[dict, RecordingContext]:
    assert job.problems() == []
    ctx = RecordingContext()
    return job.run(ctx), ctx


def test_outputs_share_the_input_grid_and_keep_nodata(tmp_path, model, scene):
    import rasterio

    out, prob, vec = tmp_path / "c.tif", tmp_path / "p.tif", tmp_path / "v.gpkg"
    result, ctx = run(ClassifyPixelsJob(input=str(scene.raster), model=str(model),
                                        output=str(out), output_probabilities=str(prob),
                                        output_vector=str(vec), tile_size=64, overlap=0.25,
                                        device="cpu"))
    with rasterio.open(scene.raster) as src, rasterio.open(out) as cls, \
            rasterio.open(prob) as pr:
        assert (cls.width, cls.height, cls.transform, cls.crs) == \
            (src.width, src.height, src.transform, src.crs)
        assert (pr.width, pr.height, pr.transform, pr.count) == \
            (src.width, src.height, src.transform, 3)
        image, classes, probs = src.read(), cls.read(1), pr.read()
        assert cls.nodata == 255 and cls.colormap(1)[1][:3] == (255, 0, 0)
        assert cls.profile["compress"] == "deflate"
    nodata = (image == 0).all(axis=0)
    assert nodata[:, -6:].all()
    assert (classes[nodata] == 255).all() and (classes[~nodata] < 3).all()
    assert (probs[:, nodata] == 0).all()
    total = probs[:, ~nodata].astype(int).sum(0)
    assert np.abs(total - 255).max() <= 2          # probabilities sum to one
    top2 = np.sort(probs[:, ~nodata].astype(int), axis=0)[-2:]
    clear = top2[1] - top2[0] > 1                  # not a tie after rounding to uint8
    assert clear.sum() > 1000
    assert np.array_equal(probs[:, ~nodata].argmax(0)[clear], classes[~nodata][clear])
    assert result["nodata_pixels"] == nodata.sum()
    assert any(e["event"] == "progress" and e["phase"] == "tile" for e in ctx.events)
    assert not list(tmp_path.glob(".*tmp*"))


def test_polygons_with_class_names_area_and_minimum(tmp_path, model, scene):
    import rasterio
    from osgeo import ogr

    out, vec = tmp_path / "c.tif", tmp_path / "v.gpkg"
    result, _ = run(ClassifyPixelsJob(input=str(scene.raster), model=str(model), output=str(out),
                                      output_vector=str(vec), tile_size=64, device="cpu",
                                      min_pixels=0))
    with rasterio.open(out) as ds:
        classes = ds.read(1)
    ds = ogr.Open(str(vec))
    layer = ds.GetLayer(0)
    feats = [(f.GetField("class_id"), f.GetField("class_name"), f.GetField("area"))
             for f in layer]
    assert feats and result["polygons"] == len(feats)
    assert {n for _, n, _ in feats} <= {"bright", "dark"}
    for cid in (1, 2):   # polygon areas add up to the class pixels × 0.25 m²
        area = sum(a for c, _, a in feats if c == cid)
        assert area == pytest.approx((classes == cid).sum() * 0.25)
    ds = None
    singles = sum(1 for *_, a in feats if a == pytest.approx(0.25))
    assert singles  # one-pixel speckle, which the default minimum size (4 px) leaves out:
    run(ClassifyPixelsJob(input=str(scene.raster), model=str(model), output=str(out),
                          output_vector=str(vec), tile_size=64, device="cpu"))
    kept_ds = ogr.Open(str(vec))
    kept = [f.GetField("area") for f in kept_ds.GetLayer(0)]
    kept_ds = None
    assert kept and min(kept) >= 4 * 0.25 and len(kept) <= len(feats) - singles
    big = max(a for *_, a in feats)
    run(ClassifyPixelsJob(input=str(scene.raster), model=str(model), output=str(out),
                          output_vector=str(vec), min_area=big, tile_size=64, device="cpu"))
    layer_ds = ogr.Open(str(vec))
    areas = [f.GetField("area") for f in layer_ds.GetLayer(0)]
    assert areas and min(areas) >= big


def test_band_count_and_pixel_size_checks(tmp_path, model, make_synthetic):
    four = make_synthetic("four", size=64, bands=4)
    with pytest.raises(UserError, match="4 band"):
        run(ClassifyPixelsJob(input=str(four.raster), model=str(model),
                              output=str(tmp_path / "x.tif"), device="cpu"))
    assert not (tmp_path / "x.tif").exists()
    coarse = make_synthetic("coarse", size=64, bands=3, pixel_size=2.0)
    _, ctx = run(ClassifyPixelsJob(input=str(coarse.raster), model=str(model),
                                   output=str(tmp_path / "y.tif"), device="cpu"))
    assert any(e["event"] == "log" and e["level"] == "warning" and "pixel size" in e["message"]
               for e in ctx.events)
    with pytest.raises(UserError, match="not a Deep Learning Trainer model"):
        ClassifyPixelsJob(input=str(coarse.raster), model=str(coarse.raster),
                          output=str(tmp_path / "z.tif"), device="cpu").run(RecordingContext())


def test_onnxruntime_and_torch_agree_and_tta(tmp_path, model, scene):
    import rasterio

    predictor, card = segmodel.load_model(model)
    onnx_path = segexport.export_onnx(model, tmp_path / "m.onnx")
    maps = {}
    for name, engine in (("torch", TorchEngine(predictor, "cpu")), ("ort", OrtEngine(onnx_path))):
        for tta in (False, True):
            probs = np.zeros((3, scene.height, scene.width), np.float32)

            def on_rows(r0, p, cls, valid, probs=probs):
                probs[:, r0:r0 + p.shape[1]] = p

            with rasterio.open(scene.raster) as src:
                predict_raster(src, engine, 3, card["mean"], 96, 0.5, 3, tta, on_rows)
            maps[name, tta] = probs
    np.testing.assert_allclose(maps["torch", False], maps["ort", False], atol=1e-4)
    np.testing.assert_allclose(maps["torch", True], maps["ort", True], atol=1e-4)
    assert np.abs(maps["torch", True] - maps["torch", False]).max() > 1e-3


def test_cancel_leaves_no_partial_output(tmp_path, model, scene):
    class Cancelling(RecordingContext):
        def emit(self, event):
            super().emit(event)
            if event["event"] == "progress" and event["phase"] == "tile":
                self.cancel()

    out = tmp_path / "c.tif"
    job = ClassifyPixelsJob(input=str(scene.raster), model=str(model), output=str(out),
                            tile_size=64, batch_size=1, device="cpu")
    with pytest.raises(JobCancelled):
        job.run(Cancelling())
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))


def test_tile_starts_cover_the_raster():
    assert tile_starts(100, 128, 96) == [0]
    assert tile_starts(256, 64, 48) == [0, 48, 96, 144, 192]
    s = tile_starts(1000, 256, 192)
    assert s[-1] == 1000 - 256 and all(b - a <= 192 for a, b in zip(s, s[1:]))


def test_tiles_entirely_nodata_are_not_predicted(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    path = tmp_path / "half.tif"
    data = np.full((2, 128, 256), 7, np.uint16)
    data[:, :, :128] = 0                        # the left half is nodata
    with rasterio.open(path, "w", driver="GTiff", width=256, height=128, count=2,
                       dtype="uint16", crs="EPSG:32631", nodata=0,
                       transform=from_origin(0, 0, 1, 1)) as dst:
        dst.write(data)
    seen = []

    def engine(x):
        seen.append(len(x))
        out = np.zeros((len(x), 2, x.shape[2], x.shape[3]), np.float32)
        out[:, 1] = 1.0
        return out

    classes = np.zeros((128, 256), np.uint8)

    def on_rows(r0, p, cls, valid):
        classes[r0:r0 + cls.shape[0]] = cls

    with rasterio.open(path) as src:
        stats = predict_raster(src, engine, 2, [7.0, 7.0], 64, 0.0, 3, False, on_rows)
    assert stats["tiles"] == 8 and sum(seen) == 4 and max(seen) == 3   # batches span rows
    assert (classes[:, :128] == 255).all() and (classes[:, 128:] == 1).all()
