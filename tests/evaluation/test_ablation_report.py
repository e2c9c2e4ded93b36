"""The ablation report: tables from per-scene confusion matrices, paired verdicts, convergence and figures."""

from pathlib import Path

import numpy as np
import pytest

from rareseg.core.scores import summary_scores
from rareseg.evaluation.ablation import SCORING_VERSION, AblationRow
from rareseg.evaluation.ablation_report import best_peer, collect_runs, convergence, write_ablation_report
from rareseg.evaluation.paired import score_functions

NAMES = ["cropland", "water", "wetland"]
ROWS = {
    1: AblationRow(1, "CE", "01-ce.yaml", peer=True),
    2: AblationRow(2, "other peer", "02-x.yaml", peer=True, compare=1),
    5: AblationRow(5, "new part", "05-x.yaml", compare=1),
}


def _matrix(wetland_hits: int, noise: int = 0) -> list[list[int]]:
    return [[1000, 10, 20 + noise], [5, 80, 5], [10, 5, wetland_hits]]


def _result(row: int, seed: int, wetland_hits: int, noise: int = 0, curve=None) -> dict:
    per_scene = {"a": _matrix(wetland_hits, noise), "b": _matrix(wetland_hits, noise)}
    return {
        "row": row,
        "seed": seed,
        "class_names": NAMES,
        "rare_classes": ["water", "wetland"],
        "train_seconds": 60.0,
        "curve": curve or [{"step": 10.0, "val/rare_iou": 0.5}, {"step": 100.0, "val/rare_iou": 0.5}],
        "scoring": {"version": SCORING_VERSION, "deployed": per_scene, "argmax": per_scene, "calibrated": per_scene},
    }


def test_results_scored_before_a_rule_existed_report_the_rules_all_have() -> None:
    old = _result(1, 0, 20)
    del old["scoring"]["calibrated"]
    runs = collect_runs([old, _result(1, 1, 30)], ROWS)
    assert set(runs[1].matrices) == {"deployed", "argmax"}


def test_collect_runs_stacks_seeds_and_scenes_and_refuses_mixed_scenes() -> None:
    runs = collect_runs([_result(1, 1, 30), _result(1, 0, 20)], ROWS)
    assert runs[1].seeds == [0, 1] and runs[1].matrices["deployed"].shape == (2, 2, 3, 3)
    assert runs[1].matrices["deployed"][1, 0, 2, 2] == 30
    other = _result(2, 0, 20)
    other["scoring"]["deployed"] = {"c": _matrix(1)}
    with pytest.raises(ValueError, match="row 2 seed 0: scored on other scenes"):
        collect_runs([_result(1, 0, 20), other], ROWS)


def test_convergence_is_the_best_so_far_gain_over_the_last_fifth() -> None:
    curve = [
        {"step": s, "val/rare_iou": v} for s, v in ((100, 0.2), (400, 0.5), (800, 0.55), (900, 0.52), (1000, 0.58))
    ]
    assert convergence({"curve": curve}) == pytest.approx(0.58 - 0.55)  # best at step <= 800 was 0.55
    assert np.isnan(convergence({"curve": []}))


def test_best_peer_has_the_highest_mean_rare_iou() -> None:
    runs = collect_runs([_result(1, 0, 20), _result(2, 0, 40), _result(5, 0, 90)], ROWS)
    scores = score_functions([1, 2], 0, NAMES)
    assert best_peer(runs, scores, "deployed") == 2  # row 5 is better but not a peer


def test_report_tables_verdicts_and_figures(tmp_path: Path) -> None:
    results = [_result(1, s, 20 + s) for s in range(3)] + [_result(5, s, 60 + s, noise=s) for s in range(3)]
    results += [_result(2, s, 10) for s in range(3)]
    report, figures = tmp_path / "ABLATION.md", tmp_path / "figures"
    markdown = write_ablation_report(
        results,
        ROWS,
        report,
        figures,
        "rareseg bench ablation --rows 1,2,5",
        context=["machine: test"],
        replicates=500,
        analysis="## What it means\n\nRow 5 wins.",
    )
    assert "- machine: test" in markdown
    assert markdown.index("## What it means") < markdown.index("## Convergence")
    assert report.read_text() == markdown
    assert "`rareseg bench ablation --rows 1,2,5`" in markdown
    # row 1's wetland IoU pooled over both scenes, per seed, then averaged: hand-computed with summary_scores
    wetland = [summary_scores(np.array(_matrix(20 + s)) * 2, [2])["rare_iou"] for s in range(3)]
    row1 = next(line for line in markdown.splitlines() if line.startswith("| 1 | CE | yes | 3 |"))
    assert f"{np.mean(wetland):.3f} [" in row1
    verdict = next(line for line in markdown.splitlines() if line.startswith("| new part (5 vs 1)"))
    assert verdict.endswith("| helps |")  # more wetland hits on every seed and scene
    assert "best peer, row 1 (CE)" in markdown  # row 2 is the weaker peer
    assert "| 2 | other peer | 3 |" in markdown and "hurts" in markdown
    assert "## Argmax (beside the headline)" in markdown and "## Convergence" in markdown
    # the same matrices under both rules: every calibrated-vs-deployed difference is exactly 0
    rule_rows = markdown.split("## The calibrated rule against the deployed one")[1].split("\n## ")[0]
    assert "| 5 | new part | 3 | +0.000 [+0.000, +0.000] |" in rule_rows
    for name in ("ablation.png", "learning_curves.png"):
        assert (figures / name).read_bytes()[:4] == b"\x89PNG"
    assert "![validation learning curves](figures/learning_curves.png)" in markdown
