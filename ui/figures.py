"""Plotly figure builders: pure functions of arrays, no Streamlit, tested on their own.

Live figures keep their axes still between refreshes: the loss x-axis is fixed to [0, steps],
the scatter's ranges only move when the points leave them or shrink far inside them
(`steady_range`), and every figure caps the points it sends.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from scipy.signal import lfilter

from contrast_core import sweep

MAX_POINTS = 2000  # scatter points sent per refresh
CURVE_POINTS = 1000  # points per loss curve: more than a chart's width in pixels
PALETTE = (  # Tableau 10, then a second set: classes keep their colour in every chart
    "#4C78A8", "#F58518", "#E45756", "#72B7B2", "#54A24B", "#EECA3B", "#B279A2", "#FF9DA6", "#9D755D", "#BAB0AC",
    "#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B", "#E377C2", "#7F7F7F", "#BCBD22", "#17BECF",
)  # fmt: skip
TERM_COLOURS = {"loss": "#4C78A8", "recon": "#F58518", "kl": "#54A24B", "contrastive": "#E45756",
                "discriminator": "#B279A2", "generator": "#72B7B2"}  # fmt: skip
PRIOR_COLOUR = "#7F7F7F"  # an AAE prior's samples, where its modes are not classes
OFF_RAMP = "#7F7F7F"  # a knob's name among its numbers (a run that does not read the knob)
POSITIVE, NEGATIVE = "#54A24B", "#E45756"
_MARGINS = dict(l=10, r=10, t=40, b=10)
LEGEND_COLUMNS = 4  # entries per legend row above the metrics-over-time chart


def _figure(data: list[dict], layout: dict, title: str, height: int) -> go.Figure:
    """The figure of `data` (trace dicts) and `layout`, with the house title, height and margins (a layout
    that sets its own margin keeps it; its title's placement is kept).

    Plain dicts, checked once when the figure is built: the live figures are rebuilt every second for each
    visitor watching a run, in the one process that serves them all, and Plotly's step-by-step builders
    (add_scatter, update_layout, make_subplots) cost about ten times as much as one check of the whole.
    """
    title = layout.get("title", {}) | dict(text=title, font=dict(size=14))
    fig = go.Figure(dict(data=data, layout=dict(margin=_MARGINS) | layout | dict(title=title, height=height)))
    return fig.update_layout(template=None)  # no Plotly template: the page's theme styles the chart


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased at the start.

    Args:
        values: (T,) series; a non-finite value stays in place and the average skips it.
        weight: 0 = no smoothing, towards 1 = smoother.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if weight <= 0 or not finite.any():
        return values.copy()
    x = values[finite]
    smooth = lfilter([1 - weight], [1, -weight], x)  # y[n] = w * y[n-1] + (1 - w) * x[n]
    smooth /= 1 - weight ** np.arange(1, len(x) + 1)  # the average starts at 0: remove that bias
    out = values.copy()
    out[finite] = smooth
    return out


def thin(n: int, cap: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most `cap` of n items, evenly spread and always including the last one."""
    if n <= cap:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, cap).round().astype(int))


def loss_figure(rows: pd.DataFrame, steps: int, terms: list[str], smoothing: float, log_y: bool = False) -> go.Figure:
    """Loss curves over [0, steps]: each term raw (faint) and smoothed (bold).

    Args:
        rows: metric rows with a "step" column and one column per term.
        steps: the run's total steps; the x-axis stays [0, steps] while the curve grows.
        terms: columns to draw, e.g. ["loss"] or ["loss", "recon", "kl", "contrastive"].
        smoothing: EMA weight in [0, 1).
    """
    # SVG lines, not WebGL: measured when every refresh built the chart anew (st.plotly_chart's
    # element id hashes the spec; the live view now updates it in place, ui/live_chart.py), a new
    # WebGL context each time cost far more than drawing CURVE_POINTS as one SVG path.
    keep = thin(len(rows), CURVE_POINTS)
    step = rows["step"].to_numpy()[keep] if len(rows) else np.array([])
    data = []
    for term in terms:
        if term not in rows:
            continue
        values = rows[term].to_numpy(dtype=np.float64)
        colour = TERM_COLOURS.get(term, "#7F7F7F")
        data += [
            dict(type="scatter", x=step, y=values[keep], name=f"{term} (raw)", mode="lines", opacity=0.25,
                 line=dict(color=colour, width=1), showlegend=False, hoverinfo="skip"),
            dict(type="scatter", x=step, y=ema(values, smoothing)[keep], name=term, mode="lines",
                 line=dict(color=colour, width=2)),
        ]  # fmt: skip
    layout = dict(
        xaxis=dict(range=[0, steps], title=dict(text="step")),
        yaxis=dict(type="log", dtick=1) if log_y else dict(rangemode="tozero"),  # log: a tick per power of ten only
        legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"),
    )
    return _figure(data, layout, "Loss", 320)


def empty_loss_figure(steps: int, note: str) -> go.Figure:
    """The loss chart before a run: the axes it will have, and `note` where the curve will be."""
    fig = loss_figure(pd.DataFrame(), steps, [], 0.0)
    fig.update_yaxes(range=[0, 1], showticklabels=False)
    fig.add_annotation(text=note, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font_color="#7F7F7F")
    return fig


