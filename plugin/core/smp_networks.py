"""Segmentation-models-pytorch networks every pixel family builds (segmentation, regression):
the architectures a card can name, construction, START_WEIGHTS (ImageNet encoder weights or a
local file: :func:`start_smp`) and the CPU / GPU defaults for ``auto``. Moved
from ``segmentation/network.py`` so that other pixel families share them. Light at import time
(torch is imported inside the functions): the job modules read the names below.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError

SMP_NAMES = {"unetplusplus": "UnetPlusPlus", "unet": "Unet", "deeplabv3plus": "DeepLabV3Plus"}
#: The ENCODER choices of the pixel trainers ("auto": :func:`resolve_auto`).
ENCODERS = ("auto", "resnet34", "resnet18", "resnet50", "efficientnet-b0", "mobilenet_v2")


def build_network(architecture: str, encoder: str, in_channels: int, classes: int):
    """A fresh smp network with random weights (START_WEIGHTS fills it: :func:`start_smp`);
    UserError for an unknown architecture or encoder."""
    import segmentation_models_pytorch as smp

    if architecture not in SMP_NAMES:
        raise UserError(f"Unknown architecture {architecture!r}.",
                        f"Use one of: {', '.join(SMP_NAMES)}.")
    try:
        return smp.create_model(SMP_NAMES[architecture], encoder_name=encoder,
                                encoder_weights=None, in_channels=in_channels, classes=classes)
    except KeyError as exc:
        raise UserError(f"Encoder {encoder!r} is not available for {architecture} ({exc}).",
                        "Choose another encoder.") from None


def pretrained_encoder_state(encoder: str) -> dict:
    """The state dict of START_WEIGHTS imagenet for ``encoder``: segmentation-models-pytorch's
    ImageNet weights of the RGB encoder (``smp.encoders.get_encoder(encoder, weights=
    "imagenet")``, from the Hugging Face hub ``smp-hub/<encoder>.imagenet`` into its cache).
    UserError offline."""
    from .training.start_weights import hf_hub_state

    def fetch() -> dict:
        from segmentation_models_pytorch.encoders import get_encoder

        return get_encoder(encoder, in_channels=3, depth=5, weights="imagenet").state_dict()

    return hf_hub_state(f"segmentation-models-pytorch's ImageNet {encoder} weights", fetch)


def start_smp(network, start: str, task: str, encoder: str) -> str:
    """START_WEIGHTS ``start`` of family ``task`` into the smp ``network`` of ``encoder``
    (:func:`.training.start_weights.start_network`): a file of the whole network or of its
    encoder alone (timm / torchvision keys, tried under ``encoder.``); the first convolution
    adapted to the band count. Returns the line for the training log ("" for random)."""
    from .training.start_weights import start_network

    return start_network(network, start, task, lambda: pretrained_encoder_state(encoder),
                         prefixes=("encoder.",), core="encoder.",
                         what=f"the {encoder} encoder")


CPU_DEFAULT = ("unet", "resnet18")           # 7.9 GFLOP per 128² step (issue 9, cause 4)
GPU_DEFAULT = ("unetplusplus", "resnet34")   # 27 GFLOP: affordable on a GPU


def resolve_auto(architecture: str, encoder: str, device: str) -> tuple[str, str]:
    """'auto' architecture / encoder → the default that fits ``device``."""
    arch, enc = CPU_DEFAULT if device == "cpu" else GPU_DEFAULT
    return (arch if architecture == "auto" else architecture,
            enc if encoder == "auto" else encoder)


def load_smp_network(path: str | Path, card: dict, outputs: int | None = None):
    """The network of the model file ``path`` whose ``card`` names its ``architecture``,
    ``encoder`` and ``bands`` (``outputs`` channels, default the card's ``num_outputs``), built
    on the meta device and filled with the file's tensors (safetensors only,
    :func:`.modelfile.load_weights`). UserError when the card names a network this plugin cannot
    build or the tensors do not fit it."""
    import torch

    from .modelfile import load_weights

    try:
        with torch.device("meta"):   # no random initialisation: every tensor comes from the file
            network = build_network(card["architecture"], card["encoder"], int(card["bands"]),
                                    int(outputs or card["num_outputs"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"The model card of {Path(path).name} names a network this plugin "
                        f"cannot build ({exc}).", "Use the model file as training wrote it, "
                        "or train again.") from None
    return load_weights(network, path, f"a {card['architecture']} / {card['encoder']} network",
                        assign=True)
