"""Issue 19 (sparse water): windows centred on sparse features teach the network that they are
commoner than they are; the saved model's scores undo it (segmentation/prior.py)."""

from __future__ import annotations

import numpy as np
import pytest


def _sparse_project(tmp_path, unlabelled="background"):
    """A 120 × 120 px raster whose one class covers two 6 × 6 px squares (0.5 %); the job."""
    import rasterio
    from rasterio.transform import from_origin
    from shapely.geometry import box, mapping

    from plugin.core.labeling.project import LabelingProject
    from plugin.core.segmentation.jobs import TrainPixelSegmentationJob

    image = np.random.default_rng(0).integers(0, 200, (2, 120, 120)).astype(np.uint8)
    with rasterio.open(tmp_path / "i.tif", "w", driver="GTiff", width=120, height=120, count=2,
                       dtype="uint8", crs="EPSG:32631", transform=from_origin(0, 0, 1, 1)) as d:
        d.write(image)
    project = LabelingProject.create(tmp_path / "p.gpkg", "EPSG:32631")
    project.add_class("pond")
    project.add_raster(str(tmp_path / "i.tif"))
    project.add_features([(1, mapping(box(c, -(r + 6), c + 6, -r))) for r, c in
                          ((10, 10), (90, 100))])
    return TrainPixelSegmentationJob(project=str(tmp_path / "p.gpkg"), patch_size=32, epochs=2,
                                     steps_per_epoch=2, batch_size=2, device="cpu",
                                     num_workers=0, unlabelled_pixels=unlabelled,
                                     output_model=str(tmp_path / "m.dltmodel.safetensors"))


def test_offsets_are_the_log_ratio_of_area_to_window_shares():
    from plugin.core.segmentation.prior import prior_offsets

    off = prior_offsets(np.array([98, 2]), np.array([90, 10]))
    assert off == pytest.approx(np.log([0.98 / 0.9, 0.02 / 0.1]), rel=1e-5)
    assert prior_offsets(np.array([50, 0]), np.array([50, 0]))[1] == pytest.approx(0.0)


def test_sparse_features_get_a_negative_offset_saved_in_the_model_and_taken_off_to_resume(
        tmp_path):
    """The pond covers 0.5 % of the area but far more of the centred windows: its logit goes
    down by log(area share / window share) in validation and in the saved output bias, and a
    run started from the model takes the offsets off before training on."""
    import torch

    from plugin.core.jobs import RecordingContext
    from plugin.core.segmentation.prior import output_conv
    from plugin.core.segmentation.task import PixelSegmentationTask

    job = _sparse_project(tmp_path)
    ctx = RecordingContext()
    task = PixelSegmentationTask()
    task.prepare(job, ctx, tmp_path / "logs")
    area = task.windows.class_px[:2] / task.windows.class_px[:2].sum()
    assert 0 < area[1] < 0.01                            # sparse (one square may validate)
    off = task.prior_offsets
    assert off[1] < -1.0 < 0 < off[0] < 0.1          # windows hold several times more pond
    assert any("Prior correction" in e.get("message", "") for e in ctx.events)
    assert task.card_fields()["prior_offsets"] == pytest.approx(off.tolist(), abs=1e-5)

    network = task.build_network(None)
    before = output_conv(network, 2).bias.detach().clone()
    saved = task.saved_network(network)
    assert torch.allclose(output_conv(network, 2).bias, before)            # not touched
    assert torch.allclose(output_conv(saved, 2).bias, before + torch.as_tensor(off))
    task.started_from(saved, task.card_fields(), fresh=0)
    assert torch.allclose(output_conv(saved, 2).bias, before, atol=1e-6)


def test_no_correction_where_shares_are_not_priors(tmp_path):
    """UNLABELLED_PIXELS unknown: the labelled pixels' shares say how much was digitised."""
    from plugin.core.jobs import RecordingContext
    from plugin.core.segmentation.task import PixelSegmentationTask

    task = PixelSegmentationTask()
    task.prepare(_sparse_project(tmp_path, "unknown"), RecordingContext(), tmp_path / "logs")
    assert task.prior_offsets is None and "prior_offsets" not in task.card_fields()
    network = task.build_network(None)
    assert task.saved_network(network) is network


def test_a_model_file_carries_the_offsets_once_also_when_fine_tuned_from(tmp_path):
    """The card holds the offsets and the output bias has them; a run started from that model
    (at a learning rate that changes nothing) saves the same bias: the offsets are taken off
    before training and added once again, not twice."""
    import dataclasses

    import torch

    from plugin.core import modelfile
    from plugin.core.jobs import RecordingContext
    from plugin.core.segmentation.prior import output_conv

    job = _sparse_project(tmp_path)
    job.run(RecordingContext())
    card = modelfile.read_model_card(job.output_model, "pixel_segmentation")
    offsets = card["prior_offsets"]
    assert len(offsets) == 2 and offsets[1] < -1.0
    again = dataclasses.replace(job, init_model=job.output_model, learning_rate=1e-7, epochs=1,
                                output_model=str(tmp_path / "m2.dltmodel.safetensors"))
    again.run(RecordingContext())
    first = output_conv(modelfile.load_model(job.output_model)[0], 2).bias
    second = output_conv(modelfile.load_model(again.output_model)[0], 2).bias
    assert torch.allclose(first, second, atol=1e-3)
