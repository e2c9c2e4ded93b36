"""Tests for rareseg.evaluation.ablation: resume/skip logic, aggregation, the report and the row configs."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from rareseg.cli import main
from rareseg.datamodules import DataError
from rareseg.evaluation import evaluate
from rareseg.evaluation.ablation import (
    ROWS,
    aggregate,
    budget_file,
    config_digest,
    load_result,
    parse_rows,
    prepare_budget_data,
    result_path,
    run_ablation,
    train_row,
    write_ablation_report,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
NAMES = ["cropland", "water", "wetland"]


def _fake_scores(row: int, seed: int) -> dict:
    """Deterministic scores: wetland IoU 0.1 * row + 0.01 * seed, water IoU 0.5."""
    wetland, water = 0.1 * row + 0.01 * seed, 0.5
    per_class = {
        "cropland": {"iou": 0.9, "recall": 0.95, "precision": 0.94, "f1": 0.94},
        "water": {"iou": water, "recall": 0.6, "precision": 0.7, "f1": 0.65},
        "wetland": {"iou": wetland, "recall": 0.2 + seed / 10, "precision": 0.3, "f1": 0.25},
    }
    summary = {
        "rare_recall": (0.6 + 0.2 + seed / 10) / 2,
        "rare_iou": (water + wetland) / 2,
        "miou": 0.5,
        "majority_precision": 0.94,
    }
    return {
        "class_names": NAMES,
        "rare_classes": ["water", "wetland"],
        "summary": summary,
        "per_class": per_class,
        "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        "train_seconds": 10.0 + seed,
    }


class FakeTrainer:
    """Stands in for train_row: records each call and returns :func:`_fake_scores`."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, row, seed, budget, workdir, config_dir) -> dict:
        self.calls.append((row.number, seed))
        return _fake_scores(row.number, seed)


