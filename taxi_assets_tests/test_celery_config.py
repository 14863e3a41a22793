"""The Celery deployment's configuration, without servers: what `make serve` and `make worker` write
into DAGSTER_HOME with and without DAGSTER_CELERY_BROKER_URL, and the launcher it names."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy"))
import serve  # noqa: E402


def test_without_a_broker_nothing_changes(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_CELERY_BROKER_URL", raising=False)
    assert serve.write_instance_config(tmp_path) is None
    assert (tmp_path / "dagster.yaml").read_text() == (ROOT / "deploy" / "dagster.yaml").read_text()


def test_with_a_broker_the_instance_runs_on_celery(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.delenv("DAGSTER_CELERY_BACKEND_URL", raising=False)
    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql://u@127.0.0.1:5432/dagster")
    assert serve.write_instance_config(tmp_path) is None
    config = yaml.safe_load((tmp_path / "dagster.yaml").read_text())
    assert config["run_launcher"] == {
        "module": "taxi_celery",
        "class": "TaxiCeleryRunLauncher",
        "config": {
            "default_queue": "dagster",
            "broker": {"env": "DAGSTER_CELERY_BROKER_URL"},
            "backend": {"env": "DAGSTER_CELERY_BACKEND_URL"},
        },
    }
    assert config["run_monitoring"]["enabled"] and config["run_retries"]["enabled"]
    env = serve.service_env(tmp_path, tmp_path / "data")
    assert env["DAGSTER_CELERY_BACKEND_URL"] == "redis://127.0.0.1:6379/0"  # the broker's server by default
    assert env["PYTHONPATH"].split(":")[0] == str(ROOT / "deploy")


@pytest.mark.parametrize("broker_then", [True, False])
def test_a_home_written_for_the_other_launcher_is_refused(tmp_path, monkeypatch, broker_then):
    if broker_then:
        monkeypatch.setenv("DAGSTER_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    else:
        monkeypatch.delenv("DAGSTER_CELERY_BROKER_URL", raising=False)
    assert serve.write_instance_config(tmp_path) is None
    if broker_then:
        monkeypatch.delenv("DAGSTER_CELERY_BROKER_URL")
    else:
        monkeypatch.setenv("DAGSTER_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    problem = serve.write_instance_config(tmp_path)
    assert problem and "Celery run launcher" in problem and "DAGSTER_CELERY_BROKER_URL" in problem


def test_every_pool_the_assets_use_has_a_limit_set_at_start():
    from taxi_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    pools = {a.node_def.pool for a in graph.assets_defs if a.is_executable and a.node_def.pool is not None}
    assert pools and pools <= set(serve.POOL_LIMITS), pools


def test_the_launcher_supports_run_monitoring():
    import dagster as dg
    from dagster._core.launcher import WorkerStatus
    from dagster._core.test_utils import create_run_for_test
    from dagster_celery.tags import DAGSTER_CELERY_TASK_ID_TAG
    from taxi_celery import CELERY_WORKER_TAG, TaxiCeleryRunLauncher

    launcher = TaxiCeleryRunLauncher(default_queue="dagster", broker="redis://127.0.0.1:1/0", backend=None)
    assert launcher.supports_check_run_worker_health
    with dg.instance_for_test() as instance:
        run = create_run_for_test(instance, job_name="j", tags={DAGSTER_CELERY_TASK_ID_TAG: "t"})
        # No worker recorded yet: the run is still being picked up.
        assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
        assert CELERY_WORKER_TAG not in run.tags
