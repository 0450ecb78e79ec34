"""The run form: every control reads its choices from the engine's registries; RunConfig judges.

`config_form()` draws the controls and returns a RunConfig, or {field: reason} when RunConfig
refuses the combination; each reason is shown under its own control. Values live in
`st.session_state` ("cfg.<field>" for the widgets, SAVED for the last values), so they survive
a switch to another page and back.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, get_args

import annotated_types
import streamlit as st

from contrast_core import folders, rules, tables
from contrast_core.config import CLASS_BALANCED, MAX_SNAPSHOTS, TOY_DATASETS, ConfigError, RunConfig
from ui import backend, demo

DEFAULTS = {name: info.default for name, info in RunConfig.model_fields.items()}
DEFAULTS["distance"] = rules.LOSSES[DEFAULTS["loss"]].natural_distance  # None in RunConfig: the loss's own
SAVED = "cfg_saved"  # session_state key: the form's last values, kept while its widgets are not drawn
PRESETS: dict[str, dict] = {  # recipes, applied over RunConfig's defaults
    "Siamese + contrastive (Hadsell)": {},  # the defaults are this recipe: random pairs, margin 1, 2-D
    "Triplet + semi-hard": {"loss": "triplet", "sampler": "semi-hard", "margin": 0.5, "m_per_class": 8},
    "SimCLR-style NT-Xent": {  # no labels: two augmented views of each item are its only positive
        "loss": "nt-xent", "sampler": "augmented-views", "temperature": 0.2,
        "augment": 0.5, "embedding_dim": 16, "batch_size": 256,
    },
    # beta 0.1: at beta 1 the KL term wins on 2-D digits and every reconstruction is the mean image
    "VAE + contrastive": {"model": "vae", "beta": 0.1, "contrastive_weight": 1.0},
}  # fmt: skip
AUGMENT_FOR_VIEWS = PRESETS["SimCLR-style NT-Xent"]["augment"]  # a loss that needs two views gets this much
DEFAULT_LABEL_FRACTION = 0.1  # SupCon on augmented views: a tenth of each class labelled, until chosen
EMBEDDING_DIMS = (2, 3, 4, 8, 16, 32, 64, 128)
BATCH_SIZES = (16, 32, 64, 100, 128, 256, 512, 1024)
LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 10.0)  # 10: to watch divergence


# --- margins: pure, tested without Streamlit -----------------------------------------------------


def equivalent_margins(margin: float, loss: str, distance: str) -> str:
    """One line: the same margin in the other metrics, for unit vectors (d_euclid^2 = 2 d_cos)."""
    d_cos = rules.margin_to_cosine(margin, loss, distance)
    if not 0 <= d_cos <= 2:
        return "No unit-vector equivalent: cosine distances lie in [0, 2]."
    unit = rules.LOSSES[loss].margin_unit(distance)
    shown = [n for n in rules.DISTANCES if unit != f"{n} distance"]
    parts = [f"{name} {rules.distance(name).from_cosine(d_cos):.3g}" for name in shown]
    return "Same margin on unit vectors: " + ", ".join(parts)


def field_bounds(field: str) -> dict:
    """min_value / max_value of a widget, from RunConfig's bounds on the field (ge / gt, le / lt)."""
    info, bounds = RunConfig.model_fields[field], {}
    kind = float if info.annotation in (float, "float") else int  # a widget refuses mixed int / float
    for rule in info.metadata:
        if isinstance(rule, annotated_types.Ge | annotated_types.Gt):
            bounds["min_value"] = kind(rule.ge if isinstance(rule, annotated_types.Ge) else rule.gt)
        if isinstance(rule, annotated_types.Le | annotated_types.Lt):
            bounds["max_value"] = kind(rule.le if isinstance(rule, annotated_types.Le) else rule.lt)
    return bounds


# --- session state ---------------------------------------------------------------------------------


def _with_current(field: str, options: tuple) -> list:
    """The options, and the field's value if it is none of them (a run from the command line, say)."""
    current = st.session_state[_key(field)]
    return list(options) if current in options else sorted({*options, current})


