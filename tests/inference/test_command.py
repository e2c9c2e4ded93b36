"""Tests for rareseg.inference.command: the ``rareseg infer`` subcommand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from rareseg.cli import main
from tests.inference.cog import cog_layout_problems
from tests.inference.gdal_c import band_categories
from tests.inference.helpers import write_geotiff


def _infer(checkpoint: Path, scene: Path, out: Path, *extra: str) -> None:
    main(
        [
            "infer",
            "--checkpoint",
            str(checkpoint),
            "--input",
            str(scene),
            "--out",
            str(out),
            "--tile",
            "128",
            "--overlap",
            "16",
            "--quiet",
            *extra,
        ]
    )


def test_infer_writes_every_output_with_calibrated_thresholds(
    checkpoint_path: Path, scene_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _infer(checkpoint_path, scene_path, tmp_path / "out")
    assert f"wrote 8 files to {tmp_path / 'out'} (9 tiles" in capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # the checkpoint holds rareseg_thresholds = {5: 0.3}; water falls back to 0.5
    assert [(r["name"], r["threshold"]) for r in summary["rare_classes"]] == [("water", 0.5), ("wetland", 0.3)]
    assert summary["threshold_source"] == "checkpoint+default"
    assert summary["checkpoint"] == str(checkpoint_path)
    with rasterio.open(tmp_path / "out" / "mask.tif") as mask, rasterio.open(scene_path) as src:
        assert (mask.crs, mask.transform, mask.shape) == (src.crs, src.transform, src.shape)
    # QGIS's legend names, read back through GDAL, are the checkpoint's classes
    class_names = torch.load(checkpoint_path, map_location="cpu", weights_only=False)["hyper_parameters"]["class_names"]
    assert band_categories(tmp_path / "out" / "mask.tif").category_names == list(class_names)
    for name in ("mask.tif", "rare_prob.tif", "saliency_topk.tif"):
        assert cog_layout_problems(tmp_path / "out" / name) == []


def test_infer_rare_class_selection_and_threshold_override(
    checkpoint_path: Path, scene_path: Path, tmp_path: Path
) -> None:
    _infer(
        checkpoint_path, scene_path, tmp_path / "out", "--rare-classes", "wetland", "--threshold", "0.0", "--topk", "5"
    )
    with rasterio.open(tmp_path / "out" / "rare_prob.tif") as probs:
        assert probs.descriptions == ("wetland",)
    with rasterio.open(tmp_path / "out" / "mask.tif") as mask:
        classes = mask.read(1)
    # threshold 0: every valid pixel passes for wetland
    assert set(np.unique(classes)) == {5, 255}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["threshold_source"] == "override" and summary["topk"]["percent"] == 5


def test_infer_reports_bad_input_in_one_line(checkpoint_path: Path, scene_path: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _infer(checkpoint_path, scene_path, tmp_path / "out", "--rare-classes", "water,marsh")
    assert (
        str(exit_info.value)
        == "rareseg: error: unknown rare class 'marsh' (the checkpoint's rare classes: water, wetland)"
    )
    two_bands = write_geotiff(tmp_path / "two.tif", np.ones((2, 32, 32), dtype=np.uint16))
    with pytest.raises(SystemExit) as exit_info:
        _infer(checkpoint_path, two_bands, tmp_path / "out")
    assert str(exit_info.value) == f"rareseg: error: {two_bands}: has 2 bands, the checkpoint expects 3"
    with pytest.raises(SystemExit) as exit_info:
        _infer(tmp_path / "none.ckpt", scene_path, tmp_path / "out")
    assert str(exit_info.value) == f"rareseg: error: {tmp_path / 'none.ckpt'}: checkpoint not found"
    assert not (tmp_path / "out").exists()


def test_infer_refuses_bad_options_with_usage(
    checkpoint_path: Path, scene_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _infer(checkpoint_path, scene_path, tmp_path / "out", "--overlap", "100")
    assert exit_info.value.code == 2
    assert "rareseg infer: error: overlap must be in [0, tile / 2] = [0, 64] pixels, got 100" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _infer(checkpoint_path, scene_path, tmp_path / "out", "--device", "tpu")
    assert "unknown device 'tpu'" in capsys.readouterr().err
