"""SaliencyRefresh: pixel saliency, cell means, a real refresh after one epoch, checkpoint state, contract errors."""

from __future__ import annotations

import copy
import io
from types import SimpleNamespace
from typing import NamedTuple

import lightning.pytorch as pl
import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from affine import Affine
from lightning.pytorch.plugins.precision import Precision
from torch import Tensor, nn

from rareseg.callbacks.saliency_refresh import SaliencyRefresh, accumulate_cells, pixel_saliency
from rareseg.datamodules import LissIVDataModule

CELL = 4  # 23.2 m / 5.8 m pixels


class ToyOutput(NamedTuple):
    logits: Tensor
    saliency_logits: Tensor


class PointwiseSegmenter(pl.LightningModule):
    """1x1 convolutions and BatchNorm: a pixel's output depends on that pixel alone, so tiling cannot change it."""

    def __init__(self, as_dict: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.classifier = nn.Conv2d(8, 6, 1)
        self.saliency = nn.Conv2d(8, 2, 1)
        self.as_dict = as_dict

    def forward(self, x: Tensor) -> ToyOutput | dict[str, Tensor]:
        features = self.body(x)
        out = ToyOutput(self.classifier(features), self.saliency(features))
        return out._asdict() if self.as_dict else out

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self(batch["image"])
        mask = batch["mask"]
        target = torch.stack([mask == 4, mask == 5], dim=1).float()
        valid = (mask != 255)[:, None].expand_as(target)
        bce = F.binary_cross_entropy_with_logits(out.saliency_logits[valid], target[valid])
        return F.cross_entropy(out.logits, mask, ignore_index=255) + bce

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)