def _choices(field: str) -> list[str]:
    """The values a Literal field of RunConfig allows, in its order."""
    return list(get_args(RunConfig.model_fields[field].annotation))


def _key(field: str) -> str:
    """The widget key of a field, seeded from the saved value (or the default) when missing."""
    key = f"cfg.{field}"
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(SAVED, {}).get(field, DEFAULTS[field])
    return key


CHOSEN_DISTANCE = "cfg.distance_chosen"  # session_state: the distance the person picked (kept over loss changes)
MOVED_SAMPLER = "cfg.sampler_moved"  # session_state: (sampler, augment) a loss change replaced, given back after


def recipe_values(name: str) -> dict:
    """Every field's value in a recipe: RunConfig's defaults, the loss's natural distance, the recipe's own."""
    preset = PRESETS[name]
    return DEFAULTS | {"distance": rules.LOSSES[preset.get("loss", DEFAULTS["loss"])].natural_distance} | preset


def recipe_of(values: dict) -> str | None:
    """The recipe that `values` (the form's, on the fields it uses) follow, or None once any differs."""
    for name in PRESETS:
        recipe = recipe_values(name)
        if all(_same(value, recipe[field]) for field, value in values.items() if field in recipe):
            return name
    return None


def _same(a, b) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _set_values(values: dict, chosen_distance: bool) -> None:
    """Sets every control (their widgets are not drawn yet in this run: a callback, or before the form)."""
    st.session_state[SAVED] = dict(values)
    st.session_state[CHOSEN_DISTANCE] = values.get("distance") if chosen_distance else None
    st.session_state.pop(MOVED_SAMPLER, None)  # a recipe or a run's settings: their own sampler
    for field, value in values.items():
        st.session_state[f"cfg.{field}"] = value


def _apply_preset() -> None:
    name = st.session_state["cfg.preset"]
    if name is not None:  # None: "Custom", nothing to apply
        _set_values(recipe_values(name), "distance" in PRESETS[name])


def reset_form() -> None:
    """Sets every control to the chosen recipe (the first one after custom changes): a new run from scratch."""
    st.session_state["cfg.preset"] = st.session_state.get("cfg.preset") or next(iter(PRESETS))
    _apply_preset()


def load_config(config: dict) -> None:
    """Sets every control to a stored run's config (RunConfig as JSON), e.g. the run a tab watches.

    Call it before the form is drawn in this run (Streamlit refuses to set a drawn widget's value).
    """
    values = DEFAULTS | {field: value for field, value in config.items() if field in DEFAULTS}
    natural = rules.LOSSES[values["loss"]].natural_distance
    values["distance"] = values["distance"] or natural
    _set_values(values, chosen_distance=values["distance"] != natural)


def config_from_link(params: dict[str, str]) -> tuple[dict, dict[str, str]]:
    """A Playground link's settings (`?loss=triplet&margin=0.5`, values as typed) over a recipe:
    (every field's value, {field: reason} for the ones refused, which keep the recipe's value).

    The first recipe is the base (the page's own links hold what differs from it). Settings that go
    together but not with that recipe's other values (`?loss=nt-xent&sampler=augmented-views` needs
    augmentation) are read over the first recipe that takes them all. Query parameters that are not
    RunConfig fields (`run`, say) are not settings and are left alone.
    """
    given = {field: _whole(field, value) for field, value in params.items() if field in RunConfig.model_fields}
    values, refused, clash = _over_recipe(next(iter(PRESETS)), given)
    if clash:
        for name in list(PRESETS)[1:]:
            other, other_refused, other_clash = _over_recipe(name, given)
            if not other_clash and len(other_refused) <= len(refused):
                return other, other_refused
        clashes = f"its settings do not go together ({clash}); none of them is used (the first recipe is)"
        return recipe_values(next(iter(PRESETS))), refused | {"link": clashes}
    return values, refused


