"""Tests for rareseg.evaluation.ablation: rows, resume/skip logic, parallel runs, scoring and the row configs."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from rareseg.cli import main
from rareseg.datamodules import DataError
from rareseg.evaluation.ablation import (
    SCORED_RULES,
    SCORING_VERSION,
    AblationRow,
    budget_file,
    cli_args,
    config_digest,
    discover_rows,
    load_result,
    merged_config,
    parse_rows,
    planned_runs,
    prepare_budget_data,
    read_row,
    result_path,
    run_ablation,
    score_checkpoint,
    train_row,
)
from rareseg.inference import load_predictor

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ROWS = discover_rows(CONFIGS)
NAMES = ["cropland", "water", "wetland"]
SCENES = ["scene_a", "scene_b"]


def fake_train(row, seed, budget, workdir, config_dir, data_root=None) -> dict:
    """Stands in for train_row (module level, so worker processes can import it)."""
    if row.number == 3 and seed == 1:
        raise RuntimeError("out of memory")
    return {
        "class_names": NAMES,
        "rare_classes": ["water", "wetland"],
        "train_seconds": 10.0 + seed,
        "steps": 4,
        "curve": [{"step": 1.0, "val/rare_iou": 0.1 * row.number}, {"step": 4.0, "val/rare_iou": 0.2 * row.number}],
        "babysitter": None,
        "checkpoint": f"{workdir}/best.ckpt",
        "test_scenes": [[f"{stem}.tif", f"{stem}-mask.tif"] for stem in SCENES],
        "pid": os.getpid(),
    }


def fake_score(checkpoint, scenes, workdir) -> dict:
    """Confusion matrices that depend on the run folder's name (row and seed)."""
    number = int(Path(workdir).name[3:5])
    seed = int(Path(workdir).name.split("seed")[1])
    matrix = [[100, 2, 1], [3, 20 + number, 1], [2, 1, 5 + seed]]
    return {"version": SCORING_VERSION, **{rule: {s: matrix for s in SCENES} for rule in SCORED_RULES}}


def _run(rows, out, seeds=2, jobs=1, budget=None, calls=None):
    trained = []

    def train(*args):
        trained.append((args[0].number, args[1]))
        return fake_train(*args)

    budget = budget or CONFIGS / "ablations" / "budget-cpu-small.yaml"
    results = run_ablation(
        rows, budget, out, CONFIGS, seeds=seeds, jobs=jobs, train=train if jobs == 1 else fake_train,
        score=fake_score, log=lambda _: None,
    )  # fmt: skip
    return results, trained


