"""The run form: every control reads its choices from the engine's registries; RunConfig judges.

`config_form()` draws the controls and returns a RunConfig, or {field: reason} when RunConfig
refuses the combination; each reason is shown under its own control. Values live in
`st.session_state` ("cfg.<field>" for the widgets, SAVED for the last values), so they survive
a switch to another page and back.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import get_args

import streamlit as st

from contrast_core import data, distances, losses, models, samplers
from contrast_core.config import CLASS_BALANCED, TOY_DATASETS, ConfigError, RunConfig

DEFAULTS = {name: info.default for name, info in RunConfig.model_fields.items()}
SAVED = "cfg_saved"  # session_state key: the form's last values, kept while its widgets are not drawn
PRESETS: dict[str, dict] = {  # recipes, applied over RunConfig's defaults
    "Siamese + contrastive (Hadsell)": {},  # the defaults are this recipe: random pairs, margin 1, 2-D
    "Triplet + semi-hard": {"loss": "triplet", "sampler": "semi-hard", "margin": 0.5, "m_per_class": 8},
    "SimCLR-style NT-Xent": {  # no labels: two augmented views of each item are its only positive
        "loss": "nt-xent", "sampler": "augmented-views", "distance": "cosine", "temperature": 0.2,
        "augment": 0.5, "embedding_dim": 16, "batch_size": 256,
    },
    "VAE + contrastive": {"model": "vae", "beta": 1.0, "contrastive_weight": 1.0},
}  # fmt: skip
EMBEDDING_DIMS = (2, 3, 4, 8, 16, 32, 64, 128)
BATCH_SIZES = (16, 32, 64, 100, 128, 256, 512, 1024)
LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 10.0)  # 10: to watch divergence


# --- margins: pure, tested without Streamlit -----------------------------------------------------


def margin_scale(loss: str, distance: str) -> tuple[float, float, float]:
    """(low, high, default) of the margin slider: it follows the metric (cosine in [0, 2])."""
    if loss == "cosine-embedding":
        return -1.0, 1.0, 0.0  # torch's margin is a similarity
    metric = distances.build(distance)
    high = metric.high if math.isfinite(metric.high) else 2.5 * metric.from_cosine(2.0)  # 5 euclid, 10 squared
    return metric.low, float(high), metric.default_margin


def margin_to_cosine(margin: float, loss: str, distance: str) -> float:
    """The cosine distance between unit vectors that this margin stands for."""
    return 1 - margin if loss == "cosine-embedding" else distances.build(distance).to_cosine(margin)


def translate_margin(margin: float, old: tuple[str, str], new: tuple[str, str]) -> float:
    """Carries a margin over a change of (loss, distance), keeping its meaning on unit vectors."""
    if "margin" not in losses.LOSS_KNOBS[old[0]]:
        return margin_scale(*new)[2]
    d_cos = min(max(margin_to_cosine(margin, *old), 0.0), 2.0)
    value = 1 - d_cos if new[0] == "cosine-embedding" else distances.build(new[1]).from_cosine(d_cos)
    low, high, _ = margin_scale(*new)
    return round(min(max(value, low), high), 2)


def equivalent_margins(margin: float, loss: str, distance: str) -> str:
    """One line: the same margin in the other metrics, for unit vectors (d_euclid^2 = 2 d_cos)."""
    d_cos = margin_to_cosine(margin, loss, distance)
    if not 0 <= d_cos <= 2:
        return "No unit-vector equivalent: cosine distances lie in [0, 2]."
    shown = [n for n in distances.DISTANCES if loss == "cosine-embedding" or n != distance]
    parts = [f"{name} {distances.build(name).from_cosine(d_cos):.3g}" for name in shown]
    return "Same margin on unit vectors: " + ", ".join(parts)


# --- session state ---------------------------------------------------------------------------------


def _choices(field: str) -> list[str]:
    """The values a Literal field of RunConfig allows, in its order."""
    return list(get_args(RunConfig.model_fields[field].annotation))


def _key(field: str) -> str:
    """The widget key of a field, seeded from the saved value (or the default) when missing."""
    key = f"cfg.{field}"
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(SAVED, {}).get(field, DEFAULTS[field])
    return key


def _apply_preset() -> None:
    values = DEFAULTS | PRESETS[st.session_state["cfg.preset"]]
    st.session_state[SAVED] = dict(values)
    for field, value in values.items():
        st.session_state[f"cfg.{field}"] = value


def _on_objective_change() -> None:
    saved = st.session_state.get(SAVED, {})
    old = (saved.get("loss", DEFAULTS["loss"]), saved.get("distance", DEFAULTS["distance"]))
    new = (st.session_state.get("cfg.loss", old[0]), st.session_state.get("cfg.distance", old[1]))
    margin = st.session_state.get("cfg.margin", saved.get("margin", DEFAULTS["margin"]))
    st.session_state["cfg.margin"] = translate_margin(margin, old, new)


# --- the form --------------------------------------------------------------------------------------


class _Form:
    """Draws controls and remembers, per field, where its error message goes."""

    def __init__(self):
        self.values: dict = {}
        self.slots: dict = {}
        self._row: list[str] | None = None  # fields drawn in the current row

    @contextmanager
    def row(self):
        """Two controls side by side; their messages go under the pair, full width."""
        self._row = []
        yield st.columns(2)
        below = st.container()
        for field in self._row:
            self.slots[field] = below
        self._row = None

    def control(self, field: str, widget, label: str, *, used: bool = True, **kwargs):
        """One widget for `field`, with an empty slot under it (or under its row) for its message.

        A control the current loss does not read is drawn disabled and left out of the config.
        """
        value = widget(label, key=_key(field), disabled=not used, **kwargs)
        if self._row is None:
            self.slots[field] = st.empty()
        else:
            self._row.append(field)
        if used:
            self.values[field] = value
        return value

    def report(self, errors: dict[str, str]) -> None:
        """Each reason under its control; reasons for fields without one at the end."""
        for field, reason in errors.items():
            slot = self.slots.get(field)
            (slot or st).error(reason if slot else f"{field}: {reason}", icon=":material/error:")


def config_form() -> RunConfig | dict[str, str]:
    """Draws the run controls; returns the RunConfig, or {field: reason} if it is invalid."""
    form = _Form()
    if "cfg.preset" not in st.session_state:
        st.session_state["cfg.preset"] = next(iter(PRESETS))
    st.selectbox("Recipe", list(PRESETS), key="cfg.preset", on_change=_apply_preset,
                 help="Sets every control to a classic recipe; change any of them afterwards.")  # fmt: skip
    _data_controls(form)
    _model_controls(form)
    _objective_controls(form)
    _training_controls(form)
    st.session_state[SAVED] = st.session_state.get(SAVED, {}) | form.values
    try:
        config = RunConfig.check(**form.values)
    except ConfigError as exc:
        form.report(exc.errors)
        return exc.errors
    for note in config.notes():
        st.caption(note)
    return config


def _data_controls(form: _Form) -> None:
    st.markdown("**Data**")
    dataset = form.control("dataset", st.selectbox, "Dataset", options=list(data.DATASETS),
                           help="digits and the toy sets are bundled; the torchvision sets download on first use.")  # fmt: skip
    if dataset in TOY_DATASETS:
        with form.row() as (left, right):
            with left:
                form.control("noise", st.slider, "Noise", min_value=0.0, max_value=1.0, step=0.05)
            with right:
                form.control("n_samples", st.number_input, "Points", min_value=20, max_value=100_000, step=100)
    elif dataset == "csv":
        form.control("csv_path", st.text_input, "CSV file", placeholder="path/to/table.csv")
        form.control("csv_label", st.text_input, "Label column")


def _model_controls(form: _Form) -> None:
    st.markdown("**Model**")
    with form.row() as (left, right):
        with left:
            model = form.control("model", st.selectbox, "Encoder", options=models.MODELS,
                                 help="A Siamese encoder (one network embeds both items of a pair), or a VAE.")  # fmt: skip
        with right:
            form.control("embedding_dim", st.select_slider, "Embedding dim", options=EMBEDDING_DIMS,
                         help="2: the scatter is the embedding itself; more: a PCA or UMAP projection of it.")  # fmt: skip
    if model == "vae":
        with form.row() as (left, right):
            with left:
                form.control("beta", st.number_input, "VAE beta (KL)", min_value=0.0, max_value=100.0, step=0.1)
            with right:
                form.control("contrastive_weight", st.number_input, "Contrastive weight", min_value=0.0,
                             max_value=1000.0, step=0.1)  # fmt: skip


def _objective_controls(form: _Form) -> None:
    st.markdown("**Objective**")
    with form.row() as (left, right):
        with left:
            loss = form.control(
                "loss", st.selectbox, "Loss", options=list(losses.LOSSES), on_change=_on_objective_change
            )
            knobs = losses.LOSS_KNOBS[loss]
        with right:
            distance = form.control("distance", st.selectbox, "Distance", options=list(distances.DISTANCES),
                                    on_change=_on_objective_change, used="distance" in knobs,
                                    help="cosine = 1 - cos, in [0, 2]." if "distance" in knobs
                                    else f"The {loss} loss always uses the cosine.")  # fmt: skip
    low, high, _ = margin_scale(loss, distance)
    key = _key("margin")
    st.session_state[key] = min(max(float(st.session_state[key]), low), high)  # a slider refuses values outside
    unit = "a cosine similarity" if loss == "cosine-embedding" else f"{distance} distance"
    margin = form.control("margin", st.slider, f"Margin ({unit})", min_value=low, max_value=high, step=0.01,
                          used="margin" in knobs,
                          help="Negatives closer than the margin are pushed apart; farther ones cost nothing.")  # fmt: skip
    if "margin" in knobs:
        st.caption(equivalent_margins(margin, loss, distance))
    form.control("temperature", st.slider, "Temperature", min_value=0.01, max_value=1.0, step=0.01,
                 used="temperature" in knobs, help="Softmax temperature of NT-Xent / SupCon: lower is sharper.")  # fmt: skip
    with form.row() as (left, right):
        with left:
            sampler = form.control("sampler", st.selectbox, "Sampler / miner", options=list(samplers.SAMPLERS),
                                   help=f"{loss} takes {losses.LOSSES[loss].kind}; the sampler must produce them.")  # fmt: skip
        with right:
            form.control("augment", st.slider, "Augmentation", min_value=0.0, max_value=1.0, step=0.05,
                         help="Strength of the random per-item augmentation; 0 = none.")  # fmt: skip
    if sampler in CLASS_BALANCED:
        form.control("m_per_class", st.number_input, "Items per class in a batch", min_value=2, max_value=256)


def _training_controls(form: _Form) -> None:
    st.markdown("**Training**")
    with form.row() as (left, right):
        with left:
            form.control("batch_size", st.select_slider, "Batch size", options=BATCH_SIZES,
                         help="Pairs for random-pairs; items for the other samplers.")  # fmt: skip
            form.control(
                "lr", st.select_slider, "Learning rate", options=LEARNING_RATES, format_func=lambda v: f"{v:g}"
            )
        with right:
            form.control("steps", st.number_input, "Steps", min_value=1, max_value=1_000_000, step=100)
            form.control("seed", st.number_input, "Seed", min_value=0, max_value=2**31 - 1)
    with st.expander("Advanced"):
        form.control("eval_size", st.number_input, "Snapshot points", min_value=10, max_value=20_000, step=100,
                     help="Held-out items embedded at every snapshot (the scatter's points).")  # fmt: skip
        form.control("snapshot_every", st.number_input, "Snapshot every (steps, 0 = about 40 per run)", min_value=0)
        form.control("device", st.selectbox, "Device", options=_choices("device"))
        form.control("precision", st.selectbox, "Precision", options=_choices("precision"),
                     help="bfloat16: matrix products in bfloat16, weights and loss in float32. "
                          "Faster on GPUs and on CPUs with AVX-512 BF16; cpu and cuda only.")  # fmt: skip
