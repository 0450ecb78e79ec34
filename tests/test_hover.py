"""Hover text: block-character thumbnails of images, feature lists of table rows."""

import numpy as np

from ui import hover


def test_thumbnail_draws_each_pixel_as_two_characters():
    image = np.array([[[0.0, 1.0], [0.5, 0.0]]])  # (1, 2, 2)
    blank, full, mid = hover.SHADES[0], hover.SHADES[-1], hover.SHADES[2]
    assert hover.thumbnail(image) == f"{blank * 2}{full * 2}<br>{mid * 2}{blank * 2}"


def test_large_images_are_averaged_down():
    image = np.zeros((3, 28, 28))
    image[:, :14] = 1.0  # top half white
    lines = hover.thumbnail(image).split("<br>")
    assert len(lines) == 14 and lines[0] == hover.SHADES[-1] * 28 and lines[-1] == hover.SHADES[0] * 28


def test_table_rows_show_their_first_features():
    assert hover.features(np.array([0.123, -1.0])) == "x0 = 0.12<br>x1 = -1.00"
    assert hover.features(np.arange(10.0)).endswith("... (10 features)")
    assert len(hover.hover_texts(np.zeros((3, 2)))) == 3
