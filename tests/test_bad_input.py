"""Bad input through a URL, on every page: one line naming the field or parameter, never a traceback,
and every stored run byte for byte as it was. (The CLI's table: tests/test_cli.py; widgets:
tests/test_config_form.py; uploads: tests/test_demo.py.)"""

import pytest
from streamlit.testing.v1 import AppTest
from test_app import APP, add_run

PAGES = {"playground": None, "compare": "views/compare.py", "explore": "views/explore.py", "runs": "views/runs.py"}


def stored_bytes(store) -> dict:
    return {p: p.read_bytes() for p in (store.home / "runs").rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "page, params, words",
    [
        ("playground", {"margin": "abc"}, "margin: "),
        ("playground", {"steps": "1e10"}, "steps: at most 1,000,000"),
        ("playground", {"loss": "hinge"}, "loss: unknown 'hinge'"),
        ("playground", {"snapshot_every": "1", "steps": "5000"}, "snapshot_every: at least 26 for 5,000 steps"),
        ("playground", {"run": "../../etc/passwd"}, "Run ../../etc/passwd not found"),
        ("explore", {"step": "junk"}, "step: run "),
        ("explore", {"projection": "<script>"}, "projection: unknown '<script>'"),
        ("compare", {"sweep": "no such sweep"}, "sweep: no sweep named 'no such sweep'"),
        ("compare", {"runs": "nope,../x"}, "runs: no run nope, ../x"),
    ],
)  # fmt: skip
def test_a_bad_link_is_one_line_and_loses_nothing(queue, store, page, params, words):
    for _ in range(2):  # two runs: Compare then lists them
        add_run(store, 100, status="finished")
    before = stored_bytes(store)
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    if PAGES[page]:
        at.switch_page(PAGES[page]).run()
    assert not at.exception, [e.value for e in at.exception]
    said = [m.value for m in (*at.warning, *at.error) if words in m.value]
    assert said and all("\n" not in m for m in said), [m.value for m in (*at.warning, *at.error)]
    assert stored_bytes(store) == before


# --- a config file, through the CLI -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, words",
    [
        ("{not json", "--config: cannot read"),
        ("", "--config: cannot read"),
        ("[1, 2]", "--config: {path} must hold a JSON object of RunConfig fields"),
        ("[" * 100_000 + "]" * 100_000, "--config: {path} is nested too deeply"),
        ('{"steps": "many"}', "--steps: "),
        ('{"margin": 1e308}', "--margin: must be at most 10,000"),
        ('{"loss": "hinge"}', "--loss: unknown 'hinge'"),
        ('{"temperature": 1e-300, "loss": "nt-xent", "sampler": "augmented-views", "augment": 0.5}', "--temperature: "),
        ('{"wings": 2}', "wings"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["train", "sweep"])
def test_a_bad_config_file_is_one_line_and_loses_nothing(store, tmp_path, capsys, text, words, command):
    from contrast_core.__main__ import main

    add_run(store, 100, status="finished")
    before, runs = stored_bytes(store), [run.id for run in store.list_runs()]
    path = tmp_path / "run.json"
    path.write_text(text)
    extra = ["--distance", "euclidean,cosine"] if command == "sweep" else []
    assert main([command, "--home", str(store.home), "--config", str(path), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words.format(path=path) in err, err
    assert stored_bytes(store) == before and [run.id for run in store.list_runs()] == runs


# --- a CSV upload, in demo mode ----------------------------------------------------------------------

GOOD = "secret_a,secret_b,label\n" + "".join(f"{i},{i * i},{i % 2}\n" for i in range(30))


@pytest.mark.parametrize(
    "data, label, words",
    [
        (GOOD.encode() * 40, "label", "csv upload: 1,239 rows, over this demo's 1,000"),
        (b"\x89PNG\r\n\x1a\n\x00\x00binary", "label", "csv: could not be read"),
        (b"", "label", "csv: could not be read"),
        (b"secret_a,label\n", "label", "csv: the file has no rows"),
        (GOOD.encode()[:60], "label", "rows; at least 10 are needed"),
        (GOOD.encode(), "y", "csv_label: label column 'y' not found among the file's 3 columns"),
        (GOOD.replace(",0\n", ",1\n").encode(), "label", "csv_label: label column 'label' has 1 class"),
        (("name,label\n" + "a,0\nb,1\n" * 10).encode(), "label", "csv: no numeric feature columns"),
        (GOOD.replace("3,9,1", "3,,1").encode(), "label", "csv: 1 row contains missing values (first at row 4)"),
        (GOOD.replace("3,9,1", "3,Infinity,1").encode(), "label", "csv: 1 row contains infinite values (first at row 4)"),
    ],
)  # fmt: skip
def test_a_bad_csv_upload_is_one_line_and_loses_nothing(store, monkeypatch, data, label, words):
    from ui import demo

    monkeypatch.setenv("CONTRAST_DEMO", "1")
    monkeypatch.setenv("CONTRAST_DEMO_UPLOAD_ROWS", "1000")
    add_run(store, 100, status="finished")
    before = stored_bytes(store)
    with pytest.raises(ValueError) as refused:
        demo.save_upload(store, data, label)
    said = str(refused.value)
    assert len(said.splitlines()) == 1 and words in said, said
    assert "secret" not in said  # no word of the file comes back
    assert stored_bytes(store) == before and not demo.upload_dir(store).exists()
