"""RareSegModule and its metric callbacks learn what the data decides from the datamodule; given values win."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import pytest
import torch

from rareseg.callbacks import RareClassMetrics, ThresholdCalibrator
from rareseg.lightning_modules import RareSegModule
from rareseg.losses import ARBTLoss, CrossEntropyLoss
from rareseg.models import SpatialAwareSegFormer

#: What a datamodule exposes (four classes, two bands), as plain attributes: duck typing, no rareseg class.
DATA = SimpleNamespace(
    num_classes=4,
    in_channels=2,
    rare_classes=[3],
    class_names=["land", "river", "town", "marsh"],
    class_colors=[[0, 0, 0], [0, 0, 255], [255, 0, 0], [0, 255, 0]],
    class_frequencies=[0.5, 0.3, 0.15, 0.05],
    band_mean=[10.0, 20.0],
    band_std=[2.0, 4.0],
)


def _configured(module: RareSegModule, datamodule: object | None = DATA) -> RareSegModule:
    module._trainer = SimpleNamespace(datamodule=datamodule, callbacks=[])
    module.configure_model()
    return module


def _net_factory(**bound: object) -> partial:
    """What jsonargparse makes of a net block without the data's arguments (``bound``: those it names)."""
    return partial(SpatialAwareSegFormer, encoder_name="mit_b0", decoder_channels=8, **bound)


def test_a_task_without_classes_builds_from_the_datamodule_and_records_them() -> None:
    module = RareSegModule(net=_net_factory(), loss=partial(ARBTLoss, eta=1.0), optimizer="adamw")
    assert module.net is None and module.criterion is None  # nothing known yet
    _configured(module)
    assert (module.net.num_classes, module.net.in_channels, module.net.rare_classes) == (4, 2, (3,))
    assert module.criterion.class_frequencies == pytest.approx(DATA.class_frequencies)
    assert module.criterion.rare_classes == (3,)
    assert module.net(torch.zeros(1, 2, 32, 32)).logits.shape == (1, 4, 32, 32)
    for name in vars(DATA):
        assert module.hparams[name] == getattr(DATA, name)  # the checkpoint rebuilds without the datamodule
        assert module.hparams_initial[name] == getattr(DATA, name)  # what the loggers get
    assert (module.class_names, module.rare_classes) == (DATA.class_names, (3,))


def test_given_arguments_win_over_the_datamodule() -> None:
    module = RareSegModule(
        net=_net_factory(in_channels=2),
        loss=partial(ARBTLoss, class_frequencies=[0.25, 0.25, 0.25, 0.25]),
        optimizer="adamw",
        rare_classes=[1, 3],
        class_names=["a", "b", "c", "d"],
        band_mean=[0.0, 0.0],
    )
    _configured(module)
    assert module.rare_classes == (1, 3) and module.net.rare_classes == (1, 3)
    assert module.criterion.class_frequencies == pytest.approx([0.25] * 4)  # the block's own value
    assert module.hparams.class_frequencies == DATA.class_frequencies  # recorded for the record, not used
    assert module.hparams.class_names == ["a", "b", "c", "d"] and module.hparams.band_mean == [0.0, 0.0]
    assert module.hparams.band_std == DATA.band_std


def test_a_task_given_num_classes_is_built_at_once_and_reloads_its_net() -> None:
    module = RareSegModule(num_classes=3, rare_classes=(2,), optimizer="adamw")
    assert isinstance(module.net, SpatialAwareSegFormer) and module.net.in_channels == 3
    assert isinstance(module.criterion, CrossEntropyLoss)
    module.configure_model()  # a second build is a no-op
    assert module.hparams.in_channels == 3


def test_without_classes_or_datamodule_the_error_names_the_fix() -> None:
    module = RareSegModule(net=_net_factory(), optimizer="adamw")
    with pytest.raises(ValueError, match="num_classes is not given and the trainer has no datamodule"):
        _configured(module, datamodule=None)


def test_metric_callbacks_are_added_only_when_the_trainer_has_none() -> None:
    module = RareSegModule(num_classes=3, rare_classes=(2,), optimizer="adamw")
    module._trainer = SimpleNamespace(callbacks=[])
    assert [type(c) for c in module.configure_callbacks()] == [RareClassMetrics, ThresholdCalibrator]
    module._trainer = SimpleNamespace(callbacks=[RareClassMetrics(log_images=0)])
    assert [type(c) for c in module.configure_callbacks()] == [ThresholdCalibrator]


def test_callbacks_learn_classes_from_the_module_before_the_datamodule() -> None:
    trainer = SimpleNamespace(datamodule=DATA, sanity_checking=False)
    module = SimpleNamespace(class_names=["w", "x", "y", "z"], rare_classes=None, device=torch.device("cpu"))
    metrics = RareClassMetrics(log_images=0, majority_class="w")
    metrics.on_validation_epoch_start(trainer, module)
    assert metrics.class_names == ["w", "x", "y", "z"]  # the module's names
    assert metrics.rare_classes == [3] and metrics.majority_class == 0  # the datamodule's rare classes
    assert metrics.palette[1].tolist() == [0, 0, 255]
    calibrator = ThresholdCalibrator(num_bins=10)
    calibrator.on_validation_epoch_start(trainer, module)
    assert calibrator.rare_classes == [3] and calibrator._name(3) == "z"
    given = ThresholdCalibrator(rare_classes=["marsh"], class_names=DATA.class_names)
    given.on_validation_epoch_start(trainer, module)
    assert given.rare_classes == [3] and given.class_names == DATA.class_names


def test_a_callback_with_nothing_to_learn_from_says_so() -> None:
    trainer = SimpleNamespace(datamodule=None)
    module = SimpleNamespace(device=torch.device("cpu"))
    with pytest.raises(ValueError, match="RareClassMetrics: class_names not given, and neither"):
        RareClassMetrics().on_validation_epoch_start(trainer, module)
    with pytest.raises(ValueError, match="ThresholdCalibrator: rare_classes not given"):
        ThresholdCalibrator().on_validation_epoch_start(trainer, module)
