"""What a user reads in the UI: progress lines in a run's log, metadata that reads well (integers,
cents, percentages, YYYY-MM months, no "None"), checks per partition, where files came from, and a
chart that leaves a month not loaded as a gap."""

import io
import logging
import re

import dagster as dg
import pandas as pd
import pytest
from PIL import Image

from taxi_assets.assets import build_assets
from taxi_assets.assets.analytics import COLOR_OF, ZONES_KEY, chart_png
from taxi_assets.mirror import SAMPLE_MIRROR, SAMPLE_URL_ENV, serve_folder
from taxi_assets.progress import Progress
from taxi_assets.resources.upstream_files import UpstreamFiles
from taxi_assets.settings import DEFAULT_SOURCE_URL
from taxi_assets.sources import RELEASES
from taxi_assets_tests.helpers import local_resources, real_rows, run_partition, step_failure_messages

ASSETS = build_assets(RELEASES, "local")
TRIP_STEPS = ("raw_trips", "clean_trips", "gcs_parquet", "bq_rides_table")
GREEN = real_rows("green_tripdata_2020-10_head3000.csv") + real_rows("green_tripdata_2020-10_tail500.csv")[1:]


def test_a_runs_log_says_what_each_trip_step_is_doing(mirror, local_defs, instance, monkeypatch):
    monkeypatch.setenv("TAXI_PROGRESS_SECONDS", "0")  # a line per chunk and batch: the files are small
    mirror.publish("yellow", "2021-01", real_rows("yellow_tripdata_2021-01_head3000.csv"))
    result = run_partition(local_defs, "yellow|2021-01-01", instance)
    assert result.success, step_failure_messages(result)
    logs = instance.all_logs(result.run_id)
    said = {
        step: [
            e.user_message for e in logs if e.dagster_event is None and e.step_key == step and e.level == logging.INFO
        ]
        for step in TRIP_STEPS
    }
    expected = {
        "raw_trips": (r"download: [\d.,]+ KB of [\d.,]+ KB \(100%\), [\d.,]+ MB/s", r"download done: [\d.,]+ KB at "),
        "clean_trips": (r"parse: 3,000 rows parsed, 0 rejected", r"parse done: 3,000 rows parsed, 0 rejected, "),
        "gcs_parquet": (r"publish: 3,000 rows \([\d.,]+ KB\) from ", r"publish done: 3,000 rows, [\d.,]+ KB at "),
        "bq_rides_table": (r"load: 3,000 rows from .* into the yellow 2021-01 slice", r"load done: 3,000 rows in the "),
    }
    for step, (progress, summary) in expected.items():
        lines = said[step]
        assert any(re.match(progress, line) for line in lines), (step, lines)
        done = [line for line in lines if " done: " in line]
        assert len(done) == 1 and re.match(summary + r".* in [\d.,]+ s$", done[0]), (step, lines)
        assert lines.index(done[0]) > max(i for i, line in enumerate(lines) if re.match(progress, line))


def test_progress_lines_come_at_most_once_per_interval():
    lines = []
    log = logging.getLogger("taxi_assets_tests.progress")
    log.addHandler(handler := logging.Handler())
    handler.emit = lambda record: lines.append(record.getMessage())
    log.setLevel(logging.INFO)
    try:
        slow = Progress(log, "parse", every=5)
        for rows in range(1000):
            slow.update(lambda rows=rows: f"{rows:,} rows")
        slow.done("1,000 rows")
        assert lines[0].startswith("parse done: 1,000 rows in ") and len(lines) == 1  # 1000 updates within 5 s
        lines.clear()
        eager = Progress(log, "parse", every=0)
        for rows in range(3):
            eager.update(lambda rows=rows: f"{rows:,} rows")
        assert lines == ["parse: 0 rows", "parse: 1 rows", "parse: 2 rows"]
    finally:
        log.removeHandler(handler)


def _values(metadata) -> list:
    return [value.value for value in metadata.values()]


