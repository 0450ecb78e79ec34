"""Figure builders: pure functions, checked on hand-computed cases."""

import base64

import numpy as np
import pandas as pd
import pytest

from ui import figures


def values(array) -> np.ndarray:
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
    return np.asarray(array)


def test_ema_is_tensorboards_debiased_average():
    # weight 0.5: y1 = 0.5*1 / (1-0.5) = 1; y2 = (0.25 + 0.5*3) / (1-0.25) = 7/3
    assert figures.ema(np.array([1.0, 3.0]), 0.5) == pytest.approx([1.0, 7 / 3])
    assert figures.ema(np.array([1.0, 3.0]), 0.0) == pytest.approx([1.0, 3.0])
    smoothed = figures.ema(np.array([1.0, np.nan, 3.0]), 0.5)  # a NaN stays put, the average skips it
    assert np.isnan(smoothed[1]) and smoothed[[0, 2]] == pytest.approx([1.0, 7 / 3])


def test_thin_caps_points_and_keeps_the_ends():
    assert list(figures.thin(5, cap=10)) == [0, 1, 2, 3, 4]
    kept = figures.thin(10_001, cap=100)
    assert len(kept) <= 100 and kept[0] == 0 and kept[-1] == 10_000


def test_loss_figure_fixes_the_x_axis_to_the_run_length():
    rows = pd.DataFrame({"step": np.arange(1, 5001), "loss": np.linspace(2, 1, 5000)})
    fig = figures.loss_figure(rows, steps=20_000, terms=["loss"], smoothing=0.0).to_plotly_json()
    assert list(fig["layout"]["xaxis"]["range"]) == [0, 20_000]
    raw, smooth = fig["data"]
    assert len(values(raw["x"])) <= figures.CURVE_POINTS and values(raw["x"])[-1] == 5000
    assert values(smooth["y"])[-1] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("previous", "lo", "hi", "expected"),
    [
        (None, 0.0, 10.0, (-1.0, 11.0)),  # fit with 10% padding
        ((-1.0, 11.0), 2.0, 9.0, (-1.0, 11.0)),  # inside and filling > 1/3: holds still
        ((-1.0, 11.0), 2.0, 12.0, (1.0, 13.0)),  # leaves the range: refit
        ((-1.0, 11.0), 4.0, 6.0, (3.8, 6.2)),  # shrank to 1/6: refit
    ],
)
def test_steady_range(previous, lo, hi, expected):
    assert figures.steady_range(previous, lo, hi) == pytest.approx(expected)


def test_square_ranges_have_equal_spans_and_hold_still():
    xy = np.array([[0.0, 0.0], [4.0, 1.0]])
    x, y = figures.square_ranges(xy, None)
    assert x[1] - x[0] == pytest.approx(y[1] - y[0]) == pytest.approx(4.8)
    assert figures.square_ranges(xy * 0.9, (x, y)) == (x, y)


def test_scatter_has_one_trace_per_class_and_a_margin_circle():
    xy = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    labels = np.array([0, 1, 0])
    fig = figures.scatter_figure(xy, labels, ["a", "b"], hover=["p", "q", "r"], circle=(2.0, 0.0, 0.5))
    a, b, anchor = fig.to_plotly_json()["data"]
    assert (a["name"], b["name"], anchor["name"]) == ("a", "b", "anchor")
    assert list(values(a["customdata"])) == [0, 2] and list(a["text"]) == ["p", "r"]  # positions map back
    (circle,) = fig.layout.shapes
    assert (circle.x0, circle.x1, circle.y0, circle.y1) == (1.5, 2.5, -0.5, 0.5)


def test_distance_histogram_densities_integrate_to_one_and_mark_the_margin():
    rng = np.random.default_rng(0)
    fig = figures.distance_histogram(rng.uniform(0, 1, 500), rng.uniform(1, 2, 500), 1.2, (0.0, 2.0), bins=20)
    for bar in fig.to_plotly_json()["data"]:
        assert (values(bar["y"]) * 0.1).sum() == pytest.approx(1.0)  # bin width 2 / 20
    assert [shape.x0 for shape in fig.layout.shapes] == [1.2]  # one panel, one margin line


