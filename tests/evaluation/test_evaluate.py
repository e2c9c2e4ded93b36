"""Tests for rareseg.evaluation.evaluate: numpy confusion matrices of known predictions, and infer's own masks."""

import json
from pathlib import Path

import lightning
import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from rareseg.cli import main
from rareseg.core.scores import per_class_scores, summary_scores
from rareseg.datamodules import DataError, LissIVDataModule
from rareseg.evaluation import SplitEvaluation, evaluate, evaluate_module, load_module
from rareseg.evaluation.report import PLOTS
from rareseg.inference.decisions import assign_classes
from rareseg.lightning_modules import RareSegModule
from tests.conftest import CALIBRATED_THRESHOLDS


class PixelLinear(nn.Module):
    """Logits = a fixed 1x1 convolution of the normalised bands, so every pixel's prediction is known."""

    def __init__(self, in_channels: int = 3, num_classes: int = 6) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        self.conv = nn.Conv2d(in_channels, num_classes, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(num_classes, in_channels, 1, 1, generator=generator) * 2)
            self.conv.bias.copy_(torch.randn(num_classes, generator=generator))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.conv(image)


def _data(root: Path) -> LissIVDataModule:
    return LissIVDataModule(root=str(root), num_workers=0, generate_if_missing=False)


def _pixel_module(data: LissIVDataModule) -> RareSegModule:
    return RareSegModule(
        net=PixelLinear(),
        num_classes=data.num_classes,
        rare_classes=data.rare_classes,
        class_names=data.class_names,
        band_mean=data.band_mean,
        band_std=data.band_std,
    ).eval()


