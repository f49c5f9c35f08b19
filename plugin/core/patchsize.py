"""The patch size rule shared by training, chip export, Classify and ONNX export.

Encoder–decoder networks (U-Net, U-Net++, DeepLabV3+; detection backbones) halve the patch five
times, so the side must be a multiple of 32 px (32 at least): one rule and one fix everywhere a
patch or tile size is set, so chips exported for training are accepted by training.
"""

from __future__ import annotations

PATCH_MULTIPLE = 32


def nearest_patch_size(value: int) -> int:
    """The multiple of 32 nearest to ``value`` (at least 32)."""
    return max(PATCH_MULTIPLE, int(round(value / PATCH_MULTIPLE)) * PATCH_MULTIPLE)


def ceil_multiple(value: float) -> int:
    """``value`` px rounded up to a multiple of 32 px (at least 32): the smallest tile a
    network takes that holds ``value`` pixels."""
    return max(PATCH_MULTIPLE, -(-int(-(-value // 1)) // PATCH_MULTIPLE) * PATCH_MULTIPLE)


def patch_size_problem(value: int, what: str = "Patch size",
                       name: str = "PATCH_SIZE") -> list[str]:
    """[sentence with the fix] when ``value`` px breaks the rule, else []; 0 (automatic)
    passes."""
    if value and value % PATCH_MULTIPLE:
        return [f"{what} {value} ({name}) is not a multiple of {PATCH_MULTIPLE}: use "
                f"{nearest_patch_size(value)}."]
    return []
