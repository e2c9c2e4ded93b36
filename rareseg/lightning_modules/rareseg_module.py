"""RareSegModule: the Lightning task that trains a segmentation network on rare classes.

Manual optimisation so one module serves a plain optimiser (``optimizer="adamw"``) and
the two-pass sharpness-aware ones (``"sam"``, ``"casm"``): the ascent pass runs without
DDP gradient sync (its gradient is averaged explicitly), the descent pass runs with
BatchNorm running statistics frozen inside the optimiser closure, and one
``optimizer.step(closure=...)`` per batch keeps ``trainer.global_step`` at one per batch.
Validation/test steps return predictions for the metric callbacks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from affine import Affine
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from rareseg.core.conventions import IGNORE_INDEX
from rareseg.datamodules.predict_scenes import is_scene_descriptor
from rareseg.losses import CrossEntropyLoss, SaliencyBCELoss
from rareseg.models import SegmentationOutput, SpatialAwareSegFormer
from rareseg.optim import CASM, rare_pixel_counts


def _adamw(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=6e-4, weight_decay=0.01)


@contextmanager
def frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """Keep BatchNorm running statistics unchanged (momentum 0) inside the block."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


class RareSegModule(LightningModule):
    """Semantic segmentation with a rare-class loss, saliency supervision and (C)SAM.

    The network, loss and base optimiser are plug-ins (``class_path`` blocks in the
    config). ``num_classes``, ``in_channels``, ``rare_classes``, ``class_names``,
    ``class_frequencies`` and the band statistics are linked from the datamodule.
    """

    def __init__(
        self,
        net: nn.Module | None = None,
        loss: nn.Module | None = None,
        aux_weight: float = 0.1,
        optimizer: Literal["adamw", "sam", "casm"] = "casm",
        base_optimizer: OptimizerCallable = _adamw,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["step", "epoch"] = "step",
        rho0: float = 0.05,
        kappa: float = 1.0,
        adaptive: bool = False,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: Literal["norm", "value"] = "norm",
        num_classes: int = 6,
        in_channels: int = 3,
        rare_classes: Sequence[int] = (4, 5),
        class_names: Sequence[str] | None = None,
        class_colors: Sequence[Sequence[int]] | None = None,
        class_frequencies: Sequence[float] | None = None,
        band_mean: Sequence[float] | None = None,
        band_std: Sequence[float] | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        """Build the task.

        Args:
            net: segmentation network; returns logits (B, K, H, W) or a
                :class:`~rareseg.models.SegmentationOutput`. Default: SpatialAwareSegFormer (mit_b0).
            loss: segmentation loss ``loss(logits, target)``. Default: cross-entropy.
            aux_weight: weight mu of the saliency BCE term (0 disables it).
            optimizer: ``adamw`` (base optimiser only), ``sam`` (CASM with kappa=0) or ``casm``.
            base_optimizer: callable building the base optimiser from parameters.
            lr_scheduler: optional callable building an LR scheduler from the optimiser.
            scheduler_interval: step the scheduler every ``step`` or every ``epoch``.
            rho0: CASM base radius.
            kappa: CASM rare-density gain (ignored for ``sam``).
            adaptive: ASAM's scale-invariant perturbation.
            gradient_clip_val: clip gradients to this value/norm (None: no clipping).
            gradient_clip_algorithm: ``norm`` or ``value``.
            num_classes: K, linked from the datamodule.
            in_channels: bands, linked from the datamodule.
            rare_classes: rare class ids, linked from the datamodule.
            class_names: class names by id, linked from the datamodule.
            class_colors: RGB colours by id, linked from the datamodule.
            class_frequencies: training pixel frequencies, linked from the datamodule.
            band_mean: per-band normalisation mean (stored for inference).
            band_std: per-band normalisation standard deviation (stored for inference).
            ignore_index: target value excluded from losses and metrics.
        """
        super().__init__()
        if optimizer in {"sam", "casm"} and (rho0 < 0 or kappa < 0):
            raise ValueError(f"rho0 and kappa must be >= 0, got rho0={rho0}, kappa={kappa}")
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        # Under the CLI the hparams hold the plug-ins' configs (class_path dicts), so
        # load_from_checkpoint rebuilds them; objects passed in code (modules, callables) are
        # not pickled into the checkpoint: pass them again to load_from_checkpoint.
        self.save_hyperparameters()
        for key in ("net", "loss", "base_optimizer", "lr_scheduler"):
            if isinstance(self.hparams.get(key), nn.Module) or callable(self.hparams.get(key)):
                del self.hparams[key]
        self.automatic_optimization = False
        self.rare_classes = tuple(int(c) for c in rare_classes)
        self.class_names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_classes)]
        self.net = (
            net
            if net is not None
            else SpatialAwareSegFormer(num_classes=num_classes, rare_classes=self.rare_classes, in_channels=in_channels)
        )
        self.criterion = loss if loss is not None else CrossEntropyLoss(ignore_index=ignore_index)
        self.saliency_criterion = SaliencyBCELoss(self.rare_classes, ignore_index=ignore_index)
        self.aux_weight = aux_weight
        self.optimizer_name = optimizer
        self.base_optimizer = base_optimizer
        self.lr_scheduler = lr_scheduler
        self.ignore_index = ignore_index

    def forward(self, image: Tensor) -> SegmentationOutput:
        """Run the network on a normalised (B, C, H, W) batch."""
        out = self.net(image)
        return out if isinstance(out, SegmentationOutput) else SegmentationOutput(out, None)

    def compute_loss(self, out: SegmentationOutput, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss = segmentation loss + aux_weight * saliency BCE, with its terms."""
        segmentation = self.criterion(out.logits, target)
        terms = {"loss_seg": segmentation.detach()}
        total = segmentation
        if out.saliency_logits is not None and self.aux_weight > 0:
            saliency = self.saliency_criterion(out.saliency_logits, target)
            terms["loss_saliency"] = saliency.detach()
            total = total + self.aux_weight * saliency
        return total, terms

    def rare_fraction(self, target: Tensor) -> Tensor:
        """p_r: rare-pixel share of the batch's valid pixels, summed over all ranks."""
        counts = rare_pixel_counts(target, self.rare_classes, self.ignore_index).to(torch.float64)
        counts = self.trainer.strategy.reduce(counts, reduce_op="sum") if self._trainer is not None else counts
        return counts[0] / counts[1].clamp_min(1)

    def _average_gradients(self) -> None:
        """All-reduce (mean) the gradients of the ascent pass, which ran without DDP sync."""
        if self.trainer.world_size == 1:
            return
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        flat = self.trainer.strategy.reduce(flat, reduce_op="mean")
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def _clip(self, optimizer: Any) -> None:
        if self.hparams.gradient_clip_val is not None:
            self.clip_gradients(
                optimizer,
                gradient_clip_val=self.hparams.gradient_clip_val,
                gradient_clip_algorithm=self.hparams.gradient_clip_algorithm,
            )

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One optimiser step: plain, or CASM's ascent + descent passes."""
        image, target = batch["image"], batch["mask"]
        optimizer = self.optimizers()
        if self.optimizer_name == "adamw":
            loss, terms = self.compute_loss(self(image), target)
            optimizer.zero_grad()
            self.manual_backward(loss)
            self._clip(optimizer)
            optimizer.step()
        else:
            p_r = self.rare_fraction(target)
            with optimizer.toggle_model(sync_grad=False):
                loss, terms = self.compute_loss(self(image), target)
                optimizer.zero_grad()
                self.manual_backward(loss)
            self._average_gradients()
            optimizer.optimizer.first_step(float(p_r), zero_grad=True)

            def descent_closure() -> Tensor:
                with frozen_batchnorm_stats(self.net):
                    perturbed_loss, _ = self.compute_loss(self(image), target)
                self.manual_backward(perturbed_loss)
                self._clip(optimizer)
                return perturbed_loss

            optimizer.step(closure=descent_closure)
            self.log("train/p_r", p_r.float(), on_step=True, on_epoch=False)
            self.log("train/rho", float(optimizer.optimizer.last_rho), on_step=True, on_epoch=False)
        self._step_scheduler("step")
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=image.shape[0])
        for name, value in terms.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=image.shape[0])
        return loss.detach()

    def on_train_epoch_end(self) -> None:
        """Step an epoch-interval LR scheduler."""
        self._step_scheduler("epoch")

    def _step_scheduler(self, interval: str) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is not None and self.hparams.scheduler_interval == interval:
            scheduler.step()

    def _evaluation_step(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor]:
        image, target = batch["image"], batch["mask"]
        out = self(image)
        loss, _ = self.compute_loss(out, target)
        self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True, batch_size=image.shape[0])
        probs = F.softmax(out.logits.float(), dim=1)
        result = {"preds": probs.argmax(dim=1), "target": target, "probs": probs, "image": image}
        if out.saliency_logits is not None:
            result["saliency"] = torch.sigmoid(out.saliency_logits.float())
        return result

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Loss and predictions (``preds``, ``target``, ``probs``, ``image``, ``saliency``) for callbacks."""
        return self._evaluation_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """As :meth:`validation_step`, logged under ``test/``."""
        return self._evaluation_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Predictions of a batch of crops, or a whole scene's descriptor for the prediction writer.

        Args:
            batch: crops ``{"image": (B, C, H, W)}`` (normalised), or a scene descriptor
                ``{"path", "name"}`` from ``LissIVDataModule``'s predict stage.
            batch_idx: index of the batch.

        Returns:
            For crops: class probabilities ``probs`` (B, K, H, W) and rare-class saliency
            ``saliency`` (B, R, H, W) or None. A scene descriptor is returned unchanged:
            ``rareseg.inference.ScenePredictionWriter`` predicts the scene tile by tile, so a
            scene of any size never has to fit in one batch.
        """
        if is_scene_descriptor(batch):
            return batch
        out = self(batch["image"])
        saliency = torch.sigmoid(out.saliency_logits.float()) if out.saliency_logits is not None else None
        return {"probs": F.softmax(out.logits.float(), dim=1), "saliency": saliency}

    def scene_saliency(
        self,
        image_path: str | Path,
        resolution: float,
        *,
        tile: int = 512,
        overlap: int = 64,
        batch_size: int = 8,
        precision: str = "32-true",
    ) -> tuple[np.ndarray, Affine]:
        """Low-resolution saliency map of a whole scene, for the ``SaliencyRefresh`` callback.

        The module goes through the one inference pass: wrapped in a
        :class:`~rareseg.inference.Predictor` (its ``band_mean``/``band_std`` normalise the raw
        tiles), tiled with overlap and blended, the saliency averaged over cells
        (:func:`~rareseg.inference.saliency_map.scene_saliency_map`). Leaves the module in eval
        mode on its device; the caller restores the training mode.

        Args:
            image_path: the scene GeoTIFF.
            resolution: map cell size in CRS units (metres), rounded to whole pixels.
            tile: tile side in pixels.
            overlap: pixels shared by neighbouring tiles.
            batch_size: tiles per forward pass.
            precision: the trainer's precision: ``bf16*`` runs under bf16 autocast, anything else in float32.

        Returns:
            The (h, w) float32 map and its ``Affine`` in the scene CRS.
        """
        from rareseg.inference.predictor import Predictor
        from rareseg.inference.saliency_map import scene_saliency_map

        autocast = "bf16" if str(precision).startswith("bf16") else "32"
        predictor = Predictor.from_module(self, device=self.device, precision=autocast)
        return scene_saliency_map(predictor, image_path, resolution, tile=tile, overlap=overlap, batch_size=batch_size)

    def configure_optimizers(self) -> Any:
        """Base optimiser, wrapped in CASM for ``sam``/``casm``, plus the optional scheduler."""
        if self.optimizer_name == "adamw":
            optimizer = self.base_optimizer(self.parameters())
        else:
            kappa = 0.0 if self.optimizer_name == "sam" else self.hparams.kappa
            optimizer = CASM(
                self.parameters(),
                base_optimizer=self.base_optimizer,
                rho0=self.hparams.rho0,
                kappa=kappa,
                adaptive=self.hparams.adaptive,
            )
        if self.lr_scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.lr_scheduler(optimizer), "interval": self.hparams.scheduler_interval},
        }

    def on_fit_start(self) -> None:
        """Refuse precisions the two-pass step cannot use."""
        check_precision(str(self.trainer.precision))


def check_precision(precision: str) -> None:
    """Raise for fp16 mixed precision: CASM's two passes do not fit one GradScaler step.

    Args:
        precision: Lightning precision string, e.g. ``"32-true"``, ``"bf16-mixed"``.
    """
    if precision in {"16-mixed", "16"}:
        raise ValueError(
            f"precision '{precision}' is not supported: the sharpness-aware step needs unscaled gradients in two "
            "passes "
            "(GradScaler allows one unscale per step); use 'bf16-mixed' or '32-true'"
        )
