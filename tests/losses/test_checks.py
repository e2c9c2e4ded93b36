"""Tests for rareseg.losses._checks: what is checked on every call, and what never waits for the device."""

import pytest
import torch

from rareseg.losses._checks import check_logits_target


def test_class_ids_are_checked_on_the_cpu() -> None:
    target = torch.tensor([[[0, 255], [2, 3]]])
    with pytest.raises(ValueError, match="class id 3 outside"):
        check_logits_target(torch.zeros(1, 3, 2, 2), target, ignore_index=255)
    check_logits_target(torch.zeros(1, 4, 2, 2), target, ignore_index=255)


def test_values_on_another_device_are_never_read_but_metadata_is_checked() -> None:
    """A meta tensor has no values: reading one (a host sync on a GPU) would raise."""
    logits = torch.zeros(2, 3, 4, 4, device="meta")
    check_logits_target(logits, torch.full((2, 4, 4), 9, dtype=torch.long, device="meta"), ignore_index=255)
    with pytest.raises(ValueError, match="differ in batch or spatial size"):
        check_logits_target(logits, torch.zeros(2, 4, 5, dtype=torch.long, device="meta"), ignore_index=255)
    with pytest.raises(ValueError, match="logits have 3 classes but class_frequencies has 6"):
        check_logits_target(logits, torch.zeros(2, 4, 4, dtype=torch.long, device="meta"), 255, num_classes=6)
