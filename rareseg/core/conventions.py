"""Values all of rareseg agrees on: the ignore/nodata value, the thresholds checkpoint key, the default palette."""

from __future__ import annotations

from collections.abc import Sequence

#: uint8 value of a pixel without a class: ignored in training masks and metrics, nodata in every uint8 output raster.
IGNORE_INDEX = 255

#: Top-level checkpoint key where ``ThresholdCalibrator`` stores the calibrated ``{class_id: threshold}``.
THRESHOLDS_KEY = "rareseg_thresholds"

#: Decision rules of the calibrated rare-class thresholds ``t_r``. ``override`` (the seed's): the argmax,
#: except that a rare class reaching its threshold takes the pixel (thresholds can only add rare pixels).
#: ``calibrated``: a rare class takes the pixel exactly when it reaches its threshold (the rule the
#: thresholds were calibrated for), else the most probable other class.
DECISION_RULES = ("override", "calibrated")

#: RGB colours (0-255) of classes ``0, 1, 2, ...`` when a data set gives none; cycled for more classes.
DEFAULT_PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 194, 41),  # yellow
    (160, 82, 45),  # brown
    (27, 120, 55),  # dark green
    (215, 48, 31),  # red
    (33, 102, 172),  # blue
    (53, 181, 168),  # teal
    (152, 78, 163),  # purple
    (255, 127, 0),  # orange
    (247, 129, 191),  # pink
    (153, 153, 153),  # grey
    (166, 217, 106),  # light green
    (128, 177, 211),  # light blue
)


def resolve_class_colors(count: int, given: Sequence[Sequence[int]] | None = None) -> tuple[tuple[int, int, int], ...]:
    """RGB colour of each of ``count`` classes: ``given`` when set, else :data:`DEFAULT_PALETTE` cycled.

    Args:
        count: number of classes ``K``.
        given: one RGB triple (0-255) per class, or None.

    Returns:
        ``K`` RGB triples of ints.

    Raises:
        ValueError: ``given`` does not hold ``K`` triples of values in 0-255.
    """
    if given is None:
        return tuple(DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)] for i in range(count))
    if len(given) != count:
        raise ValueError(f"class_colors has {len(given)} colours for {count} classes")
    colors = tuple(tuple(int(v) for v in color) for color in given)
    if any(len(color) != 3 or min(color) < 0 or max(color) > 255 for color in colors):
        raise ValueError("class_colors must be RGB triples with values 0-255")
    return colors