def _reference(module: RareSegModule, data: LissIVDataModule, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole-scene numpy confusion matrix, rare probabilities and truth of the valid pixels of a split."""
    count = data.num_classes
    matrix = np.zeros((count, count), np.int64)
    probs, truth = [], []
    for scene in data.scenes_of(split):
        with rasterio.open(scene.image) as source:
            image = source.read().astype(np.float32)
        with rasterio.open(scene.mask) as source:
            mask = source.read(1).astype(np.int64)
        valid = (mask != 255) & ~(image == scene.nodata).all(axis=0)
        mean, std = np.array(data.band_mean, np.float32), np.array(data.band_std, np.float32)
        normalised = torch.from_numpy((image - mean[:, None, None]) / std[:, None, None])[None]
        with torch.no_grad():
            scene_probs = torch.softmax(module.net(normalised), dim=1)[0].numpy()
        preds = scene_probs.argmax(axis=0)
        matrix += np.bincount(count * mask[valid] + preds[valid], minlength=count * count).reshape(count, count)
        probs.append(scene_probs[:, valid])
        truth.append(mask[valid])
    return matrix, np.concatenate(probs, axis=1), np.concatenate(truth)


def test_split_scores_match_a_numpy_confusion_matrix_of_the_whole_scene(synth_root: Path) -> None:
    data = _data(synth_root)
    module = _pixel_module(data)
    result = evaluate_module(module, synth_root, "test", tile=128, overlap=32, batch_size=3, progress=False)
    expected, probs, truth = _reference(module, data, "test")
    assert expected.sum() > 0.9 * 256 * 256  # every pixel counts once; only ignore pixels drop out
    # a pointwise network gives every overlapping tile the same probabilities, so blending changes nothing
    np.testing.assert_array_equal(result.matrices["argmax"], expected)
    # no calibrated thresholds: the deployed rule uses 0.5, which is the argmax but for exact ties
    np.testing.assert_array_equal(result.confusion_matrix, expected)
    scores = result.to_dict()
    numpy_iou = np.diag(expected) / (expected.sum(0) + expected.sum(1) - np.diag(expected))
    for class_id, name in enumerate(data.class_names):
        if not np.isnan(numpy_iou[class_id]):
            assert scores["per_class"][name]["iou"] == pytest.approx(numpy_iou[class_id])
        assert scores["per_class"][name]["support"] == expected[class_id].sum()
    assert scores["summary"]["rare_iou"] == pytest.approx(
        summary_scores(expected, data.rare_classes)["rare_iou"], nan_ok=True
    )
    [(stem, scene)] = scores["per_scene"].items()
    assert stem == data.split_scenes["test"][0]
    assert scene["miou"] == pytest.approx(scores["summary"]["miou"])
    water = data.class_names.index("water")
    water_probs, is_water = probs[water].astype(np.float64), truth == water
    bins = np.minimum(np.floor(water_probs * 10), 9).astype(int)
    ece = sum(
        np.mean(bins == b) * abs(water_probs[bins == b].mean() - is_water[bins == b].mean())
        for b in range(10)
        if np.any(bins == b)
    )
    assert scores["rare_probabilities"]["water"]["ece"] == pytest.approx(ece, rel=1e-4)
    assert sum(scores["rare_probabilities"]["water"]["count"]) == expected.sum()


def test_nan_and_infinite_pixels_are_not_scored(synth_copy: Path) -> None:
    data = _data(synth_copy)
    [stem] = data.split_scenes["test"]
    path = synth_copy / "images" / f"{stem}.tif"
    with rasterio.open(path) as src:
        image, profile = src.read().astype(np.float32), src.profile
    image[0, 20:60, 30:90] = np.nan
    image[1, 120, :] = np.inf
    image[2, 200:, 100:110] = -np.inf
    profile.update(dtype="float32")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
    bad = ~np.isfinite(image).all(axis=0)
    module = _pixel_module(data)
    result = evaluate_module(module, synth_copy, "test", tile=128, overlap=32, batch_size=3, progress=False)
    with rasterio.open(synth_copy / "masks" / f"{stem}.tif") as source:
        mask = source.read(1).astype(np.int64)
    clean = np.where(bad, 0, image)
    mean, std = np.array(data.band_mean, np.float32), np.array(data.band_std, np.float32)
    normalised = torch.from_numpy((clean - mean[:, None, None]) / std[:, None, None])[None]
    with torch.no_grad():
        preds = torch.softmax(module.net(normalised), dim=1)[0].numpy().argmax(axis=0)
    valid = (mask != 255) & ~(image == 0).all(axis=0) & ~bad
    count = data.num_classes
    expected = np.bincount(count * mask[valid] + preds[valid], minlength=count * count).reshape(count, count)
    assert expected.sum() <= ((mask != 255) & ~(image == 0).all(axis=0)).sum() - 3000  # 40x60 + 256 + 56x10 bad
    np.testing.assert_array_equal(result.matrices["argmax"], expected)
    assert all(np.isfinite(v) for v in result.to_dict()["summary"].values() if isinstance(v, float))


def test_an_extra_rule_is_scored_on_the_same_blended_probabilities(synth_root: Path) -> None:
    data = _data(synth_root)
    module = _pixel_module(data)
    result = evaluate_module(
        module, synth_root, "test", tile=128, overlap=32, threshold=0.3, extra_rules=("calibrated",), progress=False
    )
    _, probs, truth = _reference(module, data, "test")
    rare = list(data.rare_classes)
    count = len(data.class_names)
    for rule, key in (("override", "deployed"), ("calibrated", "calibrated")):
        predicted = assign_classes(probs[:, None, :], rare, [0.3] * len(rare), rule)[0]
        expected = np.bincount(truth * count + predicted, minlength=count * count).reshape(count, count)
        np.testing.assert_array_equal(result.matrices[key], expected)
        [(_, per_rule)] = result.scene_matrices.items()
        np.testing.assert_array_equal(per_rule[key], expected)
    assert not np.array_equal(result.matrices["calibrated"], result.matrices["deployed"])
    with pytest.raises(ValueError, match="decision rule must be one of override, calibrated, got 'both'"):
        evaluate_module(module, synth_root, "test", tile=128, overlap=32, extra_rules=("both",), progress=False)


def test_scene_breakdown_sums_to_the_split_on_a_two_scene_split(synth_root: Path) -> None:
    data = _data(synth_root)
    result = evaluate_module(_pixel_module(data), synth_root, "train", tile=128, batch_size=8, progress=False)
    assert sorted(result.scene_matrices) == sorted(data.split_scenes["train"]) and len(result.scene_matrices) == 2
    for rule in ("deployed", "argmax"):
        scenes = [per_rule[rule] for per_rule in result.scene_matrices.values()]
        np.testing.assert_array_equal(sum(scenes), result.matrices[rule])
    per_scene = result.to_dict()["per_scene"]
    for stem, per_rule in result.scene_matrices.items():
        assert per_scene[stem]["confusion_matrix"] == {rule: matrix.tolist() for rule, matrix in per_rule.items()}


def test_update_counts_both_rules_and_rare_probabilities_by_hand() -> None:
    result = SplitEvaluation.empty(["a", "b", "c"], [2], "test", {2: 0.05}, "override", calibration_bins=2, pr_bins=4)
    # three scored pixels: truth a, c, b; argmax a, c, c; class c probabilities 0.1, 0.8, 0.6 (t = 0.05: all c)
    truth = np.array([0, 2, 1])
    result.update(
        "s", truth, {"deployed": np.array([2, 2, 2]), "argmax": np.array([0, 2, 2])}, np.array([[0.1, 0.8, 0.6]])
    )
    np.testing.assert_array_equal(result.matrices["argmax"], [[1, 0, 0], [0, 0, 1], [0, 0, 1]])
    np.testing.assert_array_equal(result.confusion_matrix, [[0, 0, 1], [0, 0, 1], [0, 0, 1]])
    scores = result.to_dict()
    assert scores["argmax"]["per_class"]["c"]["precision"] == pytest.approx(0.5)
    assert scores["argmax"]["per_class"]["b"]["iou"] == 0.0
    assert scores["per_class"]["c"]["precision"] == pytest.approx(1 / 3)
    assert scores["per_class"]["a"]["recall"] == 0.0
    assert scores["decision"] == {"thresholds": {"c": 0.05}, "threshold_source": "override"}
    # class c probabilities: 0.1 (bin 0, negative), 0.8 (bin 1, positive), 0.6 (bin 1, negative)
    assert scores["rare_probabilities"]["c"]["count"] == [1, 2]
    assert scores["rare_probabilities"]["c"]["ece"] == pytest.approx(1 / 3 * 0.1 + 2 / 3 * abs(0.7 - 0.5))


def _save_checkpoint(module: RareSegModule, path: Path) -> Path:
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )
    return path


def test_evaluate_from_a_checkpoint_writes_metrics_report_and_plots(synth_root: Path, tmp_path: Path) -> None:
    data = _data(synth_root)
    torch.manual_seed(0)
    module = RareSegModule(
        num_classes=6,
        rare_classes=data.rare_classes,
        class_names=data.class_names,
        band_mean=data.band_mean,
        band_std=data.band_std,
    )
    checkpoint = _save_checkpoint(module, tmp_path / "tiny.ckpt")
    scores = evaluate(
        checkpoint, synth_root, "val", tmp_path / "out", batch_size=4, tile=128, device="cpu", progress=False
    )
    direct = evaluate_module(module.eval(), synth_root, "val", batch_size=4, tile=128, progress=False)
    assert scores["confusion_matrix"] == direct.confusion_matrix.tolist()
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["summary"] == pytest.approx(scores["summary"], nan_ok=True)
    assert written["per_class"]["wetland"]["iou"] == pytest.approx(per_class_scores(direct.confusion_matrix)["iou"][5])
    for plot in PLOTS:
        assert (tmp_path / "out" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| wetland* |" in report and data.split_scenes["val"][0] in report
    assert "## Per class, plain argmax" in report and "- plain argmax: rare_recall" in report
    assert not list((tmp_path / "out").glob("*.part"))


def test_bad_paths_and_mismatched_classes_are_one_line_data_errors(synth_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="checkpoint not found"):
        load_module(tmp_path / "missing.ckpt", torch.device("cpu"))
    with pytest.raises(DataError, match="not a readable checkpoint"):
        load_module(synth_root / "classes.yaml", torch.device("cpu"))
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="not a Lightning checkpoint"):
        load_module(tmp_path / "other.pt", torch.device("cpu"))
    data = _data(synth_root)
    with pytest.raises(DataError, match="dataset root does not exist"):
        evaluate_module(_pixel_module(data), tmp_path / "nowhere", progress=False)
    three_classes = RareSegModule(net=PixelLinear(num_classes=3), num_classes=3, rare_classes=(2,)).eval()
    with pytest.raises(DataError, match="6 classes and 3 bands, the checkpoint has 3 classes"):
        evaluate_module(three_classes, synth_root, progress=False)
    # a tile larger than the 256 px scenes shrinks to the scene, as in rareseg infer
    larger = evaluate_module(_pixel_module(data), synth_root, tile=512, progress=False)
    same = evaluate_module(_pixel_module(data), synth_root, tile=256, progress=False)
    np.testing.assert_array_equal(larger.confusion_matrix, same.confusion_matrix)
    with pytest.raises(ValueError, match="split must be one of"):
        evaluate_module(_pixel_module(data), synth_root, "holdout", progress=False)


def test_cli_evaluate_reports_a_bad_checkpoint_in_one_line(synth_root: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--checkpoint", str(tmp_path / "missing.ckpt"), "--data-root", str(synth_root)])
    assert str(exit_info.value) == f"rareseg: error: {tmp_path / 'missing.ckpt'}: checkpoint not found"


def _scores_of_mask(mask: np.ndarray, truth: np.ndarray, count: int) -> tuple[np.ndarray, dict]:
    """Confusion matrix and per-class scores, by hand in float64, of a written mask against the truth."""
    scored = (mask != 255) & (truth != 255)
    matrix = np.zeros((count, count), np.int64)
    np.add.at(matrix, (truth[scored].astype(np.int64), mask[scored].astype(np.int64)), 1)
    hits, rows, columns = np.diag(matrix).astype(np.float64), matrix.sum(1), matrix.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = {
            "iou": hits / (rows + columns - hits),
            "recall": hits / rows,
            "precision": hits / columns,
            "f1": 2 * hits / (rows + columns),
        }
    return matrix, scores


def _infer(checkpoint: Path, image: Path, out: Path, *options: str) -> np.ndarray:
    main(["infer", "--checkpoint", str(checkpoint), "--input", str(image), "--out", str(out), "--quiet"])
    main(["infer", "--checkpoint", str(checkpoint), "--input", str(image), "--out", str(out), "--quiet", *options])
    with rasterio.open(out / "mask.tif") as source:
        return source.read(1)


def _assert_scores_of(mask: np.ndarray, truth: np.ndarray, scores: dict, stem: str, rule: str, data) -> None:
    matrix, by_hand = _scores_of_mask(mask, truth, data.num_classes)
    headline = scores if rule == "deployed" else scores[rule]
    assert headline["confusion_matrix"] == matrix.tolist(), rule
    assert scores["per_scene"][stem]["confusion_matrix"][rule] == matrix.tolist(), rule
    for class_id, name in enumerate(data.class_names):
        for key, values in by_hand.items():
            expected = None if np.isnan(values[class_id]) else float(values[class_id])
            assert headline["per_class"][name][key] == expected, (rule, name, key)
    assert headline["summary"]["rare_recall"] == float(np.nanmean(by_hand["recall"][data.rare_classes])), rule


@pytest.mark.parametrize("threshold", [None, 0.15])
def test_headline_scores_are_those_of_the_mask_infer_writes(
    synth_root: Path, checkpoint_path: Path, tmp_path: Path, threshold: float | None
) -> None:
    options = ["--tile", "128", "--overlap", "32", "--batch-size", "4", "--device", "cpu"]
    scores = evaluate(
        checkpoint_path,
        synth_root,
        "test",
        tile=128,
        overlap=32,
        batch_size=4,
        threshold=threshold,
        device="cpu",
        progress=False,
    )
    data = _data(synth_root)
    if threshold is None:  # the checkpoint's calibrated thresholds, as infer uses them by default
        expected = {
            "thresholds": {"water": 0.5, "wetland": CALIBRATED_THRESHOLDS[5]},
            "threshold_source": "checkpoint+default",
        }
    else:
        options += ["--threshold", str(threshold)]
        expected = {"thresholds": {"water": threshold, "wetland": threshold}, "threshold_source": "override"}
    assert scores["decision"] == expected
    [scene] = data.scenes_of("test")
    with rasterio.open(scene.mask) as source:
        truth = source.read(1)
    deployed = _infer(checkpoint_path, scene.image, tmp_path / "deployed", *options)
    _assert_scores_of(deployed, truth, scores, scene.stem, "deployed", data)
    # threshold 1: a rare class overrides only where its probability is 1, where it is the argmax already
    argmax = _infer(checkpoint_path, scene.image, tmp_path / "argmax", *options, "--threshold", "1.0")
    _assert_scores_of(argmax, truth, scores, scene.stem, "argmax", data)
    if threshold is not None:
        assert (deployed != argmax).sum() > 100  # the low threshold moved pixels to the rare classes
