"""GCSLake through the real google-cloud-storage client against gcp-storage-emulator."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_assets.resources.errors import SetupError
from taxi_assets.resources.gcp.clients import TaxiGCSResource
from taxi_assets.resources.gcp.lake import GCSLake


@pytest.fixture
def lake(gcp_env):
    return GCSLake(gcs=TaxiGCSResource(project=gcp_env["project"]), bucket=gcp_env["bucket"])


def test_store_copy_stat_download_and_footer(lake, gcp_env, tmp_path):
    made = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": list(range(10))}), made)
    stored = lake.store(made, "staging/clean_trips/t.parquet")
    assert stored.uri == f"gs://{gcp_env['bucket']}/staging/clean_trips/t.parquet"
    assert stored.size == made.stat().st_size and stored.generation and stored.md5 and stored.crc32c
    assert made.exists()  # uploaded, not moved: the IO manager may keep it for the next step
    assert lake.local_path(stored.key) is None

    published = lake.copy(stored.key, "data/t.parquet")
    assert (published.size, published.md5) == (stored.size, stored.md5)
    assert lake.stat("data/t.parquet") == published
    assert lake.stat("data/missing.parquet") is None
    assert lake.parquet_footer("data/t.parquet").num_rows == 10
    assert pq.read_table(lake.download("data/t.parquet", tmp_path / "back.parquet")).num_rows == 10


def test_a_missing_bucket_is_a_setup_error_with_the_fix(gcp_env, tmp_path):
    lake = GCSLake(gcs=TaxiGCSResource(project=gcp_env["project"]), bucket="no-such-bucket")
    made = tmp_path / "x"
    made.write_bytes(b"x")
    with pytest.raises(
        SetupError, match=r"gs://no-such-bucket does not exist \(GCS_BUCKET\).*gcloud storage buckets create"
    ):
        lake.store(made, "raw/x")


def test_a_missing_object_in_a_bucket_named_bucket_is_not_a_missing_bucket(gcp_env, tmp_path):
    """A 404 is the bucket's own only when GCS says so (or the bucket is really not there): an
    object's 404 names its bucket, here one whose name contains "bucket"."""
    from google.api_core.exceptions import NotFound
    from google.cloud import storage

    name = f"{gcp_env['bucket']}-bucket"
    storage.Client(project=gcp_env["project"]).create_bucket(name)
    lake = GCSLake(gcs=TaxiGCSResource(project=gcp_env["project"]), bucket=name)
    with pytest.raises(NotFound) as err:
        lake.download("data/missing.parquet", tmp_path / "x")
    assert not isinstance(err.value, SetupError)


@pytest.mark.parametrize(
    "status, payload",
    [
        # The generation was overwritten (no object versioning): GCS no longer has it.
        (404, ("NOT_FOUND", "notFound", "No such object: {bucket}/staging/clean_trips/t.parquet")),
        # A precondition on the source generation failed (GCS's conditionNotMet, on the If-Match header).
        (
            412,
            (
                "FAILED_PRECONDITION",
                "conditionNotMet",
                "At least one of the pre-conditions you specified did not hold.",
            ),
        ),
    ],
)
def test_publishing_a_generation_another_run_replaced_fails_and_publishes_nothing(
    lake, gcp_emulators, gcp_env, tmp_path, monkeypatch, status, payload
):
    """The copy names the generation its handle was made from; GCS refuses it once another run has
    replaced the staging object (the emulator ignores generations: a proxy answers as GCS does)."""
    from taxi_assets.resources.lake import SourceReplaced
    from taxi_assets_tests.emulators import RewritingProxy, google_error

    made = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1]}), made)
    checked = lake.store(made, "staging/clean_trips/t.parquet")
    state, reason, message = payload
    refusal = google_error(status, state, reason, message.format(bucket=gcp_env["bucket"]))
    if status == 412:
        refusal["error"]["errors"][0].update(locationType="header", location="If-Match")
    proxy = RewritingProxy(
        gcp_emulators.storage_host,
        answer=lambda method, path, body: (status, refusal) if "/rewriteTo/" in path else None,
    )
    with proxy.running() as url:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
        proxied = GCSLake(gcs=TaxiGCSResource(project=gcp_env["project"]), bucket=gcp_env["bucket"])
        with pytest.raises(SourceReplaced) as err:
            proxied.copy(checked.key, "data/t.parquet", src_generation=checked.generation)
    assert f"generation {checked.generation}, the version this run checked" in str(err.value)
    assert f"(HTTP {status})" in str(err.value) and "Nothing was published" in str(err.value)
    rewrites = [r for r in proxy.requests if "/rewriteTo/" in r]
    assert len(rewrites) == 1  # not retried
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcp_emulators.storage_host)
    assert lake.stat("data/t.parquet") is None


def test_the_copy_names_the_source_generation(lake, gcp_emulators, gcp_env, tmp_path, monkeypatch):
    """What GCS receives: the rewrite carries sourceGeneration (the emulator itself ignores it)."""
    from taxi_assets_tests.emulators import RewritingProxy

    made = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1]}), made)
    checked = lake.store(made, "staging/clean_trips/t.parquet")
    paths = []
    proxy = RewritingProxy(gcp_emulators.storage_host, answer=lambda method, path, body: paths.append(path))
    with proxy.running() as url:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
        GCSLake(gcs=TaxiGCSResource(project=gcp_env["project"]), bucket=gcp_env["bucket"]).copy(
            checked.key, "data/t.parquet", src_generation=checked.generation
        )
    assert any("/rewriteTo/" in p and f"sourceGeneration={checked.generation}" in p for p in paths), paths