def steady_range(previous: tuple[float, float] | None, lo: float, hi: float, pad: float = 0.1) -> tuple[float, float]:
    """An axis range that holds still between refreshes.

    Keeps `previous` while the data [lo, hi] fits inside it and fills more than a third of it;
    otherwise fits the data with `pad` of its span on each side.
    """
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return previous or (-1.0, 1.0)
    span = max(hi - lo, 1e-6)
    if previous is not None:
        p_lo, p_hi = previous
        if p_lo <= lo and hi <= p_hi and span >= (p_hi - p_lo) / 3:
            return previous
    return (lo - pad * span, hi + pad * span)


def square_ranges(xy: np.ndarray, previous: tuple | None) -> tuple[tuple[float, float], tuple[float, float]]:
    """Steady x and y ranges of equal span, so a circle in data units looks round.

    Args:
        xy: (E, 2) points.
        previous: ((x0, x1), (y0, y1)) from the last refresh, or None.
    """
    finite = xy[np.isfinite(xy).all(axis=1)]
    if len(finite) == 0:
        return previous or ((-1.0, 1.0), (-1.0, 1.0))
    lo, hi = finite.min(axis=0), finite.max(axis=0)
    centre, half = (lo + hi) / 2, max((hi - lo).max() / 2, 1e-6)
    box = [(float(c - half), float(c + half)) for c in centre]
    if previous is not None:
        kept = [steady_range(p, b[0], b[1]) for p, b in zip(previous, box, strict=True)]
        if kept == list(previous):
            return previous
    x, y = (steady_range(None, b[0], b[1]) for b in box)
    return x, y


def scatter_figure(
    xy: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    ranges: tuple | None = None,
    hover: list[str] | None = None,
    circle: tuple[float, float, float] | None = None,
    title: str = "Embedding",
    height: int = 420,
    webgl: bool = False,
    values: np.ndarray | None = None,
) -> go.Figure:
    """Points coloured by class, one trace per class (so colours and legend stay put), or with `values` (a
    continuous target) one trace on a colour scale with its bar.

    SVG unless `webgl`: on a chart redrawn every second (the live view), for the reason loss_figure
    gives. With one run watched and a new snapshot at each refresh, a browser without a GPU spent 0.15
    cores more in WebGL (its GPU process) and its page's main thread was 84% busy (67% in SVG).
    Explore's chart, drawn once per step chosen, with arrows and selections over it, stays WebGL.

    Args:
        xy: (E, 2) layout.
        labels: (E,) class ids, indices into `classes`.
        ranges: ((x0, x1), (y0, y1)) fixed axis ranges, or None to let Plotly fit.
        hover: (E,) hover text per point (a thumbnail or the features), or None.
        circle: (x, y, radius) of the margin around an anchor point, in data units.
        values: (E,) each point's continuous target, or None to colour by class.
    Each point's customdata is its position in `xy`, so a selection maps back to items.
    """
    keep = thin(len(xy))
    xy, labels, position = xy[keep], labels[keep], keep
    texts = np.asarray(hover, dtype=object)[keep] if hover is not None else None
    kind = "scattergl" if webgl else "scatter"
    data, shapes = [], []
    if values is not None:
        data.append(dict(
            type=kind, x=xy[:, 0], y=xy[:, 1], mode="markers", name="target", customdata=position, showlegend=False,
            marker=dict(size=6, color=values[keep], colorscale="Viridis", opacity=0.85, showscale=True,
                        colorbar=dict(title=dict(text="target"), thickness=12, len=0.75, y=0, yanchor="bottom")),
            text=texts, hovertemplate="<b>target %{marker.color:.4g}</b> #%{customdata}"
            + ("<br>%{text}" if texts is not None else "") + "<extra></extra>",
        ))  # fmt: skip
    for c, name in enumerate(classes if values is None else []):
        mask = labels == c
        if not mask.any():
            continue
        data.append(dict(
            type=kind, x=xy[mask, 0], y=xy[mask, 1], mode="markers", name=name, customdata=position[mask],
            marker=dict(size=6, color=PALETTE[c % len(PALETTE)], opacity=0.8),
            text=texts[mask] if texts is not None else None,
            hovertemplate=f"<b>{name}</b> #%{{customdata}}<br>%{{text}}<extra></extra>" if texts is not None
            else f"<b>{name}</b> #%{{customdata}}<extra></extra>",
        ))  # fmt: skip
    if circle is not None:
        x, y, r = circle
        shapes.append(dict(type="circle", x0=x - r, x1=x + r, y0=y - r, y1=y + r, line=dict(color="#333", dash="dash")))
        data.append(dict(type=kind, x=[x], y=[y], mode="markers", name="anchor", hoverinfo="skip",
                         marker=dict(symbol="star", size=14, color="#333")))  # fmt: skip
    xaxis, yaxis = {}, dict(scaleanchor="x", scaleratio=1)  # equal units: distances read true, circles are round
    if ranges is not None and circle is not None:
        ranges = _around_circle(ranges, circle)
    if ranges is not None:
        xaxis |= dict(range=list(ranges[0]), autorange=False)
        yaxis |= dict(range=list(ranges[1]), autorange=False)
    layout = dict(xaxis=xaxis, yaxis=yaxis, shapes=shapes, hoverlabel=dict(font=dict(family="monospace")),
                  legend=dict(itemsizing="constant"))  # fmt: skip
    return _figure(data, layout, title, height)


