"""Encoders initialised from published pretrained weights (through smp/timm), or saved for offline machines.

``encoder_weights`` of :class:`~rareseg.models.SpatialAwareSegFormer` is one of:

- ``None``: random initialisation;
- a local file (:mod:`rareseg.models.local_weights`): loaded, never downloaded;
- a pretrained-weights name smp knows for the encoder (``"imagenet"`` for ``mit_b0``..``mit_b5``
  and most others; for ``tu-<timm model>`` encoders any name asks timm for the model's default
  pretrained tag): smp downloads the weights from the Hugging Face Hub once and caches them
  (``~/.cache/huggingface``). Without network access (and an empty cache) the error says how to
  bring the file over.

For an air-gapped machine, save the weights where there is network and copy the file::

    python -m rareseg.models.pretrained mit_b0 imagenet mit_b0-imagenet.pth

then set ``encoder_weights: mit_b0-imagenet.pth``.

When a checkpoint is loaded (``rareseg infer``, ``serve``, ``evaluate``), its trained weights replace
the initial ones, so :func:`skip_initial_weights` builds the network without fetching anything.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

#: File name endings that mark ``encoder_weights`` as a path, not a pretrained-weights name.
WEIGHTS_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
TIMM_PREFIX = "tu-"

_skip_initial_weights = contextvars.ContextVar("rareseg_skip_initial_weights", default=False)


@contextlib.contextmanager
def skip_initial_weights() -> Iterator[None]:
    """Within this context, networks ignore ``encoder_weights`` (a checkpoint's weights are loaded next)."""
    token = _skip_initial_weights.set(True)
    try:
        yield
    finally:
        _skip_initial_weights.reset(token)


def initial_weights_skipped() -> bool:
    """Whether :func:`skip_initial_weights` is active."""
    return _skip_initial_weights.get()


def pretrained_names(encoder_name: str) -> list[str]:
    """Pretrained-weights names smp offers for ``encoder_name`` (empty for ``tu-`` encoders: any name goes)."""
    if encoder_name.startswith(TIMM_PREFIX):
        return []
    settings = smp.encoders.encoders.get(encoder_name)
    return [] if settings is None else sorted(settings["pretrained_settings"])


def is_pretrained_name(encoder_name: str, encoder_weights: str) -> bool:
    """Whether ``encoder_weights`` is a name to download for ``encoder_name`` rather than a local path.

    Raises:
        ValueError: it is neither an existing file nor a name the encoder knows (one line).
    """
    path = Path(encoder_weights).expanduser()
    if path.is_file():
        return False
    looks_like_path = os.sep in encoder_weights or path.suffix.lower() in WEIGHTS_SUFFIXES
    if looks_like_path:
        raise ValueError(f"encoder_weights={encoder_weights!r}: no such file")
    if encoder_name.startswith(TIMM_PREFIX) or encoder_weights in pretrained_names(encoder_name):
        return True
    raise ValueError(
        f"encoder_weights={encoder_weights!r} is neither a local file nor pretrained weights of {encoder_name} "
        f"(smp offers {pretrained_names(encoder_name) or 'none'})"
    )


def pretrained_encoder(encoder_name: str, encoder_weights: str, in_channels: int = 3, depth: int = 5) -> nn.Module:
    """An smp encoder initialised with the published weights ``encoder_weights`` (downloaded once, then cached).

    With ``in_channels`` other than 3, smp adapts the first convolution of the pretrained weights.

    Raises:
        ValueError: the weights could not be fetched (offline, no cache); the message names the fix.
    """
    weights: str | bool = True if encoder_name.startswith(TIMM_PREFIX) else encoder_weights
    try:
        return smp.encoders.get_encoder(encoder_name, in_channels=in_channels, depth=depth, weights=weights)
    except Exception as err:  # the hub and timm raise many types (OSError, httpx, ...) when offline
        reason = str(err).splitlines()[0] if str(err) else ""
        out = f"{encoder_name}-{encoder_weights}.pth"
        save = f"python -m rareseg.models.pretrained {encoder_name} {encoder_weights} {out}"
        raise ValueError(
            f"encoder_weights={encoder_weights!r}: cannot fetch the pretrained {encoder_name} weights "
            f"({type(err).__name__}: {reason}); is this machine offline? On a machine with network run "
            f"`{save}`, copy the file here and set encoder_weights to its path"
        ) from None


def save_pretrained_encoder(
    encoder_name: str, encoder_weights: str, out: str | Path, in_channels: int = 3, depth: int = 5
) -> Path:
    """Download the pretrained encoder and save its state dict to ``out`` (for ``encoder_weights: <out>``).

    The file is written to a temporary sibling and renamed, so ``out`` is never half-written.

    Returns:
        The path written.
    """
    out = Path(out).expanduser()
    is_pretrained_name(encoder_name, encoder_weights)
    encoder = pretrained_encoder(encoder_name, encoder_weights, in_channels=in_channels, depth=depth)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    os.close(handle)
    try:
        torch.save(encoder.state_dict(), temporary)
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rareseg.models.pretrained ENCODER WEIGHTS OUT``: save pretrained weights for offline use."""
    parser = argparse.ArgumentParser(
        prog="python -m rareseg.models.pretrained",
        description="Download an encoder's pretrained weights (smp/timm) and save them for encoder_weights: OUT.",
    )
    parser.add_argument("encoder", help="smp encoder name, e.g. mit_b0")
    parser.add_argument("weights", help="pretrained-weights name, e.g. imagenet")
    parser.add_argument("out", help="file to write (torch.save of the encoder's state dict)")
    parser.add_argument("--in-channels", type=int, default=3, help="input bands the first layer is adapted to")
    args = parser.parse_args(argv)
    try:
        path = save_pretrained_encoder(args.encoder, args.weights, args.out, in_channels=args.in_channels)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"saved {args.encoder} {args.weights} weights to {path}; set encoder_weights: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
