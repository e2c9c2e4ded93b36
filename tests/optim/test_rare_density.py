"""rare_pixel_counts / rare_pixel_fraction against hand-counted label maps."""

from __future__ import annotations

import pytest
import torch

from rareseg.optim import rare_pixel_counts, rare_pixel_fraction

# 2 x 2 x 4 labels: rare classes 4 and 5, 255 = ignore
TARGET = torch.tensor(
    [
        [[0, 4, 5, 255], [1, 4, 255, 2]],
        [[0, 0, 1, 2], [3, 3, 5, 255]],
    ],
    dtype=torch.uint8,
)


def test_counts_and_fraction_hand_counted() -> None:
    counts = rare_pixel_counts(TARGET, (4, 5))
    assert counts.dtype == torch.int64 and counts.tolist() == [4, 13]
    assert rare_pixel_fraction(TARGET, [4, 5]).item() == pytest.approx(4 / 13)
    assert rare_pixel_counts(TARGET.long(), [5], ignore_index=0).tolist() == [2, 13]


def test_counts_summed_over_ranks_give_the_global_fraction() -> None:
    rank0, rank1 = TARGET[:1], TARGET[1:]
    summed = rare_pixel_counts(rank0, (4, 5)) + rare_pixel_counts(rank1, (4, 5))
    assert summed.tolist() == rare_pixel_counts(TARGET, (4, 5)).tolist()
    assert (summed[0] / summed[1]).item() == pytest.approx(4 / 13)
    mean_of_fractions = (rare_pixel_fraction(rank0, (4, 5)) + rare_pixel_fraction(rank1, (4, 5))) / 2
    assert mean_of_fractions.item() == pytest.approx((3 / 6 + 1 / 7) / 2)


def test_no_valid_pixel_gives_zero_and_no_rare_classes_gives_zero() -> None:
    assert rare_pixel_fraction(torch.full((3, 3), 255), (4, 5)).item() == 0.0
    assert rare_pixel_counts(TARGET, ()).tolist() == [0, 13]


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(TypeError, match="integer"):
        rare_pixel_counts(TARGET.float(), (4, 5))
    with pytest.raises(ValueError, match="ignore_index"):
        rare_pixel_counts(TARGET, (4, 255))
