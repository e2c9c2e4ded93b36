"""Training entry: ``RareSegCLI`` (LightningCLI plus per-run configs and ``test_after_fit``) and ``run_cli``.

``rareseg fit|validate|test|predict`` (:mod:`rareseg.cli`) and the ablation runner
(:mod:`rareseg.evaluation.ablation`) both start runs through :func:`run_cli`; keeping it out of
the entry-point module means nothing imports ``rareseg.cli``, so the tool subcommands stay lazy.
The shipped configs need nothing from this module: the task learns classes and statistics from
the datamodule, and the metric, threshold and prediction-writer callbacks are ordinary
``trainer.callbacks``, so a plain ``LightningCLI`` runs them too.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from rareseg.callbacks import RareClassMetrics
from rareseg.inference.writer import ScenePredictionWriter


def run_folder(trainer: Trainer) -> Path:
    """The folder of this run: where ``ModelCheckpoint`` puts its ``checkpoints/`` by default.

    With a logger ``<save_dir or default_root_dir>/<name>/<version>`` (W&B: ``<project>/<run id>``,
    TensorBoard: ``<name>/version_<n>``), else ``default_root_dir``.
    """
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(logger.save_dir or trainer.default_root_dir, str(logger.name), version)


class RunConfig(SaveConfigCallback):
    """Keep each run's resolved config in its own run folder and send it to the loggers.

    The file is ``<run folder>/config.yaml`` (see :func:`run_folder`); an existing file is never
    replaced: ``config-1.yaml``, ``config-2.yaml``, ... are taken instead. The whole config
    (trainer, model, data) goes to every logger's hyperparameters under ``config`` (the W&B run
    config, TensorBoard's hparams).
    """

    def __init__(self, parser: LightningArgumentParser, config: Any, **kwargs: Any) -> None:
        super().__init__(parser, config, **{**kwargs, "save_to_log_dir": False})

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Write the config file (rank zero) and log the config to the loggers."""
        folder = run_folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        path, number = folder / self.config_filename, 0
        while path.exists():
            number += 1
            path = folder / f"{Path(self.config_filename).stem}-{number}{Path(self.config_filename).suffix}"
        self.parser.save(self.config, path, skip_none=False, multifile=False)
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})


class RareSegCLI(LightningCLI):
    """LightningCLI for rareseg's commands: per-run configs, ``--test_after_fit`` and one-line option errors.

    ``predict`` needs ``--ckpt_path`` and keeps no predictions in memory unless
    ``--return_predictions true``: the configured ``ScenePredictionWriter`` has written them.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add ``--test_after_fit`` (a rareseg option, so the shipped configs leave it out)."""
        parser.add_argument(
            "--test_after_fit", type=bool, default=False, help="after fit, test the best checkpoint on the test split"
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse ``args`` (from :func:`run_cli`, which is called with its arguments on purpose) or ``sys.argv``."""
        self.config = parser.parse_args(args)

    def before_instantiate_classes(self) -> None:
        """One-line errors for bad ``ScenePredictionWriter`` options and, in ``predict``, a missing ``ckpt_path``.

        ``predict`` with ``return_predictions`` unset does not keep the predictions.
        """
        config = self.config[self.subcommand]
        for callback in config["trainer"].get("callbacks") or []:
            module, _, name = str(callback.class_path).rpartition(".")
            if getattr(importlib.import_module(module), name, None) is ScenePredictionWriter:
                try:
                    ScenePredictionWriter(**dict(callback.get("init_args") or {}))
                except ValueError as err:
                    self.parser.error(f"ScenePredictionWriter: {err}")
        if self.subcommand != "predict":
            return
        if not config.get("ckpt_path"):
            self.parser.error(
                "predict needs --ckpt_path CHECKPOINT (without it the network would predict with untrained weights)"
            )
        if config.get("return_predictions") is None:
            config["return_predictions"] = False

    def after_fit(self) -> None:
        """Optionally test the best checkpoint right after training."""
        if self.config[self.subcommand].get("test_after_fit"):
            ckpt = (
                "best"
                if self.trainer.checkpoint_callback is not None and self.trainer.checkpoint_callback.best_model_path
                else None
            )
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)
            self.after_test()

    def after_test(self) -> None:
        """Print the per-class table of the test split."""
        metrics = next((cb for cb in self.trainer.callbacks if isinstance(cb, RareClassMetrics)), None)
        if self.trainer.is_global_zero and metrics is not None and metrics.confusion_matrix is not None:
            scenes = getattr(self.datamodule, "split_scenes", {}).get("test", [])
            print(f"\nTest split, per class ({', '.join(scenes)}):\n{metrics.per_class_table()}")


def run_cli(args: Sequence[str] | None = None, extra_callbacks: Sequence[Callback] = ()) -> RareSegCLI:
    """Run the rareseg LightningCLI (subclass mode for model and data) on ``args`` (None: ``sys.argv``).

    ``extra_callbacks`` are added to the configured ones (e.g. a recorder of the ablation runner).
    W&B's mode is the logger's ``offline`` option (or the user's ``WANDB_MODE``); rareseg sets nothing.
    """
    return RareSegCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=RunConfig,
        trainer_defaults={"callbacks": list(extra_callbacks)} if extra_callbacks else None,
        args=None if args is None else list(args),
    )