def add_prior(fig: go.Figure, points: np.ndarray, labels: np.ndarray | None = None, webgl: bool = False) -> go.Figure:
    """Draws an AAE prior's samples faintly under a scatter's points, as one trace "prior samples".

    Args:
        points: (P, 2) samples, in the scatter's layout.
        labels: (P,) the class of each sample's mode (a mixture prior: in its class's colour), or None (grey).
    """
    keep = thin(len(points))
    colour = PRIOR_COLOUR if labels is None else [PALETTE[int(c) % len(PALETTE)] for c in labels[keep]]
    add = fig.add_scattergl if webgl else fig.add_scatter
    add(x=points[keep, 0], y=points[keep, 1], mode="markers", name="prior samples", hoverinfo="skip",
        marker=dict(size=5, color=colour, opacity=0.25))  # fmt: skip
    fig.data = (fig.data[-1], *fig.data[:-1])  # first: under the embedding's points
    return fig


ZOOM_BEYOND = 4.0  # distances reaching this many margins get a second panel zoomed on the margin
ZOOM_SPAN = 2.5  # the zoomed panel shows [0, ZOOM_SPAN * margin]
PANEL_GAP = 0.05  # between the full and the zoomed panel, a share of the figure's width


def _around_circle(ranges: tuple, circle: tuple[float, float, float]) -> tuple:
    """Square ranges grown (never shrunk) to hold the whole margin circle."""
    x, y, r = circle
    (x0, x1), (y0, y1) = ranges
    x0, x1, y0, y1 = min(x0, x - r), max(x1, x + r), min(y0, y - r), max(y1, y + r)
    half = max(x1 - x0, y1 - y0) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (cx - half, cx + half), (cy - half, cy + half)


def distance_histogram(
    positive: np.ndarray,
    negative: np.ndarray,
    margin: float | None,
    x_range: tuple[float, float],
    bins: int = 60,
) -> go.Figure:
    """Densities of positive and negative pair distances, with the margin as a vertical line.

    When the distances reach far beyond the margin (ZOOM_BEYOND margins), a second panel shows
    [0, ZOOM_SPAN * margin] with its own bins, so the margin stays readable at every scale.
    Counts are binned here (two `bins`-long bar series per panel), not sent point by point.
    """
    zoom = margin is not None and margin > 0 and x_range[1] > ZOOM_BEYOND * margin
    panels = [x_range, (0.0, ZOOM_SPAN * margin)] if zoom else [x_range]
    # Side by side, the zoomed panel narrower, one density axis: the second shares the first's.
    first = round((1 - PANEL_GAP) * 0.62, 3)
    domains = [[0.0, first], [first + PANEL_GAP, 1.0]] if zoom else [[0.0, 1.0]]
    # Each panel says what it shows under its axis: titles above the panels ran into the figure's own
    # title, and a legend inside them covered the zoomed one.
    axis_titles = ["distance", "zoomed in"] if zoom else ["distance"]
    data, shapes, notes, layout = [], [], [], {}
    for col, ((lo, hi), domain, axis_title) in enumerate(zip(panels, domains, axis_titles, strict=True)):
        x, y = ("x", "y") if col == 0 else (f"x{col + 1}", f"y{col + 1}")
        edges = np.linspace(lo, hi, bins + 1)
        centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
        for name, values, colour in (("positive pairs", positive, POSITIVE), ("negative pairs", negative, NEGATIVE)):
            values = values[np.isfinite(values)]
            # the full panel clips outliers into its end bins; the zoomed one drops what lies beyond it
            binned = np.clip(values, lo, hi) if col == 0 else values[values <= hi]
            counts, _ = np.histogram(binned, bins=edges)
            density = counts / max(len(values), 1) / width  # of all the pairs, so the panels agree
            data.append(dict(type="bar", x=centres, y=density, width=width, name=name, marker=dict(color=colour),
                             opacity=0.6, legendgroup=name, showlegend=col == 0, xaxis=x, yaxis=y))  # fmt: skip
        if margin is not None:
            shapes.append(dict(type="line", x0=margin, x1=margin, xref=x, y0=0, y1=1, yref=f"{y} domain",
                               line=dict(color="#333", dash="dash")))  # fmt: skip
            notes.append(dict(text="margin", x=margin, xref=x, y=1, yref=f"{y} domain", xanchor="left",
                              yanchor="top", showarrow=False))  # fmt: skip
        layout[x.replace("x", "xaxis")] = dict(anchor=y, domain=domain, range=[lo, hi], title=dict(text=axis_title))
        layout[y.replace("y", "yaxis")] = dict(anchor=x, domain=[0.0, 1.0]) | (
            dict(title=dict(text="density")) if col == 0 else dict(matches="y", showticklabels=False)
        )
    # Below the axes' titles: above the panels, a narrow chart's legend wrapped into two rows over the title.
    below = dict(orientation="h", x=0, y=-0.24, xanchor="left", yanchor="top", font=dict(size=10))
    layout |= dict(shapes=shapes, annotations=notes, barmode="overlay", bargap=0, legend=below,
                   margin=_MARGINS | dict(b=64))  # fmt: skip
    return _figure(data, layout, "Held-out pair distances", 320)