def _over_recipe(name: str, given: dict) -> tuple[dict, dict[str, str], str | None]:
    """`given` over recipe `name`, each refused field dropped: (values, {field: reason}, the clash
    with the recipe's own values as "field: reason", or None)."""
    recipe = recipe_values(name)
    if "distance" not in given and "distance" not in PRESETS[name]:
        recipe["distance"] = None  # the linked loss's own distance
    if "margin" not in given and {"loss", "distance"} & given.keys():  # the recipe's margin, meaning kept
        carried = recipe | given
        with suppress(KeyError, TypeError):  # the link's loss or distance is unknown: RunConfig names it
            recipe["margin"] = rules.carried_margin(recipe["margin"], (recipe["loss"], recipe["distance"]),
                                                    (carried["loss"], carried["distance"]))  # fmt: skip
    recipe |= _form_fills(recipe | given, given)
    values, refused = recipe | given, {}
    for _ in range(len(given) + 1):  # drop each refused field, then check the rest again
        try:
            config = RunConfig.check(**values)
        except ConfigError as exc:
            bad = {field: reason for field, reason in exc.errors.items() if field in given and field not in refused}
            if not bad:  # only fields the link left at the recipe's value: they clash with the link's
                field, reason = next(iter(exc.errors.items()))
                return values, refused, f"{field}: {reason}"
            refused |= bad
            values = recipe | {field: value for field, value in given.items() if field not in refused}
            continue
        return config.model_dump(mode="json"), refused, None
    return values, refused, "its settings"  # not reached: each pass refuses at least one more field


def _form_fills(values: dict, given: dict) -> dict:
    """What the form fills in where a loss and sampler need it and the link leaves it out: a labelled share
    (a tenth) for SupCon on augmented views. (Augmentation for them comes with the SimCLR-style recipe.)"""
    try:
        sampler, kind = rules.SAMPLERS[values["sampler"]], rules.LOSSES[values["loss"]].kind
    except (KeyError, TypeError):  # an unknown name: RunConfig says so
        return {}
    if kind in sampler.labelled_kinds and "label_fraction" not in given and values.get("label_fraction") is None:
        return {"label_fraction": DEFAULT_LABEL_FRACTION}
    return {}


def _whole(field: str, value: str):
    """A whole-number field's value as typed in a link ("1e10", "2000.0") read as a number, as its input
    box reads it, so that the reason given is its limit, not the spelling; anything else as it is."""
    if RunConfig.model_fields[field].annotation is not int:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if math.isfinite(number) and number.is_integer() else value


def link_params(values: dict) -> dict[str, str]:
    """The settings that differ from the first recipe, as query parameters: the form's link."""
    recipe = recipe_values(next(iter(PRESETS)))
    natural = rules.LOSSES[values.get("loss", recipe["loss"])].natural_distance
    params = {}
    for field, value in values.items():
        if field == "distance" and value == natural:
            continue  # the loss's own distance: implied
        if value is not None and field in recipe and not _same(value, recipe[field]):
            params[field] = f"{value:g}" if isinstance(value, float) else str(value)
    reads_margin = "margin" in rules.LOSSES.get(values.get("loss", recipe["loss"]), rules.Objective).knobs
    if {"loss", "distance"} & params.keys() and reads_margin and "margin" in values:  # a link without it carries one
        params["margin"] = f"{values['margin']:g}"
    return params


def fitting_sampler(loss: str, sampler: str) -> str:
    """`sampler` if it can feed `loss` (with a label_fraction counts), else the sampler of the loss's
    recipe, else the first sampler that can."""
    kind = rules.LOSSES[loss].kind
    if kind in rules.SAMPLERS[sampler].kinds | rules.SAMPLERS[sampler].labelled_kinds:
        return sampler
    recipes = [preset["sampler"] for preset in PRESETS.values() if preset.get("loss") == loss]
    return (recipes or [name for name, fits in rules.SAMPLERS.items() if kind in fits.kinds])[0]


