"""LissIVDataModule: scene-split LISS-IV data with cached normalisation statistics."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import kornia.augmentation as K
import shapely
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader
from torchgeo.datamodules import GeoDataModule
from torchgeo.datasets import IntersectionDataset
from torchgeo.samplers import GeoSampler, GridGeoSampler, RandomGeoSampler
from torchvision.transforms import Compose

from rareseg.core.conventions import IGNORE_INDEX
from rareseg.datamodules.datasets import LissIVImage, LissIVMask
from rareseg.datamodules.normalisation import SceneStandardise, check_normalisation, scene_standardisation
from rareseg.datamodules.predict_scenes import (
    SceneDescriptor,
    SceneDescriptors,
    is_scene_descriptor,
    resolve_predict_inputs,
    single_scene,
)
from rareseg.datamodules.samplers import RareClassGeoSampler, SaliencyGuidedGeoSampler
from rareseg.datamodules.scenes import ClassTable, DataError, Scene, scan_root
from rareseg.datamodules.stats import check_class_ids, fraction_rows, load_or_compute_stats

SPLITS = ("train", "val", "test")
SAMPLERS = ("random", "rare", "saliency")
#: Row fractions of each scene per split when a root has too few scenes to split by scene.
BLOCK_ROWS = {"train": (0.0, 0.7), "val": (0.7, 0.85), "test": (0.85, 1.0)}


class MarkNodata:
    """Sample transform: pixels whose every band equals ``nodata``, or with a NaN/Inf band, get mask 255 (ignore).

    Also covers the fill outside a scene's footprint, which torchgeo reads as nodata. Non-finite
    values are replaced by the nodata value (0 when that is not finite either), so normalisation
    and the network see finite numbers only.
    """

    def __init__(self, nodata: float) -> None:
        self.nodata = nodata

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Apply to a sample with ``image`` (C, H, W) and ``mask`` (H, W)."""
        image = sample["image"]
        non_finite = ~torch.isfinite(image)
        empty = (image == self.nodata).all(dim=0) | non_finite.any(dim=0)
        if non_finite.any():
            image[non_finite] = self.nodata if math.isfinite(self.nodata) else 0.0
        sample["mask"][empty] = IGNORE_INDEX
        return sample


def split_scenes(
    stems: Sequence[str], val_scenes: Sequence[str] | None, test_scenes: Sequence[str] | None
) -> dict[str, list[str]] | None:
    """Assign scenes to train/val/test; None means "too few scenes, split by blocks".

    Without explicit lists the last ``ceil(n/8)`` stems (sorted) are the test split and the
    ``ceil(n/8)`` before them the validation split.

    Args:
        stems: all scene stems of the root.
        val_scenes: explicit validation stems, or None.
        test_scenes: explicit test stems, or None.

    Returns:
        Stems per split, disjoint, or None when fewer than 3 scenes and no explicit lists.
    """
    stems = sorted(stems)
    unknown = sorted((set(val_scenes or ()) | set(test_scenes or ())) - set(stems))
    if unknown:
        raise DataError(f"scene split names scenes that are not in images/: {', '.join(unknown)}")
    if val_scenes is None and test_scenes is None:
        if len(stems) < 3:
            return None
        n_hold = max(1, math.ceil(len(stems) / 8))
        test_scenes = stems[-n_hold:]
        val_scenes = stems[-2 * n_hold : -n_hold]
    val, test = list(val_scenes or ()), list(test_scenes or ())
    if set(val) & set(test):
        raise DataError(f"scenes {sorted(set(val) & set(test))} are in both the validation and the test split")
    train = [s for s in stems if s not in set(val) | set(test)]
    if not train:
        raise DataError("no scene is left for training after the validation/test split")
    return {"train": train, "val": val, "test": test}


