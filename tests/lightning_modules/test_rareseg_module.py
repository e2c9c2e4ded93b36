"""RareSegModule's manual two-pass training loop: step counting, resume, DDP, precision."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningDataModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, Dataset

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
    return RareSegModule(
        net=TinyNet(norm=norm),
        loss=CrossEntropyLoss(),
        optimizer=optimizer,
        base_optimizer=partial(torch.optim.AdamW, lr=1e-2),
        num_classes=3,
        rare_classes=(2,),
        **kwargs,
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