def _on_loss_change() -> None:
    """A new loss measures with its natural distance, unless the person chose one it can use; a sampler
    that cannot feed it gives way to one that can (said in a toast)."""
    loss = st.session_state["cfg.loss"]
    objective = rules.LOSSES[loss]
    chosen = st.session_state.get(CHOSEN_DISTANCE)  # a loss that ignores it leaves the choice for the next one
    st.session_state["cfg.distance"] = (
        chosen if chosen and "distance" in objective.knobs else objective.natural_distance
    )
    old = st.session_state.get("cfg.sampler", DEFAULTS["sampler"])
    moved_from = st.session_state.pop(MOVED_SAMPLER, None)  # (sampler, augment) a loss change moved away from
    if moved_from and fitting_sampler(loss, moved_from[0]) == moved_from[0]:  # the person's own comes back
        st.session_state["cfg.sampler"], st.session_state["cfg.augment"] = moved_from
        if moved_from[0] != old:
            st.toast(f"Sampler: back to {moved_from[0]}.", icon=":material/swap_horiz:")
    elif (new := fitting_sampler(loss, old)) != old:
        st.session_state[MOVED_SAMPLER] = moved_from or (old, st.session_state.get("cfg.augment", 0.0))
        st.session_state["cfg.sampler"] = new
        said = f"Sampler: {old} cannot feed the {loss} loss, so it is {new} now"
        if new == "augmented-views" and not st.session_state.get("cfg.augment"):  # two identical views teach nothing
            st.session_state["cfg.augment"] = AUGMENT_FOR_VIEWS
            said += f", with augmentation {AUGMENT_FOR_VIEWS:g}"
        st.toast(f"{said}.", icon=":material/swap_horiz:")
    elif moved_from:
        st.session_state[MOVED_SAMPLER] = moved_from  # still kept for a loss it fits
    _translate_margin()


def _on_sampler_change() -> None:
    st.session_state.pop(MOVED_SAMPLER, None)  # the person chose one: nothing to give back


def _on_distance_change() -> None:
    st.session_state[CHOSEN_DISTANCE] = st.session_state["cfg.distance"]
    _translate_margin()


def _translate_margin() -> None:
    saved = st.session_state.get(SAVED, {})
    old = (saved.get("loss", DEFAULTS["loss"]), saved.get("distance", DEFAULTS["distance"]))
    new = (st.session_state.get("cfg.loss", old[0]), st.session_state.get("cfg.distance", old[1]))
    margin = st.session_state.get("cfg.margin", saved.get("margin", DEFAULTS["margin"]))
    st.session_state["cfg.margin"] = rules.translate_margin(margin, old, new)


# --- the form --------------------------------------------------------------------------------------


class _Form:
    """Draws controls and remembers, per field, where its error message goes."""

    def __init__(self):
        self.values: dict = {}
        self.slots: dict = {}
        self.said: set[str] = set()  # fields whose problem a control has shown already, in its own words
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
        Numeric widgets take their bounds from RunConfig's field unless given.
        """
        if widget in (st.number_input, st.slider):
            kwargs = field_bounds(field) | kwargs
        if widget is st.number_input and RunConfig.model_fields[field].annotation is int:
            # A float input without bounds: Streamlit's int input reads a typed "1e9" as 1, and a value past
            # a bound stays in the box, marked, while the last one in range is used (Train would run that);
            # this way RunConfig sees what was typed and says why not, and Train waits for a valid one.
            kwargs |= dict(min_value=None, max_value=None, step=float(kwargs.get("step", 1)), format="%.0f")
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
            if field in self.said:
                continue
            slot = self.slots.get(field)
            (slot or st).error(plain_reason(field, reason), icon=":material/error:")


def plain_reason(field: str, reason: str) -> str:
    """ "steps: at least 1": a field's reason as the page shows it (RunConfig words its reasons plainly)."""
    return f"{field}: {reason}"


def config_form() -> RunConfig | dict[str, str]:
    """Draws the run controls; returns the RunConfig, or {field: reason} if it is invalid."""
    form = _Form()
    recipe = st.container()  # drawn last: it names the recipe the controls follow, or "Custom"
    _target_controls(form, _data_controls(form))
    _model_controls(form)
    _objective_controls(form)
    _training_controls(form)
    st.session_state[SAVED] = st.session_state.get(SAVED, {}) | form.values
    st.session_state["cfg.preset"] = recipe_of(form.values)
    recipe.selectbox("Recipe", list(PRESETS), index=None, key="cfg.preset", on_change=_apply_preset,
                     placeholder="Custom (changed from a recipe)",
                     help="Sets every control to a classic recipe; change any of them afterwards.")  # fmt: skip
    try:
        config = RunConfig.check(**form.values)
    except ConfigError as exc:
        form.report(exc.errors)
        return exc.errors
    for note in config.notes():
        st.caption(note)
    return config


