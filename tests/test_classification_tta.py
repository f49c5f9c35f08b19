"""Test-time augmentation of grid models and chip classifiers (issue 19): a model trained with
flips and 90° turns scores a chip as the mean over its 8 flips/turns, in validation and in
Classify Chips; TTA off, or a model whose card does not say so, scores one pass."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from plugin.core import modelfile
from plugin.core.classification.jobs import ClassifyChipsJob
from plugin.core.classification.network import build_classifier, load_classifier
from plugin.core.classification.synthetic import make_imbalanced_chips
from plugin.core.inference import dihedral_mean
from plugin.core.jobs import RecordingContext


def test_dihedral_mean_sees_every_corner_twice_and_turns_pixel_outputs_back():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    # a per-sample output that is not invariant: the top-left pixel; over the 8 flips/turns
    # each corner comes to the top left twice
    corners = (x[..., 0, 0] + x[..., 0, -1] + x[..., -1, 0] + x[..., -1, -1]) / 4
    assert torch.allclose(dihedral_mean(lambda v: v[..., 0, 0], x), corners)
    # pixel outputs move with the image: turned back, the identity gives the input again
    square = x[..., :4]
    assert torch.allclose(dihedral_mean(lambda v: v * 2, square, spatial=True), square * 2)
    assert not torch.allclose(dihedral_mean(lambda v: v, square), square)


def _model(path: Path, **card_fields) -> str:
    torch.manual_seed(0)
    classes = [{"id": 0, "name": "common", "color": "#000000"},
               {"id": 1, "name": "rare", "color": "#ff0000"}]
    card = modelfile.make_card(task="chip_classification", architecture="resnet18",
                               classes=classes, bands=3, mean=[100.0] * 3, std=[20.0] * 3,
                               nodata=None, pixel_size=None, crs=None, multi_label=False,
                               max_side=16, resize=0, input_size=16,
                               decision_offsets=[0.0, 0.0], **card_fields)
    modelfile.save_model(path, build_classifier("resnet18", 3, 2), card)
    return str(path)


def _probs(out: Path) -> np.ndarray:
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return np.array([[float(r["prob_common"]), float(r["prob_rare"])] for r in rows])


def _flips_and_turns(image: np.ndarray) -> list[np.ndarray]:
    views = []
    for flipped in (image, image[:, :, ::-1]):
        views += [np.rot90(flipped, k, axes=(1, 2)) for k in range(4)]
    return [np.ascontiguousarray(v, np.float32) for v in views]


@pytest.mark.parametrize("card_tta", [True, False, None])
def test_classify_chips_scores_the_mean_of_the_8_flips_when_the_model_learnt_them(
        tmp_path, card_tta):
    """The CSV's probabilities are the plain predictor's mean over the 8 flips/turns of each
    chip when the card says the model was trained with them (``tta``) and TTA is on (the
    default); one pass with TTA off, with ``tta`` false and for a model without the field."""
    from plugin.core.classification.chips import read_chip

    make_imbalanced_chips(tmp_path / "chips", n=6, seed=3)
    extra = {} if card_tta is None else {"tta": card_tta}
    model = _model(tmp_path / "m.dltmodel.safetensors", **extra)
    plain, card = load_classifier(model, "chip_classification")
    assert plain.tta is bool(card_tta)
    plain.tta = False
    paths = sorted((tmp_path / "chips").rglob("*.tif"))
    with torch.inference_mode():
        one = np.stack([plain(torch.from_numpy(read_chip(p)[None].astype(np.float32)))[0]
                        .numpy() for p in paths])
        mean = np.stack([np.mean([plain(torch.from_numpy(v[None].copy()))[0].numpy()
                                  for v in _flips_and_turns(read_chip(p))], 0)
                         for p in paths])
    assert np.abs(mean - one).max() > 1e-3     # the flips/turns change a random network
    for tta in (True, False):
        out = tmp_path / f"tta_{tta}.csv"
        job = ClassifyChipsJob(input=str(tmp_path / "chips"), model=model, output=str(out),
                               device="cpu", tta=tta)
        assert ClassifyChipsJob().tta is True
        job.run(RecordingContext())
        expected = mean if tta and card_tta else one
        np.testing.assert_allclose(_probs(out), expected, atol=2e-5)


def test_validation_scores_chips_as_classify_chips_does(tmp_path):
    """Validation scores the chips as Classify Chips does (the mean over the 8 flips/turns of
    a model trained with AUGMENT): the average precision per class in the card's validation
    metrics is that of Classify Chips' probabilities of the validation chips (one pass gives
    another), and the offsets tuned again on them are the card's."""
    from plugin.core.classification.chipsplit import chip_targets, select_chips
    from plugin.core.classification.jobs import TrainChipClassifierJob
    from plugin.core.classification.metrics import classification_metrics, tune_offsets
    from plugin.core.classification.predict_chips import predict_chips

    make_imbalanced_chips(tmp_path / "chips", n=120, minority=0.3, separation=1.0, seed=4)
    job = TrainChipClassifierJob(input=str(tmp_path / "chips"), epochs=2, test_size=0,
                                 architecture="resnet18", device="cpu", num_workers=0,
                                 output_model=str(tmp_path / "m.dltmodel.safetensors"))
    job.run(RecordingContext())
    predictor, card = load_classifier(job.output_model, "chip_classification")
    assert card["tta"] is True and predictor.tta is True
    names = [c["name"] for c in card["classes"]]
    _, splits, _ = select_chips(job, RecordingContext(), tmp_path / "log")
    val = splits["validation"]
    targets = chip_targets(val, names, False)
    assert (targets == 1).sum() >= 3      # the rare class is tuned
    saved = card["metrics"]["validation"]["per_class"]
    aps = {}
    for tta in (True, False):
        predictor.tta = tta
        probs = predict_chips(predictor, card, [c.path for c in val])
        m = classification_metrics(probs, targets, names, False)
        aps[tta] = np.array([m["per_class"][n]["ap"] - saved[n]["ap"] for n in names])
        if tta:
            assert tune_offsets(probs, targets) == card["decision_offsets"]
    assert np.abs(aps[True]).max() < 1e-4 and np.abs(aps[False]).max() > 1e-3, aps