def test_distance_histogram_zooms_on_a_margin_the_distances_dwarf():
    # Distances out to 40 with a margin of 0.5: the full panel squeezes the margin against its axis,
    # so a second panel shows [0, 2.5 margins] where the line sits in the middle of the picture.
    rng = np.random.default_rng(1)
    positive, negative = rng.uniform(0, 0.6, 400), rng.uniform(0.3, 40, 400)
    fig = figures.distance_histogram(positive, negative, 0.5, (0.0, 40.0), bins=20)
    assert [shape.x0 for shape in fig.layout.shapes] == [0.5, 0.5]
    assert list(fig.layout.xaxis2.range) == [0.0, 1.25]
    zoomed = [bar for bar in fig.to_plotly_json()["data"] if bar["xaxis"] == "x2"]
    near = {bar["name"]: (values(bar["y"]) * 1.25 / 20).sum() for bar in zoomed}  # mass shown near the margin
    assert near["positive pairs"] == pytest.approx(np.mean(positive <= 1.25))
    assert near["negative pairs"] == pytest.approx(np.mean(negative <= 1.25))
    assert figures.distance_histogram(positive, negative, None, (0.0, 40.0)).layout.shapes == ()
    # Nothing over the panels but the margin's label: no panel titles under the figure's title, and the
    # legend below the panels (inside, it covered the zoomed one; above, it wrapped over the title).
    assert [a.text for a in fig.layout.annotations] == ["margin", "margin"]
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0
    assert (fig.layout.xaxis.title.text, fig.layout.xaxis2.title.text) == ("distance", "zoomed in")


def test_scatter_ranges_grow_to_hold_the_whole_margin_circle():
    xy = np.array([[0.0, 0.0], [0.1, 0.1]])
    fig = figures.scatter_figure(xy, np.array([0, 1]), ["a", "b"], ranges=((0.0, 0.1), (0.0, 0.1)),
                                 circle=(0.0, 0.0, 1.0))  # fmt: skip
    (x0, x1), (y0, y1) = fig.layout.xaxis.range, fig.layout.yaxis.range
    assert x0 <= -1.0 and x1 >= 1.0 and y0 <= -1.0 and y1 >= 1.0
    assert x1 - x0 == pytest.approx(y1 - y0)  # still square: the circle stays round


def test_metrics_history_keeps_scores_in_zero_one_and_its_legend_off_the_step_label():
    history = pd.DataFrame(
        {"step": [0, 10], "nmi": [0.1, 0.6], "silhouette": [-0.2, 0.4], "davies_bouldin": [9.0, 1.4]}
    )
    names = {"nmi": "NMI", "silhouette": "Silhouette", "davies_bouldin": "Davies-Bouldin", "ami": "AMI",
             "adjusted_rand": "ARI", "rand_index": "Rand index", "knn_accuracy": "k-NN accuracy"}  # fmt: skip
    history = history.assign(ami=0.5, adjusted_rand=0.5, rand_index=0.5, knn_accuracy=0.5)
    fig = figures.metrics_history_figure(history, names, 10)
    assert list(fig.layout.yaxis.range) == [-0.2, 1.0]
    assert list(fig.layout.yaxis2.tickvals) == [0, 5, 10] and list(fig.layout.yaxis2.range) == [0, 10]
    assert fig.layout.legend.y > 1  # above the plot, not over the x-axis title
    assert fig.layout.legend.entrywidth == pytest.approx(1 / 4)  # four a row, not one a row over the title
    assert fig.layout.margin.t >= 40 + 2 * 16  # room for the title and two legend rows (seven metrics)
    assert fig.layout.title.yref == "container" and fig.layout.title.yanchor == "top"  # above the legend


