"""The streaming download against a real HTTP server on 127.0.0.1 that fails on request."""

import gzip
import hashlib

import pytest

from taxi_assets.sources import RELEASES
from taxi_assets.upstream import (
    NotPublished,
    TransientUpstreamError,
    UpstreamError,
    download,
    probe,
    redact,
)
from taxi_assets_tests.conftest import real_rows


def test_release_url_layout():
    assert (
        RELEASES.url("https://github.com/DataTalksClub/nyc-tlc-data/releases/download/", "green", "2020-10")
        == "https://github.com/DataTalksClub/nyc-tlc-data/releases/download/green/green_tripdata_2020-10.csv.gz"
    )


def test_download_streams_whole_file_with_sha256(mirror, tmp_path):
    source = mirror.publish("yellow", "2021-01", real_rows("yellow_tripdata_2021-01_head3000.csv"))
    got = download(RELEASES.url(mirror.base_url, "yellow", "2021-01"), tmp_path / "f.csv.gz")
    assert got.path.read_bytes() == source.read_bytes()
    assert got.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert got.size == source.stat().st_size == got.fingerprint.content_length
    assert got.attempts == 1


def test_missing_month_is_not_published_and_not_retried(mirror, tmp_path):
    with pytest.raises(NotPublished, match=r"yellow_tripdata_2030-01.csv.gz: not published upstream \(HTTP 404\)"):
        download(RELEASES.url(mirror.base_url, "yellow", "2030-01"), tmp_path / "f.csv.gz", backoff_seconds=0.01)
    assert len(mirror.requests) == 1
    assert not (tmp_path / "f.csv.gz").exists()


def test_5xx_and_a_cut_transfer_are_retried(mirror, tmp_path):
    mirror.publish("green", "2020-10", real_rows("green_tripdata_2020-10_head3000.csv"))
    mirror.fail_next("green", "2020-10", "503", "cut", "500")
    got = download(RELEASES.url(mirror.base_url, "green", "2020-10"), tmp_path / "f.csv.gz", backoff_seconds=0.01)
    assert got.attempts == 4
    assert gzip.decompress(got.path.read_bytes()).count(b"\n") == 3001


def test_persistent_5xx_gives_up_with_the_url_and_status(mirror, tmp_path):
    mirror.publish("green", "2020-10", real_rows("green_tripdata_2020-10_head3000.csv"))
    mirror.fail_next("green", "2020-10", "503", "503", "503")
    with pytest.raises(
        TransientUpstreamError, match=r"green_tripdata_2020-10.csv.gz: HTTP 503 .*gave up after 3 attempts"
    ):
        download(
            RELEASES.url(mirror.base_url, "green", "2020-10"), tmp_path / "f.csv.gz", attempts=3, backoff_seconds=0.01
        )
    assert not (tmp_path / "f.csv.gz").exists()


def test_truncated_gzip_is_refused(mirror, tmp_path):
    whole = gzip.compress("".join(real_rows("yellow_tripdata_2021-01_head3000.csv")).encode())
    mirror.publish("yellow", "2021-01", whole[: len(whole) - 5000])
    with pytest.raises(TransientUpstreamError, match="truncated gzip: the stream ended after"):
        download(
            RELEASES.url(mirror.base_url, "yellow", "2021-01"), tmp_path / "f.csv.gz", attempts=2, backoff_seconds=0.01
        )
    assert not (tmp_path / "f.csv.gz").exists()


def test_multi_member_gzip_is_complete(mirror, tmp_path):
    rows = real_rows("yellow_tripdata_2021-01_head3000.csv")
    data = gzip.compress("".join(rows[:100]).encode()) + gzip.compress("".join(rows[100:]).encode())
    mirror.publish("yellow", "2021-01", data)
    got = download(RELEASES.url(mirror.base_url, "yellow", "2021-01"), tmp_path / "f.csv.gz")
    assert got.size == len(data)


def test_not_gzip_is_refused_without_retry(mirror, tmp_path):
    mirror.publish("yellow", "2021-01", b"<html>rate limited</html>")
    with pytest.raises(UpstreamError, match="expected a gzip file, got .* starting '<html>rate limited</html>'"):
        download(RELEASES.url(mirror.base_url, "yellow", "2021-01"), tmp_path / "f.csv.gz", backoff_seconds=0.01)
    mirror.publish("yellow", "2021-02", b"\x1f\x8b but not deflate data at all")
    with pytest.raises(UpstreamError, match="not a valid gzip file"):
        download(RELEASES.url(mirror.base_url, "yellow", "2021-02"), tmp_path / "f.csv.gz", backoff_seconds=0.01)
    assert len(mirror.requests) == 2


def test_probe_reports_fingerprint_or_none(mirror):
    mirror.publish("fhv", "2019-01", b"\x1f\x8b")
    fingerprint = probe(RELEASES.url(mirror.base_url, "fhv", "2019-01"))
    assert fingerprint.content_length == 2 and fingerprint.last_modified
    assert probe(RELEASES.url(mirror.base_url, "fhv", "2019-02")) is None


# Upstream answering the wrong thing: each fails at once, saying what came back.


def _download(mirror, tmp_path, color="yellow", ym="2021-01", **kwargs):
    kwargs = {"backoff_seconds": 0.01, **kwargs}
    return download(RELEASES.url(mirror.base_url, color, ym), tmp_path / "f.csv.gz", **kwargs)


