"""A short soak: benchmarks/soak.py's deployment (`make serve` on Celery with one `make worker`, the
sensor and the schedule on, PostgreSQL, a TLC mirror on loopback) for three simulated months, every
process's wall clock moved a month at a time. The long one (24 months) is the benchmark itself."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from taxi_assets_tests.helpers import NEEDS_POSTGRES_AND_REDIS

pytestmark = [pytest.mark.slow, pytest.mark.extended, *NEEDS_POSTGRES_AND_REDIS]
ROOT = Path(__file__).resolve().parents[2]


def _soak_module():
    spec = importlib.util.spec_from_file_location("soak", ROOT / "benchmarks" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # dataclasses looks its module up
    spec.loader.exec_module(module)
    return module


def test_three_simulated_months_meet_the_soak_targets(tmp_path):
    soak_module = _soak_module()
    printed: list[str] = []
    soak = soak_module.run_soak(tmp_path, months=3, rows=500, out=printed.append)
    report = "\n".join(printed)

    # No failed tick or run; each partition loaded once per version upstream had; the same
    # serving processes (code server, its gRPC child, webserver, daemon) before and after every jump.
    assert soak.problems() == [], report
    assert soak.pid_changes == [] and soak.pids_at_start == soak.pids_at_end, report
    loads = soak.loads()
    assert loads == soak.expected, report
    assert {key for key, count in loads.items() if count == 2} == soak.revisions, report
    # The months published after the code location loaded (2026-10 and 2026-11, beyond its grid on
    # the first day) were requested and loaded by the definitions loaded that day.
    assert {"yellow|2026-11-01", "green|2026-11-01", "yellow|2026-10-01", "green|2026-10-01"} <= set(loads), report

    months = [row for row in soak.rows if row["month"] not in ("setup", "settled")]
    assert [row["month"] for row in months] == ["2026-12", "2027-01", "2027-02"], report
    for row in months:
        # Each month: the sensor (new yellow month, the revision) and the schedule (green) ticked and
        # loaded exactly what was published.
        assert row["sensor ticks"] >= 1 and row["schedule ticks"] == 1, report
        assert (row["loaded"], row["revised"]) == (2, 1), report
    # The retention schedule ran once a month, crossing 2027-01-01 and 2027-02-01.
    assert sum(row["retention ticks"] for row in soak.rows) == 2, report
    # The grid upkeep's ticks that had nothing to do left no log file in DAGSTER_HOME (Dagster
    # never removes one): only the five that recorded the 181 empty cells, 40 a tick, did.
    upkeep_logs = tmp_path / "home" / "storage" / "__repository__" / "grid_upkeep_sensor"
    assert sum(row["upkeep ticks"] for row in soak.rows) >= 7, report  # one a jump, more if a step is slow
    assert len([path for path in upkeep_logs.iterdir() if path.stat().st_size]) == 5, report
    assert len(list(upkeep_logs.iterdir())) == 5, report
