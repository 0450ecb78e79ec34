"""End to end in headless Chromium: upload a CSV in the Playground, choose its label column among its
columns, see its first rows, train, and watch the embedding of its rows."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect, sync_playwright

from ui.serve import CHROMIUM, CHROMIUM_ARGS, ROOT, local_app

pytestmark = pytest.mark.browser
expect.set_options(timeout=60_000)  # a page can take a while on 2 busy cores

ARTIFACTS = ROOT / "test-artifacts"
# The embedding's classes as drawn: the legend names of the scatter whose title starts "Embedding".
EMBEDDING_CLASSES_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(g =>
    /^Embedding/.test(((g.layout && g.layout.title && g.layout.title.text) || '').replace(/<\\/?b>/g, ''))
        ? (g._fullData || []).filter(t => (t.x || []).length > 0).map(t => t.name) : [])"""
TABLE = "width,height,kind,batch\n" + "".join(
    f"{(i % 2) * 3 + (i % 5) * 0.1},{(i % 2) * -2 + (i % 7) * 0.1},{'round' if i % 2 else 'long'},{i % 3}\n"
    for i in range(80)
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.fail(f"chromium: {CHROMIUM} is missing (`make chromium` installs it)")
    ARTIFACTS.mkdir(exist_ok=True)
    home = tmp_path_factory.mktemp("own-data-home")
    with local_app(home, ARTIFACTS / "server-own-data.log") as (url, _):
        yield url


def test_upload_a_csv_pick_its_label_and_train_on_it(server, tmp_path):
    table = tmp_path / "shapes.csv"
    table.write_text(TABLE)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 2000})
            page.set_default_timeout(60_000)
            page.goto(f"{server}/?steps=300")
            main = page.get_by_test_id("stMain")
            page.get_by_test_id("stSelectbox").filter(has_text="Dataset").click()
            page.get_by_role("option", name="csv", exact=True).click()
            main.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(table))
            label = main.get_by_role("combobox", name="Label column")
            expect(label).to_have_value("batch")  # no column named like a label: the last one
            label.click()
            expect(page.get_by_role("option")).to_have_text(["width", "height", "kind", "batch"])
            page.get_by_role("option", name="kind", exact=True).click()
            expect(label).to_have_value("kind")
            expect(main.get_by_test_id("stDataFrame")).to_be_visible()  # the first rows
            page.screenshot(path=ARTIFACTS / "own-data-csv.png")
            train = main.get_by_role("button", name="Train", exact=True)
            expect(train).to_be_enabled()
            train.click()
            page.get_by_test_id("stProgress").filter(has_text="finished").wait_for(timeout=240_000)
            page.wait_for_function(f"() => ({EMBEDDING_CLASSES_JS})().length >= 2")
            assert sorted(set(page.evaluate(EMBEDDING_CLASSES_JS)) & {"long", "round"}) == ["long", "round"]
            page.screenshot(path=ARTIFACTS / "own-data-csv-trained.png")
            boxes = page.locator('[data-testid="stException"]')
            assert boxes.count() == 0, boxes.first.inner_text()
        finally:
            browser.close()
