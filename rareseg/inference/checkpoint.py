"""The one checkpoint loader: a RareSegModule checkpoint to the module or a :class:`~rareseg.inference.Predictor`.

``rareseg infer``, ``rareseg serve`` and ``rareseg evaluate`` load checkpoints here, so a bad file
gets the same one-line :class:`~rareseg.datamodules.DataError` from all of them: not found, not
readable, not a Lightning checkpoint, weights that do not fit, or hyperparameters that do not
rebuild the task. The file is read once. Checkpoints are unpickled (their hyperparameters name
classes to rebuild): load only files you trust.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rareseg.core.conventions import THRESHOLDS_KEY
from rareseg.datamodules.scenes import DataError
from rareseg.inference.predictor import Predictor
from rareseg.lightning_modules import RareSegModule
from rareseg.models.pretrained import skip_initial_weights


def read_checkpoint(checkpoint: str | Path) -> dict[str, Any]:
    """The content of a Lightning checkpoint file (on the CPU).

    Raises:
        DataError: the file is missing, unreadable, or holds no ``state_dict``/``hyper_parameters``.
    """
    return _read(Path(checkpoint))[0]


def load_module(
    checkpoint: str | Path, device: str | torch.device = "cpu", net: nn.Module | None = None
) -> RareSegModule:
    """Rebuild the RareSegModule of a checkpoint, in eval mode on ``device``.

    The task is rebuilt by ``RareSegModule.load_from_checkpoint`` from the checkpoint's
    hyperparameters; ``net`` supplies the architecture instead (its weights are replaced by the
    checkpoint's) for checkpoints whose hyperparameters do not describe it.

    Raises:
        DataError: see :func:`read_checkpoint`; also weights that do not fit the rebuilt network, or
            hyperparameters that do not rebuild a RareSegModule.
    """
    path = Path(checkpoint)
    _, data = _read(path)
    return _rebuild(path, data, net).to(device).eval()


def load_predictor(
    checkpoint: str | Path, device: str | torch.device = "auto", precision: str = "32", net: nn.Module | None = None
) -> Predictor:
    """Load a RareSegModule checkpoint for inference.

    Thresholds calibrated during training (``checkpoint[THRESHOLDS_KEY]``, see
    :data:`~rareseg.core.conventions.THRESHOLDS_KEY`) become the default thresholds.

    Args:
        checkpoint: ``.ckpt`` file written by Lightning.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        precision: ``"32"`` or ``"bf16"`` (autocast, see :func:`~rareseg.inference.predictor.resolve_precision`).
        net: optional network instance of the checkpoint's architecture (see :func:`load_module`).

    Returns:
        The predictor, in eval mode on ``device``.

    Raises:
        DataError: see :func:`load_module`.
    """
    path = Path(checkpoint)
    content, data = _read(path)
    return Predictor.from_module(
        _rebuild(path, data, net),
        device=device,
        precision=precision,
        thresholds=content.get(THRESHOLDS_KEY),
        checkpoint=path,
    )


def _read(path: Path) -> tuple[dict[str, Any], bytes]:
    """The checked content of a checkpoint file and its bytes (to rebuild the module without a second read)."""
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        data = path.read_bytes()
        content = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types (pickle, zip, EOF) for a bad file
        raise DataError(f"{path}: not a readable checkpoint ({type(err).__name__}: {_first_line(err)})") from None
    if not isinstance(content, dict) or not {"state_dict", "hyper_parameters"} <= content.keys():
        raise DataError(f"{path}: not a Lightning checkpoint of a RareSegModule (no state_dict/hyper_parameters)")
    return content, data


def _rebuild(path: Path, data: bytes, net: nn.Module | None) -> RareSegModule:
    """``RareSegModule.load_from_checkpoint`` on the checkpoint's bytes, with one-line errors naming ``path``."""
    overrides = {} if net is None else {"net": net}
    try:
        # the checkpoint's weights replace the initial ones: no pretrained download, no weights file needed
        with warnings.catch_warnings(), skip_initial_weights():
            # training-time advice about modules kept in the hyperparameters; irrelevant when predicting
            warnings.filterwarnings("ignore", message=r"Attribute '\w+' is an instance of `nn.Module`")
            return RareSegModule.load_from_checkpoint(
                io.BytesIO(data), map_location="cpu", weights_only=False, **overrides
            )
    except RuntimeError as err:  # load_state_dict: missing, unexpected or mis-shaped weights
        raise DataError(
            f"{path}: the weights do not fit the network rebuilt from the checkpoint ({_first_line(err)})"
        ) from None
    except Exception as err:  # the hyperparameters name classes or arguments that do not build
        raise DataError(
            f"{path}: the checkpoint does not rebuild a RareSegModule ({type(err).__name__}: {_first_line(err)})"
        ) from None


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else ""
