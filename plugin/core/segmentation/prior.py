"""Prior correction: the saved model's class scores undo what feature-centred windows teach.

When features are sparse, :class:`.data.WindowSampler` centres up to half the training windows on
a feature pixel, so the network sees the features far more often than they occur (issue 19's
water, 1.4 % of the training area: 2.7 % of the training windows' pixels) and calls too much of a
new scene feature (1.9–2.7 % of the test half, truth 1.7 %). Bayes' rule moves a posterior
trained under class priors ``q`` to the priors ``p`` of the scene by adding ``log(p_c / q_c)`` to
the logit of each class ``c`` (Saerens, Latinne & Decaestecker 2002, "Adjusting the outputs of a
classifier to new a priori probabilities", Neural Computation 14; as a post-hoc logit adjustment
in Menon et al. 2021, "Long-tail learning via logit adjustment", ICLR).

Where it applies: UNLABELLED_PIXELS background (the label rasters describe the whole training
area, so its class shares are the scene's priors) and windows centred on features (otherwise the
windows' shares are the area's already). With UNLABELLED_PIXELS unknown the labelled pixels'
shares say how much was digitised, not how common a class is: no correction.

``q`` is measured on :data:`SAMPLE_WINDOWS` windows drawn as training draws them (the class
weight max → min schedule included); ``p`` is the training area's share (the label rasters
outside the validation areas). The offsets are added to the logits when validating and, in the
saved model file, to the bias of the network's output convolution (card ``prior_offsets``), so
every engine, preview and ONNX export gets them; a run started from such a model (fine-tune,
resume) takes them off first.
"""

from __future__ import annotations

import numpy as np

SAMPLE_WINDOWS = 256      # windows read to measure the training windows' class shares
MIN_SHARE = 1e-4          # floor of a share (a class absent from the windows or the area)
IGNORE = 255


def window_class_counts(sources: list, windows: list, num_outputs: int,
                        hidden: dict | None = None) -> np.ndarray:
    """Labelled pixels per class (``num_outputs`` int64; label value = output index) in
    ``windows`` (Patch: source, row, col, size in raster pixels) of the label rasters of
    ``sources``; IGNORE (255) and the ``hidden`` areas (source → [(row0, col0, row1, col1)]
    raster pixels) are not counted."""
    import rasterio
    from rasterio.windows import Window

    counts = np.zeros(num_outputs, np.int64)
    by_source: dict[int, list] = {}
    for w in windows:
        by_source.setdefault(w.source, []).append(w)
    for sid, ws in by_source.items():
        with rasterio.open(sources[sid].labels) as ds:
            for w in ws:
                lab = ds.read(1, window=Window(w.col, w.row, w.size, w.size), boundless=True,
                              fill_value=IGNORE)
                for r0, c0, r1, c1 in (hidden or {}).get(sid, ()):
                    lab[max(r0 - w.row, 0):max(r1 - w.row, 0),
                        max(c0 - w.col, 0):max(c1 - w.col, 0)] = IGNORE
                lab = lab[lab < num_outputs]
                counts += np.bincount(lab, minlength=num_outputs)[:num_outputs]
    return counts


def prior_offsets(area_counts: np.ndarray, window_counts: np.ndarray) -> np.ndarray:
    """``log(p_c / q_c)`` (float32, one per output) for the area's class pixel counts ``p`` and
    the training windows' ``q`` (shares floored at :data:`MIN_SHARE`)."""
    p = np.maximum(area_counts / max(area_counts.sum(), 1), MIN_SHARE)
    q = np.maximum(window_counts / max(window_counts.sum(), 1), MIN_SHARE)
    return np.log(p / q).astype(np.float32)


def output_conv(network, num_outputs: int):
    """The network's last ``Conv2d`` with ``num_outputs`` output channels and a bias (the
    segmentation head of every segmentation-models-pytorch architecture); ValueError if none."""
    import torch

    convs = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)
             and m.out_channels == num_outputs and m.bias is not None]
    if not convs:
        raise ValueError(f"The network has no output convolution with {num_outputs} channels.")
    return convs[-1]


def shift_scores(network, offsets, sign: float = 1.0) -> None:
    """Add ``sign × offsets`` (one per output) to the bias of :func:`output_conv` in place."""
    import torch

    conv = output_conv(network, len(offsets))
    with torch.no_grad():
        conv.bias += sign * torch.as_tensor(np.asarray(offsets), dtype=conv.bias.dtype,
                                            device=conv.bias.device)


def describe(offsets: np.ndarray, area_counts: np.ndarray, window_counts: np.ndarray,
             names: dict[int, str]) -> str:
    """One log line: each class's share of the training area and of the windows, and the
    logit offset it gets."""
    p = area_counts / max(area_counts.sum(), 1)
    q = window_counts / max(window_counts.sum(), 1)
    parts = [f"{names.get(c, c)} {100 * p[c]:.1f} % of the area, {100 * q[c]:.1f} % of the "
             f"windows ({offsets[c]:+.2f})" for c in range(len(offsets)) if c in names]
    return ("Prior correction (windows centred on sparse features): " + "; ".join(parts)
            + ". The saved model's class scores are shifted by these log ratios.")
