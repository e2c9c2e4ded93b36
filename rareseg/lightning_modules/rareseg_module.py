"""RareSegModule: the Lightning task that trains a segmentation network on rare classes.

Manual optimisation so one module serves a plain optimiser (``optimizer="adamw"``) and
the two-pass sharpness-aware ones (``"sam"``, ``"casm"``): the ascent pass runs without
DDP gradient sync (its gradient is averaged explicitly), the descent pass runs with
BatchNorm running statistics frozen inside the optimiser closure, and one
``optimizer.step(closure=...)`` per batch keeps ``trainer.global_step`` at one per batch.
The sharpness-aware step perturbs either the whole loss (``sam_on="all"``) or only its
rare-class part (``sam_on="rare"``, ImbSAM). Validation/test steps return predictions for the
metric callbacks.

What the data decides (classes, bands, band statistics, class frequencies) the task learns from
the trainer's datamodule in ``configure_model`` when it is not given, so a plain ``LightningCLI``
runs the recipe without links; the learned values go into the hyperparameters, so a checkpoint
rebuilds the task without the datamodule.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from affine import Affine
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from rareseg.core.conventions import IGNORE_INDEX
from rareseg.datamodules.normalisation import check_normalisation
from rareseg.datamodules.predict_scenes import is_scene_descriptor
from rareseg.losses import CrossEntropyLoss, SaliencyBCELoss
from rareseg.models import SegmentationOutput, SpatialAwareSegFormer
from rareseg.optim import CASM, rare_pixel_counts


def _adamw(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=6e-4, weight_decay=0.01)


class NetFactory(Protocol):
    """A network class given without what the data decides: a ``class_path`` block without these arguments.

    The task calls it with the ones its ``init_args`` do not name (those given there win).
    """

    def __call__(self, *, num_classes: int, in_channels: int, rare_classes: Sequence[int]) -> nn.Module: ...


class LossFactory(Protocol):
    """A loss class given without ``class_frequencies``; the task calls it with the training frequencies."""

    def __call__(self, *, class_frequencies: Sequence[float] | None) -> nn.Module: ...


#: What the task learns from ``trainer.datamodule`` (same attribute names) when it is not given.
DATA_ATTRIBUTES = (
    "num_classes",
    "in_channels",
    "rare_classes",
    "class_names",
    "class_colors",
    "class_frequencies",
    "band_mean",
    "band_std",
    "normalisation",
)


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
    config). ``num_classes``, ``in_channels``, ``rare_classes``, ``class_names``, ``class_colors``,
    ``class_frequencies`` and the band statistics not given are read from ``trainer.datamodule``
    (attributes of those names) in :meth:`configure_model`, which then builds the network and the
    loss; given ones win. A task given a built network, or ``num_classes``, is built at once (a
    checkpoint holds the learned values, so it rebuilds without a datamodule).
    """

    def __init__(
        self,
        net: NetFactory | nn.Module | None = None,
        loss: LossFactory | nn.Module | None = None,
        aux_weight: float = 0.1,
        optimizer: Literal["adamw", "sam", "casm"] = "casm",
        base_optimizer: OptimizerCallable = _adamw,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["step", "epoch"] = "step",
        rho0: float = 0.05,
        kappa: float = 1.0,
        adaptive: bool = False,
        radius_mode: Literal["fewer_rare", "more_rare"] = "fewer_rare",
        rho_warmup_steps: int = 0,
        sam_on: Literal["all", "rare"] = "all",
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: Literal["norm", "value"] = "norm",
        num_classes: int | None = None,
        in_channels: int | None = None,
        rare_classes: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
        class_colors: Sequence[Sequence[int]] | None = None,
        class_frequencies: Sequence[float] | None = None,
        band_mean: Sequence[float] | None = None,
        band_std: Sequence[float] | None = None,
        normalisation: str | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        """Build the task.

        Args:
            net: segmentation network; returns logits (B, K, H, W) or a
                :class:`~rareseg.models.SegmentationOutput`. Default: SpatialAwareSegFormer (mit_b0).
                A :class:`NetFactory` (a config block without the data's arguments) is called with
                ``num_classes``, ``in_channels`` and ``rare_classes``.
            loss: segmentation loss ``loss(logits, target)``. Default: cross-entropy. A
                :class:`LossFactory` is called with ``class_frequencies``.
            aux_weight: weight mu of the saliency BCE term (0 disables it).
            optimizer: ``adamw`` (base optimiser only), ``sam`` (CASM with kappa=0) or ``casm``.
            base_optimizer: callable building the base optimiser from parameters.
            lr_scheduler: optional callable building an LR scheduler from the optimiser.
            scheduler_interval: step the scheduler every ``step`` or every ``epoch``.
            rho0: CASM base radius.
            kappa: CASM rare-density gain (ignored for ``sam``).
            adaptive: ASAM's scale-invariant perturbation.
            radius_mode: CASM radius ``rho0 * (1 + kappa * (1 - p_r))`` (``fewer_rare``, the seed) or
                ``rho0 * (1 + kappa * p_r)`` (``more_rare``); see :func:`rareseg.optim.casm_rho`.
            rho_warmup_steps: optimiser steps over which the radius ramps linearly from 0 to its
                full value (0: no warm-up); see :class:`rareseg.optim.CASM`.
            sam_on: what the sharpness-aware step perturbs. ``all`` (the seed): the whole loss.
                ``rare`` (ImbSAM, Zhou et al. 2023): with the segmentation loss split as
                ``L = L_rare + L_rest`` (``loss.split``, see :mod:`rareseg.losses`) and the
                saliency term in the unperturbed part ``L_major = L_rest + aux_weight * BCE``, the
                descent gradient is ``grad L_major(w) + grad L_rare(w + e)`` with
                ``e = rho * grad L_rare(w) / (||grad L_rare(w)|| + eps')``. Needs ``sam``/``casm``
                and a loss with ``split``; logs ``train/loss_rare``, ``train/loss_major`` (at ``w``)
                and ``train/loss_rare_perturbed`` (at ``w + e``) every step. Costs 2 forward and 3
                backward passes per step (``all``: 2 and 2).
            gradient_clip_val: clip gradients to this value/norm (None: no clipping).
            gradient_clip_algorithm: ``norm`` or ``value``.
            num_classes: K (None: the datamodule's, else the network's ``num_classes``).
            in_channels: bands (None: the datamodule's, else the network's ``in_channels``, else 3).
            rare_classes: rare class ids (None: the datamodule's, else the network's, else none).
            class_names: class names by id (None: the datamodule's, else ``class_<id>``).
            class_colors: RGB colours by id (None: the datamodule's).
            class_frequencies: training pixel frequencies (None: the datamodule's).
            band_mean: per-band normalisation mean, stored for inference (None: the datamodule's).
            band_std: per-band normalisation standard deviation (None: the datamodule's).
            normalisation: ``"dataset"`` or ``"scene"`` (None: the datamodule's, else ``"dataset"``),
                stored so inference normalises as training did; see :mod:`rareseg.datamodules.normalisation`.
            ignore_index: target value excluded from losses and metrics.
        """
        super().__init__()
        if optimizer in {"sam", "casm"} and (rho0 < 0 or kappa < 0):
            raise ValueError(f"rho0 and kappa must be >= 0, got rho0={rho0}, kappa={kappa}")
        if sam_on not in ("all", "rare"):
            raise ValueError(f"sam_on must be 'all' or 'rare', got {sam_on!r}")
        if sam_on == "rare" and optimizer == "adamw":
            raise ValueError(
                "sam_on='rare' perturbs the rare-class loss in a sharpness-aware step: use optimizer sam or casm"
            )
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        if normalisation is not None:
            check_normalisation(normalisation)
        # Under the CLI the hparams hold the plug-ins' configs (class_path dicts), so
        # load_from_checkpoint rebuilds them; objects passed in code (modules, callables) are
        # not pickled into the checkpoint: pass them again to load_from_checkpoint.
        self.save_hyperparameters()
        for key in ("net", "loss", "base_optimizer", "lr_scheduler"):
            if isinstance(self.hparams.get(key), nn.Module) or callable(self.hparams.get(key)):
                del self.hparams[key]
        self.automatic_optimization = False
        self.aux_weight = aux_weight
        self.optimizer_name = optimizer
        self.sam_on = sam_on
        self.base_optimizer = base_optimizer
        self.lr_scheduler = lr_scheduler
        self.ignore_index = ignore_index
        self._net_plugin = net
        self._loss_plugin = loss
        self.net: nn.Module | None = None
        self.criterion: nn.Module | None = None
        self.rare_classes: tuple[int, ...] = ()
        self.class_names: list[str] | None = None
        self.class_colors: list[list[int]] | None = None
        if isinstance(net, nn.Module) or num_classes is not None:
            self._build()

    def configure_model(self) -> None:
        """Learn what was not given from ``trainer.datamodule`` and build the network and the loss (once).

        Raises:
            ValueError: the number of classes is neither given nor known to the datamodule.
        """
        if self.net is not None:
            return
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        for name in DATA_ATTRIBUTES:
            if self.hparams.get(name) is None and getattr(datamodule, name, None) is not None:
                self._set_hparam(name, _plain(getattr(datamodule, name)))
        if self.hparams.get("num_classes") is None:
            raise ValueError(
                "RareSegModule: num_classes is not given and the trainer has no datamodule with num_classes "
                "(pass num_classes, in_channels and rare_classes, or train with such a datamodule)"
            )
        self._build()

    def _set_hparam(self, name: str, value: Any) -> None:
        """Record a learned value in the hyperparameters (checkpoint) and the initial ones (loggers)."""
        self.hparams[name] = value
        self._hparams_initial[name] = value

    def _build(self) -> None:
        """Build the network, the loss and the saliency criterion from the plug-ins and the known values."""
        net, loss, hparams = self._net_plugin, self._loss_plugin, self.hparams
        built = net if isinstance(net, nn.Module) else None
        num_classes = _first_known(hparams.get("num_classes"), getattr(built, "num_classes", None))
        in_channels = _first_known(hparams.get("in_channels"), getattr(built, "in_channels", None), 3)
        rare_classes = _first_known(hparams.get("rare_classes"), getattr(built, "rare_classes", None), ())
        if num_classes is None:
            raise ValueError("RareSegModule: num_classes is not given and the network has no num_classes")
        for name, value in (("num_classes", int(num_classes)), ("in_channels", int(in_channels))):
            self._set_hparam(name, value)
        self._set_hparam("rare_classes", [int(c) for c in rare_classes])
        self._set_hparam("normalisation", check_normalisation(hparams.get("normalisation") or "dataset"))
        self.rare_classes = tuple(hparams["rare_classes"])
        names = hparams.get("class_names")
        self.class_names = list(names) if names is not None else [f"class_{i}" for i in range(num_classes)]
        self.class_colors = hparams.get("class_colors")
        if built is None:
            data = {"num_classes": num_classes, "in_channels": in_channels, "rare_classes": self.rare_classes}
            factory = net if net is not None else SpatialAwareSegFormer
            built = factory(**_not_bound(factory, data))
        self.net = built
        if isinstance(loss, nn.Module):
            self.criterion = loss
        elif loss is None:
            self.criterion = CrossEntropyLoss(ignore_index=self.ignore_index)
        else:
            self.criterion = loss(**_not_bound(loss, {"class_frequencies": hparams.get("class_frequencies")}))
        if getattr(self.criterion, "rare_classes", ()) is None:
            self.criterion.rare_classes = self.rare_classes
        if self.sam_on == "rare" and not callable(getattr(self.criterion, "split", None)):
            raise ValueError(
                "sam_on='rare' needs a loss that splits into a rare-class part and the rest (a split(logits, "
                f"target, classes) method, see rareseg.losses); {type(self.criterion).__name__} has none"
            )
        self.saliency_criterion = SaliencyBCELoss(self.rare_classes, ignore_index=self.ignore_index)

    def configure_callbacks(self) -> list[Callback]:
        """RareClassMetrics and ThresholdCalibrator, each unless the trainer already has one.

        The validation scores they log (``val/rare_iou``, ...) are what the recipe's checkpoint,
        early stopping and babysitter monitor, so a config whose callback list leaves them out still
        gets them (with the task's classes and default options).
        """
        from rareseg.callbacks import RareClassMetrics, ThresholdCalibrator

        present = self._trainer.callbacks if self._trainer is not None else []
        kinds = (RareClassMetrics, ThresholdCalibrator)
        return [kind() for kind in kinds if not any(isinstance(callback, kind) for callback in present)]

    def forward(self, image: Tensor) -> SegmentationOutput:
        """Run the network on a normalised (B, C, H, W) batch."""
        out = self.net(image)
        return out if isinstance(out, SegmentationOutput) else SegmentationOutput(out, None)

    def compute_loss(self, out: SegmentationOutput, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss = segmentation loss + aux_weight * saliency BCE, with its terms."""
        segmentation = self.criterion(out.logits, target)
        terms = {"loss_seg": segmentation.detach()}
        return self._plus_saliency(segmentation, out, target, terms), terms

    def compute_split_loss(self, out: SegmentationOutput, target: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``(L_rare, L_major, terms)``: the segmentation loss's rare-class part, and its rest plus the saliency term.

        ``L_rare + L_major`` is :meth:`compute_loss`'s total; the saliency BCE goes to ``L_major``.
        """
        rare, rest = self.criterion.split(out.logits, target, self.rare_classes)
        terms = {"loss_seg": (rare + rest).detach()}
        return rare, self._plus_saliency(rest, out, target, terms), terms

    def _plus_saliency(self, loss: Tensor, out: SegmentationOutput, target: Tensor, terms: dict[str, Tensor]) -> Tensor:
        """``loss + aux_weight * saliency BCE`` (``loss`` alone without saliency output or weight); records the term."""
        if out.saliency_logits is None or self.aux_weight <= 0:
            return loss
        saliency = self.saliency_criterion(out.saliency_logits, target)
        terms["loss_saliency"] = saliency.detach()
        return loss + self.aux_weight * saliency

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
        elif self.sam_on == "rare":
            loss, terms = self._rare_sharpness_step(image, target, optimizer)
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

    def _rare_sharpness_step(self, image: Tensor, target: Tensor, optimizer: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """ImbSAM step: descent gradient ``grad L_major(w) + grad L_rare(w + e)``, ascent on ``L_rare`` only.

        Pass 1 (no DDP sync, gradients averaged explicitly) backpropagates ``L_major`` and then
        ``L_rare`` through the same graph: 1 forward, 2 backward. Pass 2 (BatchNorm statistics
        frozen, DDP sync) backpropagates ``L_rare(w + e)`` plus the network outputs with weight 0,
        so every parameter the full loss reaches takes part in DDP's gradient reduction (their
        contribution is exactly 0); then ``grad L_major(w)`` is added, gradients are clipped and
        the base optimiser steps: 1 forward, 1 backward.

        Returns:
            The loss ``L_rare(w) + L_major(w)`` (detached) and its terms for epoch logging.
        """
        p_r = self.rare_fraction(target)
        with optimizer.toggle_model(sync_grad=False):
            rare, major, terms = self.compute_split_loss(self(image), target)
            optimizer.zero_grad()
            self.manual_backward(major, retain_graph=True)
            self._average_gradients()
            major_grads = self._take_gradients()
            self.manual_backward(rare)
        self._average_gradients()
        optimizer.optimizer.first_step(float(p_r), zero_grad=True)

        def descent_closure() -> Tensor:
            with frozen_batchnorm_stats(self.net):
                out = self(image)
                perturbed_rare, _ = self.criterion.split(out.logits, target, self.rare_classes)
            outputs = [out.logits] if out.saliency_logits is None else [out.logits, out.saliency_logits]
            self.manual_backward(perturbed_rare + 0.0 * sum(output.sum() for output in outputs))
            for p, grad in major_grads:
                p.grad = grad if p.grad is None else p.grad.add_(grad)
            self._clip(optimizer)
            self.log("train/loss_rare_perturbed", perturbed_rare.detach(), on_step=True, on_epoch=False)
            return perturbed_rare

        optimizer.step(closure=descent_closure)
        self.log("train/p_r", p_r.float(), on_step=True, on_epoch=False)
        self.log("train/rho", float(optimizer.optimizer.last_rho), on_step=True, on_epoch=False)
        self.log("train/loss_rare", rare.detach(), on_step=True, on_epoch=False)
        self.log("train/loss_major", major.detach(), on_step=True, on_epoch=False)
        return (rare + major).detach(), terms

    def _take_gradients(self) -> list[tuple[nn.Parameter, Tensor]]:
        """Detach every parameter's gradient from it (``p.grad`` becomes None) and return them."""
        taken = [(p, p.grad) for p in self.parameters() if p.grad is not None]
        for p, _ in taken:
            p.grad = None
        return taken

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
                radius_mode=self.hparams.radius_mode,
                rho_warmup_steps=self.hparams.rho_warmup_steps,
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


def _first_known(*values: Any) -> Any:
    """The first value that is not None (None when all are)."""
    return next((value for value in values if value is not None), None)


def _not_bound(factory: Any, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` less the arguments a ``functools.partial`` from a config already binds (given ones win)."""
    bound = getattr(factory, "keywords", None) or {}
    return {name: value for name, value in values.items() if name not in bound}


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so learned values are stored as the CLI stores given ones."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


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
