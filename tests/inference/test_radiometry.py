"""Tests for rareseg.inference.radiometry: scale and band-order checks, ``input_scale`` and ``auto``."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio

from rareseg.cli import main
from rareseg.datamodules.normalisation import BandStatistics
from rareseg.inference import Predictor, predict_scene
from rareseg.inference.radiometry import (
    RadiometryWarning,
    check_radiometry,
    order_mismatch,
    parse_input_scale,
)
from tests.inference.helpers import LocalNet, make_module, write_geotiff

#: Training statistics of the hand-made cases (about the synthetic data's green, red, NIR).
MEAN = np.array([108.0, 97.0, 236.0])
STD = np.array([25.0, 33.0, 90.0])


def _stats(mean: np.ndarray, std: np.ndarray) -> BandStatistics:
    return BandStatistics(mean, std, mean - 2 * std, mean, mean + 2 * std, 1000)


@pytest.mark.parametrize(
    ("scale", "factor"),
    [(10.0, 0.1), (0.1, 10.0), (8.0, 0.125), (1e4, 1e-4), (1e-4, 1e4), (64.0, 1 / 64), (4.0, 0.25)],
)
def test_a_scaled_scene_warns_with_the_factor_that_undoes_it(scale: float, factor: float) -> None:
    check = check_radiometry(_stats(MEAN * scale, STD * scale), MEAN, STD, "s.tif")
    assert check.scale_bands == (0, 1, 2)
    assert check.factor == pytest.approx(factor, rel=1e-12)
    assert check.permutation is None
    assert check.warning is not None and check.warning.startswith("s.tif: ")
    assert f"--input-scale {factor:.12g}" in check.warning


def test_the_nearest_candidate_wins_and_powers_of_ten_break_ties() -> None:
    # ratio 9: |log(9 * 0.1)| = 0.105 < |log(9 * 0.125)| = 0.118, so 0.1
    assert check_radiometry(_stats(MEAN * 9, STD * 9), MEAN, STD, "s").factor == pytest.approx(0.1)
    # ratio 12: |log(12 * 0.1)| = 0.182 < |log(12 / 16)| = 0.288, so 0.1 again
    assert check_radiometry(_stats(MEAN * 12, STD * 12), MEAN, STD, "s").factor == pytest.approx(0.1)
    # ratio 14: |log(14 * 0.1)| = 0.336 > |log(14 / 16)| = 0.134, so 1/16
    assert check_radiometry(_stats(MEAN * 14, STD * 14), MEAN, STD, "s").factor == pytest.approx(1 / 16)


def test_within_the_margin_there_is_no_warning() -> None:
    # a factor 2.9 (< SCALE_MARGIN 3) in every band and statistic: no finding
    check = check_radiometry(_stats(MEAN * 2.9, STD * 2.9), MEAN, STD, "s")
    assert check.ok and check.warning is None and check.factor is None
    # only one band's std beyond the margin: that band is named
    check = check_radiometry(_stats(MEAN, STD * np.array([1.0, 3.2, 1.0])), MEAN, STD, "s")
    assert check.scale_bands == (1,)


def test_mismatch_no_single_factor_explains_is_said_so() -> None:
    # band 1 x 10, band 2 x 1000: no factor brings both within 3x
    check = check_radiometry(_stats(MEAN * [10, 1000, 10], STD * [10, 1000, 10]), MEAN, STD, "s")
    assert check.factor is None
    assert "no single power-of-ten or 2^k factor explains it" in check.warning


def test_a_scene_with_nir_first_is_reported_with_the_order_to_restore() -> None:
    # the scene holds NIR, green, red: training band b is the scene's band (1, 2, 0)[b]
    order = [2, 0, 1]
    check = check_radiometry(_stats(MEAN[order], STD[order]), MEAN, STD, "nir-first.tif")
    assert check.permutation == (1, 2, 0)
    assert check.scale_bands == ()  # in the right order the scale matches
    assert "gdal_translate -b 2 -b 3 -b 1" in check.warning
    # the given order: log ratios of mean and std, half-range (max - min) / 2 by hand
    ratios = np.log(np.stack([MEAN[order] / MEAN, STD[order] / STD]))
    assert order_mismatch(ratios) == pytest.approx((math.log(90 / 25) - math.log(33 / 90)) / 2)


def test_a_permuted_and_scaled_scene_gets_both_findings() -> None:
    order = [2, 0, 1]
    check = check_radiometry(_stats(MEAN[order] * 10, STD[order] * 10), MEAN, STD, "s")
    assert check.permutation == (1, 2, 0)
    assert check.factor == pytest.approx(0.1)


def test_green_red_swap_is_too_close_to_call() -> None:
    # green and red have similar statistics: swapping them stays within ORDER_MARGIN
    order = [1, 0, 2]
    assert check_radiometry(_stats(MEAN[order], STD[order]), MEAN, STD, "s").ok


def test_scale_invariant_checkpoints_get_no_scale_finding() -> None:
    check = check_radiometry(_stats(MEAN * 10, STD * 10), MEAN, STD, "s", scale_invariant=True)
    assert check.ok


@pytest.mark.parametrize("text", ["0", "-1", "x", "nan", "inf"])
def test_bad_input_scales_are_refused_in_one_line(text: str) -> None:
    with pytest.raises(ValueError, match=r"^input scale must be a positive number or auto, got") as err:
        parse_input_scale(text)
    assert "\n" not in str(err.value)


def test_input_scale_parses_numbers_and_auto() -> None:
    assert parse_input_scale("0.1") == 0.1 and parse_input_scale(" AUTO ") == "auto" and parse_input_scale(8) == 8.0


# --- end to end: predict_scene and rareseg infer ---------------------------------------------


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 192 px scene with the synthetic data's statistics, and the same scene x10, /10 and NIR first."""
    rng = np.random.default_rng(3)
    folder = tmp_path_factory.mktemp("radiometry")
    base = np.clip(rng.normal(MEAN[:, None, None], STD[:, None, None], (3, 192, 192)), 1, None).round()
    base[:, :10, :10] = 0  # a nodata corner
    return {
        "base": write_geotiff(folder / "base.tif", base.astype(np.uint16)),
        "x10": write_geotiff(folder / "x10.tif", (base * 10).astype(np.uint16)),
        "tenth": write_geotiff(folder / "tenth.tif", (base / 10).astype(np.float32)),
        "nir-first": write_geotiff(folder / "nir-first.tif", base[[2, 0, 1]].astype(np.uint16)),
    }


