"""Command line: ``rareseg fit|validate|test|predict`` (LightningCLI) plus tool subcommands.

``rareseg synth`` writes the embedded synthetic data set. The generic ``lightning``
command runs a plain LightningCLI for any model/datamodule config.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from lightning.pytorch import Callback, LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from rareseg.callbacks import RareClassMetrics, ThresholdCalibrator
from rareseg.datamodules.scenes import DataError

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
        from rareseg.inference.writer import (
            ScenePredictionWriter,
        )  # the network stack; not needed by the tool subcommands

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
        from rareseg.inference.scene import check_options

        config = self.config[self.subcommand]
        writer = config["prediction_writer"]
        try:
            check_options(
                writer.tile, writer.overlap, writer.batch_size, writer.topk, writer.threshold, writer.preview_max_side
            )
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


def _synth(argv: Sequence[str]) -> None:
    from rareseg.synth.command import synth_command

    synth_command(argv)


def _infer(argv: Sequence[str]) -> None:
    from rareseg.inference.command import infer_command

    infer_command(argv)


def _evaluate(argv: Sequence[str]) -> None:
    from rareseg.evaluation.command import evaluate_command

    evaluate_command(argv)


def _bench(argv: Sequence[str]) -> None:
    from rareseg.evaluation.command import bench_command

    bench_command(argv)


def _serve(argv: Sequence[str]) -> None:
    from rareseg.web.command import serve_command

    serve_command(argv)


TOOLS = {"synth": _synth, "infer": _infer, "evaluate": _evaluate, "bench": _bench, "serve": _serve}


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


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``rareseg`` command; bad input exits with a one-line error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in TOOLS:
            TOOLS[argv[0]](argv[1:])
        else:
            run_cli(argv)
    except (ValueError, FileExistsError) as err:
        cause = _data_error_in(err)
        if cause is None:
            raise
        sys.exit(f"rareseg: error: {cause}")


def _data_error_in(err: BaseException) -> BaseException | None:
    """The DataError (or FileExistsError) behind an exception; jsonargparse wraps those raised in __init__."""
    while err is not None:
        if isinstance(err, (DataError, FileExistsError)):
            return err
        err = err.__cause__ or err.__context__
    return None


def lightning_main() -> None:
    """Entry point of the generic ``lightning`` command: LightningCLI for any config."""
    LightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
    )
