"""RareSegModule's manual two-pass training loop: step counting, resume, DDP, precision."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningDataModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from rareseg.lightning_modules import RareSegModule, check_precision, frozen_batchnorm_stats
from rareseg.losses import CrossEntropyLoss
from rareseg.models import SegmentationOutput
from tests.ddp import CloseProcessGroupAtExit


class TinyNet(nn.Module):
    """Deterministic 2-layer conv net with a saliency head; ``norm`` picks BatchNorm or GroupNorm."""

    def __init__(self, num_classes: int = 3, in_channels: int = 3, rare_classes=(2,), norm: str = "batch") -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.BatchNorm2d(8) if norm == "batch" else nn.GroupNorm(2, 8),
            nn.ReLU(),
        )
        self.head = nn.Conv2d(8, num_classes, 1)
        self.saliency = nn.Conv2d(8, len(rare_classes), 1)

    def forward(self, x: torch.Tensor) -> SegmentationOutput:
        features = self.body(x)
        return SegmentationOutput(self.head(features), self.saliency(features))


class FixedBatches(Dataset):
    """``n`` fixed samples; labels include the rare class 2 and ignore pixels."""

    def __init__(self, n: int = 8, size: int = 16) -> None:
        g = torch.Generator().manual_seed(3)
        self.images = torch.randn(n, 3, size, size, generator=g)
        self.masks = torch.randint(0, 3, (n, size, size), generator=g)
        self.masks[:, 0, :4] = 255

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "mask": self.masks[i]}


class FixedData(LightningDataModule):
    def __init__(self, batch_size: int = 2, n: int = 8) -> None:
        super().__init__()
        self.dataset, self.batch_size = FixedBatches(n), batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False)


def _module(optimizer: str = "casm", norm: str = "batch", **kwargs) -> RareSegModule:
    torch.manual_seed(0)
    defaults = dict(loss=CrossEntropyLoss(), base_optimizer=partial(torch.optim.AdamW, lr=1e-2))
    return RareSegModule(
        net=TinyNet(norm=norm),
        optimizer=optimizer,
        num_classes=3,
        rare_classes=(2,),
        **{**defaults, **kwargs},
    )


def _trainer(tmp_path: Path, **kwargs) -> Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        deterministic=True,
    )
    return Trainer(**{**defaults, **kwargs})


def test_max_steps_counts_one_step_per_batch(tmp_path) -> None:
    module = _module()
    trainer = _trainer(tmp_path, max_steps=5, enable_checkpointing=False)
    trainer.fit(module, FixedData(n=16))
    assert trainer.global_step == 5
    assert module.optimizers().optimizer.last_rho > 0


def test_casm_step_moves_weights_and_keeps_batchnorm_stats_of_the_first_pass(tmp_path) -> None:
    module = _module()
    bn = module.net.body[1]
    before = bn.running_mean.clone()
    trainer = _trainer(tmp_path, max_steps=1, enable_checkpointing=False)
    trainer.fit(module, FixedData())
    # one BN update (momentum 0.1) from the first pass only; the second pass is frozen
    batch = FixedBatches()[0]["image"][None], FixedBatches()[1]["image"][None]
    x = torch.cat(batch)
    torch.manual_seed(0)
    fresh = TinyNet()
    fresh.train()
    fresh(x)
    torch.testing.assert_close(bn.running_mean, fresh.body[1].running_mean)
    assert not torch.equal(bn.running_mean, before)


def test_frozen_batchnorm_stats_restores_momentum() -> None:
    net = TinyNet()
    with frozen_batchnorm_stats(net):
        assert net.body[1].momentum == 0.0
        mean = net.body[1].running_mean.clone()
        net(torch.randn(2, 3, 8, 8))
        assert torch.equal(net.body[1].running_mean, mean)
    assert net.body[1].momentum == 0.1


@pytest.mark.parametrize("optimizer", ["adamw", "sam", "casm"])
def test_resume_from_mid_run_checkpoint_reaches_the_same_weights(tmp_path, optimizer) -> None:
    straight = _module(optimizer)
    _trainer(tmp_path / "a", max_epochs=2, enable_checkpointing=False).fit(straight, FixedData())

    first = _module(optimizer)
    trainer = _trainer(tmp_path / "b", max_epochs=1, enable_checkpointing=False)
    trainer.fit(first, FixedData())
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    resumed = _module(optimizer)
    _trainer(tmp_path / "c", max_epochs=2, enable_checkpointing=False).fit(
        resumed, FixedData(), ckpt_path=tmp_path / "mid.ckpt"
    )
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_sixteen_bit_mixed_precision_is_refused(monkeypatch) -> None:
    with pytest.raises(ValueError, match="use 'bf16-mixed' or '32-true'"):
        check_precision("16-mixed")
    check_precision("bf16-mixed")
    check_precision("32-true")
    module = _module()
    monkeypatch.setattr(RareSegModule, "trainer", property(lambda self: type("T", (), {"precision": "16-mixed"})()))
    with pytest.raises(ValueError, match="not supported"):
        module.on_fit_start()


def test_bf16_mixed_trains(tmp_path) -> None:
    module = _module()
    trainer = _trainer(tmp_path, max_steps=2, precision="bf16-mixed", enable_checkpointing=False)
    trainer.fit(module, FixedData())
    assert trainer.global_step == 2
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_rare_fraction_of_a_batch() -> None:
    module = _module()
    target = torch.tensor([[[2, 0], [255, 2]]])
    assert module.rare_fraction(target).item() == pytest.approx(2 / 3)


def test_predict_step_returns_crop_probabilities_and_passes_scene_descriptors_through() -> None:
    module = _module().eval()
    image = FixedBatches(n=2).images
    with torch.no_grad():
        out = module.predict_step({"image": image}, 0)
        expected = module.net(image)
    assert out["probs"].shape == (2, 3, 16, 16) and out["saliency"].shape == (2, 1, 16, 16)
    torch.testing.assert_close(out["probs"].sum(dim=1), torch.ones(2, 16, 16))
    torch.testing.assert_close(out["probs"], torch.softmax(expected.logits, dim=1))
    torch.testing.assert_close(out["saliency"], torch.sigmoid(expected.saliency_logits))
    scene = {"path": "/data/scene.tif", "name": "scene"}
    assert module.predict_step(scene, 0) is scene


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process_on_the_concatenated_batch(tmp_path) -> None:
    single = _module(norm="group")
    single_trainer = _trainer(tmp_path / "one", max_steps=1, enable_checkpointing=False)
    single_trainer.fit(single, FixedData(batch_size=4, n=4))
    p_r_single = single_trainer.callback_metrics["train/p_r"].item()

    ddp = _module(norm="group")
    ddp_trainer = _trainer(
        tmp_path / "two",
        max_steps=1,
        enable_checkpointing=False,
        devices=2,
        strategy="ddp_spawn",
        deterministic=False,
        callbacks=[CloseProcessGroupAtExit()],
    )
    ddp_trainer.fit(ddp, FixedData(batch_size=2, n=4))
    assert ddp_trainer.callback_metrics["train/p_r"].item() == pytest.approx(p_r_single, rel=1e-6)
    for (name, a), b in zip(single.state_dict().items(), ddp.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


class NaNImage(FixedBatches):
    """FixedBatches whose sample ``nan_index`` has a NaN pixel: its batch's loss is NaN."""

    def __init__(self, nan_index: int) -> None:
        super().__init__()
        self.images[nan_index, :, 5, 5] = float("nan")


