"""The Google clients: emulators reached anonymously, keys turned into credentials in memory, and a
bad key refused without being quoted."""

import base64

import pytest

from taxi_assets.resources.errors import SetupError
from taxi_assets.resources.gcp.clients import TaxiBigQueryResource, TaxiGCSResource, identity
from taxi_assets.resources.gcp.pandas_io import TaxiBigQueryPandasIOManager
from taxi_assets_tests.emulators import service_account_key


def test_emulators_are_reached_anonymously(monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "127.0.0.1:9")
    monkeypatch.setenv("BQ_LOCATION", "EU")
    assert type(TaxiGCSResource(project="p").get_client()._credentials).__name__ == "AnonymousCredentials"
    with TaxiBigQueryResource(project="p").get_client() as client:
        assert client.location == "EU"  # BQ_LOCATION, read when the client is made
        assert client._connection.API_BASE_URL == "http://127.0.0.1:9"


def test_a_key_that_is_not_a_key_is_refused_without_quoting_it(monkeypatch):
    secret = "NOT-A-REAL-KEY-SECRET-MATERIAL"
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GCP_CREDENTIALS", base64.b64encode(f'{{"private_key": "{secret}"}}'.encode()).decode())
    with pytest.raises(SetupError) as err:
        TaxiGCSResource(project="p").get_client()
    assert "GCP_CREDENTIALS is not a base64 service-account JSON key" in str(err.value)
    assert secret not in str(err.value) and err.value.__cause__ is None and err.value.__context__ is not None


@pytest.mark.parametrize("wrapping", ["one line", "GNU base64 (76 columns)", "CRLF and indentation"])
def test_every_part_takes_the_same_keys_and_acts_as_the_same_identity(monkeypatch, wrapping):
    """The lake (GCS), the warehouse (BigQuery) and the analytics IO manager read GCP_CREDENTIALS
    alike: a key wrapped as `base64` prints it is the same key, and all three act as its account."""
    email = "taxi@taxi-test.iam.gserviceaccount.com"
    encoded = base64.b64encode(service_account_key(email, "http://127.0.0.1:9/token").encode()).decode()
    lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    given = {
        "one line": encoded,
        "GNU base64 (76 columns)": "\n".join(lines) + "\n",
        "CRLF and indentation": "\r\n".join("  " + line for line in lines),
    }[wrapping]
    for name in ("STORAGE_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GCP_CREDENTIALS", given)
    assert identity(TaxiGCSResource(project="p").get_client()) == email
    with TaxiBigQueryResource(project="p").get_client() as client:
        assert identity(client) == email
    analytics = TaxiBigQueryPandasIOManager(project="p", dataset="d").db_client().get_client()
    assert identity(analytics) == email
