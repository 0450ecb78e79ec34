"""Explore: one run in depth. A timeline over its snapshots (slider and play), the forces the loss
puts on each item, and box- or lasso-selected points with the items behind them.

The view is in the URL (`?run=ID&step=N`), so a link opens it again.
"""

import numpy as np
import pandas as pd
import streamlit as st

from contrast_core import decoding, export
from contrast_core.pair_stats import neighbours
from contrast_core.projection import in_plane
from contrast_core.store import StoreError
from ui import backend, demo, figures, items, layouts, tab
from ui.run_table import run_label
from ui.run_view import as_measured, class_names, loss_distance, margin_distance, similarity

SHOWN_ITEMS = 60  # images shown for a selection
NEIGHBOURS = 8  # items in each row of a clicked item's neighbours
PLAY_SECONDS = 0.8  # a snapshot a tick while playing
STEP = "explore.step"  # session_state: the snapshot shown
ITEM, SELECTED = "explore.item", "explore.selected"  # session_state: the item chosen; the items box-selected
Z = ("explore.z1", "explore.z2")  # session_state: the latent point decoded (2-D VAE latents)
LATENT_BOX = "explore.latent_box"  # session_state: the span the decoder's sliders and click grid cover
NOTES = {
    "forces": "Arrows: where the loss pushes each item of one fixed batch of held-out items, drawn by the "
    "run's own sampler (the negative gradient of the loss with respect to the item's embedding; the "
    "longest arrow is drawn at an eighth of the plot). Same-class items are pulled together, other "
    "classes inside the margin pushed apart. Rings: items in the batch that no term of the loss touches. "
    "Points without either were not in the batch.",
}


@st.cache_data(max_entries=16, show_spinner=False)
def _projector_files(home: str, run_id: str, step: int) -> dict[str, str]:
    """A snapshot's Projector files, made once (a snapshot does not change), not at every Play tick."""
    return export.projector_files(backend.run_store(), run_id, step)


@st.cache_data(max_entries=4, show_spinner=False)
def _metric_rows(home: str, run_id: str, last_step: int) -> pd.DataFrame:
    """The run's metric rows, read again only when it has logged more (`last_step` is the cache key)."""
    return pd.DataFrame(backend.run_store().read_metrics(run_id))


