"""Defaults of the grid model and the chip classifier (issue 19): the chip split
(chipsplit.split_chips: georeferenced chips in spatial blocks, so overlapping neighbours never
straddle training and validation; a test set of at most a tenth; validation holding a rare
class), the architecture ``auto`` (ResNet18 on a CPU, ResNet50 on a GPU) and grid sizes in
multiples of 16."""

from __future__ import annotations

from pathlib import Path

from plugin.core.classification.architectures import resolve_architecture
from plugin.core.classification.chips import Chip
from plugin.core.classification.chipsplit import TEST_SHARE, chip_units, split_chips
from plugin.core.classification.jobs import TrainChipClassifierJob, TrainGridModelJob


def _grid_chips(rows: int, cols: int, side: float = 32.0, step: float = 16.0,
                rare=frozenset()) -> list[Chip]:
    """Chips of ``side`` map units cut every ``step`` (half-overlapping, as a sliding export),
    "rare" at the (row, col) in ``rare``, else "common"."""
    return [Chip(Path(f"c_{r}_{c}.tif"), ["rare" if (r, c) in rare else "common"],
                 side=(32, 32), centre=(c * step + side / 2, -(r * step + side / 2)),
                 extent=side)
            for r in range(rows) for c in range(cols)]


def _position(chip: Chip) -> tuple[float, float]:
    return chip.centre


def test_overlapping_georeferenced_chips_stay_on_one_side_of_the_split():
    chips = _grid_chips(16, 16)
    splits = split_chips(chips, 80.0, 100, seed=3)
    val = {_position(c) for c in splits["validation"]}
    train = [_position(c) for c in splits["train"]]
    assert val and train
    # chips of 32 units cut every 16 overlap when their centres are closer than 32 on both axes;
    # a block is 64 units, so only chips at a block's edge can touch the next block's chips
    blocks = chip_units(chips)
    assert len(set(blocks)) == 5 * 4    # centres 16…256 (x), −16…−256 (y) in blocks of 64
    inner = [(x, y) for x, y in train
             if not any(abs(x - vx) < 32 and abs(y - vy) < 32 for vx, vy in val)]
    assert len(inner) >= 0.6 * len(train)
    by_block: dict[int, set[str]] = {}
    names = {id(c): k for k, part in splits.items() for c in part}
    for chip, block in zip(chips, blocks):
        by_block.setdefault(block, set()).add(names[id(chip)])
    assert all(len(sides) == 1 for sides in by_block.values())    # a block is never cut


def test_test_set_is_at_most_a_tenth_and_validation_holds_the_rare_class():
    rare = {(2, 2), (2, 3), (12, 12)}    # two neighbours and one far away: 2 blocks
    chips = _grid_chips(16, 16, rare=frozenset(rare))
    for seed in range(5):
        splits = split_chips(chips, 80.0, 100, seed)
        assert 0 < len(splits["test"]) <= TEST_SHARE * len(chips)
        assert any(c.labels == ["rare"] for c in splits["validation"]), seed
        assert any(c.labels == ["rare"] for c in splits["train"]), seed
        assert sum(map(len, splits.values())) == len(chips)


def test_chips_without_position_are_split_one_by_one():
    chips = [Chip(Path(f"c{i}.tif"), ["a" if i % 2 else "b"]) for i in range(50)]
    splits = split_chips(chips, 80.0, 100, seed=0)
    assert len(splits["test"]) == 5                  # a tenth of 50, not TEST_SIZE 100
    assert len(splits["validation"]) == 9            # 20 % of the other 45
    assert len(splits["train"]) == 36


def test_auto_architecture_is_light_on_a_cpu_and_envis_on_a_gpu():
    assert TrainChipClassifierJob().architecture == TrainGridModelJob().architecture == "auto"
    assert resolve_architecture("auto", "cpu") == "resnet18"
    assert resolve_architecture("auto", "cuda:0") == "resnet50"
    assert resolve_architecture("resnet34", "cpu") == "resnet34"


def test_grid_sizes_are_multiples_of_16():
    def problems(size):
        return [p for p in TrainGridModelJob(grid_size=size).problems() if "Grid size" in p]

    assert problems(16) == problems(48) == []
    assert "Grid size 20 is not a multiple of 16: use 16." in problems(20)



def test_automatic_grid_batch_keeps_envis_pixels_per_batch():
    """BATCH_SIZE 0: about the pixels of ENVI's 5 cells of 224 px, 5 to 32 cells; the steps of
    an epoch follow it (one pass over the cells)."""
    from plugin.core.classification.gridwindows import grid_batch, grid_steps

    def job(size, batch=0):
        return TrainGridModelJob(grid_size=size, batch_size=batch)

    assert TrainGridModelJob().batch_size == 0
    assert [grid_batch(job(s)) for s in (224, 128, 96, 64, 16)] == [5, 15, 27, 32, 32]
    assert grid_batch(job(16, 8)) == 8
    assert grid_steps(job(16), 300) == 10 and grid_steps(job(224), 300) == 60