def _data_controls(form: _Form) -> rules.Target | None:
    """The dataset and its own controls; returns its continuous target, if it has one (for `delta`)."""
    st.markdown("**Data**")
    dataset = form.control("dataset", st.selectbox, "Dataset", options=list(rules.DATASETS),
                           help="digits and the toy sets are bundled; the torchvision sets download on first use; "
                                "csv and folder are your own data.")  # fmt: skip
    if dataset in TOY_DATASETS:
        with form.row() as (left, right):
            with left:
                form.control("noise", st.slider, "Noise", step=0.05)
            with right:
                form.control("n_samples", st.number_input, "Points", step=100)
    elif dataset == "csv":
        return _csv_controls(form)
    elif dataset == "folder":
        _folder_controls(form)
    return rules.TARGETS.get(dataset)


PREVIEW_ROWS = 5  # a CSV's first rows, shown under its label column
LABEL_NAMES = ("label", "labels", "target", "class", "y")  # picked first as the label column, else the last column
CHECKED = "cfg.data_checked"  # session_state: {file and choices: (path, reason)} of the data checked in this tab


def _csv_controls(form: _Form) -> rules.Target | None:
    """A CSV uploaded (or outside demo mode its path on this machine), its label column chosen among its
    columns, its first rows shown; checked as a run reads it (`tables.read`) before Train is offered.
    An upload is kept in the store's uploads folder, named by its content (`demo.save_upload`). Returns the
    label column's spread when it is a continuous target."""
    in_demo = demo.enabled()
    limit = f"{demo.caps().upload_mb:g} MB and {demo.caps().upload_rows:,}" if in_demo else f"{tables.MAX_ROWS:,}"
    upload = st.file_uploader("CSV file", type=["csv"], key="cfg.csv_upload",
                              max_upload_size=_whole_mb(demo.caps().upload_mb) if in_demo else None,
                              help=f"Numeric feature columns and a label column; at most {limit} rows"
                                   f"{' in this demo' if in_demo else ''}.")  # fmt: skip
    typed = None
    if not in_demo:  # the machine's own user: a path is read where it is
        typed = st.text_input("Or its path on this machine", key=_key("csv_path"), placeholder="path/to/table.csv",
                              disabled=upload is not None) or None  # fmt: skip
    form.slots["csv_path"] = st.empty()
    source = typed if upload is None else upload
    head = path = problem = None
    try:
        head = None if source is None else tables.head(_readable(source), PREVIEW_ROWS)
    except ValueError as exc:
        problem = str(exc)
    label = _label_control(form, [] if head is None else [str(column) for column in head.columns])
    continuous = form.control("csv_continuous", st.checkbox, "The label is a continuous target",
                              help="A number to regress rather than a class: two rows are similar when their "
                                   "labels differ by at most delta (below).")  # fmt: skip
    target = None
    if head is not None:
        st.dataframe(head, hide_index=True)
        found, problem = _checked_csv(upload, typed, label, continuous)
        path, target = found or (None, None)
        if path is not None:
            used, left_out = tables.feature_columns(head, label)
            st.caption(f"Features: {', '.join(used)}" + (f"; left out, not numbers: {', '.join(left_out)}"
                                                          if left_out else ""))  # fmt: skip
    if problem:
        st.error(problem, icon=":material/error:")
        form.said.add("csv_path")  # not also "the csv dataset needs a file"
    form.values["csv_path"] = path
    return target


def _whole_mb(cap_mb: float) -> int:
    """A demo's upload cap as the uploader takes it (whole megabytes, at least 1), so that the box names
    the demo's cap rather than the server's; the cap itself is checked exactly once a file is in."""
    return max(1, math.ceil(cap_mb))