class LissIVDataModule(GeoDataModule):
    """LISS-IV segmentation data: random, rare-class or saliency-guided training crops; grids for evaluation.

    The predict stage yields whole scenes, one :class:`~rareseg.datamodules.predict_scenes.SceneDescriptor`
    ``{"path", "name"}`` per batch, for ``rareseg.inference.ScenePredictionWriter`` to predict tile
    by tile: ``predict_inputs`` when given, else the test split's scenes. Under DDP Lightning's
    ``UnrepeatedDistributedSamplerWrapper`` gives every scene to exactly one process.

    The class table, band statistics and class frequencies are available right after
    construction (``num_classes``, ``in_channels``, ``class_names``, ``rare_classes``,
    ``class_frequencies``, ``band_mean``, ``band_std``, ``normalisation``) so the CLI can link
    them into the model. Splits are by scene; a root with fewer than 3 scenes is split by row blocks
    (70 / 15 / 15 %) of every scene instead.
    """

    def __init__(
        self,
        root: str = "data/liss4-synth",
        batch_size: int = 8,
        patch_size: int = 256,
        length: int | None = 512,
        num_workers: int = 0,
        sampler: str = "random",
        salient_fraction: float = 0.5,
        topk_percent: float = 10.0,
        rare_temperature: float = 0.1,
        rare_fraction: float = 1.0,
        val_scenes: list[str] | None = None,
        test_scenes: list[str] | None = None,
        predict_inputs: list[str] | None = None,
        augment: bool = True,
        normalisation: str = "dataset",
        generate_if_missing: bool = True,
        synth_scenes: int = 8,
        synth_size: int = 2048,
        synth_seed: int = 0,
        seed: int = 0,
    ) -> None:
        """Scan and check the root (generating the synthetic data when asked) and load its statistics.

        Args:
            root: dataset root with images/, masks/ and classes.yaml.
            batch_size: samples per batch.
            patch_size: crop side in pixels.
            length: training crops per epoch (None: as many as non-overlapping crops fit).
            num_workers: data-loading worker processes.
            sampler: training sampler: ``"random"`` (uniform crops), ``"rare"``
                (:class:`RareClassGeoSampler`) or ``"saliency"`` (:class:`SaliencyGuidedGeoSampler`
                with the rare-class fallback; its maps come from the ``SaliencyRefresh`` callback).
            salient_fraction: ``"saliency"``: share of crops from the salient region, in [0, 1].
            topk_percent: ``"saliency"``: percentage of map cells forming the salient region, in (0, 100].
            rare_temperature: ``"rare"``/``"saliency"``: temperature T of ``P(c) ∝ exp((1 - f_c) / T)``.
            rare_fraction: ``"rare"``: share of crops centred on a rare-class pixel, in (0, 1]; the
                rest are uniform (:class:`RareClassGeoSampler`).
            val_scenes: validation scene stems (default: derived, see :func:`split_scenes`).
            test_scenes: test scene stems.
            predict_inputs: scenes for the predict stage: GeoTIFF files, folders (their
                ``*.tif``/``*.tiff``) or glob patterns; unlabelled scenes are fine. None: the
                test split's scenes (every scene, whole, when the root is split by row blocks).
            augment: random flips and 90-degree rotations of training crops.
            normalisation: ``"dataset"``: ``(x - mean) / std`` with the training split's statistics;
                ``"scene"``: each scene standardised by its own median and robust spread, which makes
                the network indifferent to the scene's radiometric scale (see
                :mod:`rareseg.datamodules.normalisation` for when to use which). Linked into the
                task, so the checkpoint and inference normalise the same way.
            generate_if_missing: run ``rareseg synth`` into ``root`` when it does not exist.
            synth_scenes: scenes to generate.
            synth_size: side of generated scenes in pixels.
            synth_seed: seed of the generated data.
            seed: seed of the training sampler.
        """
        super().__init__(
            LissIVImage, batch_size=batch_size, patch_size=patch_size, length=length, num_workers=num_workers
        )
        self.save_hyperparameters()  # checkpoints and loggers keep the data settings (datamodule_hyper_parameters)
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        if not 0.0 <= salient_fraction <= 1.0:
            raise ValueError(f"salient_fraction must be in [0, 1], got {salient_fraction}")
        if not 0.0 < topk_percent <= 100.0:
            raise ValueError(f"topk_percent must be in (0, 100], got {topk_percent}")
        if not rare_temperature > 0.0:
            raise ValueError(f"rare_temperature must be > 0, got {rare_temperature}")
        if not 0.0 < rare_fraction <= 1.0:
            raise ValueError(f"rare_fraction must be in (0, 1], got {rare_fraction}")
        self.root = Path(root)
        self.sampler_name = sampler
        self.salient_fraction = salient_fraction
        self.topk_percent = topk_percent
        self.rare_temperature = rare_temperature
        self.rare_fraction = rare_fraction
        self.augment = augment
        self.normalisation = check_normalisation(normalisation)
        self.seed = seed
        if not self.root.exists():
            if not generate_if_missing:
                raise DataError(
                    f"{self.root}: dataset root does not exist (set generate_if_missing: true or run `rareseg synth "
                    f"--out {self.root}`)"
                )
            from rareseg.synth import generate_dataset

            rank_zero_info(
                f"{self.root} does not exist: generating the synthetic LISS-IV data set ({synth_scenes} scenes of "
                f"{synth_size} px)"
            )
            generate_dataset(self.root, num_scenes=synth_scenes, size=synth_size, seed=synth_seed)
        self.classes = ClassTable.load(self.root / "classes.yaml")
        self.scenes = scan_root(self.root, self.classes)
        by_stem = {s.stem: s for s in self.scenes}
        split = split_scenes(list(by_stem), val_scenes, test_scenes)
        if split is None:
            self.split_scenes = {name: list(by_stem) for name in SPLITS}
            self.block_rows: dict[str, tuple[float, float]] | None = dict(BLOCK_ROWS)
        else:
            self.split_scenes = split
            self.block_rows = None
        train = [by_stem[s] for s in self.split_scenes["train"]]
        check_class_ids([s for s in self.scenes if s.stem not in self.split_scenes["train"]], self.num_classes)
        self.stats = load_or_compute_stats(
            self.root, train, self.num_classes, self.block_rows["train"] if self.block_rows else (0.0, 1.0)
        )
        self.nodata = self.scenes[0].nodata
        self.predict_scenes: list[SceneDescriptor] = (
            [SceneDescriptor(path=str(s.image.resolve()), name=s.stem) for s in self.scenes_of("test")]
            if predict_inputs is None
            else resolve_predict_inputs(predict_inputs, self.in_channels)
        )
        # "scene": crops arrive standardised by their scene (split_dataset), so Normalize is the identity
        mean, std = torch.tensor(self.stats.band_mean), torch.tensor(self.stats.band_std)
        if self.normalisation == "scene":
            mean, std = torch.zeros_like(mean), torch.ones_like(std)
        self.aug = K.AugmentationSequential(K.Normalize(mean=mean, std=std), data_keys=None, keepdim=True)
        if augment:
            self.train_aug = K.AugmentationSequential(
                K.Normalize(mean=mean, std=std),
                K.RandomHorizontalFlip(),
                K.RandomVerticalFlip(),
                K.RandomRotation90(times=(0, 3)),
                data_keys=None,
                keepdim=True,
            )

    @property
    def num_classes(self) -> int:
        """Number of classes in ``classes.yaml``."""
        return len(self.classes.ids)

    @property
    def in_channels(self) -> int:
        """Bands per image."""
        return len(self.classes.bands)

    @property
    def class_names(self) -> list[str]:
        """Class names by id."""
        return list(self.classes.names)

    @property
    def class_colors(self) -> list[list[int]]:
        """RGB colours by class id."""
        return [list(c) for c in self.classes.colors]

    @property
    def rare_classes(self) -> list[int]:
        """Ids of the rare classes."""
        return list(self.classes.rare)

    @property
    def class_frequencies(self) -> list[float]:
        """Fraction of valid training pixels per class."""
        return list(self.stats.class_frequencies)

    @property
    def band_mean(self) -> list[float]:
        """Per-band mean of valid training pixels (file units)."""
        return list(self.stats.band_mean)

    @property
    def band_std(self) -> list[float]:
        """Per-band standard deviation of valid training pixels (file units)."""
        return list(self.stats.band_std)

    @property
    def sampler(self) -> GeoSampler | None:
        """The training sampler (same object as ``train_sampler``).

        A knob reaches it as ``datamodule.sampler.salient_fraction``.

        The constructor's ``salient_fraction`` only sets the sampler's initial value.
        """
        return self.train_sampler

    @sampler.setter
    def sampler(self, value: GeoSampler | None) -> None:
        self.train_sampler = value

    def saliency_sources(self) -> list[tuple[str, Path]]:
        """Training scenes for the ``SaliencyRefresh`` callback.

        Returns:
            ``(scene_id, image_path)`` per training scene: the id the training sampler knows the
            scene by (its file stem) and its GeoTIFF. The module predicts the map (its
            ``scene_saliency``), normalising with the statistics linked from this datamodule.
        """
        return [(s.stem, s.image) for s in self.scenes_of("train")]

    def scenes_of(self, split: str) -> list[Scene]:
        """Scenes of a split (``"train"``, ``"val"``, ``"test"``)."""
        wanted = set(self.split_scenes[split])
        return [s for s in self.scenes if s.stem in wanted]

    def split_rows(self, split: str, height: int) -> tuple[int, int]:
        """Pixel rows ``[start, stop)`` of a ``height``-row scene of ``split``: all rows, or the split's row block."""
        if self.block_rows is None:
            return 0, height
        return fraction_rows(self.block_rows[split], height)

    def split_dataset(self, split: str) -> IntersectionDataset:
        """Image-and-mask dataset of one split."""
        scenes = self.scenes_of(split)
        image = LissIVImage([s.image for s in scenes])
        mask = LissIVMask([s.mask for s in scenes])
        transforms: Callable[[dict[str, Any]], dict[str, Any]] = MarkNodata(self.nodata)
        if self.normalisation == "scene":
            transforms = Compose([transforms, self._scene_standardise(image)])
        return IntersectionDataset(image, mask, transforms=transforms)

    def _scene_standardise(self, image: LissIVImage) -> SceneStandardise:
        """The ``"scene"`` sample transform for the scenes of ``image``: each scene's median and robust spread."""
        entries = []
        for interval, geometry, path in zip(image.index.index, image.index.geometry, image.index.filepath):
            median, sigma = scene_standardisation(path)
            entries.append((interval.left, interval.right, geometry.bounds, median, sigma))
        return SceneStandardise(entries)

    def split_roi(self, dataset: IntersectionDataset, split: str) -> shapely.Geometry | None:
        """Region of interest of a split: the split's row block of every scene, or None (whole scenes).

        Block edges fall on whole pixel rows, so crops drawn inside a block lie on the scene's grid.
        """
        if self.block_rows is None:
            return None
        start, stop = self.block_rows[split]
        res_y = dataset.res[1]
        boxes = []
        for geometry in dataset.index.geometry:
            xmin, ymin, xmax, ymax = geometry.bounds
            rows = round((ymax - ymin) / res_y)  # block edges on whole pixel rows: crops stay on the grid
            top, bottom = ymax - round(start * rows) * res_y, ymax - round(stop * rows) * res_y
            boxes.append(shapely.box(xmin, bottom, xmax, top))
        return shapely.union_all(boxes)

    def setup(self, stage: str) -> None:
        """Build the split datasets and samplers (or, for ``predict``, the scene descriptors) for a Lightning stage."""
        if stage == "fit":
            self.train_dataset = self.split_dataset("train")
            self.train_sampler = self._training_sampler(self.train_dataset, self.split_roi(self.train_dataset, "train"))
        if stage == "predict":
            self.predict_dataset = SceneDescriptors(self.predict_scenes)
        evaluation = {"fit": "val", "validate": "val", "test": "test"}
        if stage in evaluation:
            split = evaluation[stage]
            dataset = self.split_dataset(split)
            setattr(self, f"{split}_dataset", dataset)
            setattr(
                self,
                f"{split}_sampler",
                GridGeoSampler(dataset, self.patch_size, self.patch_size, roi=self.split_roi(dataset, split)),
            )

    def predict_dataloader(self) -> DataLoader[SceneDescriptor]:
        """One scene descriptor per batch, in order; no worker processes.

        Batches of one with :func:`single_scene` as collate function (rather than ``batch_size=None``)
        so Lightning can wrap the batch sampler and record which scenes each process predicted.

        Raises:
            DataError: no scene, or fewer scenes than processes (under DDP each must predict at least one).
        """
        scenes = len(self.predict_dataset)
        processes = self.trainer.world_size if self.trainer is not None else 1
        if scenes == 0:
            raise DataError("no scene to predict: the test split is empty (set data predict_inputs or test_scenes)")
        if scenes < processes:
            raise DataError(
                f"{scenes} scene(s) to predict for {processes} processes: each process needs at least one, use at "
                f"most {scenes} devices"
            )
        return DataLoader(self.predict_dataset, batch_size=1, shuffle=False, collate_fn=single_scene)

    def transfer_batch_to_device(
        self, batch: dict[str, Any], device: torch.device, dataloader_idx: int
    ) -> dict[str, Any]:
        """Move a batch of crops to the device; a scene descriptor stays as it is."""
        if is_scene_descriptor(batch):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _training_sampler(self, dataset: IntersectionDataset, roi: shapely.Geometry | None) -> GeoSampler:
        """The training sampler named by ``sampler``, seeded with ``seed``."""
        generator = torch.Generator().manual_seed(self.seed)
        if self.sampler_name == "random":
            return RandomGeoSampler(dataset, self.patch_size, self.length, roi=roi, generator=generator)
        rare = {
            "class_frequencies": self.class_frequencies,
            "rare_classes": self.rare_classes,
            "temperature": self.rare_temperature,
        }
        if self.sampler_name == "rare":
            return RareClassGeoSampler(
                dataset,
                self.patch_size,
                self.length,
                roi=roi,
                generator=generator,
                rare_fraction=self.rare_fraction,
                **rare,
            )
        return SaliencyGuidedGeoSampler(
            dataset,
            self.patch_size,
            self.length,
            self.salient_fraction,
            self.topk_percent,
            "rare",
            roi=roi,
            generator=generator,
            **rare,
        )

    def on_after_batch_transfer(self, batch: dict[str, Tensor], dataloader_idx: int) -> dict[str, Tensor]:
        """Normalise (and for training augment) a batch on the device; masks stay long; scene descriptors pass."""
        if is_scene_descriptor(batch):
            return batch
        batch = super().on_after_batch_transfer(batch, dataloader_idx)
        batch["mask"] = batch["mask"].long()
        return batch
