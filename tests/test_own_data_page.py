"""The Playground with the user's own data: a CSV uploaded (or its path), its label column chosen from
its header, its first rows shown; an image folder by its path. Runs with AppTest over a test store; the
queue is not started, a queued run is trained here by `jobs.execute` as a worker would."""

from __future__ import annotations

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_app import APP, button, chart, values

from contrast_core import jobs
from ui import demo

HEADER = "petal,sepal,height,species,site\n"
ROWS = "".join(f"{i % 7 + 0.5},{(i * 3) % 5},{i},{'ab'[i % 2]},{i % 3}\n" for i in range(60))
TABLE = (HEADER + ROWS).encode()


def playground(dataset: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.selectbox(key="cfg.dataset").set_value(dataset).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def test_an_uploaded_csv_offers_its_columns_shows_its_first_rows_and_trains(queue, store):
    at = playground("csv")
    assert at.selectbox(key="cfg.csv_label").disabled and button(at, "Train").disabled  # no file yet
    at.file_uploader(key="cfg.csv_upload").set_value(("iris.csv", TABLE, "text/csv")).run()
    label = at.selectbox(key="cfg.csv_label")
    assert label.options == ["petal", "sepal", "height", "species", "site"] and not label.disabled
    assert label.value == "site"  # no column named like a label: the last one
    assert "Features: petal, sepal, height; left out, not numbers: species" in [c.value for c in at.caption]
    preview = at.dataframe[0].value
    assert list(preview.columns) == label.options and len(preview) == 5 and list(preview["height"]) == [0, 1, 2, 3, 4]
    label.set_value("species").run()
    assert not errors(at) and not button(at, "Train").disabled
    at.number_input(key="cfg.steps").set_value(20).run()
    at.number_input(key="cfg.eval_size").set_value(10).run()
    button(at, "Train").click().run()
    run = store.get_run(at.session_state["playground_run"])
    assert run.config["csv_label"] == "species"
    saved = demo.upload_dir(store) / run.config["csv_path"].rsplit("/", 1)[-1]
    assert run.config["csv_path"] == str(saved) and saved.read_bytes() == TABLE  # kept by content in the store
    assert store.claim_next("w@test", "cpu").id == run.id
    assert jobs.execute(store, run.id, "w@test") == "finished"  # trained as a worker trains it
    at.run()
    scatter = chart(at, "Embedding (2-D, step 20)")
    classes = [t for t in scatter["data"] if t["type"] == "scatter" and t["name"] in ("a", "b")]
    assert sorted(t["name"] for t in classes) == ["a", "b"] and sum(len(values(t["x"])) for t in classes) == 10


@pytest.mark.parametrize(
    "table, label, words",
    [
        (HEADER + ROWS.replace(",a,", ",b,"), "species", "csv_label: label column 'species' has 1 class"),
        (HEADER + ROWS.replace("3.5,", ",", 1), "species", "csv: 1 row contains missing values (first at row 4)"),
        (HEADER + ROWS[:40], "species", "rows; at least 10 are needed"),
        # a typo in a column of numbers: the whole column had been left out without a word
        (
            HEADER + ROWS.replace("\n2.5,", "\n2.5x,", 1),
            "species",
            "csv: column 1 (counting from 1) holds numbers but not at row 3",
        ),
        (HEADER + ROWS, "height", "csv_label: label column 'height' has 60 classes in 60 rows"),  # a row a class
        ((HEADER + ROWS).replace(",", ";"), "petal;sepal;height;species;site", "it looks separated by ';'"),
    ],
)
def test_a_csv_a_run_cannot_train_on_is_named_and_train_is_off(queue, store, table, label, words):
    at = playground("csv")
    at.file_uploader(key="cfg.csv_upload").set_value(("t.csv", table.encode(), "text/csv")).run()
    at.selectbox(key="cfg.csv_label").set_value(label).run()
    assert any(words in e for e in errors(at)), errors(at)
    assert len(errors(at)) == 1, errors(at)  # not also "the csv dataset needs a file": it has one
    assert button(at, "Train").disabled and not at.exception


def test_a_csv_path_outside_demo_mode_is_read_where_it_is(queue, store, tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("x,y,label\n" + "".join(f"{i},{i * i},{i % 2}\n" for i in range(30)))
    at = playground("csv")
    at.text_input(key="cfg.csv_path").set_value(str(path)).run()
    assert at.selectbox(key="cfg.csv_label").value == "label"  # named like a label: picked first
    assert list(at.dataframe[0].value.columns) == ["x", "y", "label"]
    assert not errors(at) and not button(at, "Train").disabled
    button(at, "Train").click().run()
    assert store.get_run(at.session_state["playground_run"]).config["csv_path"] == str(path)
    at.text_input(key="cfg.csv_path").set_value(str(tmp_path / "nowhere.csv")).run()
    assert [e for e in errors(at) if e.startswith("csv: file not found")] and not at.dataframe
    at.text_input(key="cfg.csv_path").set_value(str(tmp_path)).run()
    assert [e for e in errors(at) if e.startswith("csv: a folder, not a file")]


def test_a_csv_upload_in_demo_mode_keeps_the_demo_s_caps(queue, store, monkeypatch):
    monkeypatch.setenv("CONTRAST_DEMO", "1")
    monkeypatch.setenv("CONTRAST_DEMO_UPLOAD_ROWS", "50")
    at = playground("csv")
    assert not [t for t in at.text_input if t.key == "cfg.csv_path"]  # no path on the server in a demo
    assert at.file_uploader(key="cfg.csv_upload").proto.max_upload_size_mb == 2  # the box names the demo's cap
    at.file_uploader(key="cfg.csv_upload").set_value(("t.csv", TABLE, "text/csv")).run()
    assert "csv upload: 60 rows, over this demo's 50" in errors(at) and button(at, "Train").disabled


def test_an_image_folder_by_its_path(queue, store, tmp_path):
    at = playground("folder")
    at.text_input(key="cfg.data_path").set_value(str(tmp_path / "nowhere")).run()
    assert "data_path: not a folder on this machine" in errors(at) and button(at, "Train").disabled
    for name, colour in (("cats", "red"), ("dogs", "blue")):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(5 if name == "cats" else 3):
            Image.new("RGB", (9, 9), colour).save(tmp_path / "pets" / name / f"{i}.png")
    at.text_input(key="cfg.data_path").set_value(str(tmp_path / "pets")).run()
    assert [e for e in errors(at) if e.startswith("data_path: class 'dogs' has 3 images; at least 5")]
    assert button(at, "Train").disabled  # said before Train, not when the run starts
    for i in range(3, 5):
        Image.new("RGB", (9, 9), "blue").save(tmp_path / "pets" / "dogs" / f"{i}.png")
    at.run()
    at.number_input(key="cfg.image_size").set_value(16).run()
    assert not errors(at) and not button(at, "Train").disabled
    button(at, "Train").click().run()
    config = store.get_run(at.session_state["playground_run"]).config
    assert (config["dataset"], config["data_path"], config["image_size"]) == ("folder", str(tmp_path / "pets"), 16)


def test_an_image_zip_in_demo_mode_is_unpacked_and_trained_on(queue, store, monkeypatch):
    from test_demo import pngs, zipped

    monkeypatch.setenv("CONTRAST_DEMO", "1")
    at = playground("folder")
    assert not [t for t in at.text_input if t.key == "cfg.data_path"]  # no path on the server in a demo
    upload = at.file_uploader(key="cfg.zip_upload")
    assert upload.proto.max_upload_size_mb == 20  # the box names the demo's cap, not the server's 200 MB
    upload.set_value(("pets.zip", zipped(pngs() | {"../evil.png": b"x"}), "application/zip")).run()
    assert [e for e in errors(at) if e.startswith("zip upload: the entry '../evil.png' would be written outside")]
    assert button(at, "Train").disabled and not demo.upload_dir(store).exists()
    at.file_uploader(key="cfg.zip_upload").set_value(("pets.zip", zipped(pngs("pets/")), "application/zip")).run()
    assert not errors(at) and not button(at, "Train").disabled
    button(at, "Train").click().run()
    config = store.get_run(at.session_state["playground_run"]).config
    assert (demo.upload_dir(store) / config["data_path"].rsplit("/", 1)[-1] / "cats" / "0.png").is_file()
