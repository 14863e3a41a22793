"""The UI in a real browser (Debian's chromium, driven by selenium through chromium-driver), after
the demo: `make dev` offline on the demo's data folder, the first page without Dagster's
"Join the community" modal, and a backfill of two sample partitions that succeeds; and the overview
timeline after a real `make demo`, showing its runs.

The backfill is launched from the page with the GraphQL mutation the UI's Materialize dialog sends
(`launchPartitionBackfill`), not by clicking through the dialog (its markup changes between Dagster
releases); its runs are then watched on the backfill's page. make test-extended (.ci/run installs
chromium and chromium-driver)."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from taxi_assets.mirror import SAMPLE_NOTE
from taxi_assets_harness.graphql import wait_until
from taxi_assets_harness.instances import TRIP_ASSETS, backfill_runs, dagster_dev, webserver

pytestmark = [pytest.mark.slow, pytest.mark.extended]
PARTITIONS = ["yellow|2020-07-01", "fhv|2019-01-01"]
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture
def browser(tmp_path):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _page_text(driver) -> str:
    return driver.execute_script("return document.body ? document.body.innerText : ''")


def test_after_the_demo_the_ui_backfills_sample_partitions_offline(tmp_path, browser):
    data = tmp_path / "data"
    data.mkdir()
    (data / SAMPLE_NOTE).write_text("make demo\n")  # what make demo leaves (test_demo checks it does)
    with dagster_dev(tmp_path, {"TAXI_SOURCE_URL": ""}) as port:
        browser.get(f"http://127.0.0.1:{port}/assets")
        wait_until(lambda: "raw_trips" in _page_text(browser), 120, "the asset catalog in the browser")
        time.sleep(5)  # the modal, when enabled, opens once the page's first queries are answered
        assert "Join the Dagster community" not in _page_text(browser)
        assets = ", ".join(f'{{path: ["{name}"]}}' for name in TRIP_ASSETS)
        mutation = (
            f"mutation {{ launchPartitionBackfill(backfillParams: {{ assetSelection: [{assets}], "
            f"partitionNames: {json.dumps(PARTITIONS)} }}) "
            "{ __typename ... on LaunchBackfillSuccess { backfillId } } }"
        )
        launched = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch('/graphql', {method: 'POST', headers: {'Content-Type': 'application/json'},"
            " body: JSON.stringify({query: arguments[0]})}).then(r => r.json()).then(done);",
            mutation,
        )["data"]["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill = launched["backfillId"]

        def runs_finished():
            runs = backfill_runs(port, backfill)
            done = [r for r in runs if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
            return runs if len(runs) == len(PARTITIONS) and len(done) == len(runs) else None

        runs = wait_until(runs_finished, 300, "the backfill's runs")
        assert [run["status"] for run in runs] == ["SUCCESS", "SUCCESS"], (tmp_path / "dev.log").read_text()[-3000:]
        # The backfill's runs as the UI lists them: both partitions, both Success.
        browser.get(f"http://127.0.0.1:{port}/runs/b/{backfill}?tab=runs")
        text = wait_until(
            lambda: (t := _page_text(browser)).count("Success") >= 2 and all(p in t for p in PARTITIONS) and t,
            60,
            "the backfill's runs on its page",
        )
        assert "Failure" not in text and "Failed" not in text


def test_after_the_demo_the_overview_timeline_shows_its_runs(tmp_path, browser):
    """Overview > Timeline after `make demo`: its 10 runs, under the code location (4 of trips_job,
    6 of the analytics assets), not "No runs or scheduled ticks in this time period"."""
    env = {k: v for k, v in os.environ.items() if k not in ("TAXI_SOURCE_URL", "TAXI_TARGET", "DAGSTER_HOME")}
    data = tmp_path / "data"
    demo = subprocess.run(
        [sys.executable, "-m", "taxi_assets.demo"],
        env={**env, "TAXI_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    with webserver(data / "dagster_home", {**env, "TAXI_DATA_DIR": str(data)}, tmp_path / "web.log") as port:
        browser.get(f"http://127.0.0.1:{port}/overview/activity/timeline")
        rows = wait_until(
            lambda: "trips_job" in (text := _page_text(browser)) and text.splitlines(),
            60,
            "the demo's runs on the timeline",
        )
    assert "No runs or scheduled ticks in this time period." not in rows
    # Each row's name, then its count of runs in the window.
    assert rows[rows.index("trips_job", rows.index("trips_job") + 1) + 1] == "4", rows
    assert rows[rows.index("Jobless asset materializations") + 2] == "6", rows