def snapshot_view(run_id: str, steps: list[int], config: dict, was_playing: bool) -> None:
    """The timeline, the scatter (with the forces) and the selection, for the step chosen."""
    store = backend.run_store()
    if st.session_state.get("explore.play"):
        later = [s for s in steps if s > st.session_state.get(STEP, steps[0])]
        st.session_state[STEP] = later[0] if later else steps[0]
    elif st.session_state.get(STEP) not in steps:
        st.session_state[STEP] = steps[-1]
    if len(steps) > 1:
        slider, play = st.columns([5, 1], vertical_alignment="bottom")
        step = slider.select_slider("Snapshot at step", steps, key=STEP)
        if play.toggle("Play", key="explore.play", help="Step through the run's snapshots.") != was_playing:
            st.rerun()  # the whole page: the timeline's tick follows the button
    else:
        step = steps[0]
    st.query_params["step"] = str(step)
    try:
        arrays = store.load_snapshot(run_id, step)
    except StoreError as exc:  # a damaged file: say so, and the timeline still moves to the others
        st.error(str(exc), icon=":material/broken_image:")
        return
    dim = arrays["embeddings"].shape[1]
    method = "PCA"
    asked = st.query_params.get("projection")
    if "explore.method" not in st.session_state and asked:  # a link's projection, once
        if asked in layouts.METHODS:
            st.session_state["explore.method"] = asked
        else:
            st.warning(f"projection: unknown {asked!r} (choose from {', '.join(layouts.METHODS)}); showing PCA.")
    if dim > 2:
        # No default once the state holds one (a link's, set above): Streamlit warns of a widget given both.
        default = None if "explore.method" in st.session_state else "PCA"
        method = (
            st.segmented_control("Projection", list(layouts.METHODS), default=default, key="explore.method") or "PCA"
        )
    if method == "PCA":
        st.query_params.pop("projection", None)
    else:
        st.query_params["projection"] = method
    options = projection_options(method)
    with st.spinner(f"{method} of {len(arrays['embeddings'])} points (UMAP compiles on first use)..."):
        try:
            xy = layouts.layout(run_id, step, method, arrays, config, options)
        except RuntimeError as exc:  # from its process: a bad snapshot, or the process killed for memory
            st.error(f"{method}: {exc}; showing PCA", icon=":material/error:")
            method, xy = "PCA", layouts.layout(run_id, step, "PCA", arrays, config)
    classes = class_names(arrays)
    hover = items.hover_texts(run_id, arrays["index"])
    title = f"Step {step}: " + ("the 2-D embedding" if dim == 2 else f"{method} of the {dim}-D embedding")
    fig = figures.scatter_figure(xy, arrays["labels"], classes, hover=hover, title=title, height=560, webgl=True,
                                 values=arrays.get("targets"))  # fmt: skip
    if st.toggle(
        "Density contours",
        key="explore.density",
        help="Per class: how tight its cluster is.",
        disabled="targets" in arrays,
    ):  # a continuous target has no classes to draw
        figures.add_density(fig, xy, arrays["labels"], classes)
    can_draw_forces = "forces" in arrays and method == "PCA"  # UMAP and t-SNE are not linear: no arrows
    show_forces = st.toggle("Forces", key="explore.forces", disabled=not can_draw_forces,
                            help=NOTES["forces"] if can_draw_forces else "Forces are drawn on the 2-D embedding "
                            "or its PCA, for snapshots that recorded them.")  # fmt: skip
    if show_forces and can_draw_forces:
        measured = as_measured(arrays["embeddings"], config)
        force = in_plane(arrays["forces"], measured, xy)
        figures.add_forces(fig, xy, force, arrays["force_drawn"])
    query, found = st.session_state.get(ITEM), None
    if query is not None:
        found = retrieval(arrays, config, int(query))
        figures.add_neighbours(fig, xy, int(query), found)
    if decodes_clicks(arrays, config, method):
        box = latent_box(arrays["embeddings"])
        st.session_state[LATENT_BOX] = box
        figures.add_click_grid(fig, box)
        settle_latent_point(arrays["embeddings"])
        fig.add_scatter(
            x=[st.session_state[Z[0]]],
            y=[st.session_state[Z[1]]],
            mode="markers",
            name="decoded",
            hoverinfo="skip",
            marker=dict(symbol="cross-thin-open", size=18, color="#222", line_width=3),
        )
    # What the chart picks is kept in the session (_on_select): the chart's identity changes with its figure.
    st.plotly_chart(fig, key="explore.scatter", on_select=_on_select, selection_mode=("points", "box", "lasso"))
    if show_forces and can_draw_forces:
        drawn = arrays["force_drawn"]
        idle = drawn & ~(np.linalg.norm(arrays["forces"], axis=1) > 1e-12)
        st.caption(f"{int(drawn.sum())} items in the batch, {int(idle.sum())} of them untouched by the loss. "
                   + NOTES["forces"])  # fmt: skip
    vae_panels(arrays, step)
    decoder_panels(arrays, config, step)
    with st.expander("Export this snapshot", icon=":material/download:"):
        st.caption("For TensorBoard's Embedding Projector (projector.tensorflow.org: Load, then both files): "
                   "one embedding per line, and each item's class and dataset row. "
                   f"`python -m contrast_core export {run_id} --step {step}` writes the same.")  # fmt: skip
        files = _projector_files(backend.home(), run_id, step)
        left, right = st.columns(2)
        for column, (name, text) in zip((left, right), files.items(), strict=True):
            column.download_button(name, text, f"{run_id}-{step}-{name}", "text/tab-separated-values",
                                   icon=":material/download:", width="stretch", key=f"explore.{name}")  # fmt: skip
    selection(run_id, arrays, classes, config, found)
    rows = _metric_rows(backend.home(), run_id, store.get_run(run_id).step)
    if "mined" in rows:
        st.plotly_chart(figures.mining_figure(rows, config["steps"], 0.6, at_step=step), key="explore.mining")
        st.caption("What the miner handed the loss at each training step; the dashed line is the snapshot shown.")


