"""The confusers: labelled as what they are, and they defeat a single-band water detector."""

from __future__ import annotations

import numpy as np
import pytest

from rareseg.cli import main
from rareseg.synth import CONFUSERS, check_confusers, generate_scene
from rareseg.synth.confusers import ASPHALT_ROAD, WATER_CANAL, WEEDY_CANAL, grid_layout
from rareseg.synth.landcover import ASPHALT, BUILT_UP, FALLOW, FLOATING_PLANTS, SAND, WATER, WEEDY, generate_landcover


def _best_f1(scores: np.ndarray, positive: np.ndarray) -> float:
    """Best F1 of the rule 'score <= t is positive' over every threshold t (float64, by sorting)."""
    order = np.argsort(scores, kind="stable")
    hits = positive[order].astype(np.float64)
    true_positive = np.cumsum(hits)
    false_positive = np.cumsum(1.0 - hits)
    return float(np.max(2 * true_positive / (true_positive + false_positive + hits.sum())))


def test_confusers_defeat_a_nir_threshold_for_water() -> None:
    """Without confusers a NIR threshold finds water almost perfectly; with them its best F1 drops by > 0.1."""
    f1 = {}
    for name, confusers in (("none", ()), ("all", tuple(CONFUSERS))):
        scores = []
        for seed in range(3):
            scene = generate_scene(384, seed, confusers)
            valid = scene.mask != 255
            scores.append(_best_f1(scene.image[2][valid].astype(np.float64), scene.mask[valid] == WATER))
        f1[name] = np.mean(scores)
    assert f1["none"] > 0.9
    assert f1["all"] < f1["none"] - 0.1


def test_each_confuser_is_labelled_as_what_it_is() -> None:
    rng = np.random.default_rng(3)
    cover = generate_landcover(rng, (512, 512), 0.035, 0.01, tuple(CONFUSERS))
    classes, surface = cover.classes, cover.surface
    assert (surface == ASPHALT).sum() > 500 and set(np.unique(classes[surface == ASPHALT])) == {BUILT_UP}
    assert (surface == WEEDY).sum() > 500 and not np.isin(classes[surface == WEEDY], [WATER, 5]).any()
    assert set(np.unique(classes[surface == FLOATING_PLANTS])) <= {WATER}
    assert set(np.unique(classes[surface == SAND])) <= {FALLOW}
    assert cover.moisture[classes == FALLOW].max() > 0.5  # irrigated fallow
    assert cover.light.min() < 0.5 and cover.light.max() > 1.0  # shade and sunlit slopes


def test_grid_lines_follow_the_blocks() -> None:
    layout = grid_layout(np.random.default_rng(5), (400, 400), tuple(CONFUSERS))
    assert 0.3 < layout.zone.mean() < 0.8
    kinds = set(np.unique(layout.lines[layout.zone]).tolist())
    assert {ASPHALT_ROAD, WATER_CANAL, WEEDY_CANAL} & kinds
    assert (layout.lines[~layout.zone] == -1).all() and (layout.parcel_ids[~layout.zone] == -1).all()
    assert grid_layout(np.random.default_rng(5), (64, 64), ()).zone.sum() == 0


def test_check_confusers() -> None:
    assert check_confusers(["all"]) == frozenset(CONFUSERS)
    assert check_confusers(["none"]) == frozenset() == check_confusers([])
    assert check_confusers(["roads", " shadows"]) == {"roads", "shadows"}
    with pytest.raises(ValueError, match="unknown confusers clouds"):
        check_confusers(["roads", "clouds"])


def test_synth_command_lists_and_checks_confusers(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    text = capsys.readouterr().out
    assert all(name in text for name in CONFUSERS)
    with pytest.raises(SystemExit):
        main(["synth", "--out", str(tmp_path / "r"), "--confusers", "roads,clouds"])
    assert "--confusers: unknown confusers clouds" in capsys.readouterr().err
    main(["synth", "--out", str(tmp_path / "r"), "--scenes", "1", "--size", "96", "--confusers", "none"])
    assert (tmp_path / "r" / "images" / "scene_00.tif").is_file()
