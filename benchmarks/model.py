"""Speed of SpatialAwareSegFormer against smp.Segformer and against itself without saliency.

All three networks share the encoder, decoder width, class count and batch. Timings are
interleaved (every round times each network once, in rotating order) and each ratio is the
median over rounds of the within-round ratio, so load from other processes on a shared machine
cancels out. Ratios are to smp.Segformer and to the in-house plain SegFormer. Target: the
saliency block costs at most 10 % (ratio to the plain network <= 1.10).
"""

from __future__ import annotations

import argparse
import functools
import statistics

import segmentation_models_pytorch as smp
import torch
from common import interleaved_seconds, paired_ratio, record
from torch import nn

from rareseg.models import SegmentationOutput, SpatialAwareSegFormer

SALIENCY_BUDGET = 1.10


def _loss(output: torch.Tensor | SegmentationOutput) -> torch.Tensor:
    """A scalar touching every output head (smp returns a tensor, rareseg a SegmentationOutput)."""
    if isinstance(output, torch.Tensor):
        return output.mean()
    loss = output.logits.mean()
    if output.saliency_logits is not None:
        loss = loss + output.saliency_logits.mean()
    return loss


def _forward_step(model: nn.Module, batch: torch.Tensor) -> None:
    with torch.inference_mode():
        model(batch)


def _forward_backward_step(model: nn.Module, batch: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    _loss(model(batch)).backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encoder", default="mit_b0", help="smp encoder name shared by all networks")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--bands", type=int, default=3, help="input bands (LISS-IV: green, red, NIR)")
    parser.add_argument("--num-classes", type=int, default=6)
    parser.add_argument("--rare-classes", type=int, nargs="+", default=[4, 5])
    parser.add_argument("--decoder-channels", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads for torch")
    parser.add_argument("--quick", action="store_true", help="batch 2 of 128 px, 11 rounds")
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.size, args.warmup, args.repeats = 2, 128, 1, 11

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    common_kwargs = {"num_classes": args.num_classes, "in_channels": args.bands, "encoder_name": args.encoder}
    baseline, plain, ours = "smp.Segformer", "SpatialAwareSegFormer(saliency=False)", "SpatialAwareSegFormer"
    models: dict[str, nn.Module] = {
        baseline: smp.Segformer(
            args.encoder,
            encoder_weights=None,
            in_channels=args.bands,
            classes=args.num_classes,
            decoder_segmentation_channels=args.decoder_channels,
        ),
        plain: SpatialAwareSegFormer(**common_kwargs, decoder_channels=args.decoder_channels, saliency=False),
        ours: SpatialAwareSegFormer(
            **common_kwargs, rare_classes=args.rare_classes, decoder_channels=args.decoder_channels
        ),
    }
    for model in models.values():
        model.to(device)
    batch = torch.randn(args.batch_size, args.bands, args.size, args.size, device=device)

    for model in models.values():
        model.eval()
    forward = interleaved_seconds(
        {n: functools.partial(_forward_step, m, batch) for n, m in models.items()},
        args.warmup,
        args.repeats,
        str(batch.device),
    )
    for model in models.values():
        model.train()
    forward_backward = interleaved_seconds(
        {n: functools.partial(_forward_backward_step, m, batch) for n, m in models.items()},
        args.warmup,
        args.repeats,
        str(batch.device),
    )

    rows = [
        "| network | parameters | forward / smp | forward / plain | fwd+bwd / smp | fwd+bwd / plain |"
        " forward ms | fwd+bwd ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, model in models.items():
        parameters = sum(p.numel() for p in model.parameters())
        rows.append(
            f"| {name} | {parameters / 1e6:.3f} M | {paired_ratio(forward, name, baseline):.3f} | "
            f"{paired_ratio(forward, name, plain):.3f} | {paired_ratio(forward_backward, name, baseline):.3f} | "
            f"{paired_ratio(forward_backward, name, plain):.3f} | {1e3 * statistics.median(forward[name]):.1f} | "
            f"{1e3 * statistics.median(forward_backward[name]):.1f} |"
        )
    saliency_cost = max(paired_ratio(forward, ours, plain), paired_ratio(forward_backward, ours, plain))
    verdict = "met" if saliency_cost <= SALIENCY_BUDGET else "NOT met"
    record(
        f"Model: SpatialAwareSegFormer vs smp.Segformer ({args.encoder})",
        "\n".join(rows),
        f"Batch {args.batch_size}x{args.bands}x{args.size}x{args.size}, {args.num_classes} classes, rare "
        f"{args.rare_classes}, decoder width {args.decoder_channels}, device {device.type}, {args.threads} CPU "
        "thread(s); ratios are medians "
        f"over {args.repeats} interleaved rounds of within-round ratios, after {args.warmup} warm-up rounds. "
        "Forward in eval mode under inference_mode; fwd+bwd in train mode on the mean of every output head. "
        f"Saliency block cost (worse of the two ratios to the plain network): {saliency_cost:.3f}, "
        f"target <= {SALIENCY_BUDGET:.2f}: {verdict}. Millisecond columns (medians) are for scale only.",
    )


if __name__ == "__main__":
    main()