def _predictor() -> Predictor:
    return Predictor.from_module(make_module(LocalNet(), band_mean=MEAN.tolist(), band_std=STD.tolist()), device="cpu")


def _mask(out: Path) -> np.ndarray:
    with rasterio.open(out / "mask.tif") as src:
        return src.read(1)


def _radiometry_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, RadiometryWarning)]


def test_predict_scene_warns_on_x10_and_tenth_and_records_the_check(scenes: dict[str, Path], tmp_path: Path) -> None:
    options = {"tile": 96, "overlap": 16}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        base = predict_scene(_predictor(), scenes["base"], tmp_path / "base", **options)
    assert _radiometry_warnings(caught) == []
    assert base.summary["radiometry"]["ok"] is True and base.summary["radiometry"]["warning"] is None
    for name, factor in (("x10", 0.1), ("tenth", 10.0)):
        with pytest.warns(RadiometryWarning) as caught:
            result = predict_scene(_predictor(), scenes[name], tmp_path / name, **options)
        messages = _radiometry_warnings(caught)
        assert len(messages) == 1
        assert messages[0].startswith(f"{scenes[name]}: ") and f"--input-scale {factor:g}" in messages[0]
        record = json.loads((tmp_path / name / "summary.json").read_text())["radiometry"]
        assert record == result.summary["radiometry"]
        assert (record["ok"], record["detected_factor"], record["scale_bands"]) == (False, factor, [1, 2, 3])
        assert record["input_scale"] == 1.0
        # the sample's median in band 1 is the scene's, times the scale
        with rasterio.open(scenes[name]) as src:
            pixels = src.read(1)[11:, 11:]
        assert record["observed"]["median"][0] == pytest.approx(np.median(pixels), rel=0.05)


