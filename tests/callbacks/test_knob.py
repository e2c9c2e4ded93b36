"""Tests for rareseg.callbacks.knob: path resolution, bounded turns, YAML construction."""

from types import SimpleNamespace

import pytest
import torch
from jsonargparse import ArgumentParser
from torch import nn

from rareseg.callbacks import Babysitter, Knob, KnobPathError
from rareseg.callbacks.knob import clamp_value, turn_value


class Criterion(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lam = 0.5
        self.register_buffer("kappa", torch.tensor(2.0))


class Module(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.criterion = Criterion()
        self.linear = nn.Linear(2, 2)


def _trainer(optimizers=(), datamodule=None) -> SimpleNamespace:
    return SimpleNamespace(optimizers=list(optimizers), datamodule=datamodule)


def test_turn_value_multiplies_or_adds_then_clamps() -> None:
    assert turn_value(0.3, 2.0, None, None, None) == pytest.approx(0.6)
    assert turn_value(0.3, 2.0, None, None, 0.5) == 0.5
    assert turn_value(0.3, None, -0.2, 0.2, None) == 0.2
    assert turn_value(0.3, None, 0.15, None, None) == pytest.approx(0.45)
    assert clamp_value(7.0, 1.0, 5.0) == 5.0
    assert clamp_value(-1.0, 0.0, None) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "criterion.lam"}, "exactly one of factor or step"),
        ({"path": "criterion.lam", "factor": 2.0, "step": 0.1}, "exactly one of factor or step"),
        ({"path": "criterion.lam", "factor": 1.0}, "factor must be"),
        ({"path": "criterion.lam", "factor": -2.0}, "factor must be"),
        ({"path": "criterion.lam", "step": 0.0}, "step must be"),
        (
            {"path": "criterion.lam", "factor": 2.0, "minimum": 1.0, "maximum": 0.5},
            "minimum \\(1.0\\) is above maximum",
        ),
        ({"path": "criterion..lam", "factor": 2.0}, "dotted attribute names"),
        ({"path": "optimizer", "factor": 2.0}, "needs a key"),
        ({"path": "optimizer.lr.x", "factor": 2.0}, "one param-group key"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Knob(**kwargs)


def test_module_attribute_and_tensor_buffer() -> None:
    module = Module()
    lam = Knob("criterion.lam", factor=2.0, maximum=1.5)
    assert lam.scope == "module"
    assert lam.turn(_trainer(), module) == (0.5, 1.0)
    assert lam.turn(_trainer(), module) == (1.0, 1.5)
    assert lam.turn(_trainer(), module) == (1.5, 1.5)
    assert module.criterion.lam == 1.5

    kappa = Knob("criterion.kappa", step=-0.75, minimum=0.0)
    buffer = module.criterion.kappa
    assert kappa.turn(_trainer(), module) == (2.0, 1.25)
    assert module.criterion.kappa is buffer
    assert buffer.item() == 1.25
    kappa.set(_trainer(), module, -3.0)
    assert buffer.item() == 0.0


def test_optimizer_knob_turns_every_group_and_keeps_ratios() -> None:
    module = Module()
    groups = [{"params": [module.linear.weight], "lr": 0.1}, {"params": [module.linear.bias], "lr": 0.01}]
    first = torch.optim.SGD(groups)
    second = torch.optim.SGD([module.criterion.kappa], lr=0.2)
    trainer = _trainer([first, second])
    knob = Knob("optimizer.lr", factor=0.5, minimum=0.004)
    assert knob.scope == "optimizer"
    assert knob.read(trainer, module) == [0.1, 0.01, 0.2]
    assert knob.turn(trainer, module) == (0.1, 0.05)
    assert knob.read(trainer, module) == pytest.approx([0.05, 0.005, 0.1])
    knob.turn(trainer, module)
    assert knob.read(trainer, module) == pytest.approx([0.025, 0.004, 0.05])
    knob.write(trainer, module, [0.3, 0.03, 0.6])
    assert [g["lr"] for g in first.param_groups + second.param_groups] == [0.3, 0.03, 0.6]
    knob.set(trainer, module, 0.001)
    assert knob.read(trainer, module) == [0.004, 0.004, 0.004]


def test_datamodule_knob() -> None:
    datamodule = SimpleNamespace(sampler=SimpleNamespace(salient_fraction=0.5))
    knob = Knob("datamodule.sampler.salient_fraction", step=0.25, maximum=0.9)
    assert knob.scope == "datamodule"
    assert knob.turn(_trainer(datamodule=datamodule), Module()) == (0.5, 0.75)
    assert knob.turn(_trainer(datamodule=datamodule), Module()) == (0.75, 0.9)
    assert datamodule.sampler.salient_fraction == 0.9


@pytest.mark.parametrize(
    ("path", "trainer", "reason"),
    [
        ("criterion.lamb", _trainer(), "Criterion has no attribute 'lamb'"),
        ("critic.lam", _trainer(), "Module has no attribute 'critic'"),
        ("criterion", _trainer(), "'criterion' holds Criterion, not a number"),
        (
            "optimizer.rho0",
            _trainer([torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)]),
            "SGD param group 0 has no key 'rho0'",
        ),
        ("optimizer.lr", _trainer(), "the Trainer has no optimizers"),
        ("datamodule.sampler.salient_fraction", _trainer(), "the Trainer has no datamodule"),
    ],
)
def test_bad_paths_name_the_path_and_the_missing_piece(path: str, trainer: SimpleNamespace, reason: str) -> None:
    with pytest.raises(KnobPathError) as error:
        Knob(path, factor=2.0).validate(trainer, Module())
    assert error.value.path == path
    assert error.value.reason.startswith(reason)
    assert str(error.value).startswith(f"Knob '{path}': ")


def test_write_rejects_wrong_number_of_values() -> None:
    with pytest.raises(KnobPathError, match="got 2 values for 1 slots"):
        Knob("criterion.lam", factor=2.0).write(_trainer(), Module(), [1.0, 2.0])


def test_babysitter_with_knobs_builds_from_yaml() -> None:
    parser = ArgumentParser()
    parser.add_class_arguments(Babysitter, "babysitter")
    config = parser.parse_string(
        """
babysitter:
  monitor: val/rare_recall
  patience: 3
  knobs:
    - class_path: rareseg.callbacks.Knob
      init_args: {path: criterion.lam, factor: 2.0, maximum: 1.0}
    - class_path: rareseg.callbacks.Knob
      init_args: {path: optimizer.lr, factor: 0.5, minimum: 1.0e-5}
"""
    )
    babysitter = parser.instantiate(config).babysitter
    assert isinstance(babysitter, Babysitter)
    assert babysitter.patience == 3
    assert [(k.path, k.factor, k.step, k.minimum, k.maximum) for k in babysitter.knobs] == [
        ("criterion.lam", 2.0, None, None, 1.0),
        ("optimizer.lr", 0.5, None, 1e-5, None),
    ]