def metrics_history_figure(history: pd.DataFrame, names: dict[str, str], steps: int) -> go.Figure:
    """Snapshot metrics over [0, steps]; Davies-Bouldin (unbounded) on its own right-hand axis.

    Args:
        history: one row per snapshot, a "step" column and one column per metric.
        names: metric key -> display name, in drawing order.
        steps: the run's total steps (the fixed x-axis).
    """
    data = []
    for c, (key, name) in enumerate(names.items()):
        if key not in history:
            continue
        right = key == "davies_bouldin"
        measured = history[history[key].notna()]  # whole-set metrics: every few snapshots
        data.append(dict(type="scatter", x=measured["step"].to_numpy(), y=measured[key].to_numpy(), name=name,
                         mode="lines+markers", marker=dict(size=4), yaxis="y2" if right else "y",
                         line=dict(color=PALETTE[c], dash="dot" if right else "solid")))  # fmt: skip
    worst = history["davies_bouldin"].max() if "davies_bouldin" in history else np.nan
    right_ticks = nice_ticks(float(worst) if np.isfinite(worst) else 1.0)
    rows = -(-len(data) // LEGEND_COLUMNS)  # the legend's rows
    layout = dict(
        xaxis=dict(title=dict(text="step"), range=[0, steps]),
        yaxis=dict(range=[min(0.0, _lowest(history, names)), 1.0], title=dict(text="score")),
        yaxis2=dict(overlaying="y", side="right", showgrid=False, title=dict(text="Davies-Bouldin"),
                    range=[0, right_ticks[-1]], tickvals=right_ticks, tickformat="~g"),
        legend=dict(orientation="h", y=1.02, x=0, yanchor="bottom", font=dict(size=10),
                    entrywidth=1 / LEGEND_COLUMNS, entrywidthmode="fraction"),
        margin=_MARGINS | dict(t=44 + 18 * rows),  # the legend sits between the title and the plot
        title=dict(y=1, yref="container", yanchor="top", pad=dict(t=10)),  # above the legend
    )  # fmt: skip
    return _figure(data, layout, "Metrics over time", 300)


def nice_ticks(high: float, count: int = 4) -> list[float]:
    """Ticks from 0 to at least `high` at a round step (1, 2 or 5 times a power of ten), about `count` of them."""
    high = max(high, 1e-9)
    power = 10 ** np.floor(np.log10(high / count))
    step = next(power * m for m in (1, 2, 5, 10) if power * m * count >= high)
    return [round(step * i, 10) for i in range(int(np.ceil(high / step - 1e-9)) + 1)]


def _lowest(history: pd.DataFrame, names: dict[str, str]) -> float:
    """The lowest score drawn on the left axis (silhouette and ARI can be negative)."""
    columns = [key for key in names if key in history and key != "davies_bouldin"]
    lowest = history[columns].min().min() if columns else 0.0
    return float(lowest) if np.isfinite(lowest) else 0.0


def knob_colours(values: list) -> list[str]:
    """A colour per run from its value of a knob: a blue-to-red ramp over sorted numbers (a name among
    them, a run that does not read the knob, grey), the palette for names (equal values, equal colours)."""
    distinct = sorted(set(values), key=lambda v: (isinstance(v, str), v))
    numbers = [v for v in distinct if _is_number(v)]
    if len(numbers) > 1:
        ramp = np.linspace(0, 1, len(numbers))
        colour = {v: f"rgb({int(40 + 200 * t)}, {int(90 + 40 * (1 - abs(2 * t - 1)))}, {int(220 - 180 * t)})"
                  for v, t in zip(numbers, ramp, strict=True)}  # fmt: skip
        colour |= {v: OFF_RAMP for v in distinct if not _is_number(v)}
    else:
        colour = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(distinct)}
    return [colour[v] for v in values]


def compare_figure(
    curves: dict[str, pd.DataFrame], smoothing: float, log_y: bool = False, colours: list[str] | None = None,
    column: str = "loss", title: str = "Loss",
) -> go.Figure:  # fmt: skip
    """A smoothed column ("loss", or a metric over snapshots) of several runs on one chart.

    `curves` maps a run label to its rows; `colours`, one per run, colour them by a knob (else the palette).
    """
    data = []
    for c, (label, rows) in enumerate(curves.items()):
        if column not in rows:
            continue
        rows = rows.dropna(subset=[column])  # a snapshot that did not measure this metric
        keep = thin(len(rows))
        smooth = ema(rows[column].to_numpy(dtype=np.float64), smoothing)[keep]
        colour = colours[c] if colours else PALETTE[c % len(PALETTE)]
        data.append(dict(type="scattergl", x=rows["step"].to_numpy()[keep], y=smooth, name=label, mode="lines",
                         line=dict(color=colour, width=2)))  # fmt: skip
    yaxis = dict(type="log" if log_y else "linear") | (dict(title=dict(text=title)) if column != "loss" else {})
    layout = dict(xaxis=dict(title=dict(text="step")), yaxis=yaxis, legend=dict(orientation="h", y=-0.2))
    return _figure(data, layout, title, 420)


