"""Playground: configure a run, press Train, watch it learn."""

import time

import streamlit as st

from contrast_core.config import RunConfig
from contrast_core.store import LIVE_STATUSES, StoreError
from ui import backend, demo, figures, live, tab
from ui.config_form import config_form, config_from_link, link_params, load_config, plain_reason, reset_form
from ui.live_chart import live_chart

LOADED = "playground.loaded"  # session_state: the run whose config the form was last set to
TRAIN = "playground.train"  # session_state: Train was clicked; the run is queued once the form is read
STOPPING = "playground.stopping"  # session_state: the run this tab asked to stop
NAME = "playground.name"  # the Name field's widget key
LINKED = "playground.linked"  # session_state: the link's settings were put in the form (once per tab)
REFUSED = "playground.refused"  # session_state: why the last Train click queued nothing (a demo's cap)
SETTLE_SECONDS = 1.0  # a Pause / Step click waits this long at most for the worker to hold, so the page shows it


def _train_clicked() -> None:
    st.session_state[TRAIN] = True  # not submitted here: a value changed with the same click is read first


def _stop(run_id: str) -> None:
    if not demo.can_change(backend.run_store().get_run(run_id)):
        tab.notify(f"Run {run_id} is another visitor's: only they can stop it.", icon=":material/block:")
        return
    backend.job_queue().cancel(run_id)  # in a callback: at once, before the page runs again
    if backend.run_store().get_run(run_id).status == "cancelled":
        tab.notify(f"Run {run_id} cancelled before it started.", icon=":material/stop:")
    else:
        st.session_state[STOPPING] = run_id


def _hold(run_id: str, action: str) -> None:
    """Pause, Resume, Step and Next snapshot: the run's worker holds its training where the store says."""
    store = backend.run_store()
    run = store.get_run(run_id)
    if not demo.can_change(run):
        tab.notify(f"Run {run_id} is another visitor's: only they can pause it.", icon=":material/block:")
        return
    clicked = time.time()
    try:
        if action == "pause":
            store.hold(run_id, 0)  # at the step it is at
        elif action == "resume":
            store.hold(run_id, None)
        elif action == "step":
            store.advance(run_id, 1)
        else:  # to the next snapshot
            every = RunConfig.model_validate(run.config).resolved_snapshot_every()
            store.advance(run_id, every - run.step % every)
    except StoreError as exc:  # it ended, or is no longer held, meanwhile
        tab.notify(f"{action}: {exc}", icon=":material/error:")
        return
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline and not _settled(store.get_run(run_id), clicked):
        time.sleep(0.02)


def _settled(run, clicked: float) -> bool:
    """Whether the worker has done what the store asks since the click: holds (again) where asked, or trains."""
    if run.status != "running":
        return True
    if run.pause_at is None:
        return run.held_since is None
    return run.held_since is not None and run.held_since >= clicked


def _hold_buttons(run) -> None:
    """While a run trains: pause or resume its training, and step it while it is held."""
    held, pausing = run.held_since is not None, run.pause_at is not None and run.held_since is None
    mine = demo.can_change(run)
    # Pause / Resume a row of its own, Step and Snapshot below: three in a row read "R…", "S…", "S…" at 1280 px.
    hold = st.container()
    step, snapshot = st.columns(2)
    if held or pausing:
        pace = "in slow motion" if run.config.get("steps_per_second") else "at full speed"
        hold.button("Resume", icon=":material/resume:", on_click=_hold, args=(run.id, "resume"),
                    disabled=not mine, width="stretch", help=f"Go on training {pace}.")  # fmt: skip
    else:
        hold.button("Pause", icon=":material/pause:", on_click=_hold, args=(run.id, "pause"), disabled=not mine,
                    width="stretch", help="Hold the training where it is (the worker keeps the model); "
                    "then step it, or resume.")  # fmt: skip
    step.button("Step", icon=":material/skip_next:", on_click=_hold, args=(run.id, "step"),
                disabled=not (held and mine), width="stretch",
                help="One optimiser step, then hold again (a snapshot of that step is taken).")  # fmt: skip
    snapshot.button("Snapshot", icon=":material/fast_forward:", on_click=_hold, args=(run.id, "snapshot"),
                    disabled=not (held and mine), width="stretch",
                    help="Train to the next regular snapshot, then hold again.")  # fmt: skip
    if held:
        demo_cap = f" (stopped after {demo.caps().pause_seconds:g} s held, in this demo)" if demo.enabled() else ""
        st.caption(f"Training paused at step {run.step:,}: the worker holds the model{demo_cap}.")


def _new_run() -> None:
    tab.watch(None)
    reset_form()
    st.session_state[LOADED] = None
    st.session_state[NAME] = ""
    tab.notify("The form is back to the recipe: press Train to start a new run.", icon=":material/add:")


