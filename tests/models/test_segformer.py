"""Tests for rareseg.models.segformer."""

from __future__ import annotations

from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from rareseg.models import SegmentationOutput, SpatialAwareSegFormer

SEGFORMER_B0_PARAMETERS = 3.8e6  # Xie et al. 2021, Table 1: MiT-B0 3.4 M + all-MLP decoder 0.4 M


def _small_model(**overrides: object) -> SpatialAwareSegFormer:
    torch.manual_seed(0)
    arguments: dict[str, object] = {"num_classes": 5, "rare_classes": (3, 4), "decoder_channels": 16}
    arguments.update(overrides)
    return SpatialAwareSegFormer(**arguments)


def _parameter_count(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.mark.parametrize("in_channels", [3, 4])
@pytest.mark.parametrize(("height", "width"), [(64, 64), (65, 97), (33, 40)])
def test_output_shapes(in_channels: int, height: int, width: int) -> None:
    model = _small_model(in_channels=in_channels).eval()
    with torch.no_grad():
        output = model(torch.randn(2, in_channels, height, width))
    assert isinstance(output, SegmentationOutput)
    assert output.logits.shape == (2, 5, height, width)
    assert output.saliency_logits is not None
    assert output.saliency_logits.shape == (2, 2, height, width)
    assert (model.num_classes, model.rare_classes, model.in_channels) == (5, (3, 4), in_channels)


def test_odd_input_equals_crop_of_zero_padded_input() -> None:
    model = _small_model().eval()
    image = torch.randn(1, 3, 33, 40, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        odd = model(image)
        padded = model(F.pad(image, (0, 64 - 40, 0, 64 - 33)))
    torch.testing.assert_close(odd.logits, padded.logits[..., :33, :40])
    torch.testing.assert_close(odd.saliency_logits, padded.saliency_logits[..., :33, :40])


def _fusion_float64(fuse: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
    """ReLU(BN(Conv1x1(features))) in float64 with the fusion's eval-mode parameters."""
    norm = fuse.norm
    return F.batch_norm(
        F.conv2d(features, fuse.conv.weight.detach().double()),
        norm.running_mean.double(),
        norm.running_var.double(),
        norm.weight.detach().double(),
        norm.bias.detach().double(),
        eps=norm.eps,
    ).clamp_min(0)


def test_gate_multiplies_decoder_map_by_one_plus_max_saliency() -> None:
    model = _small_model().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics so the check covers the whole fusion
        model.fuse.norm.running_mean.uniform_(-0.5, 0.5)
        model.fuse.norm.running_var.uniform_(0.5, 2.0)
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        model.decoder.register_forward_hook(lambda _m, _i, out: captured.update(features=out)),
        model.fuse.register_forward_hook(lambda _m, _i, out: captured.update(fused=out)),
    ]
    with torch.no_grad():
        output = model(torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(4)))
    for hook in hooks:
        hook.remove()

    # literal formula in float64: F' = F * (1 + max_r sigmoid(Conv1x1(F))_r), then ReLU(BN(Conv1x1(F')))
    features = captured["features"].double()
    assert features.shape == (2, 4 * 16, 16, 24)
    saliency_conv = model.saliency_block.saliency_conv
    saliency_logits = F.conv2d(features, saliency_conv.weight.detach().double(), saliency_conv.bias.detach().double())
    gated = features * (1 + torch.sigmoid(saliency_logits).amax(dim=1, keepdim=True))
    fused = captured["fused"].double()
    torch.testing.assert_close(fused, _fusion_float64(model.fuse, gated), rtol=1e-5, atol=1e-5)
    assert float((fused - _fusion_float64(model.fuse, features)).abs().max()) > 1e-2  # the gate matters
    upsampled = F.interpolate(saliency_logits, size=(64, 96), mode="bilinear", align_corners=False)
    torch.testing.assert_close(output.saliency_logits.double(), upsampled, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("overrides", [{"saliency": False}, {"rare_classes": ()}])
def test_without_saliency_there_are_no_saliency_parameters(overrides: dict[str, object]) -> None:
    plain = _small_model(**overrides)
    with_saliency = _small_model()
    assert not plain.has_saliency
    assert not any("saliency" in name for name, _ in plain.named_parameters())
    # the saliency block is exactly one 1x1 conv 4C -> R with bias
    assert _parameter_count(with_saliency) - _parameter_count(plain) == 4 * 16 * 2 + 2
    output = plain.eval()(torch.randn(1, 3, 32, 32))
    assert output.saliency_logits is None
    assert output.logits.shape == (1, 5, 32, 32)


@pytest.mark.parametrize("num_classes", [19, 150])
def test_mit_b0_parameter_count_matches_published_segformer_b0(num_classes: int) -> None:
    model = SpatialAwareSegFormer(num_classes=num_classes, encoder_name="mit_b0", decoder_channels=256, saliency=False)
    count = _parameter_count(model)
    assert abs(count - SEGFORMER_B0_PARAMETERS) / SEGFORMER_B0_PARAMETERS < 0.05
    reference = smp.Segformer("mit_b0", encoder_weights=None, classes=num_classes, decoder_segmentation_channels=256)
    assert count == _parameter_count(reference)  # same wiring as smp's SegFormer


def test_local_weights_file_round_trips(tmp_path: Path) -> None:
    trained = _small_model(in_channels=4)
    trained.train()
    trained(torch.randn(2, 4, 32, 32))  # move the BatchNorm running statistics away from their init
    path = tmp_path / "network.pt"
    torch.save(trained.state_dict(), path)

    torch.manual_seed(123)
    fresh = SpatialAwareSegFormer(
        num_classes=5, rare_classes=(3, 4), in_channels=4, decoder_channels=16, encoder_weights=str(path)
    )
    assert fresh.weights_report is not None
    assert fresh.weights_report.missing_keys == ()
    assert fresh.weights_report.unexpected_keys == ()
    image = torch.randn(1, 4, 40, 40)
    with torch.no_grad():
        expected = trained.eval()(image)
        loaded = fresh.eval()(image)
    torch.testing.assert_close(loaded.logits, expected.logits, rtol=0, atol=0)
    torch.testing.assert_close(loaded.saliency_logits, expected.saliency_logits, rtol=0, atol=0)


def _encoder_gradient_norm(model: SpatialAwareSegFormer) -> float:
    return sum(float(p.grad.abs().sum()) for p in model.encoder.parameters() if p.grad is not None)


def test_gradients_reach_encoder_through_both_heads() -> None:
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))

    model = _small_model()
    model(image).logits.square().mean().backward()
    assert _encoder_gradient_norm(model) > 0
    assert model.saliency_block.saliency_conv.weight.grad is not None

    model = _small_model()
    model(image).saliency_logits.square().mean().backward()
    assert _encoder_gradient_norm(model) > 0
    assert model.classifier.weight.grad is None  # the saliency loss alone does not reach the classifier


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_classes": 1}, "num_classes"),
        ({"rare_classes": (5,)}, "rare_classes"),
        ({"rare_classes": (3, 3)}, "distinct"),
        ({"in_channels": 0}, "in_channels"),
        ({"encoder_name": "mit_b9"}, "unknown encoder_name"),
        ({"encoder_name": "tu-no_such_net"}, "unknown encoder_name"),
        ({"encoder_depth": 2}, "encoder_depth"),
        ({"decoder_channels": 0}, "decoder_channels"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments_raise_at_construction(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _small_model(**overrides)


def test_wrong_band_count_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"expects input \(B, 3, H, W\), got \(1, 4, 32, 32\)"):
        _small_model()(torch.randn(1, 4, 32, 32))


@pytest.mark.parametrize("encoder_name", ["resnet18", "tu-resnet18"])
def test_other_smp_encoders_give_a_four_stage_decoder_map(encoder_name: str) -> None:
    model = _small_model(encoder_name=encoder_name).eval()
    with torch.no_grad():
        output = model(torch.randn(1, 3, 33, 40))
    assert model.decoder.out_channels == 4 * 16
    assert output.logits.shape == (1, 5, 33, 40)
    assert output.saliency_logits.shape == (1, 2, 33, 40)
