"""Tests for rareseg.web.options: rendering options from form fields or a JSON object."""

from __future__ import annotations

import pytest

from rareseg.inference import Predictor
from rareseg.web import RenderOptions, parse_options
from rareseg.web.options import fields_from_json

WATER, WETLAND = 4, 5


def test_defaults_are_every_rare_class_with_calibrated_or_default_thresholds(predictor: Predictor) -> None:
    options = parse_options({}, predictor, default_topk=7.5)
    assert options == RenderOptions((WATER, WETLAND), (0.5, 0.3), ("default", "checkpoint"), 7.5)
    assert options.threshold_source == "checkpoint+default"
    assert options.describe(predictor.class_names) == {
        "rare_classes": ["water", "wetland"],
        "thresholds": {"water": 0.5, "wetland": 0.3},
        "threshold_source": "checkpoint+default",
        "topk": 7.5,
    }


def test_one_threshold_applies_to_every_selected_class(predictor: Predictor) -> None:
    options = parse_options({"threshold": " 0.25 ", "topk": "3"}, predictor, default_topk=10)
    assert (options.thresholds, options.threshold_source, options.topk) == ((0.25, 0.25), "override", 3.0)


def test_per_class_thresholds_and_selection_in_checkpoint_order(predictor: Predictor) -> None:
    options = parse_options({"rare_classes": "wetland, water", "threshold": "wetland:0.2"}, predictor, default_topk=10)
    assert options.rare_classes == (WATER, WETLAND)
    assert options.thresholds == (0.5, 0.2)
    assert options.sources == ("default", "override")
    assert options.threshold_source == "override+default"
    single = parse_options({"rare_classes": "wetland"}, predictor, default_topk=10)
    assert (single.rare_classes, single.thresholds) == ((WETLAND,), (0.3,))


def test_missing_fields_keep_the_current_options(predictor: Predictor) -> None:
    current = parse_options({"threshold": "water:0.7,wetland:0.1", "topk": "4"}, predictor, default_topk=10)
    changed = parse_options({"threshold": "wetland:0.6"}, predictor, default_topk=10, current=current)
    assert changed == RenderOptions((WATER, WETLAND), (0.7, 0.6), ("override", "override"), 4.0)
    reselected = parse_options({"rare_classes": "water", "topk": ""}, predictor, default_topk=10, current=current)
    assert reselected == RenderOptions((WATER,), (0.7,), ("override",), 4.0)
    # a class added back gets the checkpoint's threshold, not a stale one
    again = parse_options({"rare_classes": "water,wetland"}, predictor, default_topk=10, current=reselected)
    assert again.thresholds == (0.7, 0.3) and again.sources == ("override", "checkpoint")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rare_classes": " , "}, "rare_classes: give at least one rare class name, got ' , '"),
        ({"rare_classes": "forest"}, "unknown rare class 'forest'"),
        ({"threshold": "1.5"}, r"threshold must be a number in \[0, 1\], got '1.5'"),
        ({"threshold": "high"}, r"threshold must be a number in \[0, 1\], got 'high'"),
        ({"threshold": "nan"}, "threshold must be a number"),
        ({"threshold": "marsh:0.2"}, "threshold for unknown rare class 'marsh'"),
        (
            {"rare_classes": "water", "threshold": "wetland:0.2"},
            "threshold given for wetland, which is not a selected rare class",
        ),
        ({"threshold": "water:-0.1"}, r"threshold of water must be a number in \[0, 1\]"),
        ({"topk": "0"}, r"topk must be a number in \(0, 100\], got '0'"),
        ({"topk": "100.5"}, r"topk must be a number in \(0, 100\]"),
        ({"topk": "inf"}, r"topk must be a number in \(0, 100\]"),
    ],
)
def test_bad_fields_raise_one_line_errors(predictor: Predictor, fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_options(fields, predictor, default_topk=10)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {}),
        ({"threshold": 0.4, "topk": 5}, {"threshold": "0.4", "topk": "5"}),
        ({"threshold": "water:0.4"}, {"threshold": "water:0.4"}),
        ({"threshold": {"water": 0.4, "wetland": 1}}, {"threshold": "water:0.4,wetland:1"}),
        ({"rare_classes": ["water", "wetland"]}, {"rare_classes": "water,wetland"}),
        ({"rare_classes": "wetland"}, {"rare_classes": "wetland"}),
    ],
)
def test_json_fields_are_the_strings_a_form_carries(body: dict[str, object], fields: dict[str, str]) -> None:
    assert fields_from_json(body) == fields


def test_json_and_form_fields_give_the_same_options(predictor: Predictor) -> None:
    from_json = fields_from_json({"rare_classes": ["wetland"], "threshold": {"wetland": 0.25}, "topk": 7.5})
    from_form = {"rare_classes": "wetland", "threshold": "wetland:0.25", "topk": "7.5"}
    assert parse_options(from_json, predictor, 10) == parse_options(from_form, predictor, 10)
    assert parse_options(from_json, predictor, 10) == RenderOptions((WETLAND,), (0.25,), ("override",), 7.5)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "request body: expected a JSON object with the fields rare_classes, threshold, topk, got an array"),
        ("0.4", "request body: expected a JSON object with the fields rare_classes, threshold, topk, got a string"),
        ({"thresholds": 0.4}, r"unknown field 'thresholds' \(known fields: rare_classes, threshold, topk\)"),
        ({"threshold": False}, "threshold must be a number, a string or an object of {class name: number}, got a bool"),
        ({"threshold": [0.4]}, "threshold must be a number, a string or an object of {class name: number}, got an arr"),
        ({"threshold": {"water": None}}, "threshold must be a number, a string or an object .*, got an object"),
        ({"rare_classes": {"water": 1}}, "rare_classes must be a string or an array of class names, got an object"),
        ({"rare_classes": ["water", 5]}, "rare_classes must be a string or an array of class names, got an array"),
        ({"topk": None}, "topk must be a number or a string, got null"),
    ],
)
def test_bad_json_bodies_raise_one_line_errors_naming_the_field(body: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fields_from_json(body)


def test_an_empty_class_list_is_an_error_in_json_as_in_a_form(predictor: Predictor) -> None:
    with pytest.raises(ValueError, match="rare_classes: give at least one rare class name, got ''"):
        parse_options(fields_from_json({"rare_classes": []}), predictor, 10)
