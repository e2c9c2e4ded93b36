"""Tests for rareseg.inference.selection: the rare class list shared by ``rareseg infer`` and the web API."""

from __future__ import annotations

from pathlib import Path

import pytest

from rareseg.cli import main
from rareseg.inference.selection import split_class_list


@pytest.mark.parametrize(
    ("text", "names"),
    [("water", ["water"]), (" water , wetland ", ["water", "wetland"]), ("wetland,,4,", ["wetland", "4"])],
)
def test_class_lists_are_split_and_stripped(text: str, names: list[str]) -> None:
    assert split_class_list(text, "--rare-classes") == names


@pytest.mark.parametrize("text", ["", ",", " , ,", "   "])
def test_an_empty_class_list_is_an_error_naming_the_option(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        split_class_list(text, "--rare-classes")
    assert str(caught.value) == f"--rare-classes: give at least one rare class name, got {text!r}"


def test_infer_rejects_an_empty_rare_class_list_before_loading_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["infer", "--checkpoint", "none.ckpt", "--input", "none.tif", "--out", str(out), "--rare-classes", ","])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == "rareseg infer: error: --rare-classes: give at least one rare class name, got ','"
    assert not out.exists()
