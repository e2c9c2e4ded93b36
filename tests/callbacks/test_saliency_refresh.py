"""SaliencyRefresh: a real refresh after one epoch, whole-scene maps, checkpoint state, contract errors."""

from __future__ import annotations

import copy
import io
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from torch import Tensor, nn

from rareseg.callbacks.saliency_refresh import SaliencyRefresh
from rareseg.datamodules import LissIVDataModule
from rareseg.lightning_modules import RareSegModule
from rareseg.models import SegmentationOutput
from tests.conftest import task_for

CELL = 4  # 23.2 m / 5.8 m pixels


class PointwiseNet(nn.Module):
    """1x1 convolutions and BatchNorm: a pixel's output depends on that pixel alone, so tiling cannot change it."""

    def __init__(self, saliency: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.classifier = nn.Conv2d(8, 6, 1)
        self.saliency = nn.Conv2d(8, 2, 1) if saliency else None

    def forward(self, x: Tensor) -> SegmentationOutput:
        features = self.body(x)
        return SegmentationOutput(self.classifier(features), None if self.saliency is None else self.saliency(features))


def _module(dm: LissIVDataModule, saliency: bool = True) -> RareSegModule:
    torch.manual_seed(0)
    return task_for(dm, net=PointwiseNet(saliency))


def _expected_map(module: RareSegModule, image_path, dm: LissIVDataModule) -> tuple[np.ndarray, Affine]:
    """Whole scene in one eval-mode pass, max over rare sigmoids, mean over the valid pixels of 4 x 4 blocks."""
    with rasterio.open(image_path) as src:
        raw, transform, nodata = src.read().astype(np.float32), src.transform, src.nodata
    mean, std = torch.tensor(dm.band_mean), torch.tensor(dm.band_std)
    x = (torch.from_numpy(raw) - mean[:, None, None]) / std[:, None, None]
    module = copy.deepcopy(module).eval()
    with torch.no_grad():
        logits = module(x[None].float()).saliency_logits
    saliency = (1.0 / (1.0 + np.exp(-logits[0].double().numpy()))).max(axis=0)
    valid = ~(raw == nodata).all(axis=0)
    h, w = saliency.shape
    sums = np.where(valid, saliency, 0.0).reshape(h // CELL, CELL, w // CELL, CELL).sum(axis=(1, 3))
    counts = valid.reshape(h // CELL, CELL, w // CELL, CELL).sum(axis=(1, 3))
    with np.errstate(invalid="ignore"):
        return sums / counts, transform * Affine.scale(CELL)


def _stub_trainer(dm: LissIVDataModule) -> SimpleNamespace:
    """The parts of a Trainer the refresh touches, for a single process."""
    return SimpleNamespace(
        datamodule=dm,
        precision="32-true",
        progress_bar_callback=None,
        is_global_zero=True,
        global_rank=0,
        world_size=1,
        current_epoch=0,
    )


def test_refresh_maps_equal_a_whole_scene_recomputation_and_keep_train_mode(synth_root) -> None:
    dm = LissIVDataModule(str(synth_root), patch_size=32, length=8, sampler="saliency")
    dm.setup("fit")
    module = _module(dm).train()
    running_mean = module.net.body[1].running_mean.clone()
    # 96 px tiles overlapping by 16 on 256 px scenes: blended edges, a shifted last tile
    SaliencyRefresh(batch_size=4, patch_size=96, overlap=16).refresh(_stub_trainer(dm), module)
    assert module.training and torch.equal(module.net.body[1].running_mean, running_mean)  # eval inside, train after
    nodata_cells = 0
    for scene_id, image_path in dm.saliency_sources():
        expected, transform = _expected_map(module, image_path, dm)
        saliency, got_transform = dm.sampler.saliency_map(scene_id)
        assert saliency.shape == (64, 64) and saliency.dtype == np.float32
        np.testing.assert_allclose(saliency, expected, atol=1e-5, equal_nan=True)
        assert got_transform.almost_equals(transform)
        nodata_cells += int(np.isnan(saliency).sum())
    assert nodata_cells > 0  # a training scene's nodata margin: cells without a valid pixel have no saliency


def test_refresh_after_one_epoch_changes_the_sampler_maps(synth_root) -> None:
    dm = LissIVDataModule(str(synth_root), batch_size=2, patch_size=64, length=4, sampler="saliency", augment=False)
    module = _module(dm)
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
    for scene_id, image_path in sources:
        saliency, _ = dm.sampler.saliency_map(scene_id)
        trained, _ = _expected_map(module, image_path, dm)
        before, _ = _expected_map(initial, image_path, dm)
        np.testing.assert_allclose(saliency, trained, atol=1e-5, equal_nan=True)
        assert np.nanmax(np.abs(saliency - before)) > 1e-3  # the map follows the trained weights
        assert np.array_equal(callback.maps[scene_id][0], saliency, equal_nan=True)

    buffer = io.BytesIO()
    torch.save(callback.state_dict(), buffer)
    buffer.seek(0)
    resumed = SaliencyRefresh(batch_size=2, patch_size=128)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    fresh = LissIVDataModule(str(synth_root), patch_size=64, length=4, sampler="saliency")
    fresh.setup("fit")
    assert fresh.sampler.saliency_map(sources[0][0]) is None
    resumed.on_train_start(SimpleNamespace(datamodule=fresh), module)
    for scene_id, _ in sources:
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
    for bad in (
        {"every_n_epochs": 0},
        {"resolution_m": -1.0},
        {"batch_size": 2.5},
        {"patch_size": True},
        {"overlap": 129},
    ):
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
    with pytest.raises(ValueError, match=r"needs pl_module.scene_saliency\(image_path, resolution_m"):
        SaliencyRefresh().on_fit_start(SimpleNamespace(datamodule=dm), plain)
    without_head = _module(dm, saliency=False).train()
    with pytest.raises(ValueError, match="scene_00.tif: a saliency map needs a network with a saliency head"):
        SaliencyRefresh(patch_size=128).refresh(_stub_trainer(dm), without_head)
    assert without_head.training


def _ddp_rank(rank: int, world_size: int, root: str, init_file: str, out_dir: str) -> None:
    """One rank of a gloo process group: refresh with this rank's share and save what its sampler holds."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    dm = LissIVDataModule(root, patch_size=32, length=4, sampler="saliency")
    dm.setup("fit")
    module = _module(dm)
    computed = []
    predict = module.scene_saliency
    module.scene_saliency = lambda path, *args, **kwargs: computed.append(path.stem) or predict(path, *args, **kwargs)
    trainer = SimpleNamespace(**{**vars(_stub_trainer(dm)), "global_rank": rank, "world_size": world_size})
    SaliencyRefresh(patch_size=128).refresh(trainer, module)
    maps = {scene_id: dm.sampler.saliency_map(scene_id)[0] for scene_id in dm.sampler.all_scene_ids}
    np.savez(f"{out_dir}/rank{rank}.npz", computed=np.array(computed), **maps)
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_ranks_share_the_scenes_and_all_get_every_map(synth_root, tmp_path) -> None:
    torch.multiprocessing.spawn(_ddp_rank, args=(2, str(synth_root), str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ranks = [np.load(tmp_path / f"rank{rank}.npz") for rank in range(2)]
    dm = LissIVDataModule(str(synth_root), patch_size=32, length=4, sampler="saliency")
    module = _module(dm)
    assert [list(r["computed"]) for r in ranks] == [[s[0]] for s in dm.saliency_sources()]  # one scene per rank
    for scene_id, image_path in dm.saliency_sources():
        expected, _ = _expected_map(module, image_path, dm)
        for rank in ranks:
            np.testing.assert_allclose(rank[scene_id], expected, atol=1e-5, equal_nan=True)