def test_metric_curves_join_the_snapshots_that_measured_them():
    # The whole-set metrics (NMI) are measured every few snapshots; k-NN accuracy at each.
    history = pd.DataFrame(
        {"step": [0, 5, 10, 15], "nmi": [0.1, np.nan, 0.5, np.nan], "knn_accuracy": [0.2, 0.4, 0.6, 0.8]}
    )
    fig = figures.metrics_history_figure(history, {"nmi": "NMI", "knn_accuracy": "k-NN accuracy"}, 20)
    nmi, knn = fig.data
    assert list(nmi.x) == [0, 10] and list(nmi.y) == [0.1, 0.5]
    assert list(knn.x) == [0, 5, 10, 15]
    compared = figures.compare_figure({"run": history}, 0.0, column="nmi", title="NMI")
    assert list(compared.data[0].x) == [0, 10] and list(compared.data[0].y) == pytest.approx([0.1, 0.5])
    assert compared.layout.yaxis.title.text == "NMI"  # as the metric is named, not "nmi"


@pytest.mark.parametrize(
    "high, expected",
    [
        (9.0, [0, 5, 10]),
        (1.4, [0, 0.5, 1, 1.5]),
        (11.8, [0, 5, 10, 15]),
        (0.3, [0, 0.1, 0.2, 0.3]),
        (4, [0, 1, 2, 3, 4]),
    ],
)
def test_nice_ticks_are_round_and_cover_the_highest_value(high, expected):
    assert figures.nice_ticks(high) == pytest.approx(expected)


def test_mosaic_places_each_image_with_a_gap():
    originals = np.zeros((2, 1, 2, 2))
    recon = np.ones((2, 1, 2, 2)) * 0.5
    grid = figures.mosaic([originals, recon], scale=1)
    assert grid.shape == (6, 6)  # 2 rows of (2 + 1 gap), 2 columns of (2 + 1 gap)
    assert grid[0, 0] == 0 and grid[3, 0] == 0.5 and grid[2, 0] == 1 and grid[0, 2] == 1
    rgb = figures.mosaic([np.zeros((3, 3, 4, 4))], scale=2)
    assert rgb.shape == (10, 30, 3)


def test_mining_figure_draws_the_triplet_shares_and_the_count_on_its_own_axis():
    rows = pd.DataFrame({"step": [1, 2], "mined": [40.0, 10.0], "active_share": [0.5, 0.2], "hard_share": [0.1, 0.0],
                         "semi_hard_share": [0.4, 0.2], "easy_share": [0.5, 0.8]})  # fmt: skip
    fig = figures.mining_figure(rows, steps=10, smoothing=0.0)
    assert [t.name for t in fig.data] == ["terms that cost loss", "hard negatives", "semi-hard negatives",
                                          "easy negatives (no loss)", "mined (right axis)"]  # fmt: skip
    assert list(fig.data[3].y) == [0.5, 0.8] and fig.data[4].yaxis == "y2"
    assert list(fig.layout.xaxis.range) == [0, 10]
    assert list(fig.layout.yaxis2.tickvals) == [0, 10, 20, 30, 40]  # whole counts (ticks of 51.6 were seen)


def test_parallel_coordinates_keep_a_score_every_run_shares_within_its_bounds():
    table = pd.DataFrame({"temperature": [0.05, 0.1, 0.5], "k-NN accuracy": [0.97, 0.97, 0.97]})
    fig = figures.parallel_figure(table, ["temperature"], "k-NN accuracy", "k-NN accuracy")
    score = fig.data[0].dimensions[-1]
    assert list(score.range) == [pytest.approx(0.92), 1.0]  # Plotly's own: 0.87 to 1.06, past an accuracy's 1
    assert (fig.data[0].line.cmin, fig.data[0].line.cmax) == (score.range[0], score.range[1])
    assert fig.layout.margin.t > 70  # the first axis's name clear of the title


def test_a_metric_against_a_named_knob_is_points_and_against_a_number_a_line():
    table = pd.DataFrame({"loss": ["contrastive", "cosine-embedding"], "margin": [0.5, 1.0], "k-NN": [0.9, 0.8]})
    assert figures.metric_by_knob(table, "loss", "k-NN", None).data[0].mode == "markers"  # no trend between losses
    assert figures.metric_by_knob(table, "margin", "k-NN", None).data[0].mode == "lines+markers"
