"""Shared fixtures: a mirror of either source on 127.0.0.1 (`mirror`: the releases, `tlc_mirror`:
the TLC) that can misbehave on request, the local target wired to it in a scratch data folder, the
GCP emulators. The helpers they use, and the tests import, are in helpers.py."""

import dagster as dg
import pytest

from taxi_assets.sources import RELEASES, TLC
from taxi_assets_tests.helpers import build_test_defs, serving


@pytest.fixture
def mirror(tmp_path):
    """The releases' layout (taxi_assets_tests/tlc overrides it with `tlc_mirror`)."""
    with serving(tmp_path / "mirror", RELEASES) as m:
        yield m


@pytest.fixture
def tlc_mirror(tmp_path):
    with serving(tmp_path / "tlc_mirror", TLC) as m:
        yield m


@pytest.fixture
def local_env(tmp_path, mirror, monkeypatch):
    """The local target in a scratch TAXI_DATA_DIR, reading from the test mirror."""
    monkeypatch.setenv("TAXI_TARGET", "local")
    monkeypatch.setenv("TAXI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TAXI_SOURCE_URL", mirror.base_url)
    return tmp_path / "data"


@pytest.fixture
def local_defs(local_env, mirror):
    return build_test_defs("local", mirror)


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture(scope="session")
def gcp_emulators(tmp_path_factory):
    """GCS and BigQuery emulators for the whole session (started once: ~1 s)."""
    from taxi_assets_tests.emulators import gcp_emulators as start

    with start(tmp_path_factory.mktemp("emulators")) as emulators:
        yield emulators


@pytest.fixture(scope="session")
def emulator_adc(tmp_path_factory):
    from taxi_assets_tests.emulators import oauth_token_endpoint

    with oauth_token_endpoint(tmp_path_factory.mktemp("adc")) as credentials:
        yield credentials


@pytest.fixture
def gcp_env(gcp_emulators, emulator_adc, mirror, monkeypatch, request):
    """The gcp target against the emulators: a fresh bucket and dataset for each test."""
    from google.cloud import storage

    suffix = abs(hash(request.node.nodeid)) % 10**8
    bucket, dataset = f"taxi-lake-{suffix}", f"taxi_{suffix}"
    for name, value in {
        "TAXI_TARGET": "gcp",
        "TAXI_SOURCE_URL": mirror.base_url,
        "GCP_PROJECT": gcp_emulators.project,
        "GCS_BUCKET": bucket,
        "BQ_DATASET": dataset,
        "BQ_LOCATION": "US",
        "STORAGE_EMULATOR_HOST": gcp_emulators.storage_host,
        "BIGQUERY_EMULATOR_HOST": gcp_emulators.bigquery_host,
        "GOOGLE_APPLICATION_CREDENTIALS": str(emulator_adc),
    }.items():
        monkeypatch.setenv(name, value)
    storage.Client(project=gcp_emulators.project).create_bucket(bucket)
    return {"bucket": bucket, "dataset": dataset, "project": gcp_emulators.project}
