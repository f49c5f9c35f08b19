"""Exponential moving average of the network's weights: what every family validates and saves.

Averaging the weights of the last steps (Polyak & Juditsky 1992; as an exponential average in
TensorFlow's ``ExponentialMovingAverage`` and timm's ``ModelEmaV3``) smooths the noise of small
batches and a short cosine schedule. Issue 9 (DeepForest OSBS_029 trees, 300 CPU steps): the
validation IoU of the raw weights jumped by ±0.05 from epoch to epoch and peaked by chance,
while the average's rose and fell smoothly and the chosen model generalised better.

The average is torch's :class:`~torch.optim.swa_utils.AveragedModel` with BatchNorm statistics
averaged too (``use_buffers``). Its decay per step is ``1 − 1 / span`` with
``span = max(SPAN_MIN, total steps × SPAN_SHARE)`` (about the last sixth of training: 0.98 at
300 steps, 0.9994 at 10,000; runs of a few steps keep their last weights). Until ``span``
steps have passed it is at most ``t / (t + 1)`` after ``t`` steps: the average is then the
plain (Polyak) mean of every weight so far, not one dominated by the random initial weights
(issue 9, OSBS_029 trees: tree IoU 0.628–0.638 over three seeds with this start, 0.620–0.628
with a fixed decay of 0.98).
"""

from __future__ import annotations

SPAN_SHARE = 1 / 6
SPAN_MIN = 1


def decay_for(total_steps: int) -> float:
    """The per-step decay (0–1) of a run of ``total_steps`` optimisation steps."""
    return 1.0 - 1.0 / max(SPAN_MIN, total_steps * SPAN_SHARE)


class WeightAverage:
    """The moving average of ``network`` (an ``nn.Module``; a copy is kept on its device).

    ``update(network)`` after every optimiser step; ``module`` is the averaged network (in eval
    mode) to validate and save. ``steps``: updates so far (a resumed run passes its step count,
    after ``module`` has been given the saved average)."""

    def __init__(self, network, total_steps: int, steps: int = 0) -> None:
        from torch.optim.swa_utils import AveragedModel

        self.decay = decay_for(total_steps)
        self.steps = steps
        self._avg = AveragedModel(network, multi_avg_fn=self._average, use_buffers=True)
        self._avg.n_averaged.fill_(steps)   # > 0: the average continues rather than copies
        self._avg.module.eval()

    @property
    def module(self):
        return self._avg.module

    def _average(self, averaged: list, current: list, _n) -> None:
        from torch.optim.swa_utils import get_ema_multi_avg_fn

        decay = min(self.decay, self.steps / (self.steps + 1))
        get_ema_multi_avg_fn(decay)(averaged, current, _n)

    def update(self, network) -> None:
        self._avg.update_parameters(network)
        self.steps += 1