def _readable(source):
    """A path as it is; an upload as a fresh stream (pandas reads from where the last reader stopped)."""
    return source if isinstance(source, str) else io.BytesIO(source.getvalue())


def _label_control(form: _Form, columns: list[str]) -> str:
    """The label column, chosen among the file's columns (disabled until there is a file)."""
    key = _key("csv_label")
    if columns and st.session_state[key] not in columns:
        named = [column for column in columns if column.strip().lower() in LABEL_NAMES]
        st.session_state[key] = (named or columns)[0 if named else -1]
    return form.control("csv_label", st.selectbox, "Label column", options=columns or [st.session_state[key]],
                        used=bool(columns), help="The class (or continuous target) of each row; every other numeric column is a feature.")  # fmt: skip


def _checked_csv(upload, typed: str | None, label: str, continuous: bool) -> tuple[tuple | None, str | None]:
    """((the path a run reads, its continuous target's spread or None), None) once the whole file passes
    `tables.read` with this label column, else (None, why not); an upload is saved first. Each file and
    choice is checked once in this tab."""
    if upload is not None:
        store = backend.run_store()
        return _once(("csv upload", upload.file_id, label, continuous),
                     lambda: _read(str(demo.save_upload(store, upload.getvalue(), label, continuous)), label,
                                   continuous))  # fmt: skip
    changed = Path(typed).stat()  # a file: its head was read
    return _once(("csv path", typed, changed.st_mtime_ns, changed.st_size, label, continuous),
                 lambda: _read(typed, label, continuous))  # fmt: skip


def _read(path: str, label: str, continuous: bool) -> tuple[str, rules.Target | None]:
    _, target, _ = tables.read(path, label, continuous=continuous)  # a ValueError: a run could not train on it
    if not continuous:
        return path, None
    return path, rules.Target(f"column '{label}'", float(target.min()), float(target.max()), float(target.std()))


def _once(key: tuple, check: Callable[[], Any]) -> tuple[Any, str | None]:
    """(check(), None), or (None, the line of the ValueError it raised); remembered in this tab for `key`."""
    checked = st.session_state.setdefault(CHECKED, {})
    if key not in checked:
        try:
            checked[key] = (check(), None)
        except ValueError as exc:
            checked[key] = (None, str(exc))
        while len(checked) > 8:  # the latest few: a file is seldom checked again after another
            checked.pop(next(iter(checked)))
    return checked[key]


def _folder_controls(form: _Form) -> None:
    """A folder of images, one sub-folder per class: its path on this machine, or in demo mode an uploaded
    zip of it (unpacked into the store's uploads folder, `demo.save_images`); the size images are read at."""
    if demo.enabled():
        caps = demo.caps()
        upload = st.file_uploader("Image folder (zip)", type=["zip"], key="cfg.zip_upload",
                                  max_upload_size=_whole_mb(caps.zip_mb),
                                  help=f"A zip of a folder with one sub-folder of images per class (png, jpg, ...); "
                                       f"at most {caps.zip_mb:g} MB and {caps.zip_images:,} images in this demo.")  # fmt: skip
        path = problem = None
        if upload is not None:
            store = backend.run_store()
            path, problem = _once(("zip upload", upload.file_id),
                                  lambda: str(demo.save_images(store, upload.getvalue())))  # fmt: skip
        if problem:
            st.error(problem, icon=":material/error:")
            form.said.add("data_path")
        form.slots["data_path"] = st.empty()
        form.values["data_path"] = path
    else:
        form.control("data_path", st.text_input, "Image folder", placeholder="path/to/folder",
                     help="One sub-folder of images per class (cats/, dogs/, ...), read with torchvision's "
                          "ImageFolder: png, jpg, bmp, tiff, webp.")  # fmt: skip
    form.control("image_size", st.number_input, "Image size (pixels a side)", step=8,
                 help=f"Each image is resized and centre-cropped to this square ({folders.MIN_SIZE} to "
                      f"{folders.MAX_SIZE}; a multiple of 4 gives the VAE its convolutional decoder).")  # fmt: skip