def test_finished_runs_are_skipped_and_partial_files_are_rerun(tmp_path: Path) -> None:
    rows = parse_rows("1,5", ROWS)
    first, trained = _run(rows, tmp_path)
    assert trained == [(1, 0), (5, 0), (1, 1), (5, 1)]  # seed-major: every row's seed 0 first
    assert [(r["row"], r["seed"]) for r in first] == [(1, 0), (1, 1), (5, 0), (5, 1)]
    written = load_result(result_path(tmp_path, ROWS[5], 1))
    assert written["complete"] is True and written["budget"] == "budget-cpu-small.yaml"
    assert written["scoring"]["deployed"]["scene_a"][2][2] == 6
    text = result_path(tmp_path, ROWS[1], 1).read_text()
    result_path(tmp_path, ROWS[1], 1).write_text(text[: len(text) // 2])  # killed mid-write by something else
    unfinished = json.loads(result_path(tmp_path, ROWS[5], 0).read_text()) | {"complete": False}
    result_path(tmp_path, ROWS[5], 0).write_text(json.dumps(unfinished))
    second, trained = _run(rows, tmp_path, seeds=3)
    assert trained == [(5, 0), (1, 1), (1, 2), (5, 2)]
    assert len(second) == 6
    assert _run(rows, tmp_path, seeds=3)[1] == []
    assert not list(tmp_path.glob(".*part"))


def test_an_old_scoring_is_redone_without_retraining(tmp_path: Path) -> None:
    rows = parse_rows("2", ROWS)
    _run(rows, tmp_path, seeds=1)
    path = result_path(tmp_path, ROWS[2], 0)
    old = json.loads(path.read_text())
    old["scoring"]["version"] = SCORING_VERSION - 1
    old["scoring"]["deployed"]["scene_a"] = [[0]]
    path.write_text(json.dumps(old))
    results, trained = _run(rows, tmp_path, seeds=1)
    assert trained == []
    assert (
        results[0]["scoring"]["version"] == SCORING_VERSION
        and results[0]["scoring"]["deployed"]["scene_a"][0][0] == 100
    )
    assert results[0]["train_seconds"] == old["train_seconds"]


def test_two_jobs_run_in_two_fresh_processes_with_the_same_results(tmp_path: Path) -> None:
    rows = parse_rows("1", ROWS)
    serial, _ = _run(rows, tmp_path / "serial")
    parallel, _ = _run(rows, tmp_path / "parallel", jobs=2)
    strip = lambda results: [{k: v for k, v in r.items() if k not in ("pid", "checkpoint")} for r in results]  # noqa: E731 - a one-line helper reads best next to its only use
    assert strip(serial) == strip(parallel)
    pids = {r["pid"] for r in parallel}
    assert len(pids) == 2 and os.getpid() not in pids  # max_tasks_per_child=1: one process per run


def sleepy_train(row, seed, budget, workdir, config_dir, data_root=None) -> dict:
    """Stands in for a long train_row: records its process id next to the run folder, then sleeps."""
    import time

    Path(workdir).parent.mkdir(parents=True, exist_ok=True)
    (Path(workdir).parent / f"pid-{row.number}-{seed}").write_text(str(os.getpid()))
    time.sleep(600)
    return fake_train(row, seed, budget, workdir, config_dir, data_root)


@pytest.mark.slow
def test_sigterm_stops_the_worker_processes_of_parallel_runs(tmp_path: Path) -> None:
    import signal
    import threading
    import time

    from rareseg.core.interrupt import Terminated, handle_interrupts

    sent = []

    def terminate_when_both_run() -> None:
        deadline = time.monotonic() + 300
        while len(list((tmp_path / "runs").glob("pid-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_when_both_run, daemon=True).start()
    with pytest.raises(Terminated), handle_interrupts():
        run_ablation(
            parse_rows("1", ROWS), CONFIGS / "ablations" / "budget-cpu-small.yaml", tmp_path, CONFIGS, seeds=2,
            jobs=2, train=sleepy_train, score=fake_score, log=lambda _: None,
        )  # fmt: skip
    assert time.monotonic() - sent[0] < 120  # did not wait for the 600 s runs
    for path in (tmp_path / "runs").glob("pid-*"):
        pid = int(path.read_text())
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"worker {pid} still runs")
    assert not list(tmp_path.glob("*.json"))


def test_a_failing_run_leaves_no_result_and_the_others_go_on(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="1 ablation run.s. failed:\nrow 3 seed 1: RuntimeError: out of memory"):
        _run(parse_rows("3,4", ROWS), tmp_path)
    assert load_result(result_path(tmp_path, ROWS[3], 0)) is not None
    assert not result_path(tmp_path, ROWS[3], 1).exists()
    assert all(load_result(result_path(tmp_path, ROWS[4], seed)) for seed in (0, 1))  # ran after the failure


def test_digest_follows_the_merged_config(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    (configs / "ablations").mkdir(parents=True)
    for path in [CONFIGS / "wetlands.yaml", *(CONFIGS / "ablations").glob("*.yaml")]:
        target = configs / path.relative_to(CONFIGS)
        target.write_text(path.read_text())
    budget = configs / "ablations" / "budget-cpu-small.yaml"
    digests = {n: config_digest(ROWS[n], budget, configs) for n in (1, 5)}
    # row 5 pins the seed's ARBT, so a new default loss in the recipe does not rerun it; row 1 pins CE
    recipe = configs / "wetlands.yaml"
    recipe.write_text(recipe.read_text().replace("lam: 0.1 ", "lam: 0.3 "))
    assert {n: config_digest(ROWS[n], budget, configs) for n in (1, 5)} == digests
    # the budget reaches every row; so does another data root
    budget.write_text(budget.read_text().replace("max_epochs: 8", "max_epochs: 9"))
    assert config_digest(ROWS[1], budget, configs) != digests[1]
    assert config_digest(ROWS[1], budget, configs, "other-root") != config_digest(ROWS[1], budget, configs)


def test_merged_config_replaces_lists_and_merges_mappings(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(
        "trainer: {callbacks: [x, y], max_epochs: 2}\nmodel: {lr: 1, loss: {class_path: A, init_args: {k: 1}}}\n"
    )
    b.write_text("trainer: {callbacks: [z]}\nmodel: {loss: {class_path: B}}\n")
    merged = {"trainer": {"callbacks": ["z"], "max_epochs": 2}, "model": {"lr": 1, "loss": {"class_path": "B"}}}
    assert merged_config([a, b]) == merged
    b.write_text("model: {loss: {init_args: {j: 2}}}\n")  # same class: init_args merge
    assert merged_config([a, b])["model"]["loss"] == {"class_path": "A", "init_args": {"k": 1, "j": 2}}


def test_planned_runs_give_each_row_its_seeds() -> None:
    rows = [ROWS[1], ROWS[3]]  # row 1 asks for 5 seeds, row 3 for the default 3
    plan = [(row.number, seed) for row, seed in planned_runs(rows, None)]
    assert plan == [(1, 0), (3, 0), (1, 1), (3, 1), (1, 2), (3, 2), (1, 3), (1, 4)]
    assert [(r.number, s) for r, s in planned_runs(rows, 1)] == [(1, 0), (3, 0)]


def test_rows_are_read_from_the_row_files(tmp_path: Path) -> None:
    assert set(range(1, 26)) | {27, 28, 29} <= set(ROWS)
    assert ROWS[1] == AblationRow(1, "CE", "01-ce.yaml", peer=True, seeds=5, compare=None)
    assert ROWS[9].compare == 8 and not ROWS[9].peer
    assert {n for n, r in ROWS.items() if r.peer} == {1, 2, 3, 4, 12, 13}
    assert [row.config for row in parse_rows("2, 7", ROWS)] == ["02-weighted-ce.yaml", "07-arbt-sam.yaml"]
    with pytest.raises(ValueError, match="unknown ablation rows"):
        parse_rows("0,3", ROWS)
    with pytest.raises(ValueError, match="comma-separated"):
        parse_rows("ce", ROWS)
    bad = tmp_path / "07-x.yaml"
    bad.write_text("# label: x\n# seeds: five\ntrainer: {}\n")
    with pytest.raises(DataError, match="07-x.yaml: '# seeds:'"):
        read_row(bad)
    assert budget_file("cpu-small", CONFIGS) == CONFIGS / "ablations" / "budget-cpu-small.yaml"
    with pytest.raises(DataError, match="budget-tpu.yaml: ablation budget file not found"):
        budget_file("tpu", CONFIGS)
    with pytest.raises(SystemExit):
        main(["bench", "ablation", "--rows", "99", "--config-dir", str(CONFIGS), "--out", str(tmp_path)])


def test_data_root_override_reaches_the_fit_arguments() -> None:
    budget = CONFIGS / "ablations" / "budget-cpu-small.yaml"
    args = cli_args(ROWS[1], 3, budget, Path("w"), CONFIGS, "my-root")
    text = " ".join(args)
    assert "--data.init_args.root my-root" in text and "--data.init_args.test_scenes null" in text
    assert "--seed_everything 3" in text and "--data.init_args.seed 3" in text
    assert "my-root" not in " ".join(cli_args(ROWS[1], 3, budget, Path("w"), CONFIGS, None))


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


def _config(row: int) -> dict:
    return yaml.safe_load((CONFIGS / "ablations" / ROWS[row].config).read_text())


def _callbacks(row: int) -> list[str]:
    return [cb["class_path"].rsplit(".", 1)[1] for cb in _config(row)["trainer"]["callbacks"]]


def _without(mapping: dict, *keys: str) -> dict:
    """``mapping`` less ``keys``: what two rows must share apart from the one thing they change."""
    return {key: value for key, value in mapping.items() if key not in keys}


def _babysitter(row: int) -> dict:
    callbacks = _config(row)["trainer"]["callbacks"]
    [sitter] = [cb["init_args"] for cb in callbacks if cb["class_path"].endswith("Babysitter")]
    return sitter


def test_each_row_config_changes_what_its_row_says() -> None:
    model = {n: _config(n)["model"]["init_args"] for n in ROWS}
    data = {n: _config(n)["data"]["init_args"] for n in ROWS}
    optimizers = {n: m["optimizer"] for n, m in model.items()}
    sharpness = {7: "sam", 20: "sam", **{n: "casm" for n in (8, 9, 10, 11, 19, 21, 22, 23, 32)}}
    assert optimizers == {n: sharpness.get(n, "adamw") for n in ROWS}
    samplers = {n: d["sampler"] for n, d in data.items()}
    special = {9: "rare", 10: "saliency", 11: "saliency", 13: "rare", 23: "saliency", 24: "rare", 25: "rare"}
    special |= {27: "rare", 28: "rare", 29: "rare", 30: "rare", 31: "rare", 32: "saliency", 33: "rare"}
    assert samplers == {n: special.get(n, "random") for n in ROWS}
    assert data[13]["rare_temperature"] == 0.01 and data[9]["rare_temperature"] == 0.1
    losses = {n: m["loss"]["class_path"].rsplit(".", 1)[1] for n, m in model.items()}
    assert [losses[n] for n in (1, 2, 3, 4, 12, 13, 14)] == [
        "CrossEntropyLoss", "WeightedCrossEntropyLoss", "DiceLoss", "TverskyLoss", "LovaszLoss", "CrossEntropyLoss",
        "CrossEntropyLoss",
    ]  # fmt: skip
    assert all(losses[n] == "ARBTLoss" for n in (*range(5, 12), *range(15, 24), 25, 29, 32, 33))
    assert [model[n]["loss"]["init_args"]["alpha_on"] for n in range(5, 12)] == ["fp", "fn", *["fp"] * 5]
    # each variant row sets the one option it is named after
    assert model[15]["loss"]["init_args"]["alpha_max"] == 0.7 and model[16]["loss"]["init_args"]["alpha_on"] == "both"
    assert model[17]["loss"]["init_args"]["focal_on"] == "rare" and model[18]["loss"]["init_args"]["ce_weight"] == 1
    assert model[19]["radius_mode"] == "more_rare" and model[20]["sam_on"] == "rare"
    assert model[21]["rho_warmup_steps"] == 240 and model[22]["rho0"] == 0.4
    assert [data[n]["rare_fraction"] for n in (27, 28, 29)] == [0.5] * 3 and "rare_fraction" not in data[13]
    assert {n for n in ROWS if "normalisation" in data[n]} == {26} and data[26]["normalisation"] == "scene"
    assert model[2]["loss"]["init_args"]["power"] == 0.5  # inverse square root
    # row 30 = row 2's loss with row 13's sampler
    assert model[30]["loss"] == model[2]["loss"] and data[30]["rare_temperature"] == data[13]["rare_temperature"]
    # row 31 = row 13 with the Lovasz term added to its cross-entropy
    assert losses[31] == "CrossEntropyLovaszLoss" and model[31]["loss"]["init_args"] == {"lovasz_weight": 1.0}
    assert data[31] == data[13] and _without(model[31], "loss") == _without(model[13], "loss")
    peers = [n for n in ROWS if ROWS[n].peer]
    assert all(model[n]["net"]["init_args"]["saliency"] is False and model[n]["aux_weight"] == 0 for n in peers)
    assert all(model[n]["net"]["init_args"]["saliency"] is True for n in (*range(5, 12), *range(14, 26), 28, 29, 32))
    for n in (*range(1, 10), *range(12, 23), 24, 25, 27, 28, 29):
        assert "Babysitter" not in _callbacks(n) and "SaliencyRefresh" not in _callbacks(n)
    assert "SaliencyRefresh" in _callbacks(10) and "Babysitter" not in _callbacks(10)
    assert {"SaliencyRefresh", "Babysitter"} <= set(_callbacks(11))
    # row 33 = row 13 with row 16's loss
    assert model[33]["loss"] == model[16]["loss"] and data[33] == data[13]
    assert _without(model[33], "loss") == _without(model[13], "loss")
    # row 32 = row 11 with the Babysitter on the checkpoint's metric, patience 3 validations
    assert (model[32], data[32]) == (model[11], data[11])
    sitters = {n: _babysitter(n) for n in (11, 32)}
    assert _without(sitters[32], "monitor", "patience") == _without(sitters[11], "monitor", "patience")
    assert [(s["monitor"], s["patience"]) for s in sitters.values()] == [("val/rare_recall", 1), ("val/rare_iou", 3)]
    for n in ROWS:  # a row's callbacks list replaces the recipe's: the scores and thresholds must be in each
        assert {"ModelCheckpoint", "RareClassMetrics", "ThresholdCalibrator"} <= set(_callbacks(n)), n
    for number, row in ROWS.items():  # each row names a row it changes one thing from, which exists
        assert row.compare is None or row.compare in ROWS, number


@pytest.mark.slow
def test_train_row_and_scoring_on_a_tiny_budget(synth_root: Path, tmp_path: Path) -> None:
    budget = tmp_path / "budget-tiny.yaml"
    budget.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "max_epochs": 2,
                    "accelerator": "cpu",
                    "devices": 1,
                    "precision": "32-true",
                    "logger": False,
                    "enable_progress_bar": False,
                },
                "model": {"init_args": {"net": {"init_args": {"decoder_channels": 32}}}},
                "data": {
                    "init_args": {"root": str(synth_root), "patch_size": 64, "batch_size": 2, "length": 4},
                },
            }
        )
    )
    result = train_row(ROWS[11], 0, budget, tmp_path / "run", CONFIGS)
    assert result["class_names"][4:] == ["water", "wetland"] and result["rare_classes"] == ["water", "wetland"]
    assert result["steps"] == 4 and result["train_seconds"] > 0
    assert [p["step"] for p in result["curve"]] == [2.0, 4.0]
    assert {"val/rare_iou", "val/recall/wetland", "val/majority_precision"} <= set(result["curve"][0])
    assert result["babysitter"] is not None
    assert Path(result["checkpoint"]).is_file() and len(result["test_scenes"]) == 1
    scoring = score_checkpoint(result["checkpoint"], result["test_scenes"], tmp_path / "scoring")
    stem = Path(result["test_scenes"][0][0]).stem
    deployed, argmax = np.array(scoring["deployed"][stem]), np.array(scoring["argmax"][stem])
    calibrated = np.array(scoring["calibrated"][stem])
    assert calibrated.sum() == argmax.sum()  # the same scored pixels under the two-way rule
    # a 256 px scene is one tile: the argmax is the network's on the whole scene, pixel for pixel
    with rasterio.open(result["test_scenes"][0][0]) as image, rasterio.open(result["test_scenes"][0][1]) as mask:
        pixels, truth = image.read(), mask.read(1)
    probs, _ = load_predictor(result["checkpoint"], device="cpu").predict(pixels[None].astype(np.float32))
    scored = (truth != 255) & ~(pixels == image.nodata).all(axis=0)
    expected = np.zeros((6, 6), np.int64)
    np.add.at(expected, (truth[scored], probs[0].argmax(axis=0)[scored]), 1)
    assert argmax.tolist() == expected.tolist()
    # thresholds only move pixels into rare classes: same truth counts, other classes' columns can only shrink
    assert (deployed.sum(axis=1) == argmax.sum(axis=1)).all()
    assert (deployed[:, :4] <= argmax[:, :4]).all() and (deployed[:, 4:].sum(1) >= argmax[:, 4:].sum(1)).all()
    assert not (tmp_path / "scoring" / "scoring").exists()


@pytest.mark.slow
def test_bench_ablation_runs_a_row_on_another_root_with_other_classes(three_class_root: Path, tmp_path: Path) -> None:
    root = three_class_root
    budget = tmp_path / "budget-tiny.yaml"
    budget.write_text(
        yaml.safe_dump(
            {
                "trainer": {"max_epochs": 1, "accelerator": "cpu", "precision": "32-true", "logger": False},
                "model": {"init_args": {"net": {"init_args": {"decoder_channels": 16}}}},
                "data": {"init_args": {"root": "not-used", "patch_size": 64, "batch_size": 2, "length": 4}},
            }
        )
    )
    out = tmp_path / "bench"
    args = ["bench", "ablation", "--budget", str(budget), "--data-root", str(root), "--rows", "11", "--seeds", "1"]
    main([*args, "--out", str(out), "--config-dir", str(CONFIGS)])
    result = load_result(result_path(out, ROWS[11], 0))
    assert result["class_names"] == ["land", "river", "marsh"] and result["rare_classes"] == ["river", "marsh"]
    [matrix] = result["scoring"]["deployed"].values()  # the derived split's one test scene
    assert np.array(matrix).shape == (3, 3) and np.array(matrix).sum() > 0
    report = (out / "ABLATION.md").read_text()
    assert "river IoU" in report and "marsh IoU" in report and "majority class (precision guard): land" in report


def test_report_only_names_results_made_from_another_configuration(tmp_path: Path, capsys) -> None:
    _run(parse_rows("1,2", ROWS), tmp_path, seeds=1)
    args = ["bench", "ablation", "--budget", "cpu-small", "--rows", "1,2", "--seeds", "1", "--report-only"]
    args += ["--out", str(tmp_path), "--config-dir", str(CONFIGS), "--report", str(tmp_path / "A.md")]
    main(args)
    assert "from 2 finished runs" in capsys.readouterr().out

    def changed_since(number: int) -> None:  # as if the row's YAML had changed since the run
        path = result_path(tmp_path, ROWS[number], 0)
        path.write_text(json.dumps(json.loads(path.read_text()) | {"config_digest": "0" * 64}))

    changed_since(1)
    main(args)
    out = capsys.readouterr().out
    assert "from 1 finished runs" in out and "left out of the report; 1 finished result(s)" in out
    changed_since(2)
    with pytest.raises(SystemExit, match=r"for the current configs; 2 finished result\(s\) there were made from"):
        main(args)