def parallel_figure(table: pd.DataFrame, knobs: list[str], metric: str, label: str) -> go.Figure:
    """Parallel coordinates: one line per run through its knobs' values to `metric`, coloured by it.
    Named values (a distance, a sampler) sit on their own axis, one tick each."""
    dimensions = []
    for knob in knobs:
        values = table[knob]
        if pd.api.types.is_numeric_dtype(values):
            dimensions.append(dict(label=knob, values=values.astype(float)))
        else:  # numbers among names (a margin some runs do not use) in their order, before the names
            distinct = sorted(dict.fromkeys(values), key=lambda v: (0, v) if _is_number(v) else (1, 0))
            names = list(dict.fromkeys(map(_tick, distinct)))
            codes = values.map(_tick).map({n: i for i, n in enumerate(names)})
            dimensions.append(dict(label=knob, values=codes, tickvals=list(range(len(names))), ticktext=names))
    scores = table[metric].astype(float)
    low, high = float(scores.min()), float(scores.max())
    if high - low < 1e-9:  # one score for every run: a small span around it, not Plotly's own (0.87 to 1.06)
        low, high = low - 0.05, high + 0.05
        if scores.min() >= 0 and scores.max() <= 1:  # a share or an accuracy stays in [0, 1]
            low, high = max(low, 0.0), min(high, 1.0)
    dimensions.append(dict(label=label, values=scores, range=[low, high]))
    line = dict(color=scores, colorscale="Viridis", showscale=True, cmin=low, cmax=high)
    # The axes' names sit above them: the title goes to the top of the figure, clear of the first one's.
    layout = dict(margin=dict(l=60, r=60, t=90, b=20), title=dict(y=1, yref="container", yanchor="top", pad=dict(t=10)))
    return _figure([dict(type="parcoords", dimensions=dimensions, line=line)], layout, f"Settings to {label}", 380)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _tick(value) -> str:
    return f"{value:g}" if _is_number(value) else str(value)


def mosaic(rows: list[np.ndarray], scale: int = 4) -> np.ndarray:
    """Images side by side, one row per array, upscaled by pixel repetition (no blur).

    Args:
        rows: arrays of shape (N, C, H, W) in [0, 1]; C is 1 (grey) or 3 (RGB).
    Returns:
        (len(rows) * (H + 1) * scale, N * (W + 1) * scale[, 3]) float array in [0, 1].
    """
    gap = 1  # one white pixel between images
    lines = []
    for images in rows:
        images = np.clip(np.asarray(images, dtype=np.float32), 0, 1)
        n, c, h, w = images.shape
        padded = np.ones((n, c, h + gap, w + gap), dtype=np.float32)
        padded[:, :, :h, :w] = images
        lines.append(padded.transpose(2, 0, 3, 1).reshape(h + gap, n * (w + gap), c))  # (H', N*W', C)
    grid = np.concatenate(lines, axis=0)
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid[..., 0] if grid.shape[-1] == 1 else grid


def _axis(r: int, c: int, cols: int) -> str:
    """The axis suffix of the panel in row r, column c, row-major as make_subplots numbers them ("" then "2"...)."""
    i = r * cols + c + 1
    return "" if i == 1 else str(i)


def _grid(n_rows: int, n_cols: int, titles: dict, row_titles: list[str], gap_x: float, gap_y: float) -> dict:
    """A layout of n_rows x n_cols panels as plain dicts: axis domains, each panel's title above it and
    each row's title on the right. Plain dicts, checked once when the figure is built: make_subplots and
    per-panel updates cost a quarter of a second for a 4 x 4 grid."""
    width, height = (1 - gap_x * (n_cols - 1)) / n_cols, (1 - gap_y * (n_rows - 1)) / n_rows
    layout, notes = {}, []
    for r in range(n_rows):
        top = 1 - r * (height + gap_y)
        for c in range(n_cols):
            left, suffix = c * (width + gap_x), _axis(r, c, n_cols)
            layout[f"xaxis{suffix}"] = dict(domain=[max(left, 0.0), min(left + width, 1.0)], anchor=f"y{suffix}")
            layout[f"yaxis{suffix}"] = dict(domain=[max(top - height, 0.0), min(top, 1.0)], anchor=f"x{suffix}")
            if titles.get((r, c)):
                notes.append(dict(text=titles[(r, c)], x=left + width / 2, y=top, xref="paper", yref="paper",
                                  xanchor="center", yanchor="bottom", showarrow=False, font_size=11))  # fmt: skip
        if row_titles[r]:
            notes.append(dict(text=row_titles[r], x=1, xshift=6, y=top - height / 2, xref="paper", yref="paper",
                              xanchor="left", yanchor="middle", textangle=90, showarrow=False, font_size=11))  # fmt: skip
    return layout | {"annotations": notes}


