"""LissIVDataModule: attributes at construction, scene splits, statistics, batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

from rareseg.datamodules import LissIVDataModule, split_scenes


def _numpy_stats(scenes):
    pixels, labels = [], []
    for scene in scenes:
        with rasterio.open(scene.image) as img, rasterio.open(scene.mask) as msk:
            image, mask = img.read().astype(np.float64), msk.read(1)
        valid = (mask != 255) & ~np.all(image == 0, axis=0)
        pixels.append(image[:, valid])
        labels.append(mask[valid])
    pixels, labels = np.concatenate(pixels, axis=1), np.concatenate(labels)
    return pixels.mean(axis=1), pixels.std(axis=1), np.bincount(labels, minlength=6) / labels.size


def test_attributes_available_at_construction(synth_root) -> None:
    dm = LissIVDataModule(str(synth_root), patch_size=64)
    assert dm.num_classes == 6 and dm.in_channels == 3
    assert dm.rare_classes == [4, 5]
    assert dm.class_names == ["cropland", "fallow", "forest", "built_up", "water", "wetland"]
    assert sum(dm.class_frequencies) == pytest.approx(1.0)


def test_statistics_match_numpy_on_the_training_files(synth_copy) -> None:
    dm = LissIVDataModule(str(synth_copy), patch_size=64)
    mean, std, freq = _numpy_stats(dm.scenes_of("train"))
    np.testing.assert_allclose(dm.band_mean, mean, rtol=1e-9)
    np.testing.assert_allclose(dm.band_std, std, rtol=1e-7)
    np.testing.assert_allclose(dm.class_frequencies, freq, rtol=1e-12)
    cached = json.loads((synth_copy / "stats.json").read_text())
    assert cached["band_mean"] == pytest.approx(list(mean))
    again = LissIVDataModule(str(synth_copy), patch_size=64, val_scenes=["scene_00"], test_scenes=["scene_01"])
    mean2, _, _ = _numpy_stats(again.scenes_of("train"))  # a new split recomputes the cache
    np.testing.assert_allclose(again.band_mean, mean2, rtol=1e-9)


def test_splits_share_no_scene(synth_root) -> None:
    dm = LissIVDataModule(str(synth_root), patch_size=64)
    train, val, test = (set(dm.split_scenes[s]) for s in ("train", "val", "test"))
    assert train and val and test
    assert not (train & val or train & test or val & test)
    assert train | val | test == {s.stem for s in dm.scenes}
    eight = split_scenes([f"s{k}" for k in range(8)], None, None)
    assert (len(eight["train"]), eight["val"], eight["test"]) == (6, ["s6"], ["s7"])


def test_single_scene_root_is_split_by_disjoint_row_blocks(synth_copy) -> None:
    for extra in ("scene_01", "scene_02", "scene_03"):
        (synth_copy / "images" / f"{extra}.tif").unlink()
        (synth_copy / "masks" / f"{extra}.tif").unlink()
    dm = LissIVDataModule(str(synth_copy), patch_size=32)
    rois = {split: dm.split_roi(dm.split_dataset(split), split) for split in ("train", "val", "test")}
    assert rois["train"].area == pytest.approx(0.7 * 256 * 256 * 5.8**2, rel=0.02)
    assert rois["train"].intersection(rois["val"]).area == pytest.approx(0, abs=1e-3)
    assert rois["val"].intersection(rois["test"]).area == pytest.approx(0, abs=1e-3)


def test_batches_are_normalised_and_nodata_is_ignored(synth_root) -> None:
    dm = LissIVDataModule(str(synth_root), batch_size=4, patch_size=64, length=8, augment=False)
    dm.setup("fit")
    raw = next(iter(dm.train_dataloader()))
    assert raw["image"].shape == (4, 3, 64, 64) and raw["mask"].shape == (4, 64, 64)
    empty = (raw["image"] == 0).all(dim=1)
    assert torch.all(raw["mask"][empty] == 255)
    mean = torch.tensor(dm.band_mean)[None, :, None, None]
    std = torch.tensor(dm.band_std)[None, :, None, None]
    expected = (raw["image"] - mean) / std
    batch = dm.aug({"image": raw["image"].clone(), "mask": raw["mask"].clone()})
    torch.testing.assert_close(batch["image"], expected)
    assert torch.equal(batch["mask"], raw["mask"])


def test_validation_grid_covers_each_val_scene(synth_root) -> None:
    dm = LissIVDataModule(str(synth_root), batch_size=2, patch_size=64)
    dm.setup("validate")
    assert len(dm.val_sampler) == len(dm.split_scenes["val"]) * (256 // 64) ** 2


def test_missing_root_is_generated(tmp_path) -> None:
    root = tmp_path / "new"
    dm = LissIVDataModule(str(root), synth_scenes=3, synth_size=128, patch_size=32)
    assert len(list((root / "images").glob("*.tif"))) == 3
    assert dm.split_scenes["test"] == ["scene_02"]