def test_metadata_reads_well_and_checks_name_their_partition(mirror, tmp_path, instance):
    mirror.publish("green", "2020-10", GREEN)
    mirror.publish("yellow", "2020-07", real_rows("yellow_tripdata_2020-07_sample266.csv"))
    mirror.publish_zones()
    resources = local_resources(tmp_path, mirror)
    keys = ("green|2020-10-01", "yellow|2020-07-01")
    results = [dg.materialize(ASSETS.trips, partition_key=k, resources=resources, instance=instance) for k in keys]
    results.append(dg.materialize(ASSETS.all, selection=[ZONES_KEY], resources=resources, instance=instance))
    results += [
        dg.materialize(
            ASSETS.all, selection=["monthly_trip_stats"], partition_key=k, resources=resources, instance=instance
        )
        for k in keys
    ]
    results.append(
        dg.materialize(ASSETS.all, selection=["trips_per_month_chart"], resources=resources, instance=instance)
    )
    assert all(r.success for r in results)
    materializations = [e.materialization for r in results for e in r.get_asset_materialization_events()]
    evaluations = [e for r in results for e in r.get_asset_check_evaluations()]
    assert len(materializations) == 12 and len(evaluations) == 17

    for m in materializations + evaluations:
        for name, value in m.metadata.items():
            assert value.value != "None" and "None" != str(value.value).strip(), (name, value)
            if name in ("dagster/row_count", "rows", "trips", "size_bytes", "slice_rows", "lake_file_rows"):
                assert isinstance(value, dg.IntMetadataValue), (name, value)
    for m in materializations:
        if m.asset_key.to_user_string() not in ("raw_trips", "trips_per_month_chart"):  # files, not rows
            assert isinstance(m.metadata["dagster/row_count"], dg.IntMetadataValue), m.asset_key

    # Checks of partitioned assets are per partition.
    for evaluation in evaluations:
        if evaluation.asset_key != ZONES_KEY:
            assert evaluation.partition in keys, evaluation

    stats = {m.partition: m.metadata for m in materializations if m.asset_key == dg.AssetKey("monthly_trip_stats")}
    green = stats["green|2020-10-01"]
    assert green["table"].value == "monthly_trip_stats"  # as a user types it, not quoted
    assert green["month"].value == "2020-10"
    assert green["trips"].value == 3500
    header, _, *rows = green["preview"].value.splitlines()
    columns = [c.strip() for c in header.strip("|").split("|")]
    money = [columns.index(c) for c in ("total fare $", "median fare $")]
    assert len(green["preview"].value) < 1000  # Dagster 1.13 shows Markdown under 1,000 characters inline
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert all(re.fullmatch(r"[\d,]+\.\d{2}", cells[i]) for i in money), row
        assert re.fullmatch(r"\d+\.\d%|-", cells[columns.index("card tip %")]), row
        assert re.fullmatch(r"[\d,]+", cells[columns.index("trips")]), row

    [chart] = [m for m in materializations if m.asset_key == dg.AssetKey("trips_per_month_chart")]
    assert (chart.metadata["first_month"].value, chart.metadata["last_month"].value) == ("2020-07", "2020-10")
    table = chart.metadata["trips_per_month"].value.splitlines()
    assert table[0] == "| month | green | yellow |"
    # Counts as integers; a month a color has not loaded is blank, not 0 and not NaN.
    assert table[2:] == ["| 2020-07 |  | 266 |", "| 2020-10 | 3500 |  |"]


def test_files_from_the_bundled_sample_record_the_public_url(mirror, tmp_path, instance, monkeypatch):
    """make demo and make dev serve the sample on a port that dies with them: runs record the public
    release file's URL and "bundled sample" instead."""
    resources = local_resources(tmp_path, mirror)
    with serve_folder(SAMPLE_MIRROR) as sample_url:
        monkeypatch.setenv(SAMPLE_URL_ENV, sample_url)
        resources["upstream_files"] = UpstreamFiles.of(RELEASES, base_url=sample_url)
        result = dg.materialize(
            [ASSETS.raw_trips], partition_key="fhv|2019-01-01", resources=resources, instance=instance
        )
        zones = dg.materialize([ASSETS.taxi_zones], resources=resources, instance=instance)
    [raw] = result.asset_materializations_for_node("raw_trips")
    assert raw.metadata["source_url"].value == f"{DEFAULT_SOURCE_URL}/fhv/fhv_tripdata_2019-01.csv.gz"
    assert raw.metadata["served_from"].value.startswith("bundled sample")
    [lookup] = zones.asset_materializations_for_node("taxi__zones")
    assert lookup.metadata["source_url"].value == f"{DEFAULT_SOURCE_URL}/misc/taxi_zone_lookup.csv"
    assert not any(sample_url in str(v) for m in (raw, lookup) for v in _values(m.metadata))


def _yellow_in_the_middle(png: bytes) -> int:
    """Yellow pixels in a band of columns at the middle of the plot (the legend sits in a corner)."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    width, height = image.size
    target = tuple(int(COLOR_OF["yellow"][i : i + 2], 16) for i in (1, 3, 5))
    return sum(
        1
        for x in range(width // 2 - 30, width // 2 + 30)
        for y in range(height)
        if all(abs(a - b) < 30 for a, b in zip(image.getpixel((x, y)), target, strict=True))
    )


@pytest.mark.parametrize("loaded_months", [["2020-07", "2021-01"], pd.date_range("2020-07", "2021-01", freq="MS")])
def test_the_chart_draws_no_line_across_months_not_loaded(loaded_months):
    trips = pd.DataFrame({"month": pd.to_datetime(loaded_months), "color": "yellow", "trips": 1000})
    drawn = _yellow_in_the_middle(chart_png(trips))
    if len(loaded_months) == 2:  # 2020-08 .. 2020-12 not loaded: nothing drawn between
        assert drawn == 0
    else:  # every month loaded: the line runs through the middle (the test can see a line)
        assert drawn > 20
