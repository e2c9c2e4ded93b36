"""A catalogue of bad inputs to ``rareseg infer``, ``evaluate`` and ``fit``: one line naming the file or field, the
exit status, and nothing half-written (the web API's cases are in ``tests/web``).

Every case runs the real entry point (:func:`rareseg.cli.main`) in this process. Data errors exit
with status 1 and ``rareseg: error: <file or field>: <problem>``; option errors are argparse's
(status 2, the usage line, then ``error: <option> ...``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio

from rareseg.cli import main
from tests.inference.helpers import write_geotiff

CONFIGS = [str(Path(__file__).parents[1] / "configs" / name) for name in ("wetlands.yaml", "demo-cpu.yaml")]


@dataclass(frozen=True)
class Case:
    """One bad input: ``spoil`` breaks a fresh copy of the inputs and returns the names used in the command."""

    command: str
    spoil: Callable[[dict[str, Path]], dict[str, str]]
    message: str  # a regex the one error line must match in full ({name} fields are filled from spoil's result)
    status: int = 1


def _image(paths: dict[str, Path], name: str, image: np.ndarray, **options: object) -> dict[str, str]:
    path = write_geotiff(paths["tmp"] / name, image, **options)
    return {"input": str(path)}


def _float_scene(value: float, nodata: float | None = None) -> np.ndarray:
    image = np.full((3, 64, 64), value, dtype=np.float32)
    if nodata is not None:
        image[:, :8] = nodata
    return image


def _truncate(path: Path) -> None:
    """Rewrite ``path`` as an uncompressed GeoTIFF tiled in 64 px blocks, and cut it to 60 % of its size."""
    with rasterio.open(path) as src:
        profile, image = src.profile, src.read()
    profile.update(tiled=True, blockxsize=64, blockysize=64, compress=None)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
    with open(path, "r+b") as stream:
        stream.truncate(int(os.path.getsize(path) * 0.6))


def _truncated_scene(paths: dict[str, Path]) -> dict[str, str]:
    target = paths["tmp"] / "truncated.tif"
    shutil.copyfile(paths["scene"], target)
    _truncate(target)
    return {"input": str(target)}


def _rewrite_mask(paths: dict[str, Path], stem: str, values: np.ndarray | None = None, dtype: str | None = None) -> str:
    path = paths["root"] / "masks" / f"{stem}.tif"
    with rasterio.open(path) as src:
        profile, mask = src.profile, src.read()
    if values is not None:
        mask = values.astype(dtype or mask.dtype)
    profile.update(dtype=str(mask.dtype), nodata=None)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(mask)
    return str(path)


def _rewrite_image(paths: dict[str, Path], stem: str, change: Callable[[np.ndarray, dict], np.ndarray]) -> str:
    path = paths["root"] / "images" / f"{stem}.tif"
    with rasterio.open(path) as src:
        profile, image = src.profile, src.read()
    image = change(image, profile)
    profile.update(dtype=str(image.dtype), count=image.shape[0])
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
    return str(path)


def _all_nan(image: np.ndarray, profile: dict) -> np.ndarray:
    return np.full(image.shape, np.nan, dtype=np.float32)


def _no_crs(image: np.ndarray, profile: dict) -> np.ndarray:
    profile.update(crs=None)
    return image


def _float_mask(paths: dict[str, Path]) -> dict[str, str]:
    shape = (1, 256, 256)
    return {"mask": _rewrite_mask(paths, "scene_03", np.full(shape, 0.5) + np.arange(256) % 6, "float32")}


def _negative_mask(paths: dict[str, Path]) -> dict[str, str]:
    values = np.zeros((1, 256, 256))
    values[0, :10] = -1
    return {"mask": _rewrite_mask(paths, "scene_03", values, "int16")}


def _mask_id_9(paths: dict[str, Path]) -> dict[str, str]:
    values = np.zeros((1, 256, 256))
    values[0, 5, 5] = 9
    return {"mask": _rewrite_mask(paths, "scene_03", values, "uint8")}


def _shifted_mask(paths: dict[str, Path]) -> dict[str, str]:
    path = paths["root"] / "masks" / "scene_02.tif"
    with rasterio.open(path) as src:
        profile, mask = src.profile, src.read()
    profile.update(transform=profile["transform"] @ rasterio.Affine.translation(3, 0))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(mask)
    return {"mask": str(path)}


def _truncated_training_image(paths: dict[str, Path]) -> dict[str, str]:
    path = paths["root"] / "images" / "scene_00.tif"
    _truncate(path)
    return {"image": str(path)}


def _truncated_test_image(paths: dict[str, Path]) -> dict[str, str]:
    path = paths["root"] / "images" / "scene_03.tif"
    _truncate(path)
    return {"image": str(path)}


def _broken_yaml(paths: dict[str, Path]) -> dict[str, str]:
    (paths["root"] / "classes.yaml").write_text("classes: [\n  - {id: 0\n")
    return {"file": str(paths["root"] / "classes.yaml")}


def _no_classes_yaml(paths: dict[str, Path]) -> dict[str, str]:
    (paths["root"] / "classes.yaml").unlink()
    return {"file": str(paths["root"] / "classes.yaml")}


def _no_images(paths: dict[str, Path]) -> dict[str, str]:
    for image in (paths["root"] / "images").glob("*.tif"):
        image.unlink()
    return {"folder": str(paths["root"] / "images")}


def _text_file(paths: dict[str, Path], name: str) -> str:
    path = paths["tmp"] / name
    path.write_text("not a raster\n")
    return str(path)


CASES = {
    # infer: the scene
    "infer-missing-scene": Case(
        "infer", lambda p: {"input": str(p["tmp"] / "none.tif")}, r"{input}: not a readable GeoTIFF \(.*\)"
    ),
    "infer-text-scene": Case(
        "infer", lambda p: {"input": _text_file(p, "scene.tif")}, r"{input}: not a readable GeoTIFF \(.*\)"
    ),
    "infer-two-bands": Case(
        "infer",
        lambda p: _image(p, "two.tif", np.ones((2, 32, 32), np.uint16)),
        r"{input}: has 2 bands, the checkpoint expects 3",
    ),
    "infer-all-nan": Case(
        "infer",
        lambda p: _image(p, "nan.tif", _float_scene(np.nan), nodata=None),
        r"{input}: no valid pixel: every pixel is nodata, NaN or infinite",
    ),
    "infer-all-inf": Case(
        "infer",
        lambda p: _image(p, "inf.tif", _float_scene(np.inf), nodata=None),
        r"{input}: no valid pixel: every pixel is nodata, NaN or infinite",
    ),
    "infer-all-minus-inf-and-nodata": Case(
        "infer",
        lambda p: _image(p, "minf.tif", _float_scene(-np.inf, nodata=-9999.0), nodata=-9999.0),
        r"{input}: no valid pixel: every pixel is nodata, NaN or infinite",
    ),
    "infer-truncated-scene": Case(
        "infer",
        _truncated_scene,
        r"{input}: read failed in the window of rows \d+-\d+, columns \d+-\d+ \(truncated or corrupt file\? .*\)",
    ),
    # infer: the checkpoint and options
    "infer-missing-checkpoint": Case(
        "infer", lambda p: {"checkpoint": str(p["tmp"] / "none.ckpt")}, r"{checkpoint}: checkpoint not found"
    ),
    "infer-corrupt-checkpoint": Case(
        "infer",
        lambda p: {"checkpoint": _text_file(p, "model.ckpt")},
        r"{checkpoint}: not a readable checkpoint \(.*\)",
    ),
    "infer-empty-rare-classes": Case(
        "infer",
        lambda p: {"extra": "--rare-classes=,"},
        r"rareseg infer: error: --rare-classes: give at least one rare class name, got ','",
        status=2,
    ),
    "infer-unknown-rare-class": Case(
        "infer",
        lambda p: {"extra": "--rare-classes=marsh"},
        r"unknown rare class 'marsh' \(the checkpoint's rare classes: water, wetland\)",
    ),
    "infer-out-is-a-file": Case(
        "infer",
        lambda p: {"out": _text_file(p, "out")},
        r"{out}: output directory is not writable \(.*\)",
    ),
    "infer-threshold-above-one": Case(
        "infer", lambda p: {"extra": "--threshold=1.5"}, r".*error: threshold must be a probability in .*", 2
    ),
    "infer-tile-too-small": Case("infer", lambda p: {"extra": "--tile=8"}, r".*error: tile must be >= 16.*", 2),
    "infer-topk-zero": Case(
        "infer", lambda p: {"extra": "--topk=0"}, r".*error: topk must be a percentage in \(0, 100\].*", 2
    ),
    "infer-batch-size-zero": Case(
        "infer", lambda p: {"extra": "--batch-size=0"}, r".*error: batch size must be >= 1, got 0", 2
    ),
    # evaluate: the dataset root
    "evaluate-float-mask": Case(
        "evaluate", _float_mask, r"{mask}: mask is float32; masks hold integer class ids \(uint8 0..5, 255 = ignore\)"
    ),
    "evaluate-negative-mask": Case(
        "evaluate",
        _negative_mask,
        r"{mask}: mask is int16 with negative class id -1; masks hold uint8 class ids 0..5 \(255 = ignore\)",
    ),
    "evaluate-class-id-9": Case(
        "evaluate", _mask_id_9, r"{mask}: class id 9 is not in classes.yaml \(ids 0..5, 255 = ignore\)"
    ),
    "evaluate-mask-grid-differs": Case("evaluate", _shifted_mask, r"{mask}: grid differs from its image .*"),
    "evaluate-image-without-crs": Case(
        "evaluate",
        lambda p: {"image": _rewrite_image(p, "scene_01", _no_crs)},
        r"{image}: has no CRS \(georeference the scene first.*\)",
    ),
    "evaluate-truncated-test-image": Case(
        "evaluate",
        _truncated_test_image,
        r"{image}: read failed in the window of rows \d+-\d+, columns \d+-\d+ \(truncated or corrupt file\? .*\)",
    ),
    "evaluate-missing-checkpoint": Case(
        "evaluate", lambda p: {"checkpoint": str(p["tmp"] / "none.ckpt")}, r"{checkpoint}: checkpoint not found"
    ),
    "evaluate-broken-classes-yaml": Case("evaluate", _broken_yaml, r"{file}: not valid YAML \(.*\)"),
    # fit: the dataset root
    "fit-no-classes-yaml": Case("fit", _no_classes_yaml, r"{file}: classes.yaml not found \(.*\)"),
    "fit-no-images": Case("fit", _no_images, r"{folder}: no images \(\*\.tif\) found"),
    "fit-float-mask": Case(
        "fit", _float_mask, r"{mask}: mask is float32; masks hold integer class ids \(uint8 0..5, 255 = ignore\)"
    ),
    "fit-negative-mask": Case(
        "fit",
        _negative_mask,
        r"{mask}: mask is int16 with negative class id -1; masks hold uint8 class ids 0..5 \(255 = ignore\)",
    ),
    "fit-truncated-training-image": Case(
        "fit",
        _truncated_training_image,
        r"{image}: read failed in the window of rows \d+-\d+, columns \d+-\d+ \(truncated or corrupt file\? .*\)",
    ),
    "fit-all-nan-training-images": Case(
        "fit",
        lambda p: {
            "folder": str(p["root"] / "images"),
            **{stem: _rewrite_image(p, stem, _all_nan) for stem in ("scene_00", "scene_01")},
        },
        r"{folder}: the training split has no valid pixels \(labelled, not nodata, finite\)",
    ),
}


def _argv(command: str, paths: dict[str, Path], names: dict[str, str]) -> list[str]:
    checkpoint = names.get("checkpoint", str(paths["checkpoint"]))
    extra = [names["extra"]] if "extra" in names else []
    if command == "infer":
        out = names.get("out", str(paths["out"]))
        scene = names.get("input", str(paths["scene"]))
        return ["infer", "--checkpoint", checkpoint, "--input", scene, "--out", out, "--quiet", *extra]
    if command == "evaluate":
        return ["evaluate", "--checkpoint", checkpoint, "--data-root", str(paths["root"]), "--out", str(paths["out"])]
    return [
        "fit",
        *(arg for config in CONFIGS for arg in ("--config", config)),
        f"--data.init_args.root={paths['root']}",
        "--data.init_args.generate_if_missing=false",
        "--data.init_args.num_workers=0",
        "--trainer.max_steps=1",
    ]


def _leftovers(tmp: Path) -> list[str]:
    """Files written by the command: anything in the output folder, checkpoints, staging and partial files."""
    found = [str(p) for p in (tmp / "out").rglob("*")] if (tmp / "out").is_dir() else []
    found += [str(p) for p in tmp.rglob("*.ckpt") if p.name != "model.ckpt"]
    found += [str(p) for p in tmp.rglob(".rareseg-*")]
    found += [str(p) for p in tmp.rglob("*.part")]
    return found


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gets_one_line_naming_it(
    name: str,
    synth_root: Path,
    checkpoint_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    case = CASES[name]
    monkeypatch.chdir(tmp_path)
    root = Path(shutil.copytree(synth_root, tmp_path / "root"))
    checkpoint = Path(shutil.copyfile(checkpoint_path, tmp_path / "model.ckpt"))
    scene = root / "images" / "scene_00.tif"
    paths = {"tmp": tmp_path, "root": root, "checkpoint": checkpoint, "scene": scene, "out": tmp_path / "out"}
    names = case.spoil(paths)
    with pytest.raises(SystemExit) as exit_info:
        main(_argv(case.command, paths, names))
    code = exit_info.value.code
    if isinstance(code, str):  # sys.exit(message): status 1, the message on stderr
        status, line = 1, code
    else:
        status, line = code, capsys.readouterr().err.strip().splitlines()[-1]
    assert status == case.status
    assert "\n" not in line
    expected = "rareseg: error: " + case.message if case.status == 1 else case.message
    assert re.fullmatch(expected.format(**{key: re.escape(value) for key, value in names.items()}), line), line
    assert _leftovers(tmp_path) == []
