"""The `dg` CLI as a user runs it from the project root, in the venv `make install` builds:
`dg check defs`, `dg list defs`, `dg launch` (each in a fresh process)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from taxi_assets.definitions import build_defs
from taxi_assets.mirror import SAMPLE_MIRROR, serve_folder
from taxi_assets.sources import source_named

ROOT = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).parent / "dg"  # installed by `make install` (dagster-dg-cli)


def _dg(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").touch()
    environment = {k: v for k, v in os.environ.items() if k not in ("TAXI_SOURCE_URL", "TAXI_SOURCE", "TAXI_TARGET")}
    environment.update(
        DAGSTER_HOME=str(home),
        TAXI_DATA_DIR=str(tmp_path / "data"),
        VIRTUAL_ENV=sys.prefix,  # as after `source .venv/bin/activate`
        **env,
    )
    completed = subprocess.run([str(DG), *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "SupersessionWarning" not in completed.stdout + completed.stderr
    return completed


def test_dg_check_defs(tmp_path):
    completed = _dg(["check", "defs"], tmp_path)
    assert "All definitions loaded successfully" in completed.stdout + completed.stderr


@pytest.mark.parametrize("source", ["releases", "tlc"])
def test_dg_list_defs_lists_every_asset_check_sensor_and_schedule(tmp_path, source):
    listed = json.loads(_dg(["list", "defs", "--json"], tmp_path, TAXI_SOURCE=source).stdout)
    defs = build_defs("local", source_named(source))
    graph = defs.resolve_asset_graph()
    assert {a["asset_key"] for a in listed["assets"]} == {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {c["key"] for c in listed["asset_checks"]} == {
        f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys
    }
    assert (
        {s["name"] for s in listed["sensors"]}
        == {s.name for s in defs.sensors}
        >= {
            "upstream_files_sensor",
            "analytics_automation",
        }
    )
    assert {s["name"] for s in listed["schedules"]} == {s.name for s in defs.schedules}
    assert source == "releases" or "newest_month_schedule" in {s["name"] for s in listed["schedules"]}
    assert {j["name"] for j in listed["jobs"]} >= {"trips_job"}
    assert len(listed["assets"]) == 7 and len(listed["asset_checks"]) >= 9


@pytest.mark.slow
def test_dg_launch_loads_a_sample_partition(tmp_path):
    with serve_folder(SAMPLE_MIRROR) as base_url:
        completed = _dg(
            ["launch", "--assets", "*bq_rides_table", "--partition", "fhv|2019-01-01"],
            tmp_path,
            TAXI_SOURCE_URL=base_url,
        )
    assert "RUN_SUCCESS" in completed.stdout + completed.stderr
    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as conn:
        slices = conn.execute("SELECT color, strftime(month, '%Y-%m'), count(*) FROM rides GROUP BY ALL").fetchall()
    assert slices == [("fhv", "2019-01", 18)]
