"""Initialise a network from a local weights file (downloads are :mod:`rareseg.models.pretrained`'s job)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

ENCODER_PREFIX = "encoder."


class WeightsReport(NamedTuple):
    """What happened when a weights file was loaded.

    Attributes:
        path: the file that was read.
        missing_keys: network entries the file should have provided but did not (for an
            encoder-only file, only encoder entries count); they keep their initial values.
        unexpected_keys: file entries with no counterpart in the network; ignored.
        mismatched_keys: entries present in both with different shapes; left at their
            initial values.
    """

    path: Path
    missing_keys: tuple[str, ...]
    unexpected_keys: tuple[str, ...]
    mismatched_keys: tuple[str, ...]


def resolve_weights_path(encoder_weights: str | Path) -> Path:
    """Check that ``encoder_weights`` names an existing local file.

    Args:
        encoder_weights: path to a file written by ``torch.save(state_dict, path)``.

    Returns:
        The path as a :class:`~pathlib.Path`.

    Raises:
        ValueError: if it is not an existing file.
    """
    path = Path(encoder_weights).expanduser()
    if not path.is_file():
        raise ValueError(
            f"encoder_weights={str(encoder_weights)!r}: no such file; pass a path to a saved state dict, "
            "a pretrained-weights name such as 'imagenet', or None for random initialisation"
        )
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict of tensors from ``path`` (tensors only, no pickled code).

    A Lightning checkpoint (a mapping with a ``"state_dict"`` entry) is unwrapped: its entries are
    kept from the module that owns an ``encoder`` attribute, with the owner's prefix removed
    (``"model.encoder.x"`` -> ``"encoder.x"``).

    Args:
        path: file written by ``torch.save``.

    Returns:
        Mapping from parameter/buffer name to tensor.

    Raises:
        ValueError: if the file cannot be read or does not hold a state dict of tensors.
    """
    path = Path(path)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for corrupt or foreign files
        raise ValueError(
            f"{path}: cannot read weights file as a state dict of tensors ({type(error).__name__}); "
            "write one with torch.save(model.state_dict(), path)"
        ) from None
    if isinstance(content, Mapping) and isinstance(content.get("state_dict"), Mapping):
        content = _strip_owner_prefix(content["state_dict"])
    if not isinstance(content, Mapping) or not content:
        raise ValueError(f"{path}: expected a non-empty state dict (name -> tensor), got {type(content).__name__}")
    not_tensors = [name for name, value in content.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"{path}: state dict entry {not_tensors[0]!r} is not a tensor")
    return dict(content)


def _strip_owner_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the entries of the sub-module holding ``encoder`` and drop that sub-module's prefix."""
    if any(name.startswith(ENCODER_PREFIX) for name in state_dict):
        return dict(state_dict)
    marker = "." + ENCODER_PREFIX
    owner = next((name[: name.index(marker) + 1] for name in state_dict if marker in name), "")
    return {name[len(owner) :]: value for name, value in state_dict.items() if name.startswith(owner)}


def load_local_weights(model: nn.Module, path: str | Path) -> WeightsReport:
    """Copy weights from a local file into ``model`` (which has an ``encoder`` sub-module).

    The file may hold the state dict of the encoder alone (names without the ``encoder.``
    prefix) or of the whole network (names starting with ``encoder.``), or be a Lightning
    checkpoint of a module that owns such a network. Entries whose shapes differ (e.g. another
    class count or band count) are skipped. Anything missing, unexpected or skipped is reported
    through a :class:`UserWarning` and the returned :class:`WeightsReport`.

    Args:
        model: network whose encoder lives at ``model.encoder``.
        path: local weights file.

    Returns:
        The :class:`WeightsReport` of the load.
    """
    path = Path(path)
    state_dict = read_state_dict(path)
    encoder_only = not any(name.startswith(ENCODER_PREFIX) for name in state_dict)
    if encoder_only:
        state_dict = {ENCODER_PREFIX + name: value for name, value in state_dict.items()}
    target = model.state_dict()
    expected = [name for name in target if not encoder_only or name.startswith(ENCODER_PREFIX)]
    mismatched = tuple(
        name for name, value in state_dict.items() if name in target and value.shape != target[name].shape
    )
    loadable = {name: value for name, value in state_dict.items() if name in target and name not in mismatched}
    model.load_state_dict(loadable, strict=False)
    report = WeightsReport(
        path=path,
        missing_keys=tuple(name for name in expected if name not in state_dict),
        unexpected_keys=tuple(name for name in state_dict if name not in target),
        mismatched_keys=mismatched,
    )
    if report.missing_keys or report.unexpected_keys or report.mismatched_keys:
        warnings.warn(
            f"{path}: loaded {len(loadable)} tensors; {len(report.missing_keys)} missing "
            f"{list(report.missing_keys[:5])}, {len(report.unexpected_keys)} unexpected "
            f"{list(report.unexpected_keys[:5])}, {len(report.mismatched_keys)} with another shape "
            f"{list(report.mismatched_keys[:5])}",
            UserWarning,
            stacklevel=2,
        )
    return report
