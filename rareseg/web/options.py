"""Rendering options of a job (rare classes, thresholds, top-k) parsed from form fields or a JSON object."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rareseg.inference import Predictor
from rareseg.inference.selection import split_class_list

#: Fields of the rendering options: form fields, or keys of a JSON object.
FIELDS = ("rare_classes", "threshold", "topk")
#: What each field may be in a JSON object, for messages.
JSON_KINDS = {
    "rare_classes": "a string or an array of class names",
    "threshold": "a number, a string or an object of {class name: number}",
    "topk": "a number or a string",
}
#: Names of JSON value types, for messages.
JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}

#: Threshold sources, in the order they are joined in ``threshold_source`` (``"override+checkpoint"``).
SOURCES = ("override", "checkpoint", "default")


@dataclass(frozen=True)
class RenderOptions:
    """What the outputs of a finished job show.

    Attributes:
        rare_classes: selected rare class ids, in the checkpoint's order.
        thresholds: probability threshold in [0, 1] of every selected class, same order.
        sources: where each threshold came from: ``override`` (the user), ``checkpoint``
            (calibrated in training) or ``default`` (0.5).
        topk: percentage of valid pixels in the top-k salient region, in (0, 100].
    """

    rare_classes: tuple[int, ...]
    thresholds: tuple[float, ...]
    sources: tuple[str, ...]
    topk: float

    @property
    def threshold_source(self) -> str:
        """The sources of the thresholds joined with ``+`` (the vocabulary of ``summary.json``)."""
        return "+".join(source for source in SOURCES if source in self.sources)

    def describe(self, class_names: Sequence[str]) -> dict[str, Any]:
        """JSON form: class names, ``{name: threshold}``, threshold source and top-k."""
        return {
            "rare_classes": [class_names[c] for c in self.rare_classes],
            "thresholds": {class_names[c]: t for c, t in zip(self.rare_classes, self.thresholds)},
            "threshold_source": self.threshold_source,
            "topk": self.topk,
        }


def _number(text: str, name: str, low: float, high: float, low_inclusive: bool) -> float:
    """Parse a finite number in ``[low, high]`` (``(low, high]`` unless ``low_inclusive``)."""
    interval = f"{'[' if low_inclusive else '('}{low:g}, {high:g}]"
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number in {interval}, got {text!r}") from None
    above_low = value >= low if low_inclusive else value > low
    if not (math.isfinite(value) and above_low and value <= high):
        raise ValueError(f"{name} must be a number in {interval}, got {text!r}")
    return value


def _json_type(value: Any) -> str:
    return JSON_TYPES.get(type(value), "a number")


def _json_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_field_names(names: Sequence[str]) -> None:
    """Reject any name that is not one of :data:`FIELDS` (a one-line ValueError naming it)."""
    for name in names:
        if name not in FIELDS:
            raise ValueError(f"unknown field {name!r} (known fields: {', '.join(FIELDS)})")


def fields_from_json(body: Any) -> dict[str, str]:
    """The option fields of a decoded JSON request body, as the strings a form would carry.

    ``{"rare_classes": ["water"], "threshold": 0.4, "topk": 5}`` is the form
    ``rare_classes=water&threshold=0.4&topk=5``; ``{"threshold": {"water": 0.4}}`` is ``threshold=water:0.4``;
    strings are taken as in a form. The values are then checked by :func:`parse_options`.

    Raises:
        ValueError: one line naming the field: not an object, unknown field, or a value of the wrong type.
    """
    if not isinstance(body, dict):
        raise ValueError(
            f"request body: expected a JSON object with the fields {', '.join(FIELDS)}, got {_json_type(body)}"
        )
    check_field_names(list(body))
    fields: dict[str, str] = {}
    for name, value in body.items():
        if isinstance(value, str):
            fields[name] = value
        elif _json_number(value):
            fields[name] = str(value)
        elif name == "rare_classes" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            fields[name] = ",".join(value)
        elif name == "threshold" and isinstance(value, dict) and all(_json_number(v) for v in value.values()):
            fields[name] = ",".join(f"{key}:{number}" for key, number in value.items())
        else:
            raise ValueError(f"{name} must be {JSON_KINDS[name]}, got {_json_type(value)}")
    return fields


def _given(fields: Mapping[str, str], name: str) -> str | None:
    value = fields.get(name)
    return None if value is None or not value.strip() else value.strip()


def _selection(fields: Mapping[str, str], predictor: Predictor, current: RenderOptions | None) -> tuple[int, ...]:
    text = fields.get("rare_classes")
    if text is None:
        return current.rare_classes if current is not None else predictor.select_rare_classes(None)
    chosen = set(predictor.select_rare_classes(split_class_list(text, "rare_classes")))
    return tuple(c for c in predictor.rare_classes if c in chosen)


def _user_thresholds(text: str, predictor: Predictor, selected: Sequence[int]) -> dict[int, float]:
    """``"0.4"`` for every selected class, or ``"water:0.4,wetland:0.3"`` per class."""
    if ":" not in text:
        value = _number(text, "threshold", 0.0, 1.0, True)
        return dict.fromkeys(selected, value)
    by_name = {predictor.class_names[c]: c for c in predictor.rare_classes}
    chosen: dict[int, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = (piece.strip() for piece in item.partition(":"))
        if name not in by_name:
            raise ValueError(
                f"threshold for unknown rare class {name!r} (the checkpoint's rare classes: {', '.join(by_name)})"
            )
        if by_name[name] not in selected:
            raise ValueError(f"threshold given for {name}, which is not a selected rare class")
        chosen[by_name[name]] = _number(value, f"threshold of {name}", 0.0, 1.0, True)
    return chosen


def parse_options(
    fields: Mapping[str, str], predictor: Predictor, default_topk: float, current: RenderOptions | None = None
) -> RenderOptions:
    """Rendering options from form fields (:data:`FIELDS`); a missing field keeps ``current`` (or the default).

    Fields (all optional strings; :func:`fields_from_json` makes them from a JSON object):

    - ``rare_classes``: comma-separated names (or ids) of the checkpoint's rare classes.
      Default: the current selection, else all of them.
    - ``threshold``: one probability in [0, 1] for every selected class (``"0.4"``) or per class
      (``"water:0.4,wetland:0.3"``). A selected class without one keeps its current threshold,
      else the checkpoint's calibrated one, else 0.5.
    - ``topk``: top-k saliency percentage in (0, 100]. Default: the current one, else ``default_topk``.

    Args:
        fields: the form fields.
        predictor: the loaded model (class names, rare classes, calibrated thresholds).
        default_topk: top-k when neither the fields nor ``current`` give one.
        current: the options a finished job was last rendered with.

    Returns:
        The options.

    Raises:
        ValueError: a one-line reason (unknown class, number out of range, empty selection).
    """
    selected = _selection(fields, predictor, current)
    text = _given(fields, "threshold")
    given = {} if text is None else _user_thresholds(text, predictor, selected)
    kept = (
        {}
        if current is None
        else {c: (t, s) for c, t, s in zip(current.rare_classes, current.thresholds, current.sources)}
    )
    thresholds, sources = [], []
    for class_id in selected:
        if class_id in given:
            value, source = given[class_id], "override"
        elif class_id in kept:
            value, source = kept[class_id]
        else:
            values, source = predictor.thresholds_for([class_id])
            value = values[0]
        thresholds.append(value)
        sources.append(source)
    topk_text = _given(fields, "topk")
    topk = (
        _number(topk_text, "topk", 0.0, 100.0, False)
        if topk_text is not None
        else current.topk
        if current is not None
        else default_topk
    )
    return RenderOptions(selected, tuple(thresholds), tuple(sources), topk)