def test_a_web_page_instead_of_the_file_fails_at_once_saying_so(mirror, tmp_path):
    mirror.publish("yellow", "2021-01", real_rows("yellow_tripdata_2021-01_head3000.csv"))
    mirror.fail_always("yellow", "2021-01", "html")
    with pytest.raises(UpstreamError) as err:
        _download(mirror, tmp_path)
    message = str(err.value)
    assert (
        "expected a gzip file, got text/html; charset=utf-8 starting '<!DOCTYPE html><html><head><title>Release"
        in message
    )
    assert "TAXI_SOURCE_URL" in message and "download URL" in message
    assert not isinstance(err.value, TransientUpstreamError)
    assert len(mirror.requests) == 1 and not (tmp_path / "f.csv.gz").exists()


@pytest.mark.parametrize("status, reason", [("401", "Unauthorized"), ("403", "Forbidden")])
def test_refused_access_fails_at_once(mirror, tmp_path, status, reason):
    mirror.publish("yellow", "2021-01", b"x")
    mirror.fail_always("yellow", "2021-01", status)
    with pytest.raises(UpstreamError, match=f"refused \\(HTTP {status} {reason}\\)") as err:
        _download(mirror, tmp_path)
    assert not isinstance(err.value, TransientUpstreamError) and len(mirror.requests) == 1


def test_a_redirect_loop_fails_at_once(mirror, tmp_path):
    mirror.publish("yellow", "2021-01", b"x")
    mirror.fail_always("yellow", "2021-01", "loop")
    with pytest.raises(UpstreamError, match="redirect loop: more than 30 redirects") as err:
        _download(mirror, tmp_path)
    assert not isinstance(err.value, TransientUpstreamError)
    with pytest.raises(UpstreamError, match="TooManyRedirects"):  # the sensor logs it, checks again next tick
        probe(RELEASES.url(mirror.base_url, "yellow", "2021-01"))


def test_a_failing_head_says_so_without_credentials(mirror):
    mirror.publish("yellow", "2021-01", b"x")
    mirror.fail_always("yellow", "2021-01", "500")
    base = mirror.base_url.replace("http://", "http://taxi:s3cret-token@")
    with pytest.raises(UpstreamError) as err:
        probe(RELEASES.url(base, "yellow", "2021-01"))
    assert "HTTP 500" in str(err.value) and "s3cret-token" not in str(err.value)


def test_a_redirect_to_another_host_is_followed_and_fingerprints_the_final_object(mirror, tmp_path):
    """GitHub release downloads answer 302 to a storage host."""
    source = mirror.publish("yellow", "2021-01", real_rows("yellow_tripdata_2021-01_head3000.csv"))
    mirror.fail_always("yellow", "2021-01", "elsewhere")
    got = _download(mirror, tmp_path)
    assert got.path.read_bytes() == source.read_bytes()
    assert got.fingerprint.content_length == source.stat().st_size  # the storage host's object, not the 302
    fingerprint = probe(RELEASES.url(mirror.base_url, "yellow", "2021-01"))
    assert fingerprint == got.fingerprint and fingerprint.last_modified
    assert mirror.storage_url.startswith("http://127.0.0.2:")


def test_a_stalled_body_times_out_and_is_retried(mirror, tmp_path):
    source = mirror.publish("yellow", "2021-01", real_rows("yellow_tripdata_2021-01_head3000.csv"))
    mirror.fail_next("yellow", "2021-01", "stall")
    got = _download(mirror, tmp_path, timeout_seconds=0.5)
    assert got.attempts == 2 and got.path.read_bytes() == source.read_bytes()


def test_a_file_that_always_stalls_gives_up_within_the_bound(mirror, tmp_path):
    import time

    mirror.publish("yellow", "2021-01", real_rows("yellow_tripdata_2021-01_head3000.csv"))
    mirror.fail_always("yellow", "2021-01", "stall")
    started = time.monotonic()
    with pytest.raises(TransientUpstreamError, match="gave up after 3 attempts"):
        _download(mirror, tmp_path, timeout_seconds=0.5, attempts=3, backoff_seconds=0.2)
    # The bound: attempts x timeout, plus the pauses (at most 0.2 + 0.4 s here).
    assert time.monotonic() - started < 3 * 0.5 + 0.6 + 1.0


def test_credentials_in_the_base_url_are_never_shown(mirror, tmp_path):
    base = mirror.base_url.replace("http://", "http://taxi:s3cret-token@")
    with pytest.raises(NotPublished) as err:
        download(RELEASES.url(base, "yellow", "2030-01"), tmp_path / "f.csv.gz")
    assert "s3cret-token" not in str(err.value) and "***@127.0.0.1" in str(err.value)
    assert (
        redact(RELEASES.url(base, "fhv", "2019-01"))
        == f"{mirror.base_url.replace('http://', 'http://***@')}/fhv/fhv_tripdata_2019-01.csv.gz"
    )


@pytest.mark.parametrize("base", ["file:///etc", "ftp://example.org/x", "127.0.0.1:8000/releases"])
def test_only_http_base_urls_are_accepted(base):
    from taxi_assets.partitions import TripMonth
    from taxi_assets.resources.source import TripSource

    with pytest.raises(ValueError, match="must be an http:// or https:// URL"):
        TripSource(source="releases", base_url=base).url_for(TripMonth.from_key("fhv|2019-01-01", RELEASES.colors))