@pytest.mark.parametrize("optimizer", ["adamw", "casm"])
def test_nan_loss_is_caught_by_the_guard_not_by_a_check_in_the_loss(tmp_path: Path, optimizer: str) -> None:
    """The losses check nothing per step on the device; a NaN loss still leaves the weights as they were."""
    from rareseg.callbacks import NonFiniteGuard
    from rareseg.losses import ARBTLoss

    data = FixedData(batch_size=2)
    data.dataset = NaNImage(nan_index=2)  # batch 1 (samples 2, 3)
    torch.manual_seed(0)
    module = RareSegModule(
        net=TinyNet(norm="group"),  # no running statistics for the NaN batch to poison
        loss=ARBTLoss(class_frequencies=[0.6, 0.3, 0.1]),
        optimizer=optimizer,
        base_optimizer=partial(torch.optim.AdamW, lr=1e-2),
        num_classes=3,
        rare_classes=(2,),
    )
    snapshots = []

    class Snapshots(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            snapshots.append([p.detach().clone() for p in pl_module.parameters()])

    guard = NonFiniteGuard(max_consecutive=3)
    _trainer(tmp_path, max_epochs=1, callbacks=[guard, Snapshots()]).fit(module, datamodule=data)
    assert guard.skipped == 1 and len(snapshots) == 4
    assert all(torch.equal(a, b) for a, b in zip(snapshots[0], snapshots[1]))  # the NaN batch changed nothing
    assert not all(torch.equal(a, b) for a, b in zip(snapshots[1], snapshots[2]))  # the next one trains
    assert all(torch.isfinite(p).all() for p in module.parameters())


# --- variants: perturbation on the rare-class loss only (ImbSAM), radius mode and warm-up, large radii


class StepLog(Callback):
    """Records ``train/*`` step metrics and CASM's radius after every training batch."""

    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
        self.metrics.append(logged)


def _valid_sum_ce(logits: torch.Tensor, target: torch.Tensor, classes: set[int]) -> torch.Tensor:
    """Sum of -log softmax at the truth over the valid pixels whose truth is in ``classes``, / all valid pixels."""
    per_pixel = torch.nn.functional.cross_entropy(logits, target, ignore_index=255, reduction="none")
    valid = target != 255
    chosen = valid & torch.isin(target, torch.tensor(sorted(classes)))
    return per_pixel[chosen].sum() / valid.sum()


def _hand_imbsam_step(rho: float, lr: float, aux_weight: float) -> list[torch.Tensor]:
    """One ImbSAM step with SGD by hand in float64 on the first FixedData batch (rare class 2, GroupNorm net)."""
    torch.manual_seed(0)
    net = TinyNet(norm="group").double()
    data = FixedBatches()
    x, y = data.images[:2].double(), data.masks[:2]
    params = list(net.parameters())
    w = [p.detach().clone() for p in params]

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        found = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, found)]

    out = net(x)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        out.saliency_logits, (y == 2).double().unsqueeze(1), reduction="none"
    )
    saliency = (bce * (y != 255).unsqueeze(1)).sum() / (y != 255).sum()
    g_major = grads(_valid_sum_ce(out.logits, y, {0, 1}) + aux_weight * saliency)
    g_rare = grads(_valid_sum_ce(out.logits, y, {2}))
    norm = torch.sqrt(sum((g**2).sum() for g in g_rare))
    with torch.no_grad():
        for p, wi, g in zip(params, w, g_rare):
            p.copy_(wi + rho * g / (norm + 1e-12))
    g_rare_plus = grads(_valid_sum_ce(net(x).logits, y, {2}))
    return [wi - lr * (a + b) for wi, a, b in zip(w, g_major, g_rare_plus)]