def small_multiples(
    panels: dict[tuple[int, int], dict],
    rows: list[str],
    cols: list[str],
    classes: list[str],
    ranges: dict[tuple[int, int], tuple] | None = None,
    panel_px: int = 230,
) -> go.Figure:
    """One embedding scatter per run, on a grid: rows and columns are the swept knobs' values.

    Args:
        panels: (row, col) -> {"xy": (E, 2), "labels": (E,), "title": badge line, and optionally "values":
            (E,) a continuous target, drawn on one colour scale for all panels}; a missing cell stays empty
            (a run with no snapshot yet).
        rows, cols: the grid's row and column headings.
        classes: class names; a class keeps its colour in every panel, one legend entry each.
        ranges: (row, col) -> ((x0, x1), (y0, y1)); panels that measure alike share a range.
    One trace per panel, coloured point by point, and one legend entry per class: Plotly's cost,
    here and in the browser, grows with the traces (16 for a 4 x 4 grid rather than 160).
    """
    layout = _grid(len(rows), len(cols), {cell: p["title"] for cell, p in panels.items()}, rows, 0.03, 0.09)
    colours = np.array([PALETTE[k % len(PALETTE)] for k in range(len(classes))], dtype=object)
    names = np.array(classes, dtype=object)
    data = []
    keep_each = MAX_POINTS // max(len(panels), 1) + 1
    values = [p["values"] for p in panels.values() if p.get("values") is not None]
    scale = (min(float(v.min()) for v in values), max(float(v.max()) for v in values)) if values else None
    for (r, c), panel in panels.items():
        keep = thin(len(panel["xy"]), keep_each)
        xy, labels, suffix = panel["xy"][keep], panel["labels"][keep], _axis(r, c, len(cols))
        marker, text = dict(size=4, color=colours[labels]), names[labels]
        if scale is not None and panel.get("values") is not None:
            shown = panel["values"][keep]
            marker = dict(size=4, color=shown, colorscale="Viridis", cmin=scale[0], cmax=scale[1],
                          showscale=not data, colorbar=dict(title=dict(text="target"), thickness=12))  # fmt: skip
            text = np.array([f"target {v:.4g}" for v in shown], dtype=object)
        data.append(dict(type="scatter", x=xy[:, 0], y=xy[:, 1], mode="markers", showlegend=False, xaxis=f"x{suffix}",
                         yaxis=f"y{suffix}", marker=marker, text=text,
                         hovertemplate="<b>%{text}</b><extra></extra>"))  # fmt: skip
    data += [dict(type="scatter", x=[None], y=[None], mode="markers", name=name, marker=dict(size=8, color=colours[k]))
             for k, name in enumerate(classes if scale is None else [])]  # fmt: skip
    for r in range(len(rows)):
        for c in range(len(cols)):
            suffix = _axis(r, c, len(cols))
            layout[f"xaxis{suffix}"] |= dict(showticklabels=False, zeroline=False)
            # equal units in every panel: distances read true
            layout[f"yaxis{suffix}"] |= dict(
                showticklabels=False, zeroline=False, scaleanchor=f"x{suffix}", scaleratio=1
            )
            if ranges and (r, c) in ranges:
                (x0, x1), (y0, y1) = ranges[(r, c)]
                layout[f"xaxis{suffix}"] |= dict(range=[x0, x1], autorange=False)
                layout[f"yaxis{suffix}"] |= dict(range=[y0, y1], autorange=False)
    layout["annotations"] += [dict(text=f"<b>{heading}</b>", x=(c + 0.5) / len(cols), y=1.0, xref="paper",
                                   yref="paper", yshift=34, showarrow=False, font_size=12)
                              for c, heading in enumerate(cols) if heading]  # fmt: skip
    layout |= dict(legend=dict(itemsizing="constant", orientation="h", y=-0.02, yanchor="top"),
                   margin=dict(l=10, r=30, t=90, b=10))  # fmt: skip
    return _figure(data, layout, "Embeddings of every run at this step", panel_px * len(rows) + 120)


def histogram_multiples(
    panels: dict[tuple[int, int], dict],
    rows: list[str],
    cols: list[str],
    step: int,
    bins: int = 40,
    panel_px: int = 170,
) -> go.Figure:
    """Positive / negative pair-distance densities per run on the same grid, each with its margin.

    panels: (row, col) -> {"positive", "negative": distances, "margin": float | None, "title": str};
    step: the training step chosen, named in the title.
    """
    layout = _grid(len(rows), len(cols), {cell: p["title"] for cell, p in panels.items()}, rows, 0.04, 0.12)
    data, shapes = [], []
    for (r, c), panel in panels.items():
        pos, neg, margin, suffix = panel["positive"], panel["negative"], panel["margin"], _axis(r, c, len(cols))
        both = np.concatenate([pos, neg])
        both = both[np.isfinite(both)]
        hi = max(float(np.quantile(both, 0.99)) if len(both) else 1.0, 1.2 * (margin or 0), 1e-6)
        edges = np.linspace(0, hi, bins + 1)
        centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
        for name, values, colour in (("positive pairs", pos, POSITIVE), ("negative pairs", neg, NEGATIVE)):
            values = values[np.isfinite(values)]
            counts, _ = np.histogram(np.clip(values, 0, hi), bins=edges)
            # A filled step line, one SVG path, rather than a bar per bin: 32 of them redraw several times faster.
            density = np.concatenate([[0.0], counts / max(len(values), 1) / width, [0.0]])
            data.append(dict(type="scatter", x=np.concatenate([[0.0], centres, [hi]]), y=density, mode="lines",
                             line=dict(shape="hvh", width=1, color=colour), fill="tozeroy", opacity=0.6, name=name,
                             legendgroup=name, showlegend=(r, c) == min(panels), xaxis=f"x{suffix}",
                             yaxis=f"y{suffix}", hoverinfo="skip"))  # fmt: skip
        if margin is not None:
            shapes.append(dict(type="line", x0=margin, x1=margin, y0=0, y1=1, xref=f"x{suffix}",
                               yref=f"y{suffix} domain", line=dict(color="#333", dash="dash")))  # fmt: skip
        layout[f"xaxis{suffix}"] |= dict(range=[0, hi], tickfont_size=9)
        layout[f"yaxis{suffix}"] |= dict(showticklabels=False)
    # The legend at the figure's foot, under the bottom panels' distance ticks (just under the plot, it hid them).
    layout |= dict(shapes=shapes, margin=dict(l=10, r=30, t=60, b=56),
                   legend=dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0))  # fmt: skip
    return _figure(
        data, layout, f"Pair distances at step {step} (dashed: each run's margin)", panel_px * len(rows) + 80
    )