def _target_controls(form: _Form, target: rules.Target | None) -> None:
    """A continuous target's similarity width, beside the target's spread."""
    if target is None:
        return
    form.control("delta", st.number_input, "Similar within delta (target units)", min_value=0.0, step=1.0,
                 placeholder=f"auto: about {target.std / 4:.3g}",
                 help="Two items are a positive pair when their targets differ by at most delta. Empty: a "
                      "quarter of the training targets' standard deviation.")  # fmt: skip
    st.caption(f"Target: {target.about}, from {target.low:.4g} to {target.high:.4g} (standard deviation "
               f"{target.std:.3g}). The scatter is coloured by it.")  # fmt: skip


def _model_controls(form: _Form) -> None:
    st.markdown("**Model**")
    with form.row() as (left, right):
        with left:
            model = form.control("model", st.selectbox, "Encoder", options=rules.MODELS,
                                 help="A Siamese encoder (one network embeds both items of a pair), or an "
                                      "autoencoder whose code is the embedding: a VAE, or an adversarial one (AAE).")  # fmt: skip
        with right:
            form.control("embedding_dim", st.select_slider, "Embedding dim", options=_with_current("embedding_dim", EMBEDDING_DIMS),
                         help="2: the scatter is the embedding itself; more: a PCA or UMAP projection of it.")  # fmt: skip
    if model == "vae":
        with form.row() as (left, right):
            with left:
                form.control("beta", st.number_input, "VAE beta (KL)", step=0.1)
            with right:
                form.control("contrastive_weight", st.number_input, "Contrastive weight", step=0.1)
    if model == "aae":
        with form.row() as (left, right):
            with left:
                form.control("adversarial_weight", st.number_input, "Adversarial weight", step=0.1,
                             help="Weight of the generator term: how hard the encoder is pushed to make its codes "
                                  "look like the prior's samples to the discriminator (0: not at all).")  # fmt: skip
            with right:
                form.control("contrastive_weight", st.number_input, "Contrastive weight", step=0.1)
        form.control("prior", st.selectbox, "Prior", options=_choices("prior"),
                     help="gaussian: N(0, I). mixture: one Gaussian mode per class; the discriminator sees each "
                          "item's class, so the codes of a class are pushed onto its own mode.")  # fmt: skip


def _objective_controls(form: _Form) -> None:
    st.markdown("**Objective**")
    # One per line: names like cosine-embedding, squared-euclidean, augmented-views are cut off in half the column.
    loss = form.control("loss", st.selectbox, "Loss", options=list(rules.LOSSES), on_change=_on_loss_change)
    objective = rules.LOSSES[loss]
    natural = f"{objective.natural_distance} is the {loss} loss's own distance"
    distance = form.control("distance", st.selectbox, "Distance", options=list(rules.DISTANCES),
                            on_change=_on_distance_change, used="distance" in objective.knobs,
                            help=f"cosine = 1 - cos, in [0, 2]; {natural}." if "distance" in objective.knobs
                            else f"The {loss} loss always measures with the {objective.natural_distance}.")  # fmt: skip
    low, high, _ = rules.margin_scale(loss, distance)
    key = _key("margin")
    st.session_state[key] = min(max(float(st.session_state[key]), low), high)  # a slider refuses values outside
    margin = form.control("margin", st.slider, f"Margin ({objective.margin_unit(distance)})", min_value=low,
                          max_value=high, step=0.01, used="margin" in objective.knobs,
                          help="Negatives closer than the margin are pushed apart; farther ones cost nothing.")  # fmt: skip
    if "margin" in objective.knobs:
        st.caption(equivalent_margins(margin, loss, distance))
    if "reduction" in objective.knobs:
        form.control("reduction", st.selectbox, "Reduction", options=_choices("reduction"),
                     help="mean: average over every pair / triplet, zero-loss ones included. mean-nonzero: "
                          "each part (positive pairs, negative pairs; triplets) averaged over its non-zero terms, "
                          "as pytorch-metric-learning does by default.")  # fmt: skip
    form.control("temperature", st.number_input, "Temperature", step=0.01, format="%.2f",
                 used="temperature" in objective.knobs,
                 help="Softmax temperature of NT-Xent / SupCon: lower is sharper.")  # fmt: skip
    sampler = form.control("sampler", st.selectbox, "Sampler / miner", options=list(rules.SAMPLERS),
                           on_change=_on_sampler_change,
                           help=f"{loss} takes {rules.LOSSES[loss].kind}; the sampler must produce them.")  # fmt: skip
    form.control("augment", st.slider, "Augmentation", step=0.05,
                 help="Strength of the random per-item augmentation; 0 = none.")  # fmt: skip
    if sampler in CLASS_BALANCED:
        form.control("m_per_class", st.number_input, "Items per class in a batch")
    if objective.kind in rules.SAMPLERS[sampler].labelled_kinds:  # semi-supervised: SupCon on augmented views
        key = _key("label_fraction")
        if st.session_state[key] is None:  # None (no labels) is not a slider's value: a tenth labelled
            st.session_state[key] = DEFAULT_LABEL_FRACTION
        form.control("label_fraction", st.slider, "Labelled share", min_value=0.0, max_value=1.0, step=0.05,
                     help="Share of each class's training items whose label the loss sees; the others count only "
                          "as two views of themselves. 0: self-supervised (NT-Xent), 1: supervised SupCon.")  # fmt: skip


