"""RareClassGeoSampler and SaliencyGuidedGeoSampler: draws, footprints, seeding, datamodule wiring."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import torch
from affine import Affine
from rasterio.transform import from_origin
from torchgeo.datasets import IntersectionDataset
from torchgeo.samplers import RandomGeoSampler, Units

from rareseg.datamodules import (
    LissIVDataModule,
    LissIVImage,
    LissIVMask,
    RareClassGeoSampler,
    SaliencyGuidedGeoSampler,
    cell_class_counts,
    rare_class_probabilities,
    top_saliency_cells,
)

RES = 5.8
TOP = 2_350_000.0
CROP = 32


def _left(k: int) -> float:
    return 350_000.0 + k * 1000 * RES


def _write_scenes(root: Path, masks: list[np.ndarray]) -> IntersectionDataset:
    """Scenes side by side (scene k's pixel (0, 0) at (_left(k), TOP)), random uint16 images."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for k, mask in enumerate(masks):
        profile = {
            "driver": "GTiff",
            "height": mask.shape[0],
            "width": mask.shape[1],
            "crs": "EPSG:32644",
            "transform": from_origin(_left(k), TOP, RES, RES),
        }
        with rasterio.open(
            root / "images" / f"scene_{k:02d}.tif", "w", count=3, dtype="uint16", nodata=0, **profile
        ) as dst:
            dst.write(rng.integers(100, 4000, size=(3, *mask.shape), dtype=np.uint16))
        with rasterio.open(
            root / "masks" / f"scene_{k:02d}.tif", "w", count=1, dtype="uint8", nodata=255, **profile
        ) as dst:
            dst.write(mask[None])
    images = LissIVImage(sorted((root / "images").glob("*.tif")))
    return IntersectionDataset(images, LissIVMask(sorted((root / "masks").glob("*.tif"))))


def _blob_mask(size: int = 384) -> np.ndarray:
    """Class 0 everywhere but a 38 x 38 block of water (class 4): 0.98 % rare pixels."""
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[200:238, 60:98] = 4
    return mask


def _frequencies(masks: list[np.ndarray]) -> list[float]:
    counts = np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=6)[:6]
    return (counts / counts.sum()).tolist()


def _origin(query: tuple[slice, slice, slice], scene: int) -> tuple[int, int]:
    """Top-left pixel (row, col) of a query in scene ``scene``'s grid."""
    return round((TOP - query[1].stop) / RES), round((query[0].start - _left(scene)) / RES)