def test_finished_runs_are_skipped_and_partial_files_are_rerun(tmp_path: Path) -> None:
    budget = CONFIGS / "ablations" / "budget-cpu-small.yaml"
    rows = parse_rows("1,5")
    fake = FakeTrainer()
    first = run_ablation(rows, [0, 1], budget, tmp_path, CONFIGS, train=fake, log=lambda _: None)
    assert fake.calls == [(1, 0), (1, 1), (5, 0), (5, 1)]
    assert [(r["row"], r["seed"]) for r in first] == fake.calls
    written = load_result(result_path(tmp_path, ROWS[5], 1))
    assert written["complete"] is True and written["budget"] == "budget-cpu-small.yaml"
    assert written["per_class"]["wetland"]["iou"] == pytest.approx(0.51)
    # a truncated file (killed mid-write by something other than the runner) and an unfinished one
    text = result_path(tmp_path, ROWS[1], 1).read_text()
    result_path(tmp_path, ROWS[1], 1).write_text(text[: len(text) // 2])
    unfinished = json.loads(result_path(tmp_path, ROWS[5], 0).read_text()) | {"complete": False}
    result_path(tmp_path, ROWS[5], 0).write_text(json.dumps(unfinished))
    fake.calls.clear()
    second = run_ablation(rows, [0, 1, 2], budget, tmp_path, CONFIGS, train=fake, log=lambda _: None)
    assert fake.calls == [(1, 1), (1, 2), (5, 0), (5, 2)]
    assert len(second) == 6 and all(load_result(result_path(tmp_path, ROWS[r], s)) for r in (1, 5) for s in (0, 1, 2))
    fake.calls.clear()
    run_ablation(rows, [0, 1, 2], budget, tmp_path, CONFIGS, train=fake, log=lambda _: None)
    assert fake.calls == []
    assert not list(tmp_path.glob("*.part"))


def test_editing_the_budget_reruns_the_runs_made_with_the_old_one(tmp_path: Path) -> None:
    budget = tmp_path / "budget-copy.yaml"
    budget.write_text((CONFIGS / "ablations" / "budget-cpu-small.yaml").read_text())
    fake = FakeTrainer()
    run_ablation(parse_rows("3"), [0], budget, tmp_path, CONFIGS, train=fake, log=lambda _: None)
    old_digest = config_digest(ROWS[3], budget, CONFIGS)
    assert load_result(result_path(tmp_path, ROWS[3], 0), old_digest)["config_digest"] == old_digest
    budget.write_text(budget.read_text().replace("max_epochs: 8", "max_epochs: 9"))
    assert config_digest(ROWS[3], budget, CONFIGS) != old_digest
    assert load_result(result_path(tmp_path, ROWS[3], 0), config_digest(ROWS[3], budget, CONFIGS)) is None
    run_ablation(parse_rows("3"), [0], budget, tmp_path, CONFIGS, train=fake, log=lambda _: None)
    assert fake.calls == [(3, 0), (3, 0)]


def test_a_failing_run_leaves_no_result_and_keeps_earlier_ones(tmp_path: Path) -> None:
    budget = CONFIGS / "ablations" / "budget-cpu-small.yaml"

    def failing(row, seed, budget, workdir, config_dir):
        if seed == 1:
            raise RuntimeError("out of memory")
        return _fake_scores(row.number, seed)

    with pytest.raises(RuntimeError, match="out of memory"):
        run_ablation(parse_rows("2"), [0, 1], budget, tmp_path, CONFIGS, train=failing, log=lambda _: None)
    assert load_result(result_path(tmp_path, ROWS[2], 0)) is not None
    assert not result_path(tmp_path, ROWS[2], 1).exists()


def test_aggregate_is_mean_and_sample_std_over_seeds() -> None:
    results = [{"row": 3, "seed": s} | _fake_scores(3, s) for s in (0, 1, 2)] + [
        {"row": 4, "seed": 0} | _fake_scores(4, 0)
    ]
    table = aggregate(results)
    wetland = [0.3, 0.31, 0.32]
    assert table[3]["iou/wetland"] == pytest.approx((np.mean(wetland), np.std(wetland, ddof=1), 3))
    assert table[3]["train_seconds"] == pytest.approx((11.0, 1.0, 3))
    assert table[3]["recall/wetland"][0] == pytest.approx(0.3)
    mean, std, seeds = table[4]["rare_iou"]
    assert mean == pytest.approx(0.45) and math.isnan(std) and seeds == 1


def test_report_has_one_line_per_row_the_command_and_a_chart(tmp_path: Path) -> None:
    results = [
        {"row": r, "seed": s, "budget": "budget-cpu-small.yaml"} | _fake_scores(r, s) for r in (1, 11) for s in (0, 1)
    ]
    report, chart = tmp_path / "ABLATION.md", tmp_path / "ablation" / "ablation.png"
    markdown = write_ablation_report(results, report, chart, "rareseg bench ablation --seeds 2 --rows 1,11")
    assert report.read_text() == markdown
    assert "`rareseg bench ablation --seeds 2 --rows 1,11`" in markdown
    lines = [line for line in markdown.splitlines() if line.startswith("| 1 |") or line.startswith("| 11 |")]
    assert len(lines) == 2
    # row 11 wetland IoU: mean of 1.10 and 1.11, sample std 0.00707
    assert "| 11 | full method (+ babysitting) | 2 | 0.500 ± 0.000 | 1.105 ± 0.007 |" in lines[1]
    assert "![rare-class IoU per ablation row](ablation/ablation.png)" in markdown
    assert chart.read_bytes()[:4] == b"\x89PNG"


def test_rows_and_budgets_parse_with_clear_errors(tmp_path: Path) -> None:
    assert [row.number for row in parse_rows(None)] == list(range(1, 12))
    assert [row.config for row in parse_rows("2, 7")] == ["02-weighted-ce.yaml", "07-arbt-sam.yaml"]
    with pytest.raises(ValueError, match="unknown ablation rows"):
        parse_rows("0,3")
    with pytest.raises(ValueError, match="comma-separated"):
        parse_rows("ce")
    assert budget_file("cpu-small", CONFIGS) == CONFIGS / "ablations" / "budget-cpu-small.yaml"
    with pytest.raises(DataError, match="budget-tpu.yaml: ablation budget file not found"):
        budget_file("tpu", CONFIGS)
    with pytest.raises(SystemExit):
        main(["bench", "ablation", "--rows", "12", "--config-dir", str(CONFIGS), "--out", str(tmp_path)])


def test_prepare_budget_data_generates_the_budget_root_once(tmp_path: Path) -> None:
    root = tmp_path / "budget-root"
    budget = tmp_path / "budget.yaml"
    budget.write_text(
        yaml.safe_dump(
            {"data": {"init_args": {"root": str(root), "synth_scenes": 3, "synth_size": 96, "synth_seed": 1}}}
        )
    )
    prepare_budget_data(budget)
    assert sorted(p.name for p in (root / "images").iterdir()) == ["scene_00.tif", "scene_01.tif", "scene_02.tif"]
    assert (root / "stats.json").is_file()
    stamp = (root / "stats.json").stat().st_mtime_ns
    prepare_budget_data(budget)
    assert (root / "stats.json").stat().st_mtime_ns == stamp


def _callbacks(row: int) -> list[str]:
    config = yaml.safe_load((CONFIGS / "ablations" / ROWS[row].config).read_text())
    return [cb["class_path"].rsplit(".", 1)[1] for cb in config["trainer"]["callbacks"]]


def test_each_row_config_changes_what_its_row_says() -> None:
    configs = {n: yaml.safe_load((CONFIGS / "ablations" / row.config).read_text()) for n, row in ROWS.items()}
    optimizers = {n: c["model"]["init_args"]["optimizer"] for n, c in configs.items()}
    samplers = {n: c["data"]["init_args"]["sampler"] for n, c in configs.items()}
    assert optimizers == {**{n: "adamw" for n in range(1, 7)}, 7: "sam", **{n: "casm" for n in range(8, 12)}}
    assert samplers == {**{n: "random" for n in range(1, 9)}, 9: "rare", 10: "saliency", 11: "saliency"}
    losses = [configs[n]["model"]["init_args"]["loss"]["class_path"].rsplit(".", 1)[1] for n in range(1, 7)]
    assert losses == ["CrossEntropyLoss", "WeightedCrossEntropyLoss", "DiceLoss", "TverskyLoss", "ARBTLoss", "ARBTLoss"]
    assert [configs[n]["model"]["init_args"]["loss"]["init_args"]["alpha_on"] for n in (5, 6)] == ["fp", "fn"]
    assert all("loss" not in configs[n]["model"]["init_args"] for n in range(7, 12))  # the recipe's ARBT
    for n in range(1, 10):
        assert "Babysitter" not in _callbacks(n) and "SaliencyRefresh" not in _callbacks(n)
    assert "SaliencyRefresh" in _callbacks(10) and "Babysitter" not in _callbacks(10)
    assert {"SaliencyRefresh", "Babysitter"} <= set(_callbacks(11))


def test_train_row_runs_the_full_method_on_a_tiny_budget_and_evaluate_agrees(synth_root: Path, tmp_path: Path) -> None:
    budget = tmp_path / "budget-tiny.yaml"
    budget.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "max_epochs": 1,
                    "accelerator": "cpu",
                    "devices": 1,
                    "precision": "32-true",
                    "logger": False,
                    "enable_progress_bar": False,
                },
                "model": {"init_args": {"net": {"init_args": {"decoder_channels": 32}}}},
                "data": {
                    "init_args": {
                        "root": str(synth_root),
                        "patch_size": 64,
                        "batch_size": 2,
                        "length": 4,
                        "num_workers": 0,
                    }
                },
            }
        )
    )
    result = train_row(ROWS[11], 0, budget, tmp_path / "run", CONFIGS)
    matrix = np.array(result["confusion_matrix"])
    assert result["class_names"][4:] == ["water", "wetland"] and result["rare_classes"] == ["water", "wetland"]
    recall = np.diag(matrix) / matrix.sum(axis=1)
    assert result["per_class"]["water"]["recall"] == pytest.approx(recall[4], nan_ok=True)
    assert result["summary"]["rare_recall"] == pytest.approx(np.nanmean(recall[4:]), nan_ok=True)
    assert result["train_seconds"] > 0
    # rareseg evaluate's argmax on the test pass's grid (64 px tiles, no overlap) reproduces it pixel for pixel
    scores = evaluate(
        tmp_path / "run" / "checkpoints" / "best.ckpt",
        synth_root,
        "test",
        tile=64,
        overlap=0,
        device="cpu",
        progress=False,
    )
    assert scores["argmax"]["confusion_matrix"] == result["confusion_matrix"]