def _expected_map(module: PointwiseSegmenter, image_path, mean, std) -> tuple[np.ndarray, Affine]:
    """Whole scene in one eval-mode pass, max over rare sigmoids, mean over 4 x 4 blocks (float64)."""
    with rasterio.open(image_path) as src:
        raw, transform = src.read().astype(np.float32), src.transform
    x = (torch.from_numpy(raw) - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    module = copy.deepcopy(module).eval()
    with torch.no_grad():
        logits = module(x[None].float())
    logits = logits["saliency_logits"] if isinstance(logits, dict) else logits.saliency_logits
    saliency = (1.0 / (1.0 + np.exp(-logits[0].double().numpy()))).max(axis=0)
    h, w = saliency.shape
    return saliency.reshape(h // CELL, CELL, w // CELL, CELL).mean(axis=(1, 3)), transform * Affine.scale(CELL)


def _stub_trainer(dm: LissIVDataModule) -> SimpleNamespace:
    """The parts of a Trainer the refresh touches, for a single process."""
    return SimpleNamespace(
        datamodule=dm,
        precision_plugin=Precision(),
        progress_bar_callback=None,
        is_global_zero=True,
        global_rank=0,
        world_size=1,
        current_epoch=0,
    )


def test_pixel_saliency_is_the_max_of_the_rare_sigmoids() -> None:
    logits = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    expected = (1.0 / (1.0 + np.exp(-logits.double().numpy()))).max(axis=1)
    np.testing.assert_allclose(pixel_saliency(logits).numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("cell", [4, 3])
def test_accumulated_tiles_give_cell_means(cell: int) -> None:
    saliency = np.random.default_rng(0).uniform(size=(50, 37))
    rows, cols = -(-50 // cell), -(-37 // cell)
    sums, counts = np.zeros((rows, cols)), np.zeros((rows, cols))
    for r in range(0, 50, 16):
        for c in range(0, 37, 16):
            accumulate_cells(saliency[r : r + 16, c : c + 16], r, c, cell, sums, counts)
    for i in range(rows):
        for j in range(cols):
            block = saliency[i * cell : (i + 1) * cell, j * cell : (j + 1) * cell]
            assert sums[i, j] / counts[i, j] == pytest.approx(block.mean(), rel=1e-12)
            assert counts[i, j] == block.size


def test_refresh_maps_equal_a_whole_scene_recomputation_and_keep_train_mode(synth_root) -> None:
    dm = LissIVDataModule(str(synth_root), patch_size=32, length=8, sampler="saliency")
    dm.setup("fit")
    torch.manual_seed(0)
    module = PointwiseSegmenter(as_dict=True).train()
    running_mean = module.body[1].running_mean.clone()
    SaliencyRefresh(batch_size=4, patch_size=96).refresh(_stub_trainer(dm), module)  # 96 px tiles: padded edge tiles
    assert module.training and torch.equal(module.body[1].running_mean, running_mean)  # eval mode inside, train after
    for scene_id, image_path, mean, std in dm.saliency_sources():
        expected, transform = _expected_map(module, image_path, mean, std)
        saliency, got_transform = dm.sampler.saliency_map(scene_id)
        assert saliency.shape == (64, 64) and saliency.dtype == np.float32
        np.testing.assert_allclose(saliency, expected, atol=1e-5)
        assert got_transform.almost_equals(transform)


def test_refresh_after_one_epoch_changes_the_sampler_maps(synth_root) -> None:
    dm = LissIVDataModule(str(synth_root), batch_size=2, patch_size=64, length=4, sampler="saliency", augment=False)
    torch.manual_seed(0)
    module = PointwiseSegmenter()
    initial = copy.deepcopy(module)
    callback = SaliencyRefresh(batch_size=2, patch_size=128)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.fit(module, datamodule=dm)
    sources = dm.saliency_sources()
    assert len(sources) == 2
    for scene_id, image_path, mean, std in sources:
        saliency, _ = dm.sampler.saliency_map(scene_id)
        trained, _ = _expected_map(module, image_path, mean, std)
        before, _ = _expected_map(initial, image_path, mean, std)
        np.testing.assert_allclose(saliency, trained, atol=1e-5)
        assert np.abs(saliency - before).max() > 1e-3  # the map follows the trained weights
        assert np.array_equal(callback.maps[scene_id][0], saliency)

    buffer = io.BytesIO()
    torch.save(callback.state_dict(), buffer)
    buffer.seek(0)
    resumed = SaliencyRefresh(batch_size=2, patch_size=128)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    fresh = LissIVDataModule(str(synth_root), patch_size=64, length=4, sampler="saliency")
    fresh.setup("fit")
    assert fresh.sampler.saliency_map(sources[0][0]) is None
    resumed.on_train_start(SimpleNamespace(datamodule=fresh), module)
    for scene_id, *_ in sources:
        np.testing.assert_array_equal(fresh.sampler.saliency_map(scene_id)[0], dm.sampler.saliency_map(scene_id)[0])
        assert fresh.sampler.saliency_map(scene_id)[1] == dm.sampler.saliency_map(scene_id)[1]


def test_refresh_runs_every_n_epochs(monkeypatch) -> None:
    callback = SaliencyRefresh(every_n_epochs=2)
    epochs = []
    monkeypatch.setattr(callback, "refresh", lambda trainer, module: epochs.append(trainer.current_epoch))
    for epoch in range(6):
        callback.on_train_epoch_end(SimpleNamespace(current_epoch=epoch, fast_dev_run=False), None)
    assert epochs == [1, 3, 5]
    for epoch in range(6):
        callback.on_train_epoch_end(SimpleNamespace(current_epoch=epoch, fast_dev_run=1), None)
    assert epochs == [1, 3, 5]  # fast_dev_run: a few batches, not a pass over every scene


def test_broken_contracts_fail_with_one_line_errors(synth_root) -> None:
    for bad in ({"every_n_epochs": 0}, {"resolution_m": -1.0}, {"batch_size": 2.5}, {"patch_size": True}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SaliencyRefresh(**bad)
    random = LissIVDataModule(str(synth_root), patch_size=32, length=4)
    random.setup("fit")
    with pytest.raises(ValueError, match="update_saliency"):
        SaliencyRefresh().on_fit_start(SimpleNamespace(datamodule=random), None)
    no_sources = SimpleNamespace(train_sampler=SimpleNamespace(update_saliency=lambda *args: None))
    with pytest.raises(ValueError, match="saliency_sources"):
        SaliencyRefresh().on_fit_start(SimpleNamespace(datamodule=no_sources), None)
    dm = LissIVDataModule(str(synth_root), patch_size=32, length=4, sampler="saliency")
    dm.setup("fit")
    plain = nn.Conv2d(3, 6, 1)
    plain.training, plain.device = True, torch.device("cpu")
    with pytest.raises(ValueError, match="saliency_logits"):
        SaliencyRefresh(patch_size=128).refresh(_stub_trainer(dm), plain)
    assert plain.training


def _ddp_rank(rank: int, world_size: int, root: str, init_file: str, out_dir: str) -> None:
    """One rank of a gloo process group: refresh with this rank's share and save what its sampler holds."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    dm = LissIVDataModule(root, patch_size=32, length=4, sampler="saliency")
    dm.setup("fit")
    torch.manual_seed(0)
    module = PointwiseSegmenter()
    callback = SaliencyRefresh(patch_size=128)
    computed = []
    predict = callback._scene_map
    callback._scene_map = lambda trainer, pl_module, path, mean, std: (
        computed.append(path.stem) or predict(trainer, pl_module, path, mean, std)
    )
    trainer = SimpleNamespace(**{**vars(_stub_trainer(dm)), "global_rank": rank, "world_size": world_size})
    callback.refresh(trainer, module)
    maps = {scene_id: dm.sampler.saliency_map(scene_id)[0] for scene_id in dm.sampler.all_scene_ids}
    np.savez(f"{out_dir}/rank{rank}.npz", computed=np.array(computed), **maps)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_ranks_share_the_scenes_and_all_get_every_map(synth_root, tmp_path) -> None:
    torch.multiprocessing.spawn(_ddp_rank, args=(2, str(synth_root), str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ranks = [np.load(tmp_path / f"rank{rank}.npz") for rank in range(2)]
    dm = LissIVDataModule(str(synth_root), patch_size=32, length=4, sampler="saliency")
    torch.manual_seed(0)
    module = PointwiseSegmenter()
    assert [list(r["computed"]) for r in ranks] == [[s[0]] for s in dm.saliency_sources()]  # one scene per rank
    for scene_id, image_path, mean, std in dm.saliency_sources():
        expected, _ = _expected_map(module, image_path, mean, std)
        for rank in ranks:
            np.testing.assert_allclose(rank[scene_id], expected, atol=1e-5)
