"""The Google clients: emulators reached anonymously, keys turned into credentials in memory, and a
bad key refused without being quoted."""

import base64

import pytest

from taxi_assets.resources.errors import SetupError
from taxi_assets.resources.gcp.clients import TaxiBigQueryResource, TaxiGCSResource


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
