"""Tests for rareseg.models.local_weights."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from rareseg.models import SpatialAwareSegFormer, load_local_weights, read_state_dict, resolve_weights_path


def _model(num_classes: int = 5, seed: int = 0) -> SpatialAwareSegFormer:
    torch.manual_seed(seed)
    return SpatialAwareSegFormer(num_classes=num_classes, rare_classes=(1,), decoder_channels=8)


def _assert_same_tensors(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> None:
    assert left.keys() == right.keys()
    for name in left:
        torch.testing.assert_close(left[name], right[name], rtol=0, atol=0, msg=name)


def test_encoder_only_file_loads_the_encoder_and_leaves_the_rest(tmp_path: Path) -> None:
    source, target = _model(seed=0), _model(seed=1)
    decoder_before = {k: v.clone() for k, v in target.decoder.state_dict().items()}
    path = tmp_path / "encoder.pt"
    torch.save(source.encoder.state_dict(), path)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete encoder file loads silently
        report = load_local_weights(target, path)

    assert report.path == path
    assert (report.missing_keys, report.unexpected_keys, report.mismatched_keys) == ((), (), ())
    _assert_same_tensors(target.encoder.state_dict(), source.encoder.state_dict())
    _assert_same_tensors(target.decoder.state_dict(), decoder_before)


def test_missing_unexpected_and_reshaped_entries_are_reported(tmp_path: Path) -> None:
    source, target = _model(num_classes=7, seed=0), _model(num_classes=5, seed=1)
    state_dict = source.state_dict()
    del state_dict["fuse.norm.running_var"]
    state_dict["extra.weight"] = torch.zeros(2)
    path = tmp_path / "network.pt"
    torch.save(state_dict, path)

    with pytest.warns(UserWarning, match=r"network\.pt: .* 1 missing .* 1 unexpected .* 2 with another shape"):
        report = load_local_weights(target, path)

    assert report.missing_keys == ("fuse.norm.running_var",)
    assert report.unexpected_keys == ("extra.weight",)
    assert set(report.mismatched_keys) == {"classifier.weight", "classifier.bias"}
    assert target.classifier.weight.shape == (5, 8, 1, 1)
    _assert_same_tensors(target.encoder.state_dict(), source.encoder.state_dict())
    torch.testing.assert_close(target.fuse.conv.weight, source.fuse.conv.weight, rtol=0, atol=0)


def test_lightning_checkpoint_is_unwrapped(tmp_path: Path) -> None:
    source, target = _model(seed=0), _model(seed=1)
    path = tmp_path / "last.ckpt"
    checkpoint = {"epoch": 3, "state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}}
    torch.save(checkpoint, path)
    report = load_local_weights(target, path)
    assert (report.missing_keys, report.unexpected_keys) == ((), ())
    _assert_same_tensors(target.state_dict(), source.state_dict())


def test_resolve_refuses_names_that_are_not_files(tmp_path: Path) -> None:
    existing = tmp_path / "w.pt"
    existing.write_bytes(b"")
    assert resolve_weights_path(str(existing)) == existing
    with pytest.raises(ValueError, match=r"encoder_weights='imagenet': no such file"):
        resolve_weights_path("imagenet")
    with pytest.raises(ValueError, match="no such file"):
        resolve_weights_path(tmp_path / "absent.pt")


def test_unreadable_files_name_the_file(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"corrupt\.pt: cannot read weights file"):
        read_state_dict(corrupt)

    not_tensors = tmp_path / "mixed.pt"
    torch.save({"weight": torch.zeros(1), "note": "hello"}, not_tensors)
    with pytest.raises(ValueError, match=r"mixed\.pt: state dict entry 'note' is not a tensor"):
        read_state_dict(not_tensors)

    a_list = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], a_list)
    with pytest.raises(ValueError, match=r"list\.pt: expected a non-empty state dict"):
        read_state_dict(a_list)
