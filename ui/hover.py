"""What a point shows on hover: a text thumbnail of its image, or its first feature values.

Plotly hover labels cannot hold images, so an image becomes a small block-character picture
(two characters per pixel, shown in a monospace font); a table row shows its features.
"""

from __future__ import annotations

import numpy as np

SHADES = "\u00a0░▒▓█"  # light to dark; a no-break space so the label keeps blank pixels
MAX_SIDE = 14  # larger images are averaged down to at most this many pixels a side
MAX_FEATURES = 6


def thumbnail(image: np.ndarray) -> str:
    """(C, H, W) image in [0, 1] -> lines of block characters joined by <br>."""
    grey = np.asarray(image, dtype=np.float32).mean(axis=0)  # (H, W)
    factor = int(np.ceil(max(grey.shape) / MAX_SIDE))
    if factor > 1:
        h, w = (s // factor * factor for s in grey.shape)
        grey = grey[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    levels = np.clip((grey * len(SHADES)).astype(int), 0, len(SHADES) - 1)
    return "<br>".join("".join(SHADES[v] * 2 for v in row) for row in levels)


def features(row: np.ndarray) -> str:
    """(F,) feature row -> "x0 = 0.12<br>x1 = -1.30 ..." (the first MAX_FEATURES)."""
    shown = [f"x{i} = {v:.2f}" for i, v in enumerate(np.asarray(row)[:MAX_FEATURES])]
    if len(row) > MAX_FEATURES:
        shown.append(f"... ({len(row)} features)")
    return "<br>".join(shown)


def hover_texts(x: np.ndarray) -> list[str]:
    """Hover text for each item of x: (N, C, H, W) images or (N, F) table rows."""
    describe = thumbnail if x.ndim == 4 else features
    return [describe(item) for item in x]
