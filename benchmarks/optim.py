"""Cost of a CASM training step against an AdamW training step on the same network and batch.

A CASM step is two forward/backward passes (at w and at w + e) plus the ascent bookkeeping and
one AdamW step; an AdamW step is one forward/backward pass and the AdamW step. SAM's floor is
therefore a ratio of about 2.0; the target for CASM is <= 2.1. A third variant, "two passes +
AdamW" (both passes at w, no perturbation), is that floor measured, so CASM's own overhead
is the ratio to it.

Every variant trains its own copy of the same initial network. Timings are interleaved (each
round times every variant once, in rotating order) and each ratio is the median over rounds of
the within-round ratio, so load from other processes on a shared machine cancels out.
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
from collections.abc import Callable

import segmentation_models_pytorch as smp
import torch
from common import interleaved_seconds, paired_ratio, record
from torch import Tensor, nn

from rareseg.optim import CASM, rare_pixel_fraction

CASM_BUDGET = 2.1
Batch = tuple[Tensor, Tensor]
Step = Callable[[nn.Module, torch.optim.Optimizer, Batch], None]


def _loss(model: nn.Module, batch: Batch) -> Tensor:
    image, target = batch
    return nn.functional.cross_entropy(model(image), target, ignore_index=255)


def _adamw_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch) -> None:
    optimizer.zero_grad()
    _loss(model, batch).backward()
    optimizer.step()


def _two_pass_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch) -> None:
    optimizer.zero_grad()
    _loss(model, batch).backward()
    optimizer.zero_grad()
    _loss(model, batch).backward()
    optimizer.step()


def _casm_step(model: nn.Module, optimizer: CASM, batch: Batch, rare_classes: list[int]) -> None:
    optimizer.zero_grad()
    _loss(model, batch).backward()
    optimizer.first_step(float(rare_pixel_fraction(batch[1], rare_classes)), zero_grad=True)

    def closure() -> Tensor:
        loss = _loss(model, batch)
        loss.backward()
        return loss

    optimizer.step(closure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encoder", default="mit_b0", help="smp encoder of the Segformer")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--bands", type=int, default=3, help="input bands (LISS-IV: green, red, NIR)")
    parser.add_argument("--num-classes", type=int, default=6)
    parser.add_argument("--rare-classes", type=int, nargs="+", default=[4, 5])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads for torch (1: steadiest on a shared machine)"
    )
    parser.add_argument("--quick", action="store_true", help="1 warm-up and 7 timed rounds")
    args = parser.parse_args()
    if args.quick:
        args.warmup, args.repeats = 1, 7

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    network = smp.Segformer(args.encoder, encoder_weights=None, in_channels=args.bands, classes=args.num_classes).to(
        device
    )
    image = torch.randn(args.batch_size, args.bands, args.size, args.size, device=device)
    target = torch.randint(0, args.num_classes, (args.batch_size, args.size, args.size), device=device)
    adamw = {"lr": 6e-4, "weight_decay": 0.01}

    casm_step = functools.partial(_casm_step, rare_classes=args.rare_classes)

    def variant(
        step: Step, make: Callable[[nn.Module], torch.optim.Optimizer]
    ) -> tuple[nn.Module, torch.optim.Optimizer, Step]:
        model = copy.deepcopy(network).train()
        return model, make(model), step

    baseline, floor, ours, ours_adaptive = "AdamW", "two passes + AdamW (SAM floor)", "CASM", "CASM, adaptive (ASAM)"
    variants = {
        baseline: variant(_adamw_step, lambda m: torch.optim.AdamW(m.parameters(), **adamw)),
        floor: variant(_two_pass_step, lambda m: torch.optim.AdamW(m.parameters(), **adamw)),
        ours: variant(casm_step, lambda m: CASM(m.parameters(), torch.optim.AdamW, rho0=0.05, kappa=1.0, **adamw)),
        ours_adaptive: variant(
            casm_step, lambda m: CASM(m.parameters(), torch.optim.AdamW, rho0=0.5, kappa=1.0, adaptive=True, **adamw)
        ),
    }
    samples = interleaved_seconds(
        {
            n: functools.partial(step, model, optimizer, (image, target))
            for n, (model, optimizer, step) in variants.items()
        },
        args.warmup,
        args.repeats,
        str(image.device),
    )

    rows = [
        "| training step | forward/backward passes | time / AdamW | time / SAM floor | median ms |",
        "|---|---|---|---|---|",
    ]
    for name in variants:
        passes = 1 if name == baseline else 2
        rows.append(
            f"| {name} | {passes} | {paired_ratio(samples, name, baseline):.3f} | "
            f"{paired_ratio(samples, name, floor):.3f} | {1e3 * statistics.median(samples[name]):.1f} |"
        )
    ratio = paired_ratio(samples, ours, baseline)
    verdict = "met" if ratio <= CASM_BUDGET else "NOT met"
    parameters = sum(p.numel() for p in network.parameters())
    record(
        f"Optimizer: CASM step vs AdamW step (smp Segformer {args.encoder})",
        "\n".join(rows),
        f"smp.Segformer({args.encoder}), {parameters / 1e6:.2f} M parameters, batch {args.batch_size}x{args.bands}x"
        f"{args.size}x{args.size}, {args.num_classes} classes, cross-entropy, device {device.type}, {args.threads} CPU "
        f"thread(s). Ratios are medians over {args.repeats} interleaved rounds of within-round ratios, after "
        f"{args.warmup} warm-up rounds; the CASM step includes p_r from the labels. CASM / AdamW = {ratio:.3f}, "
        f"target <= {CASM_BUDGET:.1f}: {verdict}. SAM's floor is about 2.0 (measured: the two-pass row, a little "
        "under 2 because the AdamW update runs once). Millisecond column (medians) is for scale only.",
    )


if __name__ == "__main__":
    main()