@pytest.mark.parametrize("aux_weight", [0.0, 0.1])
def test_rare_only_perturbation_step_equals_hand_written_imbsam(tmp_path, aux_weight) -> None:
    module = _module(
        "sam",
        norm="group",
        sam_on="rare",
        rho0=0.3,
        aux_weight=aux_weight,
        base_optimizer=partial(torch.optim.SGD, lr=0.1),
    )
    trainer = _trainer(tmp_path, max_steps=1, enable_checkpointing=False, precision="64-true")
    trainer.fit(module, FixedData())
    expected = _hand_imbsam_step(rho=0.3, lr=0.1, aux_weight=aux_weight)
    for (name, p), e in zip(module.net.named_parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-10, atol=1e-12, msg=name)
    # differs from plain SAM on the whole loss
    sam = _module("sam", norm="group", rho0=0.3, aux_weight=aux_weight, base_optimizer=partial(torch.optim.SGD, lr=0.1))
    _trainer(tmp_path / "sam", max_steps=1, enable_checkpointing=False, precision="64-true").fit(sam, FixedData())
    assert not torch.allclose(sam.net.head.weight, module.net.head.weight, rtol=1e-6, atol=0)


def test_rare_only_step_logs_its_parts_and_counts_one_step_per_batch(tmp_path) -> None:
    from rareseg.losses import ARBTLoss

    module = _module("casm", sam_on="rare", loss=ARBTLoss([0.4, 0.4, 0.2], focal_on="rare", ce_weight=0.5))
    assert module.criterion.rare_classes == (2,)
    log = StepLog()
    trainer = _trainer(tmp_path, max_steps=3, enable_checkpointing=False, callbacks=[log])
    trainer.fit(module, FixedData(n=16))
    assert trainer.global_step == 3 and len(log.metrics) == 3
    for metrics in log.metrics:
        assert {"train/loss_rare", "train/loss_major", "train/loss_rare_perturbed", "train/rho", "train/p_r"} <= set(
            metrics
        )
        total = metrics["train/loss_rare"] + metrics["train/loss_major"]
        assert metrics["train/loss_step"] == pytest.approx(total, rel=1e-6)
        assert metrics["train/rho"] == pytest.approx(0.05 * (2 - metrics["train/p_r"]), rel=1e-6)


def test_rare_only_step_keeps_batchnorm_stats_of_the_first_pass(tmp_path) -> None:
    module = _module("casm", sam_on="rare")
    _trainer(tmp_path, max_steps=1, enable_checkpointing=False).fit(module, FixedData())
    # one BN update (momentum 0.1) from the first pass only; the second pass is frozen
    torch.manual_seed(0)
    fresh = TinyNet()
    fresh.train()
    fresh(FixedBatches().images[:2])
    torch.testing.assert_close(module.net.body[1].running_mean, fresh.body[1].running_mean)
    torch.testing.assert_close(module.net.body[1].running_var, fresh.body[1].running_var)