SLOW = "cfg.slow_motion"  # the Slow motion toggle's key: on while steps_per_second is set
SLOW_PACE, SLOW_EVERY = 10.0, 5  # slow motion: steps a second, and a snapshot every this many steps (at least)


def _on_slow_motion() -> None:
    """Slow motion on: SLOW_PACE steps a second and a snapshot every SLOW_EVERY steps (or as few as the run's
    steps allow, see MAX_SNAPSHOTS); off: full speed and about 40 snapshots."""
    on = st.session_state[SLOW]
    steps = st.session_state.get("cfg.steps", DEFAULTS["steps"])
    every = max(SLOW_EVERY, math.ceil(float(steps) / (MAX_SNAPSHOTS - 1))) if on else 0
    st.session_state["cfg.steps_per_second"], st.session_state["cfg.snapshot_every"] = SLOW_PACE if on else 0.0, every


def _training_controls(form: _Form) -> None:
    st.markdown("**Training**")
    with form.row() as (left, right):
        with left:
            form.control("batch_size", st.select_slider, "Batch size",
                         options=_with_current("batch_size", BATCH_SIZES),
                         help="Pairs for random-pairs; items for the other samplers.")  # fmt: skip
            form.control("lr", st.select_slider, "Learning rate", options=_with_current("lr", LEARNING_RATES),
                         format_func=lambda v: f"{v:g}")  # fmt: skip
        with right:
            form.control("steps", st.number_input, "Steps", step=100)
            form.control("seed", st.number_input, "Seed")
    st.session_state[SLOW] = float(st.session_state[_key("steps_per_second")]) > 0  # follows the field
    st.toggle("Slow motion", key=SLOW, on_change=_on_slow_motion,
              help=f"{SLOW_PACE:g} steps a second and a snapshot every few steps, to watch the embedding form "
                   "(on a small dataset, a few hundred steps). Pause, under Train, holds the training itself.")  # fmt: skip
    with st.expander("Advanced"):
        form.control("eval_size", st.number_input, "Snapshot points", step=100,
                     help="Held-out items embedded at every snapshot (the scatter's points).")  # fmt: skip
        form.control("snapshot_every", st.number_input, "Snapshot every (steps, 0 = about 40 per run)")
        form.control("steps_per_second", st.number_input, "Steps per second (0 = full speed)", step=1.0,
                     help="Slow motion: the worker waits between steps so that the run lasts steps / this.")  # fmt: skip
        form.control("device", st.selectbox, "Device", options=_choices("device"))
        form.control("precision", st.selectbox, "Precision", options=_choices("precision"),
                     help="bfloat16: matrix products in bfloat16, weights and loss in float32. "
                          "Faster on GPUs and on CPUs with AVX-512 BF16; cpu and cuda only.")  # fmt: skip