def _on_select() -> None:
    """A click on an item chooses it; a box or lasso selects items; a click on empty latent space (a 2-D
    VAE) moves the decoder's sliders there; a double click clears the choice."""
    event = st.session_state.get("explore.scatter") or {}
    items, place = figures.picked(event.get("selection", {}).get("points", []))
    if place is not None and LATENT_BOX in st.session_state:
        lo, hi = st.session_state[LATENT_BOX]
        for key, value, low, high in zip(Z, place, lo, hi, strict=True):
            st.session_state[key] = float(np.clip(value, low, high))
        return
    st.session_state[ITEM] = items[0] if len(items) == 1 else None
    st.session_state[SELECTED] = items if len(items) > 1 else []


def decodes_clicks(arrays: dict, config: dict, method: str) -> bool:
    """Whether the scatter is the latent space itself, with a decoder to draw any point of it: a 2-D VAE
    latent drawn as it is (not scaled to unit length for a cosine)."""
    return (
        any(key.startswith("decoder.") for key in arrays)
        and arrays["originals"].ndim == 4
        and arrays["embeddings"].shape[1] == 2
        and method == "PCA"
        and loss_distance(config) != "cosine"
    )


def latent_box(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The latent span worth decoding: the items' means, a tenth of the span to spare on each side."""
    finite = mu[np.isfinite(mu).all(axis=1)]
    if not len(finite):
        return np.array([-3.0, -3.0]), np.array([3.0, 3.0])
    lo, hi = finite.min(axis=0), finite.max(axis=0)
    spare = np.maximum((hi - lo) * 0.1, 1e-3)
    return lo - spare, hi + spare


def settle_latent_point(mu: np.ndarray) -> None:
    """Puts the decoded latent point in the session: the items' median at first, then where the sliders or a
    click left it, kept inside this snapshot's span as the timeline moves."""
    lo, hi = latent_box(mu)
    finite = mu[np.isfinite(mu).all(axis=1)]
    for k, key in enumerate(Z):
        start = st.session_state.get(key, float(np.median(finite[:, k])) if len(finite) else 0.0)
        st.session_state[key] = float(np.clip(start, lo[k], hi[k]))


def projection_options(method: str) -> tuple:
    """The chosen projection's own settings, as (name, value) pairs (hashable: the layouts are cached by them)."""
    if method == "UMAP":
        left, right = st.columns(2)
        neighbours = left.slider("UMAP neighbours", 2, 100, 15, key="explore.n_neighbors",
                                 help="How many neighbours shape each point's place: few keep local detail, "
                                 "many the global layout.")  # fmt: skip
        spread = right.slider("UMAP min. distance", 0.0, 0.99, 0.1, 0.01, key="explore.min_dist",
                              help="How tightly points may pack: small values give tight clusters.")  # fmt: skip
        return (("n_neighbors", neighbours), ("min_dist", spread))
    if method == "t-SNE":
        perplexity = st.slider("t-SNE perplexity", 5, 50, 30, key="explore.perplexity",
                               help="About the number of close neighbours each point keeps.")  # fmt: skip
        return (("perplexity", perplexity),)
    return ()


def vae_panels(arrays: dict, step: int) -> None:
    """A VAE's reconstructions at this snapshot and, for a 2-D latent, its decoded map: both move with
    the timeline, so the slider (or Play) shows what the decoder learns."""
    if "reconstructions" not in arrays:
        return
    left, right = st.columns(2)
    left.image(figures.mosaic([arrays["originals"], arrays["reconstructions"]], scale=4), clamp=True,
               caption=f"Held-out items (top) and their reconstructions (bottom) at step {step}")  # fmt: skip
    if "latent_grid" in arrays:
        grid, (z1, z2) = arrays["latent_grid"], arrays["latent_axes"]
        side = len(z1)
        rows = [grid[i * side : (i + 1) * side] for i in range(side)]
        right.image(figures.mosaic(rows, scale=3), clamp=True,
                    caption=f"The 2-D latent space decoded at step {step}: z1 from {z1[0]:.2g} to {z1[-1]:.2g} "
                    f"(left to right), z2 from {z2[-1]:.2g} to {z2[0]:.2g} (top to bottom), the span of the "
                    "held-out items' means.")  # fmt: skip


def decoder_panels(arrays: dict, config: dict, step: int) -> None:
    """Decode a latent point (2-D latents: the sliders, or a click on the scatter) and interpolate between
    two items' means, with the decoder as it was at this snapshot."""
    if not any(key.startswith(decoding.PREFIX) for key in arrays) or arrays["originals"].ndim != 4:
        return
    mu = arrays["embeddings"]
    scale = max(1, 64 // arrays["originals"].shape[-1])

    def decode(points: np.ndarray) -> np.ndarray:
        return decoding.decode(arrays, points)

    left, right = st.columns(2)
    with left:
        if mu.shape[1] == 2:
            lo, hi = latent_box(mu)
            settle_latent_point(mu)
            z1 = st.slider("z1", float(lo[0]), float(hi[0]), key=Z[0])
            z2 = st.slider("z2", float(lo[1]), float(hi[1]), key=Z[1])
            if decodes_clicks(arrays, config, "PCA"):
                st.caption("Or click anywhere on the latent space above.")
            st.image(figures.mosaic([decode(np.array([[z1, z2]]))], scale=scale * 2), clamp=True, width=160,
                     caption=f"The decoder at step {step}, at (z1, z2) = ({z1:.2f}, {z2:.2f})")  # fmt: skip
    with right:
        last = len(mu) - 1
        a = st.number_input("From item", 0, last, 0, key="explore.from")
        b = st.number_input("To item", 0, last, min(1, last), key="explore.to")
        path = mu[a] + np.linspace(0, 1, 10)[:, None] * (mu[b] - mu[a])  # (10, D) from one mean to the other
        st.image(figures.mosaic([decode(path)], scale=scale), clamp=True,
                 caption=f"Decoded along the straight line from item {a}'s mean to item {b}'s, at step {step}")  # fmt: skip


def selection(run_id: str, arrays: dict, classes: list[str], config: dict, found: dict | None) -> None:
    """The chosen item's neighbours (`found`, as marked on the scatter), or the items box-selected."""
    positions = np.array(st.session_state.get(SELECTED, []), dtype=int)
    chosen = st.number_input("Item", min_value=0, max_value=len(arrays["labels"]) - 1, value=None, step=1,
                             key=ITEM, placeholder="click a point, or type its number",
                             help="An item's nearest neighbours in the embedding, its hardest negatives and "
                             "the positives beyond the margin, also marked on the scatter.")  # fmt: skip
    if chosen is not None:
        neighbours_panel(run_id, arrays, classes, config, int(chosen), found or retrieval(arrays, config, int(chosen)))
        return
    if len(positions) == 0:
        st.caption("Click a point for its neighbours (a double click clears it); pick the box or lasso tool above "
                   "the chart and drag around points to see the items behind them.")  # fmt: skip
        return
    labels = arrays["labels"][positions]
    if "targets" in arrays:
        chosen_targets = arrays["targets"][positions]
        counts = f"targets {chosen_targets.min():.4g} to {chosen_targets.max():.4g}"
    else:
        counts = ", ".join(f"{classes[c]}: {n}" for c, n in zip(*np.unique(labels, return_counts=True), strict=True))
    st.markdown(f"**{len(positions)} selected** ({counts})")
    x = items.items(run_id, arrays["index"][positions])
    if x is None:
        st.info("The dataset's items cannot be loaded here, so only their classes are shown.")
    elif x.ndim == 4:
        shown = x[:SHOWN_ITEMS]
        rows = [shown[i : i + 15] for i in range(0, len(shown), 15)]
        rows[-1] = np.concatenate([rows[-1], np.ones((15 - len(rows[-1]), *shown.shape[1:]), dtype=shown.dtype)])
        scale = max(1, 48 // shown.shape[-1])  # about 48 pixels a side
        st.image(figures.mosaic(rows, scale=scale), caption=f"The first {len(shown)} selected items", clamp=True)
    else:
        st.dataframe({"class": [_name(arrays, classes, r) for r in positions],
                      **{f"x{j}": x[:, j] for j in range(x.shape[1])}})  # fmt: skip


def retrieval(arrays: dict, config: dict, query: int) -> dict:
    """An item's neighbours, hardest negatives and far positives, in the loss's own distance."""
    embeddings = as_measured(arrays["embeddings"], config)
    labels, delta = similarity(arrays)
    return neighbours(embeddings, labels, query, loss_distance(config), margin_distance(config), NEIGHBOURS, delta)


def _name(arrays: dict, classes: list[str], row: int) -> str:
    """An item's class, or its continuous target."""
    return f"y {arrays['targets'][row]:.4g}" if "targets" in arrays else classes[arrays["labels"][row]]


def _alike(arrays: dict, row: int, query: int) -> bool:
    """Whether an item is a positive of the query: its class, or its target within delta."""
    labels, delta = similarity(arrays)
    return labels[row] == labels[query] if delta is None else abs(labels[row] - labels[query]) <= delta


def neighbours_panel(run_id: str, arrays: dict, classes: list[str], config: dict, query: int, found: dict) -> None:
    """The retrieval a Siamese network exists for: an item's nearest items, in the loss's own distance."""
    distance, margin = loss_distance(config), margin_distance(config)
    dim, delta = arrays["embeddings"].shape[1], similarity(arrays)[1]
    what = f"class {_name(arrays, classes, query)}" if delta is None else _name(arrays, classes, query)
    st.markdown(f"**Item {query}** ({what}), in the {dim}-D embedding by {distance} distance")
    x = items.items(run_id, arrays["index"])
    other = "of another class" if delta is None else f"whose target is more than delta = {delta:.3g} away"
    rows = {
        "Nearest items": found["nearest"],
        f"Hardest negatives: the closest items {other}": found["hardest_negatives"],
        f"Positives beyond the margin ({found['positives_beyond']} in all), farthest first": found["far_positives"],
    }
    if margin is None:
        rows.popitem()  # no margin: no positive lies beyond it
    for title, (near, d) in [("The item", (np.array([query]), np.array([0.0]))), *rows.items()]:
        st.caption(title)
        if len(near) == 0:
            st.caption("none")
            continue
        captions = [f"{_name(arrays, classes, r)}{'' if _alike(arrays, r, query) else ' (other)'}"
                    + (f" · {v:.3g}" if r != query else "") for r, v in zip(near, d, strict=True)]  # fmt: skip
        if x is not None and x.ndim == 4:
            scale = max(1, 48 // x.shape[-1])
            st.image([figures.mosaic([x[r][None]], scale=scale) for r in near], caption=captions, clamp=True,
                     width=72 if x.shape[1] == 1 or x.shape[-1] <= 16 else 96)  # fmt: skip
        else:
            st.dataframe({"item": near, "class": [_name(arrays, classes, r) for r in near], distance: d})
    if margin is not None:
        others = "of other classes" if delta is None else other
        st.caption(f"{found['negatives_inside']} items {others} lie inside the margin ({margin:.3g}).")


st.title("Explore a run")
watched = tab.watched_run()  # the tab's run, or the link's
store = backend.run_store()
runs = {run.id: run for run in store.list_runs() if run.id == watched or demo.can_change(run)}  # a demo: own, linked
snapshotted = store.runs_with_snapshots()
with_snapshots = [i for i in runs if i in snapshotted]  # newest first
if not with_snapshots:
    tab.show_in_url(watched)  # kept for F5 and the other pages
    st.info("No snapshots yet: train a run on the Playground first.")
    st.stop()
default = with_snapshots.index(watched) if watched in with_snapshots else 0
run_id = st.selectbox("Run", with_snapshots, index=default, format_func=lambda i: run_label(runs[i]))
tab.show_in_url(run_id)  # the run shown: F5 or the link opens it again
if watched and watched not in with_snapshots:
    st.caption(f"Run {watched} " + ("has no snapshot yet." if watched in runs else "was not found."))
steps = [s["step"] for s in store.list_snapshots(run_id)]
if st.session_state.get("explore.run") != run_id:  # another run: its last snapshot, or the link's step
    asked = st.query_params.get("step", "") if "explore.run" not in st.session_state else ""
    st.session_state["explore.run"] = run_id
    for key in (ITEM, SELECTED, *Z):  # items and latent points of another run
        st.session_state.pop(key, None)
    if asked and (not asked.isdigit() or int(asked) not in steps):
        st.warning(f"step: run {run_id} has no snapshot at step {asked!r}; showing its last one.")
    st.session_state[STEP] = int(asked) if asked.isdigit() and int(asked) in steps else steps[-1]
playing = st.session_state.get("explore.play", False)
st.fragment(run_every=PLAY_SECONDS if playing else None)(tab.guarded(snapshot_view))(
    run_id, steps, runs[run_id].config, playing
)
