"""The README's first command, minus the install."""

import os
import subprocess
import sys

from taxi_assets.mirror import SAMPLE_NOTE


def test_demo_runs_offline_and_reports_every_stage(tmp_path):
    """The README's first command, minus the install: the bundled sample mirror through the graph."""
    env = {k: v for k, v in os.environ.items() if k not in ("TAXI_SOURCE_URL", "TAXI_TARGET", "DAGSTER_HOME")}
    completed = subprocess.run(
        [sys.executable, "-m", "taxi_assets.demo"],
        cwd=tmp_path,
        env={**env, "TAXI_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
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
