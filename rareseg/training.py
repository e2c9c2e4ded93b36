"""Training entry: ``RareSegCLI`` (LightningCLI with the datamodule linked into the task) and ``run_cli``.

``rareseg fit|validate|test|predict`` (:mod:`rareseg.cli`) and the ablation runner
(:mod:`rareseg.evaluation.ablation`) both start runs through :func:`run_cli`; keeping it out of
the entry-point module means nothing imports ``rareseg.cli``, so the tool subcommands stay lazy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from lightning.pytorch import Callback, LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from rareseg.callbacks import RareClassMetrics, ThresholdCalibrator
from rareseg.inference.radiometry import parse_input_scale
from rareseg.inference.scene import check_options
from rareseg.inference.writer import ScenePredictionWriter

#: Datamodule attributes linked into the task (same names on both sides).
DATA_TO_MODEL = (
    "num_classes",
    "in_channels",
    "rare_classes",
    "class_names",
    "class_colors",
    "class_frequencies",
    "band_mean",
    "band_std",
    "normalisation",
)
#: Datamodule attributes linked into the network and the loss when the config names them.
DATA_TO_NET = ("num_classes", "in_channels", "rare_classes")
DATA_TO_LOSS = ("class_frequencies",)


class RareSegCLI(LightningCLI):
    """LightningCLI with the datamodule's classes and statistics linked into the model.

    RareClassMetrics and ThresholdCalibrator are always on (config keys ``rare_metrics``
    and ``threshold_calibrator``), with the class names and rare classes linked from the data.
    ScenePredictionWriter (``prediction_writer``) is always on too; only ``predict`` uses it,
    so one config file serves every subcommand. ``predict`` needs ``--ckpt_path`` and keeps no
    predictions in memory unless ``--return_predictions true``: the writer has written them.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link data attributes into the task, its network and its loss; add the callbacks and ``test_after_fit``."""
        for name in DATA_TO_MODEL:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        for name in DATA_TO_NET:
            parser.link_arguments(f"data.{name}", f"model.init_args.net.init_args.{name}", apply_on="instantiate")
        for name in DATA_TO_LOSS:
            parser.link_arguments(f"data.{name}", f"model.init_args.loss.init_args.{name}", apply_on="instantiate")
        parser.add_lightning_class_args(RareClassMetrics, "rare_metrics")
        parser.add_lightning_class_args(ThresholdCalibrator, "threshold_calibrator")
        parser.add_lightning_class_args(ScenePredictionWriter, "prediction_writer")
        for name in ("class_names", "rare_classes", "class_colors"):
            parser.link_arguments(f"data.{name}", f"rare_metrics.{name}", apply_on="instantiate")
        for name in ("class_names", "rare_classes"):
            parser.link_arguments(f"data.{name}", f"threshold_calibrator.{name}", apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit", type=bool, default=False, help="after fit, test the best checkpoint on the test split"
        )

    def before_instantiate_classes(self) -> None:
        """One-line errors for bad ``prediction_writer`` options and, in ``predict``, a missing ``ckpt_path``.

        ``predict`` with ``return_predictions`` unset does not keep the predictions.
        """
        config = self.config[self.subcommand]
        writer = config["prediction_writer"]
        try:
            check_options(
                writer.tile, writer.overlap, writer.batch_size, writer.topk, writer.threshold, writer.preview_max_side
            )
            parse_input_scale(writer.input_scale)
        except ValueError as err:
            self.parser.error(f"prediction_writer: {err}")
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
        metrics = next(cb for cb in self.trainer.callbacks if isinstance(cb, RareClassMetrics))
        if self.trainer.is_global_zero and metrics.confusion_matrix is not None:
            scenes = getattr(self.datamodule, "split_scenes", {}).get("test", [])
            print(f"\nTest split, per class ({', '.join(scenes)}):\n{metrics.per_class_table()}")


def run_cli(args: Sequence[str] | None = None, extra_callbacks: Sequence[Callback] = ()) -> RareSegCLI:
    """Run the rareseg LightningCLI (subclass mode for model and data) on ``args``.

    ``extra_callbacks`` are added to the configured ones (e.g. a recorder of the ablation runner).
    """
    os.environ.setdefault("WANDB_MODE", "offline")
    return RareSegCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": list(extra_callbacks)} if extra_callbacks else None,
        args=args,
    )