# Google's transient refusals on GCS: a 503, a 429 and a 403 rateLimitExceeded (which the storage
# client's default retry never repeats).
TRANSIENT = {
    "503 backendError": (503, "UNAVAILABLE", "backendError", "Backend Error"),
    "429 rateLimitExceeded": (429, "RESOURCE_EXHAUSTED", "rateLimitExceeded", "The rate of change requests ..."),
    "403 rateLimitExceeded": (403, "PERMISSION_DENIED", "rateLimitExceeded", "Rate limit exceeded"),
}
# Short bounds through the lake's config, as a deployment would set them.
DEADLINE = 1.0
SLACK = 5.0  # the requests themselves, on a loaded machine
OPERATIONS = {
    # operation: (does a request belong to it, what the lake does, what the message says it did)
    "upload": (lambda method, path: method == "POST" and path.startswith("/upload/"), "write"),
    "rewrite": (lambda method, path: "/rewriteTo/" in path, "copy"),
    "get": (lambda method, path: method == "GET" and "/o/staging" in path and "alt=media" not in path, "read"),
}
CASES = [(operation, kind) for operation in OPERATIONS for kind in TRANSIENT]


def _faulty_lake(gcp_env, gcp_emulators, monkeypatch, operation, kind, times):
    """A lake whose client talks to a proxy refusing `operation` `times` times (None: always)."""
    from taxi_assets_tests.emulators import RewritingProxy, google_error

    matches = OPERATIONS[operation][0]
    status, state, reason, message = TRANSIENT[kind]
    left = [times]

    def answer(method, path, body):
        if not matches(method, path) or left[0] == 0:
            return None
        left[0] = None if left[0] is None else left[0] - 1
        return status, google_error(status, state, reason, message)

    proxy = RewritingProxy(gcp_emulators.storage_host, answer=answer)
    lake = GCSLake(
        gcs=TaxiGCSResource(project=gcp_env["project"]),
        bucket=gcp_env["bucket"],
        call_deadline_seconds=DEADLINE,
        first_pause_seconds=0.05,
        request_timeout_seconds=10.0,
    )
    return proxy, lake, lambda: sum(1 for m, p, _ in proxy.received if matches(m, p))


def _run(lake, operation, staged, tmp_path):
    if operation == "upload":
        return lake.store(staged, "raw/again.parquet")
    if operation == "rewrite":
        return lake.copy(
            "staging/t.parquet", "data/t.parquet", src_generation=lake.stat("staging/t.parquet").generation
        )
    return lake.stat("staging/t.parquet")


@pytest.mark.parametrize("operation, kind", CASES, ids=[f"{o}-{k}" for o, k in CASES])
def test_a_transient_gcs_refusal_succeeds_after_one_retry(
    lake, gcp_emulators, gcp_env, tmp_path, monkeypatch, operation, kind
):
    staged = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), staged)
    lake.store(staged, "staging/t.parquet")
    proxy, faulty, requests = _faulty_lake(gcp_env, gcp_emulators, monkeypatch, operation, kind, times=1)
    with proxy.running() as url:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
        done = _run(faulty, operation, staged, tmp_path)
    assert done is not None and done.size == staged.stat().st_size
    assert requests() == 2  # refused once, then the same request again


@pytest.mark.parametrize("operation, kind", CASES, ids=[f"{o}-{k}" for o, k in CASES])
def test_a_persistent_gcs_refusal_fails_within_the_bound_as_retryable(
    lake, gcp_emulators, gcp_env, tmp_path, monkeypatch, operation, kind
):
    """Named (service, operation, reason), retryable (not a SetupError), within the deadline."""
    import time

    from taxi_assets.resources.gcp.clients import Unavailable

    staged = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), staged)
    lake.store(staged, "staging/t.parquet")
    checked = lake.stat("staging/t.parquet")
    proxy, faulty, requests = _faulty_lake(gcp_env, gcp_emulators, monkeypatch, operation, kind, times=None)
    started = time.monotonic()
    with proxy.running() as url:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
        with pytest.raises(Unavailable) as err:
            if operation == "rewrite":
                faulty.copy("staging/t.parquet", "data/t.parquet", src_generation=checked.generation)
            else:
                _run(faulty, operation, staged, tmp_path)
    took = time.monotonic() - started
    reason = TRANSIENT[kind][2]
    message = str(err.value)
    assert message.startswith(f"GCS could not {OPERATIONS[operation][1]} gs://{gcp_env['bucket']}/"), message
    assert f"({reason})" in message and f"up to {DEADLINE:g} s (call_deadline_seconds)" in message
    assert not isinstance(err.value, SetupError)
    assert requests() >= 2 and took < DEADLINE + SLACK, (requests(), took)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcp_emulators.storage_host)
    if operation == "rewrite":
        assert lake.stat("data/t.parquet") is None  # nothing published


def test_a_rewrite_answered_503_once_publishes_once_from_the_checked_generation(
    lake, gcp_emulators, gcp_env, tmp_path, monkeypatch
):
    """The retried rewrite still names the checked source generation (the emulator ignores it: the
    requests are read as the proxy sees them), and the object is published once."""
    made = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), made)
    checked = lake.store(made, "staging/t.parquet")
    proxy, faulty, requests = _faulty_lake(gcp_env, gcp_emulators, monkeypatch, "rewrite", "503 backendError", times=1)
    with proxy.running() as url:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
        published = faulty.copy(checked.key, "data/t.parquet", src_generation=checked.generation)
    rewrites = [path for method, path, _ in proxy.received if "/rewriteTo/" in path]
    assert len(rewrites) == 2
    assert all(f"sourceGeneration={checked.generation}" in path for path in rewrites), rewrites
    assert (published.size, published.md5) == (checked.size, checked.md5)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcp_emulators.storage_host)
    assert lake.stat("data/t.parquet").md5 == checked.md5  # the refused first call never reached GCS: one copy
