"""The short load test: a few visitors on one hosted demo, each training and watching its own run.
The longer one (`python -m ui.load --visitors 8`) gives the figures; this one checks behaviour only."""

import pytest

from ui import load
from ui.serve import CHROMIUM

pytestmark = pytest.mark.browser


def test_three_visitors_each_see_their_own_run_train_and_end():
    if not CHROMIUM.exists():
        pytest.fail(f"chromium: {CHROMIUM} is missing (`make chromium` installs it)")
    found = load.load(visitors=3, steps=2000, seconds=240)  # runs long enough to be watched at each refresh
    assert (found["failed_loads"], found["exception_boxes"], found["runs_not_ended"]) == (0, 0, 0), found
    assert all(v["updates_while_training"] >= 2 for v in found["each_visitor"]), found["each_visitor"]
    assert all(v["last_line"].startswith("finished · step 2,000 / 2,000") for v in found["each_visitor"])
    assert found["chart_refresh_seconds_median"] is not None  # the embedding chart was seen redrawn while training


def test_a_visitor_s_progress_gaps_count_only_while_its_run_trains():
    changes = [[0.0, None], [0.5, "queued · queue position 2"], [2.0, "running · step 10"], [3.0, "running · step 90"],
               [5.5, "running · step 400"], [6.0, "finished · step 600 / 600"]]  # fmt: skip
    assert load.seen(changes) == {"gaps": [1.0, 2.5], "running_at": 2.0, "ended_at": 6.0}
