"""The UI in a real browser (Debian's chromium, driven by selenium through chromium-driver), after
the demo: `make dev` offline on the demo's data folder, the first page without Dagster's
"Join the community" modal, and a backfill of two sample partitions that succeeds.

The backfill is launched from the page with the GraphQL mutation the UI's Materialize dialog sends
(`launchPartitionBackfill`), not by clicking through the dialog (its markup changes between Dagster
releases); its runs are then watched on the backfill's page. make test-extended (.ci/run installs
chromium and chromium-driver)."""

import json
import shutil
import time

import pytest

from taxi_assets.mirror import SAMPLE_NOTE
from taxi_assets_harness.graphql import wait_until
from taxi_assets_harness.instances import TRIP_ASSETS, backfill_runs, dagster_dev

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
