"""Tests for rareseg.models.pretrained: pretrained encoders through smp (the download is mocked), offline errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import save_file

from rareseg.models import SpatialAwareSegFormer, skip_initial_weights
from rareseg.models.pretrained import main as save_main

MIT_B0_IMAGENET = smp.encoders.encoders["mit_b0"]["pretrained_settings"]["imagenet"]


@pytest.fixture()
def published(tmp_path: Path) -> dict[str, torch.Tensor]:
    """The "published" mit_b0 weights: a seeded random encoder's state dict."""
    torch.manual_seed(7)
    return {name: value.clone() for name, value in smp.encoders.get_encoder("mit_b0").state_dict().items()}


@pytest.fixture()
def hub(tmp_path: Path, published: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Replace smp's Hugging Face download with local files; record every request."""
    save_file(published, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({}))
    requests: list[tuple] = []

    def download(repo_id: str, filename: str, revision: str | None = None) -> str:
        requests.append((repo_id, filename, revision))
        return str(tmp_path / filename)

    monkeypatch.setattr(smp.encoders, "hf_hub_download", download)
    return requests


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """smp's download fails as huggingface_hub does without network and without a cached copy."""

    def download(repo_id: str, filename: str, revision: str | None = None) -> str:
        raise LocalEntryNotFoundError(
            "An error happened while trying to locate the file on the Hub and we cannot find the requested files"
            " in the local cache. Please check your connection and try again."
        )

    monkeypatch.setattr(smp.encoders, "hf_hub_download", download)


def _assert_encoder_holds(network: SpatialAwareSegFormer, weights: dict[str, torch.Tensor]) -> None:
    state = network.encoder.state_dict()
    assert state.keys() == weights.keys()
    for name, value in weights.items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=0)


def test_imagenet_name_loads_the_published_weights_through_smp(
    hub: list[tuple], published: dict[str, torch.Tensor]
) -> None:
    network = SpatialAwareSegFormer(num_classes=4, rare_classes=(3,), encoder_weights="imagenet")
    assert hub == [
        (MIT_B0_IMAGENET["repo_id"], "config.json", MIT_B0_IMAGENET["revision"]),
        (MIT_B0_IMAGENET["repo_id"], "model.safetensors", MIT_B0_IMAGENET["revision"]),
    ]
    _assert_encoder_holds(network, published)
    assert network.weights_report is None
    assert network(torch.zeros(1, 3, 64, 64)).logits.shape == (1, 4, 64, 64)


def test_offline_download_fails_in_one_line_naming_the_fix(offline: None) -> None:
    with pytest.raises(ValueError) as caught:
        SpatialAwareSegFormer(num_classes=4, encoder_weights="imagenet")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("encoder_weights='imagenet': cannot fetch the pretrained mit_b0 weights")
    assert "LocalEntryNotFoundError" in message and "offline" in message
    assert "`python -m rareseg.models.pretrained mit_b0 imagenet mit_b0-imagenet.pth`" in message


def test_saved_weights_load_on_an_air_gapped_machine(
    hub: list[tuple], published: dict[str, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "weights" / "mit_b0-imagenet.pth"
    assert save_main(["mit_b0", "imagenet", str(out)]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary left behind
    # the air-gapped machine: any download attempt fails
    monkeypatch.setattr(smp.encoders, "hf_hub_download", lambda *args, **kwargs: pytest.fail("downloaded"))
    network = SpatialAwareSegFormer(num_classes=4, encoder_weights=str(out))
    _assert_encoder_holds(network, published)
    assert network.weights_report is not None and network.weights_report.missing_keys == ()


def test_save_command_reports_offline_in_one_line(offline: None, tmp_path: Path, capsys) -> None:
    assert save_main(["mit_b0", "imagenet", str(tmp_path / "w.pth")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: encoder_weights='imagenet': cannot fetch")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (
            "imagenet22k",
            r"'imagenet22k' is neither a local file nor pretrained weights of mit_b0 \(smp offers \['imagenet'\]\)",
        ),
        ("weights/encoder.pth", r"encoder_weights='weights/encoder.pth': no such file"),
        ("encoder.pt", r"encoder_weights='encoder.pt': no such file"),
    ],
)
def test_unknown_names_and_missing_files_are_refused_before_any_download(
    offline: None, weights: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SpatialAwareSegFormer(num_classes=4, encoder_weights=weights)


def test_checkpoint_loading_skips_the_initial_weights(offline: None) -> None:
    with skip_initial_weights():
        network = SpatialAwareSegFormer(num_classes=4, encoder_weights="imagenet")
        missing = SpatialAwareSegFormer(num_classes=4, encoder_weights="gone/encoder.pth")
    assert network.weights_report is None and missing.weights_report is None
    with pytest.raises(ValueError, match="cannot fetch"):
        SpatialAwareSegFormer(num_classes=4, encoder_weights="imagenet")