def _scene_of(query: tuple[slice, slice, slice]) -> int:
    return int((query[0].start - 350_000.0) // (1000 * RES))


def test_rare_class_probabilities_match_a_hand_computation() -> None:
    probabilities = rare_class_probabilities([0.5, 0.3, 0.02, 0.01], [2, 3], temperature=0.1)
    wetland = 1.0 / (1.0 + math.exp(-(0.99 - 0.98) / 0.1))  # exp(9.9) / (exp(9.8) + exp(9.9))
    np.testing.assert_allclose(probabilities, [1.0 - wetland, wetland], rtol=1e-12)
    assert rare_class_probabilities([0.9, 0.1], [1], temperature=5.0).tolist() == [1.0]


def test_cell_class_counts_match_a_loop_over_cells() -> None:
    mask = np.random.default_rng(1).integers(0, 6, size=(37, 50)).astype(np.uint8)
    counts = cell_class_counts(mask, [4, 5], cell=8)
    assert counts.shape == (2, 5, 7)
    for k, class_id in enumerate((4, 5)):
        for i in range(5):
            for j in range(7):
                assert counts[k, i, j] == np.sum(mask[8 * i : 8 * i + 8, 8 * j : 8 * j + 8] == class_id)


def test_top_saliency_cells_keep_the_highest_valid_cells_ties_by_position() -> None:
    saliency = np.array([[0.9, 0.2, 0.5], [0.5, 0.95, 0.1]])
    valid = np.array([[True, True, True], [True, False, True]])  # the 0.95 cell lies outside the footprint
    assert top_saliency_cells(saliency, valid, 40.0).tolist() == [0, 2]  # ceil(0.4 * 5) = 2 cells; 0.5 tie: first wins
    assert top_saliency_cells(saliency, valid, 100.0).tolist() == [0, 2, 3, 1, 5]
    assert top_saliency_cells(saliency, np.zeros_like(valid), 10.0).size == 0


def test_rare_sampler_crops_contain_rare_pixels_three_times_as_often_as_random(tmp_path) -> None:
    mask = _blob_mask()
    dataset = _write_scenes(tmp_path, [mask])
    rare = RareClassGeoSampler(
        dataset, CROP, 150, _frequencies([mask]), [4, 5], generator=torch.Generator().manual_seed(0)
    )
    random = RandomGeoSampler(dataset, CROP, 150, generator=torch.Generator().manual_seed(0))

    def rare_share(sampler) -> float:
        return float(np.mean([bool(np.isin(dataset[q]["mask"].numpy(), [4, 5]).any()) for q in sampler]))

    rare_fraction, random_fraction = rare_share(rare), rare_share(random)
    assert 0 < random_fraction < 0.15  # about (38 + 31)^2 / 353^2 = 3.8 %
    assert rare_fraction >= 3 * random_fraction
    assert rare_fraction == 1.0
    centres = [mask[r + CROP // 2, c + CROP // 2] for r, c in (_origin(q, 0) for q in rare)]
    assert set(centres) == {4}  # every crop is centred on a water pixel


def test_rare_sampler_draws_classes_by_temperature_and_pixels_uniformly(tmp_path) -> None:
    mask = np.zeros((256, 256), dtype=np.uint8)
    mask[40:60, 40:80] = 4  # water: two blobs of 800 and 400 px
    mask[150:170, 150:170] = 4
    mask[100:110, 200:240] = 5  # wetland: 400 px
    frequencies = _frequencies([mask])
    temperature = 0.01
    sampler = RareClassGeoSampler(
        dataset=_write_scenes(tmp_path, [mask]),
        size=CROP,
        length=2000,
        class_frequencies=frequencies,
        rare_classes=[4, 5],
        temperature=temperature,
        generator=torch.Generator().manual_seed(3),
        cell_size=16,
    )
    centres = np.array([(r + CROP // 2, c + CROP // 2) for r, c in (_origin(q, 0) for q in sampler)])
    classes = mask[centres[:, 0], centres[:, 1]]
    expected_wetland = 1.0 / (1.0 + math.exp(-(frequencies[4] - frequencies[5]) / temperature))
    assert np.mean(classes == 5) == pytest.approx(
        expected_wetland, abs=3.5 * math.sqrt(expected_wetland * (1 - expected_wetland) / 2000)
    )
    water = centres[classes == 4]
    in_first = np.mean(water[:, 0] < 100)
    assert in_first == pytest.approx(800 / 1200, abs=4 * math.sqrt((2 / 9) / len(water)))


def test_rare_fraction_mixes_rare_centred_and_uniform_crops(tmp_path) -> None:
    mask = np.zeros((256, 256), dtype=np.uint8)
    mask[100:120, 100:120] = 5  # 400 wetland px: a uniform crop's centre lands on it with chance q
    dataset = _write_scenes(tmp_path, [mask])

    def sampler(fraction: float, seed: int = 7) -> RareClassGeoSampler:
        generator = torch.Generator().manual_seed(seed)
        return RareClassGeoSampler(
            dataset, CROP, 2000, _frequencies([mask]), [5], generator=generator, rare_fraction=fraction
        )

    def centre_hits(crops: list) -> np.ndarray:
        centres = np.array([(r + CROP // 2, c + CROP // 2) for r, c in (_origin(q, 0) for q in crops)])
        return mask[centres[:, 0], centres[:, 1]] == 5

    grid = np.arange(CROP // 2, 256 - CROP // 2 + 1)
    q = np.mean(mask[grid[:, None], grid[None, :]] == 5)  # uniform centres on the 225 x 225 grid
    assert centre_hits(list(sampler(1.0))).all()
    share = centre_hits(list(sampler(0.3))).mean()
    assert share == pytest.approx(0.3 + 0.7 * q, abs=3.5 * math.sqrt(0.3 * 0.7 / 2000))
    # rare_fraction = 1 draws exactly the crops of the seed's sampler (no extra random number per crop)
    seed_sampler = RareClassGeoSampler(
        dataset, CROP, 2000, _frequencies([mask]), [5], generator=torch.Generator().manual_seed(7)
    )
    assert list(seed_sampler) == list(sampler(1.0))
    with pytest.raises(ValueError, match=r"rare_fraction must be in \(0, 1\], got 0.0"):
        sampler(0.0)


def _planted_map(seed: int = 0) -> np.ndarray:
    """64 x 64 map (cells of 4 px over a 256 px scene): random background, 2.0 in cells [20:40, 30:50]."""
    saliency = np.random.default_rng(seed).uniform(0.0, 1.0, size=(64, 64)).astype(np.float32)
    saliency[:5], saliency[-5:], saliency[:, :5], saliency[:, -5:] = 0, 0, 0, 0  # no top cell where crops must shift
    saliency[20:40, 30:50] = 2.0
    return saliency


def test_salient_share_matches_the_fraction_and_the_rest_is_uniform(tmp_path) -> None:
    dataset = _write_scenes(tmp_path, [np.zeros((256, 256), dtype=np.uint8)])
    sampler = SaliencyGuidedGeoSampler(
        dataset,
        CROP,
        2000,
        salient_fraction=0.5,
        topk_percent=10,
        fallback="random",
        generator=torch.Generator().manual_seed(5),
    )
    saliency = _planted_map()
    sampler.update_saliency("scene_00", saliency, from_origin(_left(0), TOP, 4 * RES, 4 * RES))
    top = saliency >= np.sort(saliency.ravel())[-math.ceil(0.1 * saliency.size)]  # 410 cells: the block and 10 more
    centres = np.array([(r + CROP // 2, c + CROP // 2) for r, c in (_origin(q, 0) for q in sampler)])
    in_top = top[centres[:, 0] // 4, centres[:, 1] // 4]

    # A uniform crop's centre is uniform over pixels 16..240 in each direction; q = chance it hits the top cells.
    grid = np.arange(CROP // 2, 256 - CROP // 2 + 1)
    uniform_top = top[grid[:, None] // 4, grid[None, :] // 4]
    q = uniform_top.mean()
    share = in_top.mean()
    assert share == pytest.approx(0.5 + 0.5 * q, abs=0.035)
    assert (share - q) / (1 - q) == pytest.approx(0.5, abs=0.05)  # salient draws, net of uniform hits

    quadrant = (centres[:, 0] >= 128) * 2 + (centres[:, 1] >= 128)
    rest = quadrant[~in_top]
    grid_quadrant = (grid[:, None] >= 128) * 2 + (grid[None, :] >= 128)
    expected = np.array([np.sum((grid_quadrant == k) & ~uniform_top) for k in range(4)]) / uniform_top.size * 0.5 * 2000
    observed = np.bincount(rest, minlength=4)
    assert np.sum((observed - expected) ** 2 / expected) < 16.27  # chi-square, 3 dof, p = 0.001


def test_fallback_draws_until_a_scene_has_a_map(tmp_path) -> None:
    masks = [_blob_mask(256), _blob_mask(256)]
    dataset = _write_scenes(tmp_path, masks)
    kwargs = {"salient_fraction": 1.0, "class_frequencies": _frequencies(masks), "rare_classes": [4, 5]}
    rare = SaliencyGuidedGeoSampler(
        dataset, CROP, 400, fallback="rare", generator=torch.Generator().manual_seed(0), **kwargs
    )
    random = SaliencyGuidedGeoSampler(
        dataset, CROP, 400, fallback="random", generator=torch.Generator().manual_seed(0), **kwargs
    )

    def water_centres(sampler) -> float:
        centres = [(_scene_of(q), *_origin(q, _scene_of(q))) for q in sampler]
        return float(np.mean([masks[s][r + CROP // 2, c + CROP // 2] == 4 for s, r, c in centres]))

    assert rare.saliency_map("scene_00") is None
    assert [rare.rare_index.class_pixels(s).tolist() for s in (0, 1)] == [[38 * 38, 0], [38 * 38, 0]]
    assert water_centres(rare) == 1.0
    assert water_centres(random) < 0.1  # the blob holds 1444 of 225^2 centre positions

    saliency = _planted_map()
    top = saliency >= np.sort(saliency.ravel())[-math.ceil(0.1 * saliency.size)]
    rare.update_saliency("scene_01", saliency, from_origin(_left(1), TOP, 4 * RES, 4 * RES))
    queries = list(rare)
    scenes = np.array([_scene_of(q) for q in queries])
    assert 0.4 < np.mean(scenes == 1) < 0.6  # scenes drawn by area
    for query, scene in zip(queries, scenes, strict=True):
        row, col = _origin(query, scene)
        if scene == 0:
            assert masks[0][row + CROP // 2, col + CROP // 2] == 4  # still the rare fallback
        else:
            assert top[(row + CROP // 2) // 4, (col + CROP // 2) // 4]  # now centred in the map's top 10 %


def test_same_seed_gives_the_same_crops(tmp_path) -> None:
    masks = [_blob_mask(256), _blob_mask(256)]
    dataset = _write_scenes(tmp_path, masks)
    rare_args = (_frequencies(masks), [4, 5])

    def rare(seed: int) -> list:
        return list(RareClassGeoSampler(dataset, CROP, 50, *rare_args, generator=torch.Generator().manual_seed(seed)))

    def salient(seed: int) -> list:
        sampler = SaliencyGuidedGeoSampler(
            dataset, CROP, 50, 0.5, 10, "rare", *rare_args, generator=torch.Generator().manual_seed(seed)
        )
        sampler.update_saliency("scene_00", _planted_map(), from_origin(_left(0), TOP, 4 * RES, 4 * RES))
        return list(sampler)

    for draw in (rare, salient):
        first, again, other = draw(1), draw(1), draw(2)
        assert [(q[0].start, q[1].start, q[2].start) for q in first] == [
            (q[0].start, q[1].start, q[2].start) for q in again
        ]
        assert [q[0].start for q in first] != [q[0].start for q in other]
        assert len(first) == 50


def test_crops_stay_inside_scene_and_roi_on_the_pixel_grid(tmp_path) -> None:
    mask = np.zeros((256, 256), dtype=np.uint8)
    mask[150:190, 130:170] = 4  # water straddling the roi's bottom-right corner
    mask[:10, :] = 5  # wetland along the top edge, partly outside the roi
    dataset = _write_scenes(tmp_path, [mask])
    roi = shapely.box(
        _left(0) - 100.0, TOP - 170.3 * RES, _left(0) + 150.4 * RES, TOP - 3.5 * RES
    )  # rows 4..170, cols 0..150
    generator = torch.Generator().manual_seed(0)
    rare = RareClassGeoSampler(dataset, CROP, 300, _frequencies([mask]), [4, 5], roi=roi, generator=generator)
    assert rare.rare_index.class_pixels().tolist() == [
        int(np.sum(mask[4:170, :150] == 4)),
        int(np.sum(mask[4:170, :150] == 5)),
    ]
    salient = SaliencyGuidedGeoSampler(
        dataset, CROP, 300, 0.7, 5, "rare", _frequencies([mask]), [4, 5], roi=roi, generator=generator
    )
    edge_map = np.zeros((64, 64), dtype=np.float32)
    edge_map[0:1, 30:40] = 1.0  # hot cells whose centres lie above the roi: never salient
    edge_map[40:43, 35:45] = 0.8  # straddles the roi's bottom and right edges
    salient.update_saliency("scene_00", edge_map, from_origin(_left(0), TOP, 4 * RES, 4 * RES))
    for query in [*rare, *salient]:
        row, col = _origin(query, 0)
        assert 4 <= row and row + CROP <= 170 and 0 <= col and col + CROP <= 150
        assert (query[0].start - _left(0)) / RES == pytest.approx(col, abs=1e-6)
        assert (query[0].stop - query[0].start, query[1].stop - query[1].start) == pytest.approx(
            (CROP * RES, CROP * RES)
        )


def test_length_units_and_bad_arguments(tmp_path) -> None:
    masks = [_blob_mask(256)]
    dataset = _write_scenes(tmp_path, masks)
    args = (_frequencies(masks), [4, 5])
    assert len(RareClassGeoSampler(dataset, CROP, None, *args)) == (256 // CROP) ** 2
    assert len(list(RareClassGeoSampler(dataset, CROP, 7, *args))) == 7
    crs_sized = SaliencyGuidedGeoSampler(dataset, 64 * RES, 3, fallback="random", units=Units.CRS)
    assert crs_sized.size_px == (64, 64)
    with pytest.raises(ValueError, match="rare_classes"):
        RareClassGeoSampler(dataset, CROP, 5, args[0], [6])
    with pytest.raises(ValueError, match="temperature"):
        RareClassGeoSampler(dataset, CROP, 5, *args, temperature=0.0)
    with pytest.raises(ValueError, match="no pixel of the rare classes"):
        RareClassGeoSampler(dataset, CROP, 5, args[0], [5])
    with pytest.raises(ValueError, match="holds a 300 x 300 px crop"):
        RareClassGeoSampler(dataset, 300, 5, *args)
    with pytest.raises(ValueError, match="fallback"):
        SaliencyGuidedGeoSampler(dataset, CROP, 5, fallback="labels")
    with pytest.raises(ValueError, match="needs class_frequencies"):
        SaliencyGuidedGeoSampler(dataset, CROP, 5)
    with pytest.raises(ValueError, match="topk_percent"):
        SaliencyGuidedGeoSampler(dataset, CROP, 5, topk_percent=0, fallback="random")
    sampler = SaliencyGuidedGeoSampler(dataset, CROP, 5, fallback="random")
    with pytest.raises(ValueError, match="salient_fraction"):
        sampler.salient_fraction = 1.5
    transform = from_origin(_left(0), TOP, 4 * RES, 4 * RES)
    with pytest.raises(KeyError, match="scene_07"):
        sampler.update_saliency("scene_07", _planted_map(), transform)
    with pytest.raises(ValueError, match="2D"):
        sampler.update_saliency("scene_00", np.zeros((2, 4, 4)), transform)
    with pytest.raises(ValueError, match="north-up"):
        sampler.update_saliency("scene_00", _planted_map(), Affine(4 * RES, 0.1, _left(0), 0, -4 * RES, TOP))
    with pytest.raises(ValueError, match="no finite cell"):
        sampler.update_saliency("scene_00", _planted_map(), from_origin(0.0, 0.0, 4 * RES, 4 * RES))


def test_datamodule_builds_the_named_sampler_and_exposes_it(synth_root) -> None:
    with pytest.raises(ValueError, match="sampler must be one of"):
        LissIVDataModule(str(synth_root), sampler="balanced")
    with pytest.raises(ValueError, match="salient_fraction"):
        LissIVDataModule(str(synth_root), sampler="saliency", salient_fraction=-0.1)
    dm = LissIVDataModule(
        str(synth_root), batch_size=4, patch_size=32, length=8, sampler="rare", rare_temperature=0.05, augment=False
    )
    dm.setup("fit")
    assert isinstance(dm.train_sampler, RareClassGeoSampler) and dm.sampler is dm.train_sampler
    np.testing.assert_allclose(
        dm.sampler.rare_index.probabilities, rare_class_probabilities(dm.class_frequencies, dm.rare_classes, 0.05)
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32)
    assert all(np.isin(m.numpy(), dm.rare_classes).any() for m in batch["mask"])
    assert dm.sampler.rare_fraction == 1.0
    with pytest.raises(ValueError, match="rare_fraction must be in"):
        LissIVDataModule(str(synth_root), sampler="rare", rare_fraction=1.5)
    mixed = LissIVDataModule(str(synth_root), patch_size=32, length=8, sampler="rare", rare_fraction=0.25)
    mixed.setup("fit")
    assert mixed.sampler.rare_fraction == 0.25
    mixed.sampler.rare_fraction = 0.5  # the knob path datamodule.sampler.rare_fraction
    assert mixed.train_sampler.rare_fraction == 0.5

    dm = LissIVDataModule(
        str(synth_root), patch_size=32, length=8, sampler="saliency", salient_fraction=0.3, topk_percent=5
    )
    dm.setup("fit")
    assert isinstance(dm.sampler, SaliencyGuidedGeoSampler)
    assert (dm.sampler.salient_fraction, dm.sampler.topk_percent, dm.sampler.fallback) == (0.3, 5, "rare")
    dm.sampler.salient_fraction = 0.8  # the knob path datamodule.sampler.salient_fraction
    assert dm.train_sampler.salient_fraction == 0.8
    sources = dm.saliency_sources()
    assert [s[0] for s in sources] == dm.split_scenes["train"] == sorted(dm.sampler.all_scene_ids)
    assert all(Path(s[1]).is_file() for s in sources)
    assert [s[1] for s in sources] == [scene.image for scene in dm.scenes_of("train")] and len(sources[0]) == 2


def test_rare_sampler_respects_the_block_split_roi(synth_copy) -> None:
    for extra in ("scene_01", "scene_02", "scene_03"):
        (synth_copy / "images" / f"{extra}.tif").unlink()
        (synth_copy / "masks" / f"{extra}.tif").unlink()
    dm = LissIVDataModule(str(synth_copy), patch_size=32, length=100, sampler="rare")
    dm.setup("fit")
    fp = dm.sampler.footprints[0]
    assert fp.rows == (0, 179) and fp.cols == (0, 256)  # rows 0 .. floor(0.7 * 256)
    ymin = dm.split_roi(dm.train_dataset, "train").bounds[1]
    assert all(q[1].start >= ymin - 1e-6 for q in dm.sampler)


def test_new_maps_steer_persistent_workers_next_epoch(synth_root) -> None:
    dm = LissIVDataModule(
        str(synth_root),
        batch_size=4,
        patch_size=32,
        length=8,
        num_workers=1,
        sampler="saliency",
        salient_fraction=1.0,
        topk_percent=0.05,
        augment=False,
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.persistent_workers
    list(loader)
    workers = loader._iterator
    hot = np.zeros((64, 64), dtype=np.float32)
    hot[8:10, 50:52] = 1.0  # pixels 32..40 x 200..208; the top 0.05 % = 3 of these cells
    for fp in dm.sampler.footprints:
        dm.sampler.update_saliency(fp.scene_id, hot, from_origin(fp.left, fp.top, 4 * RES, 4 * RES))
    bounds = [b for batch in loader for b in batch["bounds"]]
    assert loader._iterator is workers  # the same worker processes served the second epoch
    assert len(bounds) == 8
    for query in bounds:
        fp = next(fp for fp in dm.sampler.footprints if fp.left - 1e-6 <= query[0].start < fp.left + 256 * RES)
        row, col = (
            round((fp.top - query[1].stop) / RES) + CROP // 2,
            round((query[0].start - fp.left) / RES) + CROP // 2,
        )
        assert 32 <= row < 40 and 200 <= col < 208