def metric_by_knob(table: pd.DataFrame, knob: str, metric: str, line_knob: str | None) -> go.Figure:
    """A metric against a swept knob, one line per value of a second knob (a numeric knob on a numeric axis)."""
    numeric = pd.api.types.is_numeric_dtype(table[knob])
    groups = table.groupby(line_knob, sort=False) if line_knob else [(None, table)]
    data = [  # named values (losses, samplers): points, no trend between them
        dict(type="scatter", x=rows[knob], y=rows[metric], mode="lines+markers" if numeric else "markers",
             name=sweep.label({line_knob: value}) if line_knob else metric, marker=dict(size=8),
             line=dict(color=PALETTE[c % len(PALETTE)]), showlegend=line_knob is not None)
        for c, (value, rows) in enumerate(groups)
    ]  # fmt: skip
    axis_type = "log" if numeric and knob in ("lr",) else "-" if numeric else "category"
    layout = dict(xaxis=dict(title=dict(text=knob), type=axis_type), yaxis=dict(title=dict(text=metric)),
                  legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"))  # fmt: skip
    return _figure(data, layout, f"{metric} against {knob}", 300)


FORCE_COLOUR = "#222"
ARROW_SHARE = 0.12  # the longest force arrow, as a share of the plot's span


def add_forces(fig: go.Figure, xy: np.ndarray, force: np.ndarray, drawn: np.ndarray) -> float:
    """Draws each item's force as a segment from its point (one trace, segments split by gaps) with a
    dot at its head; items of the batch that no term touches get a hollow ring. Returns the scale:
    plot units per unit of force (the longest arrow is ARROW_SHARE of the plot's span)."""
    length = np.linalg.norm(force, axis=1)
    moving = drawn & (length > 1e-12) & np.isfinite(xy).all(axis=1)
    span = float(np.ptp(xy[np.isfinite(xy).all(axis=1)], axis=0).max()) if np.isfinite(xy).any() else 1.0
    scale = ARROW_SHARE * span / float(length[moving].max()) if moving.any() else 0.0
    start, end = xy[moving], xy[moving] + scale * force[moving]
    gaps = np.full((len(start), 1), np.nan)
    segments = np.hstack([start, end, gaps, gaps]).reshape(-1, 2) if len(start) else np.empty((0, 2))
    fig.add_scatter(x=segments[:, 0], y=segments[:, 1], mode="lines", name="force", hoverinfo="skip",
                    line=dict(color=FORCE_COLOUR, width=1))  # fmt: skip
    fig.add_scatter(x=end[:, 0], y=end[:, 1], mode="markers", name="force", showlegend=False, hoverinfo="skip",
                    marker=dict(color=FORCE_COLOUR, size=3))  # fmt: skip
    idle = drawn & ~(length > 1e-12)
    fig.add_scatter(x=xy[idle, 0], y=xy[idle, 1], mode="markers", name="in the batch, no force", hoverinfo="skip",
                    marker=dict(symbol="circle-open", size=10, color=FORCE_COLOUR, line_width=1))  # fmt: skip
    return scale


MINING = {  # mining columns of a step row: (legend name, colour)
    "active_share": ("terms that cost loss", "#E45756"),
    "hard_share": ("hard negatives", "#B279A2"),
    "semi_hard_share": ("semi-hard negatives", "#F58518"),
    "easy_share": ("easy negatives (no loss)", "#BAB0AC"),
}


def mining_figure(rows: pd.DataFrame, steps: int, smoothing: float, at_step: int | None = None) -> go.Figure:
    """What the miner handed the loss each step: shares (left axis, smoothed) and how many (right axis).

    A share of terms that cost loss near 0 is why a run stalls: the miner finds nothing to learn from.
    """
    keep = thin(len(rows), CURVE_POINTS)
    step = rows["step"].to_numpy()[keep] if len(rows) else np.array([])
    data, shapes = [], []
    for column, (name, colour) in MINING.items():
        if column in rows and rows[column].notna().any():
            values = ema(rows[column].to_numpy(dtype=np.float64), smoothing)[keep]
            dash = "solid" if column == "active_share" else "dot"
            data.append(dict(type="scatter", x=step, y=values, name=name, mode="lines",
                             line=dict(color=colour, width=2, dash=dash)))  # fmt: skip
    if "mined" in rows:
        data.append(dict(type="scatter", x=step, y=rows["mined"].to_numpy(dtype=np.float64)[keep],
                         name="mined (right axis)", mode="lines", yaxis="y2", line=dict(color="#4C78A8", width=1),
                         opacity=0.6))  # fmt: skip
    if at_step is not None:
        shapes.append(dict(type="line", x0=at_step, x1=at_step, xref="x", y0=0, y1=1, yref="y domain",
                           line=dict(color="#333", dash="dash")))  # fmt: skip
    most = rows["mined"].max() if "mined" in rows else np.nan
    counts = nice_ticks(max(float(most), 4.0) if np.isfinite(most) else 4.0)  # whole counts at round steps, not 51.6
    layout = dict(
        xaxis=dict(range=[0, steps], title=dict(text="step")),
        yaxis=dict(range=[0, 1.02], title=dict(text="share")),
        yaxis2=dict(overlaying="y", side="right", showgrid=False, title=dict(text="mined"), range=[0, counts[-1]],
                    tickvals=counts, tickformat="~g"),
        legend=dict(orientation="h", y=1.02, x=0, yanchor="bottom", font=dict(size=10)),
        margin=_MARGINS | dict(t=70),
        shapes=shapes,
        title=dict(y=1, yref="container", yanchor="top", pad=dict(t=10)),
    )  # fmt: skip
    return _figure(data, layout, "What the miner found", 280)


def add_density(fig: go.Figure, xy: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
    """Per-class density contours (three levels, in the class's colour) over a scatter: how tight a cluster
    is, which a scatter of many points hides."""
    for k, name in enumerate(classes):
        points = xy[(labels == k) & np.isfinite(xy).all(axis=1)]
        if len(points) < 5:
            continue
        fig.add_histogram2dcontour(x=points[:, 0], y=points[:, 1], name=f"{name} density", showscale=False,
                                   ncontours=3, contours=dict(coloring="none"), hoverinfo="skip", showlegend=False,
                                   line=dict(color=PALETTE[k % len(PALETTE)], width=1.5, smoothing=1.3), nbinsx=8,
                                   nbinsy=8)  # fmt: skip


LATENT_POINT = -1  # the customdata of the click grid's points: a place to decode, not an item


def add_neighbours(fig: go.Figure, xy: np.ndarray, query: int, found: dict) -> None:
    """Marks a chosen item on the scatter and the items of its retrieval (`pair_stats.neighbours`): rings on
    its nearest items, crosses on its hardest negatives, diamonds on the positives beyond the margin."""
    marks = (
        ("nearest items", found["nearest"][0], dict(symbol="circle-open", size=13, color="#222", line_width=2)),
        ("hardest negatives", found["hardest_negatives"][0], dict(symbol="x-thin-open", size=12, color=NEGATIVE,
                                                                   line_width=3)),
        ("positives beyond the margin", found["far_positives"][0], dict(symbol="diamond-open", size=13,
                                                                        color=POSITIVE, line_width=2)),
        (f"item {query}", np.array([query]), dict(symbol="star", size=16, color="#222", line=dict(color="white", width=1))),
    )  # fmt: skip
    for name, rows, marker in marks:
        if len(rows):
            fig.add_scatter(x=xy[rows, 0], y=xy[rows, 1], mode="markers", name=name, marker=marker, hoverinfo="skip")


def add_click_grid(fig: go.Figure, box: tuple[np.ndarray, np.ndarray], cells: int = 40) -> None:
    """Invisible points on a cells x cells grid over `box` ((lo, hi) corners), beneath the items, so a click
    anywhere on a 2-D latent space picks a place to decode (customdata LATENT_POINT); items win a click on them."""
    lo, hi = box
    z1, z2 = np.meshgrid(np.linspace(lo[0], hi[0], cells), np.linspace(lo[1], hi[1], cells))
    fig.add_scatter(x=z1.ravel(), y=z2.ravel(), mode="markers", marker=dict(size=2, opacity=0), showlegend=False,
                    customdata=np.full(z1.size, LATENT_POINT), name="latent space",
                    hovertemplate="click to decode at (%{x:.2f}, %{y:.2f})<extra></extra>")  # fmt: skip
    fig.data = (fig.data[-1], *fig.data[:-1])  # drawn first: beneath the items


def picked(points: list[dict]) -> tuple[list[int], tuple[float, float] | None]:
    """What a click or a box / lasso on the scatter picked: the items' positions (sorted, once each) and,
    for a click on the click grid alone, the latent point (x, y) to decode. Marks carry no customdata."""
    items = sorted({int(p["customdata"]) for p in points if p.get("customdata", LATENT_POINT) != LATENT_POINT})
    places = [(float(p["x"]), float(p["y"])) for p in points if p.get("customdata") == LATENT_POINT]
    return items, places[0] if len(places) == 1 and not items else None
