"""Demo mode (a hosted demo): visitors isolated, links read-only, caps with their reasons, no server paths."""

import io
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_app import APP, advance, button, chart

from contrast_core.config import RunConfig
from contrast_core.jobs import JobQueue
from ui import demo

A, B = "a" * 32, "b" * 32  # two visitors' tokens


@pytest.fixture
def demo_mode(monkeypatch):
    monkeypatch.setenv("CONTRAST_DEMO", "1")


def visit(visitor: str, page: str | None = None, **params) -> AppTest:
    """The app as one visitor sees it (their token in the session, as the cookie would put it)."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state[demo.VISITOR] = visitor
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    if page is not None:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def owned_run(store, owner: str, status: str = "finished", upto: int = 100, **config) -> str:
    run_id = store.create_run(RunConfig(steps=500, **config).model_dump(mode="json"), status=status, owner=owner)
    advance(store, run_id, 0, upto)
    return run_id


def test_a_visitor_sees_and_changes_only_their_own_runs(demo_mode, queue, store):
    mine, theirs = owned_run(store, A), owned_run(store, B)
    at = visit(A, "runs")
    table = at.dataframe[0].value
    assert list(table["id"]) == [mine]  # B's run is not listed
    at = visit(B, "explore")
    assert [o.split(" ")[0] for o in at.selectbox[0].options] == [theirs]  # B's only
    at = visit(A, "explore", run=theirs)  # a link to B's run: opened to look at
    assert chart(at, "Step 100")


def test_a_link_to_another_visitor_s_run_opens_it_read_only(demo_mode, queue, store):
    theirs = owned_run(store, B, status="running", upto=10)
    at = visit(A, run=theirs)
    stop = button(at, "Stop")
    assert stop.disabled and "Another visitor's run" in stop.help
    assert any("another visitor's run" in c.value for c in at.caption)
    at = visit(B, run=theirs)
    assert not button(at, "Stop").disabled  # its owner can
    button(at, "Stop").click().run()
    assert store.get_run(theirs).cancel_requested


def test_a_visitor_s_runs_are_theirs(demo_mode, queue, store):
    at = visit(A)
    button(at, "Train").click().run()
    (run,) = store.list_runs()
    assert run.owner == A
    assert list(visit(B, "runs").dataframe) == []  # B sees none


@pytest.mark.parametrize(
    "setting, live_of_a, queued_of_others, words",
    [
        ({"CONTRAST_DEMO_MAX_STEPS": "1000"}, 0, 0, "steps: at most 1,000 in this demo"),
        ({}, 4, 0, "You have 4 runs queued or running; a visitor may have 4 at once here"),
        ({"CONTRAST_DEMO_QUEUED_TOTAL": "3"}, 0, 3, "The demo's queue is full (3 runs waiting)"),
    ],
)
def test_a_cap_says_why_nothing_was_queued(demo_mode, queue, store, monkeypatch, setting, live_of_a,
                                           queued_of_others, words):  # fmt: skip
    for name, value in setting.items():
        monkeypatch.setenv(name, value)
    for _ in range(live_of_a):
        store.create_run(RunConfig().model_dump(mode="json"), owner=A)
    for _ in range(queued_of_others):
        store.create_run(RunConfig().model_dump(mode="json"), owner=B)
    before = len(store.list_runs())
    at = visit(A)
    button(at, "Train").click().run()
    assert [e.value for e in at.error if words in e.value], [e.value for e in at.error]
    assert len(store.list_runs()) == before  # nothing queued


def test_no_page_reads_a_path_on_the_server(demo_mode, queue, store, tmp_path):
    secret = tmp_path / "secrets.csv"
    secret.write_text("API_KEY = hunter2\nlabel\n")
    at = visit(A, dataset="csv", csv_path=str(secret), csv_label="API_KEY = hunter2")  # a crafted link
    assert not [t for t in at.text_input if t.label == "CSV file"]  # no path field: an upload instead
    assert at.get("file_uploader")
    assert button(at, "Train").disabled  # no file: nothing to train on, and nothing read
    assert [e.value for e in at.error if e.value.startswith("csv_path")] == ["csv_path: the csv dataset needs a file"]
    assert all("hunter2" not in e.value for e in at.error)
    refused = demo.refusal(store, [RunConfig(dataset="csv", csv_path=str(secret))])
    assert refused == "csv_path: this demo reads only uploaded files: upload a CSV instead"
    assert demo.refusal(store, [RunConfig(weights="/etc/passwd")]).startswith("weights:")


def test_an_upload_is_kept_by_content_within_the_caps(demo_mode, store, monkeypatch):
    table = b"x,y,label\n" + b"".join(b"%d,%d,%d\n" % (i, i * i, i % 2) for i in range(30))
    path = demo.save_upload(store, table, "label")
    assert path.read_bytes() == table and path.parent == demo.upload_dir(store)
    assert demo.save_upload(store, table, "label") == path  # one copy
    assert demo.refusal(store, [RunConfig(dataset="csv", csv_path=str(path))]) is None
    monkeypatch.setenv("CONTRAST_DEMO_UPLOAD_ROWS", "29")
    with pytest.raises(ValueError, match="csv upload: 30 rows, over this demo's 29"):
        demo.save_upload(store, table, "label")
    monkeypatch.setenv("CONTRAST_DEMO_UPLOAD_MB", "0.0001")
    with pytest.raises(ValueError, match=r"csv upload: 0\.0 MB, over this demo's 0\.0001 MB"):
        demo.save_upload(store, table, "label")


def test_a_sweep_over_the_demo_s_cap_is_refused_and_queues_nothing(demo_mode, queue, store):
    at = visit(A, "compare")
    at.text_input(key="sweep.values1").set_value("0.25, 0.5, 1, 2, 4").run()
    button(at, "Queue sweep").click().run()
    assert [e.value for e in at.error] == ["This demo runs at most 4 runs in one sweep; this one has 5."]
    assert store.list_runs() == []
    at.text_input(key="sweep.values1").set_value("0.5, 1").run()
    button(at, "Queue sweep").click().run()
    assert {run.owner for run in store.list_runs()} == {A}
    assert visit(B, "compare").radio(key="compare.mode").value == "Chosen runs"  # B has no sweep of its own


def test_the_oldest_ended_runs_make_room_and_live_runs_stay(demo_mode, store, monkeypatch):
    old, newer = owned_run(store, A), owned_run(store, B)
    live = owned_run(store, A, status="running")
    size = sum(f.stat().st_size for f in store.run_dir(old).rglob("*") if f.is_file())
    monkeypatch.setenv("CONTRAST_DEMO_DISK_MB", str(2.5 * size / 1e6))  # room for two and a half runs
    assert demo.make_room(store) == [old]
    assert {run.id for run in store.list_runs()} == {newer, live}
    monkeypatch.setenv("CONTRAST_DEMO_DISK_MB", str(size / 1e6 / 10))
    assert demo.make_room(store) == [newer]  # the live one stays, whatever the cap
    assert [run.id for run in store.list_runs()] == [live]


def test_a_run_over_the_wall_time_cap_is_stopped_with_its_reason(store):
    run_id = store.create_run(RunConfig().model_dump(mode="json"))
    store.claim_next("w@here", "cpu")
    JobQueue(store, run_seconds=60)._enforce_time_limits()
    assert not store.get_run(run_id).cancel_requested  # just started
    with store._write() as conn:
        conn.execute("UPDATE runs SET started_at = ?", (time.time() - 61,))
    JobQueue(store, run_seconds=60)._enforce_time_limits()
    assert store.cancel_requested(run_id, "w@here")
    store.set_status(run_id, "cancelled", worker="w@here")  # what the worker does at its next step
    run = store.get_run(run_id)
    assert (run.status, run.error) == ("cancelled", "stopped at this demo's limit of 60 s a run")


def test_a_queued_run_s_position_follows_the_fair_order(store):
    mine = [store.create_run({}, owner=A) for _ in range(3)]
    theirs = store.create_run({}, owner=B)
    assert [store.queue_position(i) for i in [*mine, theirs]] == [1, 3, 4, 2]  # B's goes after A's first
    order = [store.claim_next(f"w{k}", "cpu").id for k in range(4)]
    assert order == [mine[0], theirs, mine[1], mine[2]]  # as claim_next takes them


def test_the_queue_is_fair_between_visitors(store):
    first = [store.create_run({}, owner=A) for _ in range(3)]
    late = store.create_run({}, owner=B)
    assert store.claim_next("w1", "cpu").id == first[0]
    assert store.claim_next("w2", "cpu").id == late  # A has one training, B none: B's goes next
    assert store.claim_next("w3", "cpu").id == first[1]
    plain = [store.create_run({}) for _ in range(2)]  # no owner (not a demo): first come, first served
    assert store.claim_next("w4", "cpu").id == plain[0]


@pytest.mark.parametrize(
    "value, words", [("lots", "'lots' is not a whole number"), ("0", "must be more than 0, not '0'")]
)
def test_a_bad_demo_setting_is_named_on_the_page(demo_mode, queue, monkeypatch, value, words):
    monkeypatch.setenv("CONTRAST_DEMO_MAX_STEPS", value)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"demo max_steps: {words}: fix the setting and restart the app."]


def test_outside_demo_mode_everything_is_shared(queue, store):
    run_id = owned_run(store, B)
    assert demo.visitor() is None and demo.can_change(store.get_run(run_id))
    assert demo.refusal(store, [RunConfig(steps=1_000_000)]) is None


def test_a_step_too_large_for_this_machine_is_refused_on_the_page(queue, store, monkeypatch):
    """In any mode: the page checks before queueing (the workers check again against their device)."""
    monkeypatch.setattr(demo, "available_memory", lambda: 8 * 2**30)
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in {"loss": "triplet", "sampler": "batch-all", "batch_size": "1024"}.items():
        at.query_params[key] = value
    at.run()
    button(at, "Train").click().run()
    assert [e.value for e in at.error if e.value.startswith("batch_size: a step of batch-all triplets at batch 1,024")]
    assert store.list_runs() == []


# --- a zip of an image folder ------------------------------------------------------------------------


def zipped(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data)  # a ZipInfo keeps the name as given
    return out.getvalue()


def pngs(prefix: str = "", per_class: int = 5) -> dict[str, bytes]:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(out, format="PNG")
    return {f"{prefix}{name}/{i}.png": out.getvalue() for name in ("cats", "dogs") for i in range(per_class)}


def test_an_image_zip_is_unpacked_by_content_into_the_uploads(demo_mode, store):
    extras = {"pets/README.txt": b"hello", "__MACOSX/pets/cats/._0.png": b"AppleDouble", "pets/.DS_Store": b"x"}
    data = zipped(pngs("pets/") | extras)  # a zip of a folder holding the class folders
    folder = demo.save_images(store, data)
    assert folder.parent == demo.upload_dir(store)
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png")) == sorted(
        f"{name}/{i}.png" for name in ("cats", "dogs") for i in range(5)
    )  # the class folders at its top; nothing but the images
    assert sorted(p.name for p in folder.iterdir()) == ["cats", "dogs"]
    assert demo.save_images(store, data) == folder  # one copy however often sent
    assert demo.refusal(store, [RunConfig(dataset="folder", data_path=str(folder))]) is None
    assert [p.name for p in demo.upload_dir(store).iterdir()] == [folder.name]  # no half-unpacked folder left


@pytest.mark.parametrize(
    "entry",
    ["../evil.png", "cats/../../evil.png", "/tmp/evil.png", "..\\evil.png", "C:/evil.png", "\\evil.png"],
)
def test_an_image_zip_reaching_outside_the_uploads_is_refused_and_nothing_written(demo_mode, store, tmp_path, entry):
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ValueError) as refused:
        demo.save_images(store, zipped(pngs() | {entry: b"evil"}))
    said = str(refused.value)
    assert said.startswith("zip upload: the entry ") and "outside the upload folder" in said and "\n" not in said
    assert sorted(tmp_path.rglob("*")) == before and not demo.upload_dir(store).exists()
    assert not Path("/tmp/evil.png").exists()


@pytest.mark.parametrize(
    "setting, entries, words",
    [
        ({"CONTRAST_DEMO_ZIP_IMAGES": "9"}, pngs(), "zip upload: 10 images, over the limit of 9"),
        ({"CONTRAST_DEMO_ZIP_MB": "0.0001"}, pngs(), "zip upload: 0.0 MB, over this demo's 0.0001 MB"),
        ({}, pngs(per_class=4), "data_path: class 'cats' has 4 images; at least 5 per class"),
        ({}, {k: v for k, v in pngs().items() if k.startswith("cats")}, "data_path: 1 class sub-folder found"),
        ({}, None, "zip upload: not a zip file that can be read"),
    ],
)
def test_an_image_zip_over_a_cap_or_unfit_is_one_line(demo_mode, store, monkeypatch, setting, entries, words):
    for name, value in setting.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as refused:
        demo.save_images(store, b"PK not a zip" if entries is None else zipped(entries))
    assert str(refused.value).startswith(words) and "\n" not in str(refused.value), refused.value
    assert not demo.upload_dir(store).exists()


def test_the_demo_reads_no_image_folder_of_the_server(demo_mode, queue, store, tmp_path):
    folder = tmp_path / "server-folder"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        for i in range(5):  # a folder a run could train on, by its names (the demo must not read it)
            (folder / name / f"{i}.png").touch()
    refused = demo.refusal(store, [RunConfig(dataset="folder", data_path=str(folder))])
    assert refused == "data_path: this demo reads only uploaded folders: upload a zip of the images instead"
    (demo.upload_dir(store) / "x").mkdir(parents=True)
    climbing = demo.upload_dir(store) / "x" / ".." / ".." / "server-folder"  # starts in the uploads, ends outside
    assert demo.refusal(store, [RunConfig(dataset="folder", data_path=str(climbing))]) == refused
    at = visit(A, dataset="folder", data_path=str(folder))  # a crafted link
    assert not [t for t in at.text_input if t.label == "Image folder"]  # no path field: a zip upload instead
    assert [u.label for u in at.get("file_uploader")] == ["Image folder (zip)"]
    assert button(at, "Train").disabled
