"""The streaming download against a real HTTP server on 127.0.0.1 that fails on request."""

import gzip
import hashlib

import pytest

from taxi_assets.upstream import NotPublished, TransientUpstreamError, download, probe, release_url
from taxi_assets_tests.conftest import real_rows


def test_release_url_layout():
    assert (
        release_url("https://github.com/DataTalksClub/nyc-tlc-data/releases/download/", "green", "2020-10")
        == "https://github.com/DataTalksClub/nyc-tlc-data/releases/download/green/green_tripdata_2020-10.csv.gz"
    )


def test_download_streams_whole_file_with_sha256(mirror, tmp_path):
    source = mirror.publish("yellow", "2021-01", real_rows("yellow_tripdata_2021-01_head3000.csv"))
    got = download(release_url(mirror.base_url, "yellow", "2021-01"), tmp_path / "f.csv.gz")
    assert got.path.read_bytes() == source.read_bytes()
    assert got.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert got.size == source.stat().st_size == got.fingerprint.content_length
    assert got.attempts == 1


def test_missing_month_is_not_published_and_not_retried(mirror, tmp_path):
    with pytest.raises(NotPublished, match=r"yellow_tripdata_2030-01.csv.gz: not published upstream \(HTTP 404\)"):
        download(release_url(mirror.base_url, "yellow", "2030-01"), tmp_path / "f.csv.gz", backoff_seconds=0.01)
    assert len(mirror.requests) == 1
    assert not (tmp_path / "f.csv.gz").exists()


def test_5xx_and_a_cut_transfer_are_retried(mirror, tmp_path):
    mirror.publish("green", "2020-10", real_rows("green_tripdata_2020-10_head3000.csv"))
    mirror.fail_next("green", "2020-10", "503", "cut", "500")
    got = download(release_url(mirror.base_url, "green", "2020-10"), tmp_path / "f.csv.gz", backoff_seconds=0.01)
    assert got.attempts == 4
    assert gzip.decompress(got.path.read_bytes()).count(b"\n") == 3001


def test_persistent_5xx_gives_up_with_the_url_and_status(mirror, tmp_path):
    mirror.publish("green", "2020-10", real_rows("green_tripdata_2020-10_head3000.csv"))
    mirror.fail_next("green", "2020-10", "503", "503", "503")
    with pytest.raises(
        TransientUpstreamError, match=r"green_tripdata_2020-10.csv.gz: HTTP 503 .*gave up after 3 attempts"
    ):
        download(
            release_url(mirror.base_url, "green", "2020-10"), tmp_path / "f.csv.gz", attempts=3, backoff_seconds=0.01
        )
    assert not (tmp_path / "f.csv.gz").exists()


def test_truncated_gzip_is_refused(mirror, tmp_path):
    whole = gzip.compress("".join(real_rows("yellow_tripdata_2021-01_head3000.csv")).encode())
    mirror.publish("yellow", "2021-01", whole[: len(whole) - 5000])
    with pytest.raises(TransientUpstreamError, match="truncated gzip: the stream ended after"):
        download(
            release_url(mirror.base_url, "yellow", "2021-01"), tmp_path / "f.csv.gz", attempts=2, backoff_seconds=0.01
        )
    assert not (tmp_path / "f.csv.gz").exists()


def test_multi_member_gzip_is_complete(mirror, tmp_path):
    rows = real_rows("yellow_tripdata_2021-01_head3000.csv")
    data = gzip.compress("".join(rows[:100]).encode()) + gzip.compress("".join(rows[100:]).encode())
    mirror.publish("yellow", "2021-01", data)
    got = download(release_url(mirror.base_url, "yellow", "2021-01"), tmp_path / "f.csv.gz")
    assert got.size == len(data)


def test_not_gzip_is_refused_without_retry(mirror, tmp_path):
    mirror.publish("yellow", "2021-01", b"<html>rate limited</html>")
    with pytest.raises(Exception, match="not a valid gzip file"):
        download(release_url(mirror.base_url, "yellow", "2021-01"), tmp_path / "f.csv.gz", backoff_seconds=0.01)
    assert len(mirror.requests) == 1


def test_probe_reports_fingerprint_or_none(mirror):
    mirror.publish("fhv", "2019-01", b"\x1f\x8b")
    fingerprint = probe(release_url(mirror.base_url, "fhv", "2019-01"))
    assert fingerprint.content_length == 2 and fingerprint.last_modified
    assert probe(release_url(mirror.base_url, "fhv", "2019-02")) is None
