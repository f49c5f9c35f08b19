"""Test-time augmentation averages the views a model learnt: the 8 turns and flips after rotation
and flip augmentation, the 4 quarter turns after rotations alone, the 4 mirrors after flips
alone, none without either; Classify Pixels does so by default."""

from __future__ import annotations

import numpy as np
import pytest

from plugin.core.inference import (
    D4_VIEWS,
    MIRROR_VIEWS,
    TURN_VIEWS,
    learnt_views,
    tta_predict,
    tta_views,
)

TILE = np.arange(12.0).reshape(1, 1, 3, 4)   # no symmetry: every view differs


def _view(x: np.ndarray, flip: bool, k: int) -> np.ndarray:
    return np.rot90(x[..., ::-1] if flip else x, k, axes=(-2, -1))


def _images(views) -> list[np.ndarray]:
    square = np.arange(16.0).reshape(4, 4)
    return [_view(square, f, k) for f, k in views]


def _same_sets(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    key = {x.tobytes() for x in a}
    return len(key) == len(a) and key == {x.tobytes() for x in b}


def test_views_are_the_groups_the_augmentations_generate():
    s = np.arange(16.0).reshape(4, 4)
    assert _same_sets(_images(MIRROR_VIEWS), [s, np.fliplr(s), np.flipud(s), s[::-1, ::-1]])
    assert _same_sets(_images(TURN_VIEWS), [np.rot90(s, k) for k in range(4)])
    assert _same_sets(_images(D4_VIEWS), _images(TURN_VIEWS) + [np.fliplr(x) for x in
                                                                _images(TURN_VIEWS)])
    assert learnt_views(True, True) == D4_VIEWS and len(D4_VIEWS) == 8
    assert learnt_views(True, False) == TURN_VIEWS
    assert learnt_views(False, True) == MIRROR_VIEWS
    assert learnt_views(False, False) == ((False, 0),)
    assert tta_views(True) == D4_VIEWS and tta_views(False) == ((False, 0),)


def _undo(y: np.ndarray, flip: bool, k: int) -> np.ndarray:
    y = np.rot90(y, -k, axes=(-2, -1))
    return y[..., ::-1] if flip else y


def test_tta_predict_is_the_mean_of_the_views_mapped_back():
    """An engine that is not equivariant (adds a pattern without symmetry to what it sees):
    each view's answer is turned back, and the mean is taken over exactly the given views."""
    def engine(x):
        return x + np.arange(16.0).reshape(4, 4) ** 2

    square = np.arange(16.0).reshape(1, 1, 4, 4)
    got = {}
    for views in (MIRROR_VIEWS, TURN_VIEWS, D4_VIEWS):
        expect = np.mean([_undo(engine(np.ascontiguousarray(_view(square, f, k))), f, k)
                          for f, k in views], axis=0)
        got[views] = tta_predict(engine, square, views)
        np.testing.assert_allclose(got[views], expect)
    assert not np.allclose(got[MIRROR_VIEWS], got[TURN_VIEWS])
    # an equivariant engine (the identity) gives the tile back whatever the views
    np.testing.assert_array_equal(tta_predict(lambda x: x, TILE, MIRROR_VIEWS), TILE)


@pytest.mark.parametrize("training, views", [
    ({"augment_rotation": True, "augment_flip": True}, D4_VIEWS),
    ({"augment_rotation": False, "augment_flip": True}, MIRROR_VIEWS),
    ({"augment_rotation": True, "augment_flip": False}, TURN_VIEWS),
    ({"augment_rotation": False, "augment_flip": False}, ((False, 0),)),
    ({}, D4_VIEWS),   # a card that does not record them: the defaults (both on)
])
def test_classify_pixels_uses_the_views_of_the_models_training(training, views):
    from plugin.core.segmentation.predict import model_views

    assert model_views({"training": training}) == views


def test_classify_pixels_averages_views_by_default():
    from plugin.core.segmentation.jobs import ClassifyPixelsJob

    assert ClassifyPixelsJob().tta is True
