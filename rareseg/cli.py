"""Entry points: the ``rareseg`` command (LightningCLI subcommands plus tools) and the generic ``lightning`` command.

``rareseg fit|validate|test|predict`` run :func:`rareseg.training.run_cli`; ``synth``, ``infer``,
``evaluate``, ``bench`` and ``serve`` import their module only when called. ``rareseg --help``
lists them all and ``rareseg --version`` prints the installed version. Lightning 2.x installs no
``lightning`` command of its own; rareseg's runs a plain LightningCLI (no rareseg code in it) for
any model/datamodule config. Nothing in the package imports this module.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

from rareseg.core.interrupt import EXIT_STATUS, handle_interrupts, interrupted_message, received_signal
from rareseg.datamodules.scenes import DataError


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
    try:
        from rareseg.web.command import serve_command
    except ModuleNotFoundError as err:  # the web extra is optional
        if err.name not in ("flask", "werkzeug", "waitress"):
            raise
        sys.exit(f"rareseg serve: error: {err.name} is not installed: pip install 'rareseg[web]'")

    serve_command(argv)


TOOLS = {"synth": _synth, "infer": _infer, "evaluate": _evaluate, "bench": _bench, "serve": _serve}

#: Every subcommand with its one-line summary, in the order ``rareseg --help`` lists them.
SUBCOMMANDS = {
    "fit": "train from a LightningCLI config (rareseg fit --config configs/wetlands.yaml)",
    "validate": "score a checkpoint on the validation split (--ckpt_path)",
    "test": "score a checkpoint on the test split and print the per-class table (--ckpt_path)",
    "predict": "write GeoTIFF predictions of the datamodule's scenes (--ckpt_path)",
    "synth": "write the synthetic LISS-IV-like data set (images/, masks/, classes.yaml)",
    "infer": "predict one GeoTIFF scene into mask.tif, rare_prob.tif, previews and summary.json",
    "evaluate": "score a checkpoint on a split of a dataset root as infer predicts it",
    "bench": "benchmarks that train models (the ablation)",
    "serve": "serve the web page: upload a scene, see and download the predictions",
}


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, summary in SUBCOMMANDS.items()]
    return (
        "usage: rareseg [-h] [--version] SUBCOMMAND ...\n\n"
        "Rare-class segmentation of LISS-IV scenes: train with Lightning, predict GeoTIFFs.\n\n"
        "subcommands (rareseg SUBCOMMAND --help for its options):\n" + "\n".join(lines) + "\n\n"
        "options:\n  -h, --help  show this help message and exit\n  --version   print the version and exit\n"
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rareseg")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``rareseg`` command; bad input exits with a one-line error.

    Ctrl+C (SIGINT) and SIGTERM unwind the command's clean-ups and exit 130/143 with one line
    (:mod:`rareseg.core.interrupt`).
    """
    given = argv
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else ""
    if command in ("", "-h", "--help"):
        print(_usage(), end="")
        return
    if command == "--version":
        print(f"rareseg {_version()}")
        return
    if command not in SUBCOMMANDS:
        sys.exit(f"rareseg: error: unknown subcommand {command!r} (choose from {', '.join(SUBCOMMANDS)})")
    try:
        with handle_interrupts():
            if command in TOOLS:
                TOOLS[command](argv[1:])
            else:
                _train(None if given is None else argv)
    except (ValueError, FileExistsError) as err:
        cause = _data_error_in(err)
        if cause is None:
            raise
        sys.exit(f"rareseg: error: {cause}")
    except (KeyboardInterrupt, SystemExit) as err:
        if isinstance(err, SystemExit) and received_signal() is None:
            raise  # an ordinary exit (Lightning exits 1 after it handled a Ctrl+C itself)
        message, status = interrupted_message(command)
        print(message, file=sys.stderr)
        sys.exit(status)


def _train(argv: Sequence[str] | None) -> None:
    """``fit|validate|test|predict`` (``argv`` None: ``sys.argv``); a first Ctrl+C during fit stops cleanly after the
    step and exits 130."""
    from rareseg.callbacks.stop_cleanly import StopCleanly
    from rareseg.training import run_cli

    stop = StopCleanly()
    run_cli(argv, extra_callbacks=[stop])
    if stop.interrupted:
        resume = f"; resume with --ckpt_path {stop.last_checkpoints[0]}" if stop.last_checkpoints else ""
        print(f"rareseg fit: interrupted (SIGINT); stopped after the running step{resume}", file=sys.stderr)
        sys.exit(EXIT_STATUS[signal.SIGINT])


def _data_error_in(err: BaseException) -> BaseException | None:
    """The DataError (or FileExistsError) behind an exception; jsonargparse wraps those raised in __init__."""
    while err is not None:
        if isinstance(err, (DataError, FileExistsError)):
            return err
        err = err.__cause__ or err.__context__
    return None


def lightning_main() -> None:
    """Entry point of the generic ``lightning`` command: a plain LightningCLI for any model and datamodule.

    ``LightningCLI(LightningModule, LightningDataModule, subclass_mode_model=True,
    subclass_mode_data=True)``, as a user's own ``main.py`` would run it, except that a later run in
    the same log folder replaces Lightning's ``config.yaml`` instead of refusing to start.
    """
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    LightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
    )