def _stopped(run) -> None:
    """Says once that the run this tab asked to stop has stopped."""
    if st.session_state.get(STOPPING) and (run is None or run.status not in LIVE_STATUSES):
        stopped = st.session_state.pop(STOPPING)
        if run is not None and run.id == stopped:
            st.toast(f"Run {stopped} {run.status} at step {run.step:,}.", icon=":material/stop:")


tab.show_notices()  # what the last action did
if forked := st.session_state.pop(tab.FORK, None):  # Runs -> Fork: a new run from that one's settings
    load_config(forked[1])
    st.session_state[LOADED] = None
    st.session_state[NAME] = f"fork of {forked[0]}"
    tab.watch(None)
    st.toast(f"The form has run {forked[0]}'s settings: change any, then press Train.", icon=":material/call_split:")
run_id = tab.watched_run()
if not run_id and not st.session_state.get(LINKED):  # a link with settings: the form starts from them
    st.session_state[LINKED] = True
    if any(field in RunConfig.model_fields for field in st.query_params):
        linked, refused = config_from_link(st.query_params.to_dict())
        load_config(linked)
    else:
        refused = {}
    for field, reason in refused.items():
        kept = "" if field == "link" else " (from the link; the recipe's value is used)"  # "link": none is used
        st.warning(f"{plain_reason(field, reason)}{kept}", icon=":material/link_off:")
run = tab.find_run(run_id) if run_id else None
if run is not None and st.session_state.get(LOADED) != run.id:  # a new run to watch: the form shows its config
    load_config(run.config)
    st.session_state[NAME] = ""
    st.session_state[LOADED] = run.id
_stopped(run)

controls, panels = st.columns([1.4, 2.6], gap="large")  # the form's selects show their longest names whole
with controls:
    st.subheader("Contrast Lab")
    buttons = st.container()
    st.text_input("Name", key=NAME, placeholder="optional, e.g. margin 2", max_chars=80,
                  help="Tells this run apart from similar ones in the Runs, Compare and Explore pickers.")  # fmt: skip
    config = config_form()

running = run is not None and run.status in LIVE_STATUSES
valid = isinstance(config, RunConfig)
if st.session_state.pop(TRAIN, False) and valid and not running:
    store = backend.run_store()
    if refused := demo.refusal(store, [config]):
        st.session_state[REFUSED] = refused
    else:
        if demo.enabled():
            demo.make_room(store)
        run_id = backend.job_queue().submit(config, name=st.session_state[NAME].strip(), owner=demo.visitor())
        st.session_state[LOADED] = run_id  # the form already shows its config
        run, running = tab.find_run(run_id), True
        st.toast(f"Run {run_id} queued.", icon=":material/play_arrow:")
tab.watch(run_id)  # in the URL from the start, and again after a page switch (which drops it)
if run_id is not None or valid:  # a run's id says it all; without one, a copied address opens this form
    tab.show_settings_in_url({} if run_id is not None else link_params(config.model_dump(mode="json")))

with buttons:
    train, stop = st.columns(2)
    stopping = running and run.cancel_requested
    mine = run is None or demo.can_change(run)
    train.button("Train", type="primary", icon=":material/play_arrow:", disabled=running or not valid,
                 on_click=_train_clicked, width="stretch")  # fmt: skip
    stop.button("Stopping…" if stopping else "Stop", icon=":material/stop:",
                disabled=not running or stopping or not mine, on_click=_stop, args=(run_id,), width="stretch",
                help=None if mine else "Another visitor's run: only they can stop it.")  # fmt: skip
    if running and run.status == "running" and not stopping:
        _hold_buttons(run)
    if refused := st.session_state.pop(REFUSED, None):
        st.error(refused, icon=":material/block:")
    st.button("New run", type="tertiary", icon=":material/add:", disabled=run_id is None, on_click=_new_run,
              help="Stop watching this run and set the form back to the recipe (a running run goes on).")  # fmt: skip
    if stopping:
        st.info("Stopping: the run ends at its next training step.", icon=":material/hourglass_top:")

with panels:
    if run is not None:
        st.caption(f"Run `{run.id}`" + (f" · **{run.name}**" if run.name else "")
                   + ("" if mine else " · another visitor's run, shared with you to watch"))  # fmt: skip
        live.live_panels(run.id, drawn=run.status)
    else:
        if run_id:
            tab.say_missing(run_id)
        st.markdown(
            "#### Press **Train** to watch a Siamese network learn\n"
            "Pairs of the same digit are pulled together, pairs of different digits pushed at least a "
            "*margin* apart. The charts here follow the run live: the loss, the embedding itself, the "
            "distances of positive and negative pairs against the margin, and cluster metrics."
        )
        # Drawn now, the chart library is loaded before the click, not after it (the live charts' own).
        steps = config.steps if valid else 2000
        note = "The loss appears here when you press Train" if valid else "Fix the form, then press Train"
        live_chart(figures.empty_loss_figure(steps, note), key="intro.loss", config={"displayModeBar": False})
