"""Classify Pixels' pipeline pieces: the device-side blending band against the NumPy one, the
reader threads and the writer thread (order, bounded queues, errors, cancel), the batch chosen
from free GPU memory. Everything runs on the CPU (the torch band on the CPU device)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from plugin.core.blend import CLASS_NODATA, NumpyBand, TorchBand, window_1d, windows_for_memory
from plugin.core.errors import JobCancelled
from plugin.core.inference import TorchEngine
from plugin.core.tile_io import BackgroundWriter, OrderedReader
from plugin.core.tiled_predict import predict_raster


def _pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate()
            if t.name.startswith(("tile-reader", "tile-writer"))]


@pytest.mark.parametrize("probs", ["float", "uint8", None])
def test_device_band_equals_numpy_band(probs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    C, th, tw, W = 4, 32, 32, 80
    win = np.outer(window_1d(th, True), window_1d(tw, True))
    a, b = NumpyBand(C, th, W, win, probs), TorchBand(C, th, W, win, probs, "cpu")
    off = rng.random((20, W)) < 0.1
    got = {"numpy": [], "torch": []}
    for step in range(3):
        for c0, h, w in ((0, 32, 32), (24, 32, 32), (48, 32, 32), (64, 20, 16)):
            p = rng.random((C, th, tw), dtype=np.float32)
            p /= p.sum(0)
            valid = rng.random((th, tw)) > 0.2
            a.add(p, c0, h, w, valid)
            b.add(torch.from_numpy(p), c0, h, w, valid)
        for name, band in (("numpy", a), ("torch", b)):
            got[name].append(band.take(step * 20, 20, off if step == 1 else None)())
    for r_np, r_t in zip(got["numpy"], got["torch"]):
        assert r_np.r0 == r_t.r0
        np.testing.assert_array_equal(r_np.classes, r_t.classes)
        np.testing.assert_array_equal(r_np.valid, r_t.valid)
        assert (r_np.classes[~r_np.valid] == CLASS_NODATA).all()
        if probs is None:
            assert r_np.probs is None and r_t.probs is None
        else:
            assert r_np.probs.dtype == r_t.probs.dtype == (np.uint8 if probs == "uint8"
                                                           else np.float32)
            np.testing.assert_array_equal(r_np.probs, r_t.probs)


def test_torch_engine_on_device_gives_the_numpy_paths_bytes(make_synthetic):
    """The same network through the device band (TorchEngine) and through the NumPy band (a
    plain callable) gives identical classes and probabilities, with and without TTA (the 8
    views, and the 4 mirror views of a model trained with flips alone)."""
    torch = pytest.importorskip("torch")
    import rasterio

    from plugin.core.inference import MIRROR_VIEWS

    scene = make_synthetic("s", size=160, bands=3, seed=2)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Softmax(1))
    engine = TorchEngine(net, "cpu")
    for tta in (False, True, MIRROR_VIEWS):
        out = {}
        for name, eng in (("device", engine), ("numpy", lambda x: engine(x))):
            probs = np.zeros((3, 160, 160), np.uint8)
            classes = np.zeros((160, 160), np.uint8)

            def on_rows(r0, p, c, valid, probs=probs, classes=classes):
                probs[:, r0:r0 + c.shape[0]] = p
                classes[r0:r0 + c.shape[0]] = c

            with rasterio.open(scene.raster) as src:
                predict_raster(src, eng, 3, [100.0] * 3, 64, 0.25, 3, tta, on_rows,
                               probs="uint8", readers=2)
            out[name] = probs, classes
        np.testing.assert_array_equal(out["device"][0], out["numpy"][0])
        np.testing.assert_array_equal(out["device"][1], out["numpy"][1])


def test_reader_keeps_order_and_bounds_what_it_holds():
    held, most = [0], [0]
    lock = threading.Lock()
    opened = []

    class Handle:
        closed = False

        def close(self):
            self.closed = True

    def open_handle():
        opened.append(Handle())
        return opened[-1]

    def read(i, handle):
        time.sleep(0.002 * ((i * 7) % 5))   # out-of-order completion
        with lock:
            held[0] += 1
            most[0] = max(most[0], held[0])
        return i, handle

    out = []
    with OrderedReader(range(60), read, open_handle, workers=3, depth=5) as reader:
        for i, handle in reader:
            with lock:
                held[0] -= 1
            out.append(i)
            time.sleep(0.001)
            assert isinstance(handle, Handle)
    assert out == list(range(60))
    assert most[0] <= 5 + 1           # the read-ahead depth (+ the one being handed over)
    assert 1 <= len(opened) <= 3 and all(h.closed for h in opened)   # one handle per thread
    assert not _pipeline_threads()


def test_reader_error_is_raised_with_the_tile_named():
    def read(i, _):
        if i == 7:
            raise OSError("block 7 is corrupt")
        return i

    reader = OrderedReader(range(100), read, workers=2, depth=4)
    got = []
    with pytest.raises(OSError, match="corrupt") as err:
        for i in reader:
            got.append(i)
    assert got == list(range(7))
    assert any("7" in note for note in getattr(err.value, "__notes__", []))
    assert not _pipeline_threads()


def test_writer_runs_in_order_blocks_when_full_and_raises_its_error():
    seen = []
    w = BackgroundWriter(depth=2)
    t0 = time.perf_counter()
    for i in range(6):
        w.put(lambda i=i: (time.sleep(0.03), seen.append(i)))
    queued_s = time.perf_counter() - t0
    w.close()
    assert seen == list(range(6))
    assert queued_s > 0.03 * 2        # put waited: at most 2 calls queue up
    assert not _pipeline_threads()

    def boom():
        raise OSError("disk full")

    w = BackgroundWriter(depth=2)
    w.put(boom)
    with pytest.raises(OSError, match="disk full"):
        for _ in range(50):            # the next put (or close) raises, never blocks for ever
            w.put(time.sleep, 0.001)
        w.close()
    w.abort()
    assert not _pipeline_threads()


def _raster(tmp_path, size=192):
    import rasterio
    from rasterio.transform import from_origin

    path = tmp_path / "r.tif"
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1,
                       dtype="uint8", crs="EPSG:32631",
                       transform=from_origin(0, 0, 1, 1)) as dst:
        dst.write(np.arange(size * size, dtype=np.uint32).reshape(1, size, size).astype(
            np.uint8))
    return path


def _stub(x):
    out = np.zeros((len(x), 2, x.shape[2], x.shape[3]), np.float32)
    out[:, 1] = 1.0
    return out


def _in_thread(fn, timeout=20):
    """Run ``fn`` in a thread; (finished, exception)."""
    box = {}

    def run():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001
            box["exc"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive(), box.get("exc")


def test_failing_reader_or_writer_surfaces_and_cancel_stops_the_threads(tmp_path,
                                                                        monkeypatch):
    import rasterio

    import plugin.core.tiled_predict as cl

    path = _raster(tmp_path)
    calls = [0]

    def bad_read(ds, r0, c0, *a, **k):
        calls[0] += 1
        if calls[0] == 4:
            raise OSError("read failed")
        return real_read(ds, r0, c0, *a, **k)

    real_read = cl.read_tile

    def classify(on_rows, cancelled=lambda: False):
        with rasterio.open(path) as src:
            predict_raster(src, _stub, 2, [0.0], 64, 0.0, 1, False, on_rows,
                           cancelled=cancelled, readers=2)

    monkeypatch.setattr(cl, "read_tile", bad_read)
    finished, exc = _in_thread(lambda: classify(lambda *a: None))
    assert finished and isinstance(exc, OSError) and "read failed" in str(exc)
    monkeypatch.setattr(cl, "read_tile", real_read)

    def bad_write(*a):
        raise OSError("no space left on device")

    finished, exc = _in_thread(lambda: classify(bad_write))
    assert finished and isinstance(exc, OSError) and "no space" in str(exc)

    groups = [0]

    def cancel_after_two():
        groups[0] += 1
        return groups[0] > 2

    finished, exc = _in_thread(lambda: classify(lambda *a: None, cancel_after_two))
    assert finished and isinstance(exc, JobCancelled)
    assert not _pipeline_threads()


def test_batch_from_free_gpu_memory():
    gib = 1 << 30
    # 80 GiB free, 256 px windows, 3 bands, 5 classes: capped at 256 windows
    assert windows_for_memory(80 * gib, 256, 3, 5) == 256
    # 2 GiB free: 1 GiB for the batch / (65536 px × 2112 B) = 7 windows
    assert windows_for_memory(2 * gib, 256, 3, 5) == 7
    # more memory per window (512 px) → a quarter of the windows
    assert windows_for_memory(8 * gib, 512, 3, 5) == windows_for_memory(2 * gib, 256, 3, 5)
    assert windows_for_memory(10 << 20, 1024, 4, 10) == 1          # never 0
    assert windows_for_memory(8 * gib, 256, 3, 5, cap=16) == 16


def test_cpu_caches_hash_once_and_reuse_the_optimised_graph(tmp_path):
    """The content hash is remembered until the file changes; the optimised graph saved on the
    first session gives the plain session's probabilities."""
    pytest.importorskip("onnxruntime")
    torch = pytest.importorskip("torch")
    import hashlib

    from plugin.core.ort_cache import content_hash, optimized_path, session

    f = tmp_path / "model.bin"
    f.write_bytes(b"a" * 1000)
    index = tmp_path / "hashes"
    assert content_hash(f, index) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert len(list(index.iterdir())) == 1
    assert content_hash(f, index) == hashlib.sha256(b"a" * 1000).hexdigest()   # remembered
    f.write_bytes(b"b" * 999)                                                   # changed
    assert content_hash(f, index) == hashlib.sha256(b"b" * 999).hexdigest()

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                              torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1), torch.nn.Softmax(1))
    net.eval()
    onnx = tmp_path / "cache" / "m.onnx"
    onnx.parent.mkdir()
    torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(onnx), input_names=["image"],
                      dynamic_axes={"image": {0: "n"}}, dynamo=False)
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    plain = session(onnx, 1).run(None, {"image": x})[0]
    assert not optimized_path(onnx).exists()            # not asked to cache: nothing written
    first = session(onnx, 1, cache=True).run(None, {"image": x})[0]
    assert optimized_path(onnx).is_file()
    again = session(onnx, 1, cache=True).run(None, {"image": x})[0]
    np.testing.assert_allclose(first, plain, atol=1e-5)
    np.testing.assert_allclose(again, plain, atol=1e-5)
