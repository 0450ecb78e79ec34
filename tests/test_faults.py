"""Faults that lose nothing: a damaged index is said in one line on every page and rebuilt from the run
folders; a full disk fails a run with the room left and the worker waits for room; repeated failures are
printed once."""

import sqlite3
import subprocess
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_app import APP

from contrast_core import jobs
from contrast_core.__main__ import main
from contrast_core.config import RunConfig
from contrast_core.store import DiskFull, IndexDamaged, RunStore, check


def train(home: Path, *args: str) -> None:
    assert main(["train", "--home", str(home), "--steps", "30", "--eval-size", "40", "--device", "cpu", "--quiet",
                 *args]) == 0  # fmt: skip


def everything(store: RunStore) -> dict:
    """What the pages read of every run: its row, metric rows and snapshot index."""
    return {run.id: (run, store.read_metrics(run.id), [(s["step"], s["metrics"]) for s in store.list_snapshots(run.id)])
            for run in store.list_runs()}  # fmt: skip


def damage_index(home: Path) -> None:
    """Every page of the index after the first overwritten, as a torn write or a bad disk would leave it."""
    db = sqlite3.connect(home / "index.sqlite")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    path = home / "index.sqlite"
    path.write_bytes(path.read_bytes()[:4096] + b"\xde\xad" * ((path.stat().st_size - 4096) // 2))


@pytest.fixture
def home(tmp_path):
    train(tmp_path, "--name", "first")
    train(tmp_path, "--margin", "0.5")
    store = RunStore(tmp_path)
    sweep_run = store.create_run(RunConfig().model_dump(mode="json"), name="m=1", owner="a" * 32, sweep="grid")
    store.claim_next("gone@elsewhere", "cpu")  # it was training when the index was lost
    store.add_metrics(sweep_run, [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}, {"step": 2, "pos": 1.0}])
    store.rename_run(sweep_run, "renamed")
    store.close()
    return tmp_path


def test_a_damaged_index_is_named_and_rebuilt_from_the_run_folders(home, capsys):
    store = RunStore(home)
    before = everything(store)
    store.close()
    assert check(home) == [] and main(["store", "check", "--home", str(home)]) == 0
    damage_index(home)
    with pytest.raises(
        IndexDamaged, match=r"store: the index is damaged \(.*\); `python -m contrast_core store rebuild`"
    ):
        RunStore(home).list_runs()
    assert main(["store", "check", "--home", str(home)]) == 1
    assert capsys.readouterr().out.startswith("index: ")
    assert main(["store", "rebuild", "--home", str(home)]) == 0
    assert capsys.readouterr().out.startswith("rebuilt: 3 runs, 62 metric rows, ")
    assert list(home.glob("index.sqlite.damaged-*"))  # the old index is kept aside
    store = RunStore(home)
    after = everything(store)
    assert after.keys() == before.keys()
    for run_id, (run, rows, snapshots) in before.items():
        again, again_rows, again_snapshots = after[run_id]
        if run.status == "running":  # its worker is gone: it can be resumed from its checkpoint
            assert (again.status, again.error) == ("interrupted", "its worker was gone when the index was rebuilt")
            run = run.__class__(**{**run.__dict__, "status": again.status, "error": again.error})
        assert again == run and again_rows == rows and again_snapshots == snapshots
    assert check(home) == []


def test_pages_say_a_damaged_index_in_one_line(home, monkeypatch):
    monkeypatch.setenv("CONTRAST_HOME", str(home))
    damage_index(home)
    from ui import backend

    monkeypatch.setattr(backend, "job_queue", lambda: jobs.JobQueue(RunStore(home), n_workers=1))  # not started
    for page in ("playground", "runs", "compare", "explore"):
        at = AppTest.from_file(APP, default_timeout=60).run()
        if page != "playground":
            at.switch_page(f"views/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert [e.value for e in at.error if e.value.startswith("store: the index is damaged")], page


def test_repeated_trouble_is_printed_once_and_waits_longer_each_time(capsys):
    trouble = jobs.Trouble("contrast worker w", first=0.5, limit=4)
    waits = [trouble.seen(IndexDamaged("store: the index is damaged (x)")) for _ in range(6)]
    assert waits == [0.5, 1, 2, 4, 4, 4]
    trouble.seen(DiskFull("disk full: 3 MB free under CONTRAST_HOME"))
    assert capsys.readouterr().err.splitlines() == [
        "contrast worker w: store: the index is damaged (x)",
        "contrast worker w: disk full: 3 MB free under CONTRAST_HOME",
    ]


@pytest.fixture
def small_disk(tmp_path):
    """A 12 MB file system of its own (tmpfs), where a run fills the disk; skipped where mounting is not allowed."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_fails_the_run_with_the_room_left_and_keeps_what_is_stored(small_disk):
    train(small_disk, "--name", "kept")
    store = RunStore(small_disk)
    kept = everything(store)
    store.keep_reserve()  # as a worker does while there is room
    assert (small_disk / "reserve.bin").stat().st_size == 2 * 2**20
    with open(small_disk / "filler", "wb") as f:  # leave about 150 kB: the next run's snapshots fill it
        f.write(b"\0" * int(store.free_mb() * 1e6 - 150_000))
    config = RunConfig(steps=400, eval_size=200, device="cpu", snapshot_every=3)
    run_id = store.create_run(config.model_dump(mode="json"))
    store.claim_next("w@here", "cpu")
    assert jobs.execute(store, run_id, "w@here") == "failed"
    run = store.get_run(run_id)
    assert run.error.startswith("disk full: ") and run.error.endswith(
        " MB free under CONTRAST_HOME; nothing stored was lost"
    )
    assert {k: v for k, v in everything(store).items() if k in kept} == kept  # the first run, as it was
    (small_disk / "filler").unlink()  # room again: Resume trains it to the end from its last checkpoint
    store.set_status(run_id, "queued")
    store.claim_next("w@here", "cpu")
    assert jobs.execute(store, run_id, "w@here") == "finished"
    assert store.get_run(run_id).step == 400
