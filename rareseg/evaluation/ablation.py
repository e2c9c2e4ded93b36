"""Ablation runner: every row config x seed trained on one budget, resumable, in parallel processes.

Each row is ``configs/ablations/NN-*.yaml`` applied on top of ``configs/wetlands.yaml``, followed by
a budget file (``configs/ablations/budget-<name>.yaml``) that fixes data, steps and model size for
every row. A row file starts with comment lines naming it::

    # label: CE + rare-class sampling    (the table's name of the row)
    # peer: true                          (a published recipe, not one of rareseg's parts)
    # seeds: 5                            (seeds this row gets unless --seeds says otherwise)
    # compare: 9                          (the row it changes one thing from, for the verdict)

A finished ``(row, seed)`` writes one result JSON atomically (training curve, the best checkpoint's
path and its per-scene test confusion matrices); a later run skips it. The test scenes are scored
with the decision users get from ``rareseg infer`` (overlapping tiles blended, the checkpoint's
calibrated thresholds) and with the plain argmax; see :func:`score_checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import active_children, get_context
from pathlib import Path
from typing import Any

import yaml

from rareseg.core.files import write_atomically
from rareseg.datamodules import DataError, LissIVDataModule
from rareseg.evaluation.evaluate import DECISIONS

#: Keys every finished result JSON holds; a file without them is not finished.
RESULT_KEYS = (
    "row",
    "seed",
    "budget",
    "config_digest",
    "class_names",
    "rare_classes",
    "train_seconds",
    "curve",
    "checkpoint",
    "scoring",
)
#: Version of :func:`score_checkpoint`; results scored by another version are scored again (not retrained).
SCORING_VERSION = 2
#: Decision rules each run is scored with: evaluate's (what ``rareseg infer`` writes, and the plain
#: argmax), then the ``calibrated`` rule with the same thresholds (what the run would give if it were deployed).
SCORED_RULES = (*DECISIONS, "calibrated")
#: Tiling of the deployed decision: ``rareseg infer``'s defaults.
INFER_TILE, INFER_OVERLAP = 512, 64

_ROW_FILE = re.compile(r"^(\d{2})-[\w.-]+\.ya?ml$")
_HEADER = re.compile(r"^#\s*(label|peer|seeds|compare):\s*(.*?)\s*$")


@dataclass(frozen=True)
class AblationRow:
    """One row of the ablation table.

    Attributes:
        number: row number (the file's two-digit prefix; the table order).
        label: short description shown in the table.
        config: file name in ``configs/ablations/``.
        peer: a published recipe (the "best peer" is chosen among these), not one of rareseg's parts.
        seeds: seeds this row gets by default (None: the runner's default).
        compare: the row this one changes one thing from (None: compared with row 1 only).
    """

    number: int
    label: str
    config: str
    peer: bool = False
    seeds: int | None = None
    compare: int | None = None


def read_row(path: Path) -> AblationRow:
    """The row a ``NN-name.yaml`` file describes, from its name and its leading ``# key: value`` comments.

    Raises:
        DataError: a name without the two-digit prefix, or a bad header value.
    """
    match = _ROW_FILE.match(path.name)
    if match is None:
        raise DataError(f"{path}: an ablation row file is named NN-<name>.yaml")
    header: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        found = _HEADER.match(line)
        if found:
            header[found.group(1)] = found.group(2)
    try:
        seeds = int(header["seeds"]) if "seeds" in header else None
        compare = int(header["compare"]) if "compare" in header else None
    except ValueError:
        raise DataError(f"{path}: '# seeds:' and '# compare:' take a whole number") from None
    if header.get("peer", "false") not in ("true", "false"):
        raise DataError(f"{path}: '# peer:' is true or false, got {header['peer']!r}")
    return AblationRow(
        number=int(match.group(1)),
        label=header.get("label", path.stem[3:]),
        config=path.name,
        peer=header.get("peer") == "true",
        seeds=seeds,
        compare=compare,
    )


def discover_rows(config_dir: Path) -> dict[int, AblationRow]:
    """Every ``<config_dir>/ablations/NN-*.yaml`` row by number.

    Raises:
        DataError: two files with the same number, or a bad header.
    """
    rows: dict[int, AblationRow] = {}
    for path in sorted((config_dir / "ablations").glob("[0-9][0-9]-*.y*ml")):
        row = read_row(path)
        if row.number in rows:
            raise DataError(f"{path}: row {row.number} is also {rows[row.number].config}")
        rows[row.number] = row
    return rows


def budget_file(budget: str, config_dir: Path) -> Path:
    """The YAML of a budget: a name (``cpu-small`` -> ``<config_dir>/ablations/budget-cpu-small.yaml``) or a path.

    Raises:
        DataError: no such file.
    """
    path = Path(budget) if budget.endswith((".yaml", ".yml")) else config_dir / "ablations" / f"budget-{budget}.yaml"
    if not path.is_file():
        raise DataError(f"{path}: ablation budget file not found")
    return path


def parse_rows(text: str | None, rows: dict[int, AblationRow]) -> list[AblationRow]:
    """Rows from ``"1,2,5"`` (``None``: all rows, in order).

    Raises:
        ValueError: a number that is not a row.
    """
    if text is None:
        return [rows[n] for n in sorted(rows)]
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--rows must be comma-separated row numbers, got {text!r}") from None
    unknown = [n for n in numbers if n not in rows]
    if unknown or not numbers:
        raise ValueError(f"unknown ablation rows {unknown or text!r}: rows are {', '.join(map(str, sorted(rows)))}")
    return [rows[n] for n in numbers]


def result_path(out: Path, row: AblationRow, seed: int) -> Path:
    """Where the result JSON of ``(row, seed)`` lives."""
    return out / f"row{row.number:02d}-seed{seed}.json"


def merged_config(paths: Sequence[Path]) -> dict[str, Any]:
    """The YAML files merged in order as LightningCLI applies ``--config`` files.

    Mappings merge key by key; lists are replaced; a ``class_path`` block naming another class
    replaces the earlier block with its ``init_args`` (they belonged to the other class).
    """
    merged: dict[str, Any] = {}
    for path in paths:
        merged = _merge(merged, yaml.safe_load(path.read_text()) or {})
    return merged


def _merge(base: Any, update: Any) -> Any:
    if isinstance(base, dict) and isinstance(update, dict):
        if "class_path" in update and update["class_path"] != base.get("class_path"):
            return update
        return {key: _merge(base[key], value) if key in base else value for key, value in update.items()} | {
            key: value for key, value in base.items() if key not in update
        }
    return update


def config_digest(row: AblationRow, budget: Path, config_dir: Path, data_root: str | None = None) -> str:
    """SHA-256 (hex) of the row's merged configuration (recipe, row, budget, data root override).

    A result is reused only while this is unchanged, so a recipe edit reruns just the rows it reaches.
    """
    merged = merged_config([config_dir / "wetlands.yaml", config_dir / "ablations" / row.config, budget])
    text = json.dumps({"config": merged, "data_root": data_root}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def load_result(path: Path, digest: str | None = None) -> dict[str, Any] | None:
    """A finished result, or None when the file is missing, unreadable, partial or marked unfinished.

    With ``digest`` (see :func:`config_digest`), a result made from another configuration is also None.
    """
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (
        not isinstance(result, dict)
        or result.get("complete") is not True
        or any(key not in result for key in RESULT_KEYS)
    ):
        return None
    if digest is not None and result["config_digest"] != digest:
        return None
    return result


def budget_data(budget: Path, data_root: str | None = None) -> dict[str, Any]:
    """The budget's ``data.init_args``, with ``root`` replaced (and the scene lists cleared) by ``data_root``."""
    init_args = dict((yaml.safe_load(budget.read_text()) or {}).get("data", {}).get("init_args", {}))
    if data_root is not None:
        init_args |= {"root": data_root, "generate_if_missing": False, "val_scenes": None, "test_scenes": None}
    return init_args


def prepare_budget_data(budget: Path, data_root: str | None = None) -> LissIVDataModule:
    """Create the budget's data root (and its statistics) once, before any run is timed.

    Only the budget's ``data.init_args`` are used, so the budget should name ``root`` and the
    ``synth_*`` keys of the data it trains on.
    """
    return LissIVDataModule(**budget_data(budget, data_root))


def cli_args(
    row: AblationRow, seed: int, budget: Path, workdir: Path, config_dir: Path, data_root: str | None
) -> list[str]:
    """The ``rareseg fit`` arguments of one run."""
    args = [
        "fit",
        "--config", str(config_dir / "wetlands.yaml"),
        "--config", str(config_dir / "ablations" / row.config),
        "--config", str(budget),
        "--seed_everything", str(seed),
        "--data.init_args.seed", str(seed),
        "--trainer.default_root_dir", str(workdir),
        "--test_after_fit", "false",
    ]  # fmt: skip
    if data_root is not None:
        args += ["--data.init_args.root", data_root, "--data.init_args.generate_if_missing", "false"]
        args += ["--data.init_args.val_scenes", "null", "--data.init_args.test_scenes", "null"]
    return args


#: Validation metrics kept in a run's learning curve (per rare class: ``val/iou/<name>`` etc. as well).
CURVE_KEYS = ("val/rare_iou", "val/rare_recall", "val/majority_precision", "val/miou")
CURVE_TRACES = ("train/rho", "train/p_r", "train/loss")


def _curve_recorder() -> Any:
    """A callback that records validation scores (and the latest training traces) at every validation."""
    from lightning.pytorch.callbacks import Callback

    class CurveRecorder(Callback):
        def __init__(self) -> None:
            self.points: list[dict[str, float]] = []

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.sanity_checking:
                return
            metrics = trainer.callback_metrics
            point = {"step": float(trainer.global_step)}
            for key, value in metrics.items():
                per_class = key.startswith(("val/iou/", "val/recall/", "val/precision/"))
                if key in CURVE_KEYS or key in CURVE_TRACES or per_class:
                    point[key] = float(value)
            self.points.append(point)

    return CurveRecorder()


def train_row(
    row: AblationRow, seed: int, budget: Path, workdir: Path, config_dir: Path, data_root: str | None = None
) -> dict[str, Any]:
    """Fit one row with one seed in-process; return its curve, best checkpoint and test scenes.

    The run is ``rareseg fit --config wetlands.yaml --config <row> --config <budget>`` with
    ``seed_everything`` and the sampler seed set to ``seed``; ``train_seconds`` is the wall time of
    the fit (model construction, training and validation), in seconds.

    Returns:
        ``class_names``, ``rare_classes`` (names), ``train_seconds``, ``steps``, ``curve`` (one dict per
        validation: ``step`` and the :data:`CURVE_KEYS` / per-class validation scores),
        ``babysitter`` (its state when the row has one), ``checkpoint`` (the best one) and
        ``test_scenes`` (image and mask paths of the test split).
    """
    from rareseg.training import run_cli

    recorder = _curve_recorder()
    start = time.perf_counter()
    cli = run_cli(cli_args(row, seed, budget, workdir, config_dir, data_root), extra_callbacks=[recorder])
    train_seconds = time.perf_counter() - start
    if recorder.points and not any("val/rare_iou" in point for point in recorder.points):
        raise RuntimeError(
            f"row {row.number} seed {seed}: no val/rare_iou was logged (the row's trainer.callbacks list replaces "
            "the recipe's: it must name rareseg.callbacks.RareClassMetrics)"
        )
    checkpoint = cli.trainer.checkpoint_callback
    if checkpoint is None or not checkpoint.best_model_path:
        raise RuntimeError(f"row {row.number} seed {seed}: the run saved no best checkpoint (ModelCheckpoint missing?)")
    data = cli.datamodule
    babysitter = next((cb for cb in cli.trainer.callbacks if type(cb).__name__ == "Babysitter"), None)
    return {
        "class_names": list(data.class_names),
        "rare_classes": [data.class_names[c] for c in data.rare_classes],
        "train_seconds": train_seconds,
        "steps": int(cli.trainer.global_step),
        "curve": recorder.points,
        "babysitter": None if babysitter is None else _jsonable(babysitter.state_dict()),
        "checkpoint": str(Path(checkpoint.best_model_path).resolve()),
        "test_scenes": [[str(s.image), str(s.mask)] for s in data.scenes_of("test")],
    }


def score_checkpoint(checkpoint: str | Path, scenes: Sequence[Sequence[str]], workdir: Path) -> dict[str, Any]:
    """Per-scene test confusion matrices of a checkpoint, for each of :data:`SCORED_RULES`.

    Scored by :func:`rareseg.evaluation.evaluate_scenes` in one inference pass per scene: ``deployed``
    is exactly the decision ``rareseg infer`` writes into ``mask.tif`` (tiles of :data:`INFER_TILE`
    px overlapping by :data:`INFER_OVERLAP`, blended; the checkpoint's calibrated rare-class
    thresholds), ``argmax`` the plain argmax of the same blended probabilities. Pixels whose truth
    is 255 (or the mask's nodata) or whose image is nodata are not scored.

    Args:
        checkpoint: the best checkpoint of a run.
        scenes: ``(image, mask)`` paths of the test scenes.
        workdir: unused (nothing is written); kept for callers.

    Returns:
        ``{"version": SCORING_VERSION, "deployed": {stem: (K, K) list}, "argmax": {...}, "calibrated": {...}}``,
        rows = truth, columns = prediction; ``calibrated`` is the two-way threshold rule of
        :func:`rareseg.inference.decisions.assign_classes` with the same thresholds.
    """
    from rareseg.evaluation.evaluate import ScoredScene, evaluate_scenes
    from rareseg.inference import load_predictor

    predictor = load_predictor(checkpoint, device="cpu")
    scored = [ScoredScene(Path(image), Path(mask)) for image, mask in scenes]
    evaluation = evaluate_scenes(
        predictor, scored, tile=INFER_TILE, overlap=INFER_OVERLAP, progress=False, extra_rules=("calibrated",)
    )
    return {
        "version": SCORING_VERSION,
        **{
            decision: {stem: matrices[decision].tolist() for stem, matrices in evaluation.scene_matrices.items()}
            for decision in SCORED_RULES
        },
    }


def _jsonable(value: Any) -> Any:
    """Tensors, numpy values and tuples made JSON-ready (recursively)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


#: Trains one (row, seed): ``train(row, seed, budget, workdir, config_dir, data_root)`` (see :func:`train_row`).
TrainFunction = Callable[[AblationRow, int, Path, Path, Path, str | None], dict[str, Any]]
#: Scores a checkpoint: ``score(checkpoint, scenes, workdir)`` (see :func:`score_checkpoint`).
ScoreFunction = Callable[[str, Sequence[Sequence[str]], Path], dict[str, Any]]


@dataclass(frozen=True)
class _Job:
    row: AblationRow
    seed: int
    budget: Path
    workdir: Path
    config_dir: Path
    data_root: str | None
    threads: int | None
    train: TrainFunction
    score: ScoreFunction
    earlier: dict[str, Any] | None  # a trained result that only needs scoring again


def _run_job(job: _Job) -> dict[str, Any]:
    """Train (unless already trained) and score one run; in a worker process, with ``job.threads`` torch threads."""
    if job.threads is not None:
        import torch

        torch.set_num_threads(job.threads)
    trained = job.earlier
    if trained is None:
        trained = job.train(job.row, job.seed, job.budget, job.workdir, job.config_dir, job.data_root)
    scoring = job.score(trained["checkpoint"], trained["test_scenes"], job.workdir)
    return trained | {"scoring": scoring}


def planned_runs(
    rows: Sequence[AblationRow], seeds: int | None, default_seeds: int = 3
) -> list[tuple[AblationRow, int]]:
    """``(row, seed)`` pairs, seed-major (every row's seed 0 first), so partial tables cover every row.

    A row gets ``seeds`` seeds when given, else its own ``seeds`` header, else ``default_seeds``.
    """
    counts = {row.number: seeds or row.seeds or default_seeds for row in rows}
    return [(row, seed) for seed in range(max(counts.values(), default=0)) for row in rows if seed < counts[row.number]]


def run_ablation(
    rows: Sequence[AblationRow],
    budget: Path,
    out: Path,
    config_dir: Path = Path("configs"),
    seeds: int | None = None,
    jobs: int = 1,
    threads: int | None = None,
    data_root: str | None = None,
    train: TrainFunction = train_row,
    score: ScoreFunction = score_checkpoint,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run every planned ``(row, seed)`` without a finished result in ``out``; return all finished results.

    A result counts as finished when :func:`load_result` accepts it with the current
    :func:`config_digest` and its scoring is :data:`SCORING_VERSION`; a result with an older scoring
    is only scored again from its checkpoint.

    Args:
        rows: rows to run.
        budget: budget YAML applied after the row config.
        out: folder of the result JSONs (and ``runs/`` with each run's checkpoints).
        config_dir: folder holding ``wetlands.yaml`` and ``ablations/``.
        seeds: seeds 0..N-1 for every row (None: each row's ``seeds`` header, else 3).
        jobs: runs trained at the same time, each in its own process (1: in this process).
        threads: torch threads per run (None: torch's default; use 1 with ``jobs`` > 1 on a small CPU).
        data_root: train and test on this dataset root instead of the budget's (derived scene split).
        train: the per-run training function (see :data:`TrainFunction`).
        score: the per-run scoring function (see :data:`ScoreFunction`).
        log: progress messages.

    Returns:
        The finished results in row, seed order.

    Raises:
        RuntimeError: some runs failed (after every other run finished; their results are kept).
    """
    finished: dict[tuple[int, int], dict[str, Any]] = {}
    pending: list[_Job] = []
    for row, seed in planned_runs(rows, seeds):
        path = result_path(out, row, seed)
        digest = config_digest(row, budget, config_dir, data_root)
        result = load_result(path, digest)
        if result is not None and result["scoring"].get("version") == SCORING_VERSION:
            log(f"row {row.number} seed {seed}: finished earlier, skipped ({path})")
            finished[(row.number, seed)] = result
            continue
        workdir = out / "runs" / path.stem
        pending.append(_Job(row, seed, budget, workdir, config_dir, data_root, threads, train, score, result))
    failed: list[str] = []
    for job, result in _execute(pending, jobs, log):
        if isinstance(result, BaseException):
            failed.append(f"row {job.row.number} seed {job.seed}: {type(result).__name__}: {result}")
            log(f"{failed[-1]} (no result written; the other runs go on)")
            continue
        path = result_path(out, job.row, job.seed)
        digest = config_digest(job.row, job.budget, job.config_dir, job.data_root)
        result = {
            "row": job.row.number,
            "label": job.row.label,
            "seed": job.seed,
            "budget": budget.name,
            "config_digest": digest,
        } | result
        result |= {"complete": True}
        write_atomically(path, (json.dumps(result, indent=1) + "\n").encode())
        finished[(job.row.number, job.seed)] = result
        log(f"row {job.row.number} seed {job.seed}: done in {result['train_seconds']:.0f} s of training ({path})")
    if failed:
        raise RuntimeError(f"{len(failed)} ablation run(s) failed:\n" + "\n".join(failed))
    return [finished[key] for key in sorted(finished)]


def _execute(
    jobs_to_run: Sequence[_Job], jobs: int, log: Callable[[str], None]
) -> Iterator[tuple[_Job, dict[str, Any] | Exception]]:
    """Run the jobs (here, or in ``jobs`` fresh worker processes), yielding each result (or its error) as it ends."""
    if jobs <= 1:
        for job in jobs_to_run:
            log(_starting(job))
            try:
                yield job, _run_job(job)
            except Exception as err:  # a failing run must not stop the others; reported at the end
                yield job, err
        return
    context = get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, max_tasks_per_child=1) as pool:
        queue = list(jobs_to_run)
        running: dict[Future[dict[str, Any]], _Job] = {}
        try:
            while queue or running:
                while queue and len(running) < jobs:
                    job = queue.pop(0)
                    log(_starting(job))
                    running[pool.submit(_run_job, job)] = job
                # a timeout: a signal that the kernel hands to another thread reaches the main one within 1 s
                done, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in done:
                    job = running.pop(future)
                    error = future.exception()
                    yield job, future.result() if error is None else error
        except BaseException:
            # Ctrl+C or SIGTERM (or an error here): stop the runs in the workers instead of waiting for them
            pool.shutdown(wait=False, cancel_futures=True)
            for worker in active_children():
                worker.terminate()
            raise


def _starting(job: _Job) -> str:
    return f"row {job.row.number} seed {job.seed}: {'scoring' if job.earlier else 'training'} ({job.row.label})"


def thread_environment(threads: int) -> None:
    """Limit OpenMP/MKL threads of this process and its children (call before torch starts its pools)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
