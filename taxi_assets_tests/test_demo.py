"""The README's first command, minus the install; and its runs as the UI shows them after it."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taxi_assets.mirror import SAMPLE_NOTE
from taxi_assets_harness.graphql import graphql
from taxi_assets_harness.instances import webserver

ENV = {k: v for k, v in os.environ.items() if k not in ("TAXI_SOURCE_URL", "TAXI_TARGET", "DAGSTER_HOME")}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`make demo` once, in a folder of its own: (that folder, the finished process)."""
    tmp_path = tmp_path_factory.mktemp("demo")
    (tmp_path / "started").write_text(str(time.time()))
    completed = subprocess.run(
        [sys.executable, "-m", "taxi_assets.demo"],
        cwd=tmp_path,
        env={**ENV, "TAXI_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    return tmp_path, completed


@pytest.fixture(scope="module")
def ui(demo, tmp_path_factory) -> int:
    """The UI's webserver on the demo's run history, as `make dev` serves it (no daemon: nothing new
    runs); its port."""
    data = demo[0] / "data"
    log = tmp_path_factory.mktemp("web") / "web.log"
    with webserver(data / "dagster_home", {**ENV, "TAXI_DATA_DIR": str(data)}, log) as port:
        yield port


def test_demo_runs_offline_and_reports_every_stage(demo):
    """The README's first command, minus the install: the bundled sample mirror through the graph."""
    tmp_path, completed = demo
    lines = completed.stdout.splitlines()
    expected = {"yellow|2021-01-01": 3000, "yellow|2020-07-01": 266, "green|2020-10-01": 3500, "fhv|2019-01-01": 18}
    for key, rows in expected.items():
        [row] = [line for line in lines if line.startswith(key) and line.endswith(".parquet")]
        assert row.split()[1:3] == [str(rows), str(rows)], row
    assert "table rides: 6784 rows in 4 slices" in completed.stdout
    # The statistics and the chart, after the trips.
    [manhattan] = [line for line in lines if line.split()[:3] == ["yellow", "2021-01", "Manhattan"]]
    assert manhattan.split()[3] == "2769"  # trips with a Manhattan pickup in the 3,000 rows
    chart = tmp_path / "data" / "lake" / "reports" / "trips_per_month.png"
    assert f"chart: {chart}" in completed.stdout and chart.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "data" / "dagster_home" / "dagster.yaml").exists()
    assert (tmp_path / "data" / SAMPLE_NOTE).exists()  # make dev serves the sample again (test_dagster_dev)


RUNS = "{ runsOrError { ... on Runs { results { runId status tags { key value } assetSelection { path } } } } }"
LOGS = (
    "query($id: ID!) { runOrError(runId: $id) { ... on Run { eventConnection { events { __typename "
    "... on MessageEvent { message level } } } } } }"
)
# The overview timeline's query (ui-core's useRunsForTimeline.tsx, COMPLETED_RUN_TIMELINE_QUERY): the
# runs finished in the window; the page leaves out a run without a repositoryOrigin.
TIMELINE = """
query($filter: RunsFilter!) { completed: runsOrError(filter: $filter, limit: 500) { ... on Runs { results {
  id pipelineName startTime endTime repositoryOrigin { repositoryName repositoryLocationName } } } } }
"""
LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"
# The summary line each step of a run logs at INFO (taxi_assets/progress.py), by the assets the run
# materializes: the trip job's four steps, the zones, a partition's statistics, the chart.
SUMMARIES = {
    None: ("download done: ", "parse done: ", "publish done: ", "load done: "),
    "taxi/zones": ("zones done: 265 zones",),
    "monthly_trip_stats": ("statistics done: ",),
    "trips_per_month_chart": ("chart done: 4 months loaded (2019-01 to 2021-01), 3 colors",),
}


def test_the_demos_runs_show_their_progress_in_the_ui(ui):
    """After the demo, the UI (its webserver, read as the run page reads a run's events) shows
    every run's progress lines at INFO, the analytics runs' included, each with its summary line."""
    found = graphql(ui, RUNS)["runsOrError"]["results"]
    assert len(found) == 10 and {r["status"] for r in found} == {"SUCCESS"}  # 4 partitions, zones, 4 stats, chart
    for run in found:
        assets = {"/".join(a["path"]) for a in run["assetSelection"] or []}
        [asset] = assets or {None}  # the trip job's runs select no assets by name
        events = graphql(ui, LOGS, {"id": run["runId"]})["runOrError"]["eventConnection"]["events"]
        info = [e["message"] for e in events if e["__typename"] == "LogMessageEvent" and e["level"] == "INFO"]
        for summary in SUMMARIES[asset]:
            assert any(line.startswith(summary) for line in info), (asset, summary, info)


def test_the_demos_runs_show_on_the_overview_timeline(demo, ui):
    """The UI's overview timeline after the demo: its query finds the demo's 10 runs in the window
    since the demo started, each under the code location and repository the UI serves (a run
    without one is left off the page)."""
    started = float((demo[0] / "started").read_text())
    window = {"statuses": ["SUCCESS", "FAILURE", "CANCELED"], "updatedAfter": started, "updatedBefore": time.time()}
    found = graphql(ui, TIMELINE, {"filter": window})["completed"]["results"]
    locations = {e["name"] for e in graphql(ui, LOCATIONS)["workspaceOrError"]["locationEntries"]}
    assert len(found) == 10, found
    for run in found:
        origin = run["repositoryOrigin"]
        assert origin is not None, run
        assert origin["repositoryLocationName"] in locations and origin["repositoryName"] == "__repository__", run
        assert started <= run["startTime"] <= run["endTime"], run
    assert {r["pipelineName"] for r in found} == {"trips_job", "__ASSET_JOB"}