def test_module_hands_its_rare_classes_to_a_loss_that_has_none() -> None:
    from rareseg.losses import ARBTLoss

    handed = _module(loss=ARBTLoss([0.4, 0.4, 0.2], focal_on="rare"))
    assert handed.criterion.rare_classes == (2,)
    kept = _module(loss=ARBTLoss([0.4, 0.4, 0.2], focal_on="rare", rare_classes=[1]))
    assert kept.criterion.rare_classes == (1,)
    assert not hasattr(_module().criterion, "rare_classes")  # CE has no such attribute and gets none


def test_rare_only_needs_a_splittable_loss_and_a_sharpness_aware_optimizer() -> None:
    from rareseg.losses import DiceLoss

    with pytest.raises(ValueError, match="sam_on='rare' needs a loss that splits .* DiceLoss has none"):
        _module("casm", sam_on="rare", loss=DiceLoss())
    with pytest.raises(ValueError, match="sam_on='rare' .* use optimizer sam or casm"):
        _module("adamw", sam_on="rare")
    with pytest.raises(ValueError, match="sam_on must be 'all' or 'rare'"):
        _module("casm", sam_on="minor")


def test_more_rare_radius_with_warmup_is_what_casm_uses_and_logs(tmp_path) -> None:
    module = _module("casm", kappa=2.0, radius_mode="more_rare", rho_warmup_steps=2)
    log = StepLog()
    trainer = _trainer(tmp_path, max_steps=4, enable_checkpointing=False, callbacks=[log])
    trainer.fit(module, FixedData(n=16))
    optimizer = module.optimizers().optimizer
    assert optimizer.param_groups[0]["radius_mode"] == "more_rare" and optimizer.step_count == 4
    for step, metrics in enumerate(log.metrics):
        expected = 0.05 * (1 + 2.0 * metrics["train/p_r"]) * min(1.0, step / 2)
        assert metrics["train/rho"] == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert log.metrics[0]["train/rho"] == 0.0


@pytest.mark.parametrize("sam_on", ["all", "rare"])
def test_large_radius_trains_with_finite_weights(tmp_path, sam_on) -> None:
    module = _module("casm", rho0=0.8, sam_on=sam_on)
    log = StepLog()
    trainer = _trainer(tmp_path, max_steps=4, enable_checkpointing=False, callbacks=[log])
    trainer.fit(module, FixedData(n=16))
    assert trainer.global_step == 4 and module.optimizers().optimizer.skipped_steps == 0
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert [m["train/rho"] for m in log.metrics] == pytest.approx([0.8 * (2 - m["train/p_r"]) for m in log.metrics])


def test_resume_mid_warmup_with_rare_only_perturbation_reaches_the_same_weights(tmp_path) -> None:
    options = {"sam_on": "rare", "radius_mode": "more_rare", "rho_warmup_steps": 6}
    straight = _module("casm", **options)
    _trainer(tmp_path / "a", max_epochs=2, enable_checkpointing=False).fit(straight, FixedData())

    first = _module("casm", **options)
    trainer = _trainer(tmp_path / "b", max_epochs=1, enable_checkpointing=False)
    trainer.fit(first, FixedData())
    assert first.optimizers().optimizer.step_count == 4
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    resumed = _module("casm", **options)
    _trainer(tmp_path / "c", max_epochs=2, enable_checkpointing=False).fit(
        resumed, FixedData(), ckpt_path=tmp_path / "mid.ckpt"
    )
    assert resumed.optimizers().optimizer.step_count == 8
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


class InterleavedRanks(FixedData):
    """Rank ``r`` of ``W`` reads samples ``r, r + W, ...`` in order: global batch ``k`` is one process's batch ``k``."""

    def train_dataloader(self) -> DataLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        indices = list(range(rank, len(self.dataset), world))
        return DataLoader(Subset(self.dataset, indices), batch_size=self.batch_size, shuffle=False)


@pytest.mark.slow
def test_ddp_rare_only_perturbation_equals_one_process_on_the_concatenated_batch(tmp_path) -> None:
    single = _module(norm="group", sam_on="rare")
    single_trainer = _trainer(tmp_path / "one", max_steps=2, enable_checkpointing=False)
    single_trainer.fit(single, FixedData(batch_size=4, n=8))

    # two steps: a parameter left out of the first step's synced backward would fail DDP's reducer at the second
    ddp = _module(norm="group", sam_on="rare")
    ddp_trainer = _trainer(
        tmp_path / "two",
        max_steps=2,
        enable_checkpointing=False,
        devices=2,
        strategy="ddp_spawn",
        deterministic=False,
        use_distributed_sampler=False,
        callbacks=[CloseProcessGroupAtExit()],
    )
    ddp_trainer.fit(ddp, InterleavedRanks(batch_size=2, n=8))
    p_r_single = single_trainer.callback_metrics["train/p_r"].item()
    assert ddp_trainer.callback_metrics["train/p_r"].item() == pytest.approx(p_r_single, rel=1e-6)
    for (name, a), b in zip(single.state_dict().items(), ddp.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
