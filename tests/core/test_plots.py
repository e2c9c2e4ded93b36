"""Tests for rareseg.core.plots: the display stretch, class colouring and the shared confusion figure."""

import numpy as np

from rareseg.core.plots import colorize, confusion_figure, figure_pixels, stretch_to_rgb


def test_stretch_to_rgb_uses_band_percentiles() -> None:
    image = np.stack([np.arange(100.0).reshape(10, 10), np.full((10, 10), 3.0), -np.arange(100.0).reshape(10, 10)])
    rgb = stretch_to_rgb(image)
    assert rgb.shape == (10, 10, 3)
    lo, hi = np.percentile(np.arange(100.0), [2, 98])
    np.testing.assert_allclose(rgb[..., 0], np.clip((image[0] - lo) / (hi - lo), 0, 1))
    assert (rgb[..., 1] == 0).all()
    np.testing.assert_allclose(rgb[..., 2], rgb[..., 0][::-1, ::-1])
    grey = stretch_to_rgb(image[:1])
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])


def test_colorize() -> None:
    palette = np.array([[10, 20, 30], [40, 50, 60]], dtype=np.uint8)
    out = colorize(np.array([[0, 1], [255, 1]]), palette)
    np.testing.assert_array_equal(out, [[[10, 20, 30], [40, 50, 60]], [[0, 0, 0], [40, 50, 60]]])


def test_confusion_figure_annotates_the_fraction_of_each_truth_row() -> None:
    figure = confusion_figure(np.array([[3, 1], [0, 0]]), ["land", "water*"])
    texts = sorted(text.get_text() for text in figure.axes[0].texts)
    assert texts == ["0.00", "0.00", "0.25", "0.75"]  # an empty truth row shows zeros
    assert [label.get_text() for label in figure.axes[0].get_xticklabels()] == ["land", "water*"]
    pixels = figure_pixels(figure)
    assert pixels.dtype == np.uint8 and pixels.shape == (270, 370, 3)  # (1.5 + 0.6 K) in high, 1 in more wide, 100 dpi
