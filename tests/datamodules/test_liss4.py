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


def _spoil_training_images(root, dm) -> dict[str, np.ndarray]:
    """Rewrite the training images as float32 with NaN, +Inf and -Inf in one band of some pixels; returns them."""
    spoiled = {}
    for scene in dm.scenes_of("train"):
        with rasterio.open(scene.image) as src:
            image, profile = src.read().astype(np.float32), src.profile
        image[0, 10:60, 20:200] = np.nan
        image[1, 100:103, :] = np.inf
        image[2, 150:250, 30:40] = -np.inf
        profile.update(dtype="float32")
        with rasterio.open(scene.image, "w", **profile) as dst:
            dst.write(image)
        spoiled[scene.stem] = image
    return spoiled


def test_non_finite_pixels_are_left_out_of_the_statistics(synth_copy) -> None:
    clean = LissIVDataModule(str(synth_copy), patch_size=64)
    scenes = clean.scenes_of("train")
    spoiled = _spoil_training_images(synth_copy, clean)
    dm = LissIVDataModule(str(synth_copy), patch_size=64)
    pixels, labels = [], []
    for scene in scenes:
        image = spoiled[scene.stem].astype(np.float64)
        with rasterio.open(scene.mask) as msk:
            mask = msk.read(1)
        valid = (mask != 255) & ~np.all(image == 0, axis=0) & np.isfinite(image).all(axis=0)
        pixels.append(image[:, valid])
        labels.append(mask[valid])
    pixels, labels = np.concatenate(pixels, axis=1), np.concatenate(labels)
    np.testing.assert_allclose(dm.band_mean, pixels.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(dm.band_std, pixels.std(axis=1), rtol=1e-7)
    np.testing.assert_allclose(dm.class_frequencies, np.bincount(labels, minlength=6) / labels.size, rtol=1e-12)
    text = (synth_copy / "stats.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert all(np.isfinite(json.loads(text)["band_std"]))


def test_training_crops_mark_non_finite_pixels_as_ignore(synth_copy) -> None:
    from rareseg.datamodules.liss4 import MarkNodata

    image = torch.tensor([[[1.0, np.nan, 3.0, 0.0]], [[1.0, 2.0, np.inf, 0.0]], [[-np.inf, 2.0, 3.0, 0.0]]])
    sample = MarkNodata(0.0)({"image": image, "mask": torch.tensor([[1, 2, 3, 4]])})
    assert sample["mask"].tolist() == [[255, 255, 255, 255]]
    assert torch.isfinite(sample["image"]).all()
    kept = MarkNodata(float("nan"))({"image": torch.tensor([[[np.nan, 5.0]]]), "mask": torch.tensor([[1, 2]])})
    assert kept["mask"].tolist() == [[255, 2]] and kept["image"].tolist() == [[[0.0, 5.0]]]

    _spoil_training_images(synth_copy, LissIVDataModule(str(synth_copy), patch_size=64))
    dm = LissIVDataModule(str(synth_copy), batch_size=4, patch_size=64, length=16, augment=False, sampler="random")
    dm.setup("fit")
    for raw in dm.train_dataloader():
        assert torch.isfinite(raw["image"]).all()
        batch = dm.aug({"image": raw["image"].clone(), "mask": raw["mask"].clone()})
        assert torch.isfinite(batch["image"]).all()
