"""The Google clients: emulators reached anonymously, keys turned into credentials in memory, and a
bad key refused without being quoted. Checked from outside: what a loopback endpoint receives, who
a client says it acts as, and the errors."""

import base64
import http.server
import json
import os

import pytest

from taxi_assets.mirror import serve_folder
from taxi_assets.resources.errors import SetupError
from taxi_assets.resources.gcp.clients import TaxiBigQueryResource, TaxiGCSResource, identity
from taxi_assets_tests.emulators import service_account_key


@pytest.fixture
def key(emulator_adc, monkeypatch):
    """A real service-account key, base64 as GCP_CREDENTIALS takes it (its token endpoint, on
    loopback, hands out a dummy token), and no Application Default Credentials file.
    Returns (the key, the account's email)."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    return base64.b64encode(emulator_adc.read_bytes()).decode(), json.loads(emulator_adc.read_text())["client_email"]


def test_emulators_are_reached_with_the_key_when_one_is_set_and_anonymously_otherwise(key, monkeypatch, tmp_path):
    """Both clients go to the emulator hosts (BIGQUERY_EMULATOR_HOST without a scheme, as the
    emulator prints it): with no key, with no Authorization header; with GCP_CREDENTIALS, as the
    key's account (the token its loopback endpoint hands out), as they would on GCP."""
    seen = []

    class Recording(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append((self.path, self.headers.get("Authorization")))
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve_folder(tmp_path, handler=lambda *a, **k: Recording(*a)) as url:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
        monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", url.removeprefix("http://"))
        monkeypatch.setenv("BQ_LOCATION", "EU")
        for encoded in (None, key[0]):
            if encoded:
                monkeypatch.setenv("GCP_CREDENTIALS", encoded)
            assert list(TaxiGCSResource(project="p").get_client().list_buckets()) == []
            with TaxiBigQueryResource(project="p").get_client() as client:
                assert client.location == "EU"  # BQ_LOCATION, read when the client is made
                assert list(client.list_datasets()) == []
    assert [path.split("?")[0] for path, _ in seen] == ["/storage/v1/b", "/bigquery/v2/projects/p/datasets"] * 2
    authorizations = [authorization for _, authorization in seen]
    assert authorizations[:2] == [None, None]
    assert all(a and a.startswith("Bearer ") for a in authorizations[2:]), authorizations


def test_a_key_becomes_the_clients_credentials_in_memory(key, monkeypatch):
    """Without emulators, both clients act as the key's service account, from GCP_CREDENTIALS or
    from the resource's config, and no credentials file is named to the process while the client
    is open (dagster-gcp's own BigQueryResource writes one and sets GOOGLE_APPLICATION_CREDENTIALS)."""
    encoded, email = key
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    monkeypatch.delenv("GCP_CREDENTIALS", raising=False)
    assert identity(TaxiGCSResource(project="p", gcp_credentials=encoded).get_client()) == email
    with TaxiBigQueryResource(project="p", gcp_credentials=encoded).get_client() as client:
        assert identity(client) == email
        assert "GOOGLE_APPLICATION_CREDENTIALS" not in os.environ
    monkeypatch.setenv("GCP_CREDENTIALS", encoded)
    assert identity(TaxiGCSResource(project="p").get_client()) == email
    with TaxiBigQueryResource(project="p").get_client() as client:
        assert identity(client) == email


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
    """The lake (GCS) and the warehouse (BigQuery, every table) read GCP_CREDENTIALS alike: a key
    wrapped as `base64` prints it is the same key, and both act as its account."""
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