def test_input_scale_and_auto_give_the_mask_of_the_correctly_scaled_scene(
    scenes: dict[str, Path], tmp_path: Path
) -> None:
    options = {"tile": 96, "overlap": 16}
    reference = _mask(predict_scene(_predictor(), scenes["base"], tmp_path / "base", **options).out_dir)
    with pytest.warns(RadiometryWarning):  # without a scale the x10 scene is predicted differently
        unscaled = _mask(predict_scene(_predictor(), scenes["x10"], tmp_path / "raw", **options).out_dir)
    assert (unscaled != reference).mean() > 0.1
    for name, scale in (("x10", 0.1), ("x10", "auto"), ("tenth", 10.0), ("tenth", "auto")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = predict_scene(
                _predictor(), scenes[name], tmp_path / f"{name}-{scale}", input_scale=scale, **options
            )
        np.testing.assert_array_equal(_mask(result.out_dir), reference)
        record = result.summary["radiometry"]
        assert record["input_scale"] == pytest.approx(0.1 if name == "x10" else 10.0)
        assert record["input_scale_requested"] == scale
        if scale == "auto":  # the warning says what auto did
            assert "--input-scale auto multiplied the bands by" in _radiometry_warnings(caught)[0]
        else:  # the check sees the scaled scene: nothing to say
            assert _radiometry_warnings(caught) == [] and record["ok"]


def test_a_permuted_band_scene_is_reported(scenes: dict[str, Path], tmp_path: Path) -> None:
    with pytest.warns(RadiometryWarning, match=r"band order: .*gdal_translate -b 2 -b 3 -b 1"):
        result = predict_scene(_predictor(), scenes["nir-first"], tmp_path / "out", tile=96, overlap=16)
    assert result.summary["radiometry"]["band_order"] == [2, 3, 1]


def test_infer_input_scale_option_and_its_check(
    checkpoint_path: Path, scene_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with rasterio.open(scene_path) as src:
        image = src.read()
        profile = src.profile
    scaled = tmp_path / "x10.tif"
    with rasterio.open(scaled, "w", **profile) as dst:
        dst.write(image * 10)
    common = ["--tile", "128", "--overlap", "16", "--quiet"]
    main(
        [
            "infer",
            "--checkpoint",
            str(checkpoint_path),
            "--input",
            str(scene_path),
            "--out",
            str(tmp_path / "a"),
            *common,
        ]
    )
    for scale in ("0.1", "auto"):
        main(
            ["infer", "--checkpoint", str(checkpoint_path), "--input", str(scaled), "--out", str(tmp_path / scale)]
            + [*common, "--input-scale", scale]
        )
        np.testing.assert_array_equal(_mask(tmp_path / scale), _mask(tmp_path / "a"))
    with pytest.raises(SystemExit):
        main(["infer", "--checkpoint", str(checkpoint_path), "--input", str(scaled), "--out", str(tmp_path / "b")]
             + [*common, "--input-scale", "zero"])  # fmt: skip
    assert "input scale must be a positive number or auto, got 'zero'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_evaluate_records_and_warns_about_each_scene(scenes: dict[str, Path], tmp_path: Path) -> None:
    from rareseg.evaluation.evaluate import ScoredScene, evaluate_scenes

    truth = write_geotiff(tmp_path / "truth.tif", np.zeros((1, 192, 192), dtype=np.uint8), nodata=255)
    scored = [ScoredScene(scenes["base"], truth), ScoredScene(scenes["x10"], truth)]
    with pytest.warns(RadiometryWarning, match="x10.tif: .*--input-scale 0.1"):
        result = evaluate_scenes(_predictor(), scored, tile=96, overlap=16, progress=False)
    record = result.to_dict()["radiometry"]
    assert (record["base"]["ok"], record["x10"]["ok"], record["x10"]["detected_factor"]) == (True, False, 0.1)


def test_prediction_writer_input_scale_reaches_every_scene(
    synth_root: Path, checkpoint_path: Path, tmp_path: Path
) -> None:
    from lightning.pytorch import Trainer

    from rareseg.datamodules import LissIVDataModule
    from rareseg.inference import ScenePredictionWriter
    from rareseg.lightning_modules import RareSegModule

    scene = synth_root / "images" / "scene_03.tif"
    scaled = tmp_path / "new" / "scene_03_x10.tif"
    scaled.parent.mkdir()
    with rasterio.open(scene) as src:
        image, profile = src.read(), src.profile
    with rasterio.open(scaled, "w", **profile) as dst:
        dst.write(image * 10)
    with pytest.raises(ValueError, match="input scale must be a positive number or auto, got -1"):
        ScenePredictionWriter(input_scale=-1)
    masks = {}
    for name, path, scale in (("plain", scene, 1.0), ("auto", scaled, "auto")):
        datamodule = LissIVDataModule(str(synth_root), generate_if_missing=False, predict_inputs=[str(path)])
        module = RareSegModule.load_from_checkpoint(checkpoint_path, map_location="cpu")
        writer = ScenePredictionWriter(output_dir=str(tmp_path / name), tile=128, overlap=16, input_scale=scale)
        trainer = Trainer(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            default_root_dir=tmp_path,
            callbacks=[writer],
        )
        trainer.predict(module, datamodule=datamodule, ckpt_path=checkpoint_path, return_predictions=False)
        folder = tmp_path / name / path.stem
        masks[name] = _mask(folder)
        record = json.loads((folder / "summary.json").read_text())["radiometry"]
        assert record["input_scale"] == pytest.approx(1.0 if name == "plain" else 0.1)
    np.testing.assert_array_equal(masks["auto"], masks["plain"])
