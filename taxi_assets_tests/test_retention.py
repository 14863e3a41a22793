"""The retention job (taxi_assets/retention.py) on a real instance with a real history: what is
older than the retention goes (runs, their events, their compute logs), newer runs and every run
that holds a partition's latest materialization or check stay, every partition still shows as
loaded, and the sensor, turned on afterwards, requests nothing."""

import datetime as dt
import time

import dagster as dg
import pytest

from taxi_assets.assets import TRIP_ASSET_NAMES
from taxi_assets.compute_logs import run_log_folder
from taxi_assets.resources.upstream_files import UpstreamFiles
from taxi_assets.sensors import upstream_files_sensor
from taxi_assets.sources import RELEASES
from taxi_assets_harness.graphql import runs, wait_until
from taxi_assets_harness.instances import dagster_dev
from taxi_assets_tests.helpers import build_test_defs, fhv_month, run_partition

PUBLISHED = ("fhv|2019-01-01", "fhv|2019-02-01", "fhv|2019-03-01")


def _sensor_tick(mirror, instance):
    """One tick of the upstream sensor as the daemon evaluates it, with an empty cursor (turned on now)."""
    context = dg.build_sensor_context(
        instance=instance, resources={"upstream_files": UpstreamFiles.of(RELEASES, base_url=mirror.base_url)}
    )
    result = upstream_files_sensor(context)
    return {r.partition_key: r for r in result.run_requests}, result


def _retention(defs, instance, as_of: dt.datetime, days: float = 30):
    config = {"ops": {"remove_old_history": {"config": {"retention_days": days, "as_of": as_of.isoformat()}}}}
    result = defs.resolve_job_def("retention").execute_in_process(instance=instance, run_config=config)
    assert result.success
    messages = [e.message for e in instance.all_logs(result.run_id) if e.user_message]
    return result.run_id, messages


def _materialized(instance):
    """Each trip asset's materialized partitions, as the instance (and the UI's grid) has them."""
    return {name: instance.get_materialized_partitions(dg.AssetKey(name)) for name in TRIP_ASSET_NAMES}


@pytest.mark.slow  # 8 runs
def test_retention_removes_what_is_old_and_superseded_and_keeps_what_partitions_hold(mirror, local_env, instance):
    for key in PUBLISHED:
        mirror.publish("fhv", key[4:11], fhv_month(key[4:11]))
    defs = build_test_defs("local", mirror)

    def run(key):
        result = run_partition(defs, key, instance)
        return result.run_id, result.success

    # Old history: fhv 2019-01 loaded twice, 2019-02 and 2019-03 once, and a run that failed (a month
    # not published).
    a1, a2, a3, a4 = (run(k)[0] for k in (PUBLISHED[0], PUBLISHED[0], PUBLISHED[1], PUBLISHED[2]))
    failed, ok = run("fhv|2019-04-01")
    assert not ok
    time.sleep(1.0)
    cutoff = dt.datetime.now(dt.timezone.utc)
    time.sleep(1.0)
    # New history: 2019-02 reloaded twice after the cutoff (b1 is superseded, but new).
    b1, b2 = run(PUBLISHED[1])[0], run(PUBLISHED[1])[0]
    old_logs = {run_id: run_log_folder(instance, run_id) for run_id in (a1, a2, a3, a4, failed, b1, b2)}
    assert all(folder.is_dir() and any(folder.iterdir()) for folder in old_logs.values())
    before = _materialized(instance)
    assert before == {name: set(PUBLISHED) for name in TRIP_ASSET_NAMES}

    gone_events = {run_id: len(instance.all_logs(run_id)) for run_id in (a1, a3, failed)}
    assert all(gone_events.values())
    # As if 30 days had passed since the cutoff.
    retention_run, messages = _retention(defs, instance, as_of=cutoff + dt.timedelta(days=30))

    gone, kept = {a1, a3, failed}, {a2, a4, b1, b2, retention_run}
    assert {r.run_id for r in instance.get_runs()} == kept
    for run_id in gone:
        assert instance.all_logs(run_id) == []  # its events
        assert not old_logs[run_id].exists()  # its compute logs
    # Kept old runs lose their compute logs, not their events; new runs keep both.
    for run_id in (a2, a4):
        assert not old_logs[run_id].exists() and instance.all_logs(run_id)
    assert all(any(old_logs[run_id].iterdir()) and instance.all_logs(run_id) for run_id in (b1, b2))
    assert _materialized(instance) == before  # every partition still shows as loaded
    summary = [m for m in messages if m.startswith("older than")]
    assert len(summary) == 1 and "removed 3 runs (kept 2 that hold" in summary[0], messages
    assert any(a1 in m and failed in m for m in messages if m.startswith("removed runs:"))

    # The sensor, turned on now with an empty cursor, finds every published partition loaded.
    requested, result = _sensor_tick(mirror, instance)
    assert requested == {}, requested
    assert "3 published, 0 new or changed" in result.skip_reason.skip_message

    # Run again at the same time: nothing more is old.
    _, messages = _retention(defs, instance, as_of=cutoff + dt.timedelta(days=30))
    assert any(m.startswith("older than") and "removed 0 runs" in m for m in messages), messages


@pytest.mark.slow
@pytest.mark.extended  # a minute's cron and a daemon: kept out of `make test`'s 15 minutes
def test_the_schedule_runs_the_retention_by_itself_and_it_removes_old_ticks(mirror, tmp_path):
    """`dagster dev` (its daemon) with the schedule as shipped (on by default), every minute instead
    of daily and a retention of 0 days: the daemon runs the job, which removes every tick before its
    start but each sensor's and schedule's latest, and says how many in its run's log."""
    env = {"TAXI_SOURCE_URL": mirror.base_url, "TAXI_RETENTION_CRON": "* * * * *", "TAXI_RETENTION_DAYS": "0"}
    with dagster_dev(tmp_path, env) as port, dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:

        def removed_ticks(run_id: str) -> list[str]:
            messages = [e.message for e in instance.all_logs(run_id) if e.user_message]
            assert any(m.startswith("older than") for m in messages), messages
            return [m for m in messages if m.startswith("removed ") and "ticks of analytics_automation" in m]

        def retention_done():
            # The automation sensor ticks every 30 s, so a minute's retention run finds at least one
            # tick older than the latest; on a loaded machine the first minute's may not (the daemon
            # starts its sensors late), so the first run that removed ticks is the one looked at.
            finished = instance.get_runs(dg.RunsFilter(job_name="retention", statuses=[dg.DagsterRunStatus.SUCCESS]))
            return next((r for r in reversed(finished) if removed_ticks(r.run_id)), None)

        run = wait_until(retention_done, 300, "a retention run started by the schedule that removed ticks")
        started = instance.get_run_record_by_id(run.run_id).start_time
        removed = removed_ticks(run.run_id)
        assert int(removed[0].split()[1]) >= 1, removed
        for state in instance.all_instigator_state():
            before = instance.get_ticks(state.instigator_origin_id, state.selector_id, before=started)
            assert len(before) <= 1, (state.instigator_name, len(before))  # at most its latest tick was kept
        # The UI's run list (its default query, no filter) still answers, with the retention's run in it.
        assert run.run_id in {r["runId"] for r in runs(port)}
