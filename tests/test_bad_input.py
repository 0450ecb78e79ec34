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
