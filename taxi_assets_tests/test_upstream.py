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
from taxi_assets_tests.helpers import real_rows


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
    from taxi_assets.resources.upstream_files import UpstreamFiles

    with pytest.raises(ValueError, match="must be an http:// or https:// URL"):
        UpstreamFiles.of(RELEASES, base_url=base).url_for(TripMonth.from_key("fhv|2019-01-01", RELEASES.colors))


# Hostile upstreams (issue 17): every byte bounded in memory, disk and time; nothing leaked.
# Memory is the peak RSS of a child process doing the transfer, against MEMORY_BUDGET_MB.

MEMORY_BUDGET_MB = 300


def _in_a_child(code: str) -> dict:
    """Run `code` (which sets `result`, a dict) in a fresh Python; its result and peak RSS in MB."""
    import json
    import os
    import subprocess
    import sys

    script = (
        "import json, re\n"
        f"{code}\n"
        # VmHWM: this process's own peak (ru_maxrss would carry over the parent's from before exec)
        "status = open('/proc/self/status').read()\n"
        "result['peak_rss_mb'] = int(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1)) / 1024\n"
        "print(json.dumps(result))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env={**os.environ}, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _failing(call: str) -> str:
    return (
        "result = {}\n"
        "try:\n"
        f"    {call}\n"
        "    result['error'] = None\n"
        "except Exception as exc:\n"
        "    result['error'] = f'{type(exc).__name__}: {exc}'\n"
    )


def test_an_endless_zone_lookup_stops_at_its_size_limit_in_bounded_memory(mirror):
    """Finding 1: an endless text/csv body grew the process by GBs; now it stops at 1 MiB."""
    import time

    mirror.fail_zones_always("endless")
    url = f"{mirror.base_url}/misc/taxi_zone_lookup.csv"
    started = time.monotonic()
    got = _in_a_child(
        "from taxi_assets.upstream import fetch_small\n"
        + _failing(f"fetch_small({url!r}, attempts=3, backoff_seconds=0.01, timeout_seconds=5)")
    )
    assert got["error"] == (
        f"UpstreamError: {url}: over the limit of 1,048,576 bytes (max_lookup_bytes); stopped there"
    )
    assert got["peak_rss_mb"] < MEMORY_BUDGET_MB
    assert time.monotonic() - started < 30  # the child's start included; the transfer itself is ~1 s
    assert mirror.requests == ["GET /misc/taxi_zone_lookup.csv"]  # not retried: the same file is as big


def test_a_trickling_zone_lookup_stops_at_the_time_bound(mirror):
    """Finding 1: a body that keeps trickling never trips the read timeout; the give-up bound stops it."""
    import time

    from taxi_assets.upstream import fetch_small

    mirror.fail_zones_always("trickle")
    started = time.monotonic()
    with pytest.raises(UpstreamError, match=r"gave up mid-transfer at the time bound \(give_up_after_seconds\)"):
        fetch_small(
            f"{mirror.base_url}/misc/taxi_zone_lookup.csv",
            attempts=3,
            backoff_seconds=0.01,
            timeout_seconds=5,
            give_up_after_seconds=1.5,
        )
    assert time.monotonic() - started < 1.5 + 1.0


def test_an_endless_download_stops_at_the_size_limit_leaving_no_file(mirror, tmp_path):
    """Finding 4: an endless body (no Content-Length) filled the disk at the upstream's speed."""
    import time

    mirror.fail_always("yellow", "2021-01", "endless")
    started = time.monotonic()
    with pytest.raises(UpstreamError) as err:
        _download(mirror, tmp_path, max_bytes=50 << 20)
    assert str(err.value) == (
        f"{RELEASES.url(mirror.base_url, 'yellow', '2021-01')}: over the limit of 52,428,800 bytes "
        "(max_download_bytes); stopped there"
    )
    assert not isinstance(err.value, TransientUpstreamError) and len(mirror.requests) == 1
    assert time.monotonic() - started < 10
    assert not (tmp_path / "f.csv.gz").exists()  # no partial file


def test_an_announced_size_over_the_limit_is_refused_before_reading(mirror, tmp_path):
    mirror.fail_always("yellow", "2021-01", "huge")
    with pytest.raises(UpstreamError, match=r"announced 5,497,558,138,880 bytes, over the limit of 4,294,967,296"):
        _download(mirror, tmp_path)
    assert not (tmp_path / "f.csv.gz").exists()


def test_a_trickling_download_stops_at_the_give_up_bound_mid_transfer(mirror, tmp_path):
    """Finding 4: with give_up_after_seconds 5 and timeout_seconds 5 one attempt ran 40 s; the bound
    now holds mid-transfer, while bytes keep coming (each read well within the read timeout)."""
    import time

    mirror.fail_always("yellow", "2021-01", "trickle")
    started = time.monotonic()
    with pytest.raises(UpstreamError) as err:
        _download(mirror, tmp_path, give_up_after_seconds=2, timeout_seconds=2)
    elapsed = time.monotonic() - started
    assert "gave up mid-transfer at the time bound (give_up_after_seconds)" in str(err.value)
    assert "bytes received" in str(err.value) and len(mirror.requests) == 1
    assert 2 <= elapsed < 2 + 1.0
    assert not (tmp_path / "f.csv.gz").exists()


def _gzip_bomb(gib: int = 1) -> bytes:
    """A valid gzip file of `gib` GiB of NUL bytes in ~1 MB: one deflate block of 1 MiB of zeros,
    repeated (each stands alone after a full flush), with the right trailer."""
    import struct
    import zlib

    zeros = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc, count = 0, gib << 10
    for _ in range(count):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + block * count + deflate.flush() + struct.pack("<II", crc, (count << 20) & 0xFFFFFFFF)


def test_a_gzip_bomb_is_checked_in_bounded_memory(mirror, tmp_path):
    """Finding 5: the completeness check inflated each 1 MB chunk at once (~1 GB) on a 1 MB bomb."""
    bomb = _gzip_bomb()
    mirror.publish("yellow", "2021-01", bomb)
    url, dest = RELEASES.url(mirror.base_url, "yellow", "2021-01"), tmp_path / "f.csv.gz"
    got = _in_a_child(
        "from pathlib import Path\nfrom taxi_assets.upstream import download\n"
        + _failing(f"result['size'] = download({url!r}, Path({str(dest)!r})).size")
    )
    assert got["error"] is None and got["size"] == len(bomb)  # a valid gzip file: the check passes
    assert got["peak_rss_mb"] < MEMORY_BUDGET_MB


SECRET = "TOPSECRET-4711"


def _assert_no_secret(exc: BaseException) -> None:
    """Nothing Dagster or a log could print of `exc` holds the secret: its text, repr, the whole
    traceback with its chain, and each exception of the chain."""
    import traceback

    assert SECRET not in "".join(traceback.format_exception(exc))
    chain = [exc]
    while chain:  # only our own errors (a give-up is raised from the last failure), none with the secret
        exc = chain.pop()
        assert isinstance(exc, UpstreamError), repr(exc)
        assert SECRET not in str(exc) and SECRET not in repr(exc)
        chain += [e for e in (exc.__cause__, exc.__context__) if e is not None]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "fault, url",
    [
        ("InvalidURL", "http://alice:{secret}@127.0.0.1:65536/yellow/yellow_tripdata_2021-01.csv.gz"),
        ("InvalidURL host", "http://alice:{secret}@[::1/yellow/yellow_tripdata_2021-01.csv.gz"),
        ("InvalidSchema", "//alice:{secret}@127.0.0.1/yellow/yellow_tripdata_2021-01.csv.gz"),
        ("InvalidSchema", "alice:{secret}@127.0.0.1/yellow/yellow_tripdata_2021-01.csv.gz"),
        ("InvalidSchema", "ftp://alice:{secret}@127.0.0.1/yellow/yellow_tripdata_2021-01.csv.gz"),
        ("ConnectionError", "http://alice:{secret}@127.0.0.1:{free_port}/yellow/yellow_tripdata_2021-01.csv.gz"),
        ("ReadTimeout", "{base_with_secret}/yellow/yellow_tripdata_2021-01.csv.gz"),
        ("TooManyRedirects", "{base_with_secret}/yellow/yellow_tripdata_2021-01.csv.gz"),
    ],
)
def test_no_request_error_shows_the_url_credentials_on_any_path(mirror, tmp_path, fault, url):
    """Finding 8: each error the HTTP layer raises for real, through download, probe and
    fetch_small: an UpstreamError naming the URL redacted, with nothing of the original chained."""
    from taxi_assets.upstream import fetch_small

    mirror.publish("yellow", "2021-01", b"\x1f\x8b")
    mirror.fail_always("yellow", "2021-01", {"ReadTimeout": "stall", "TooManyRedirects": "loop"}.get(fault, "200"))
    mirror.STALL_SECONDS = 2
    url = url.format(
        secret=SECRET,
        free_port=_free_port(),
        base_with_secret=mirror.base_url.replace("http://", f"http://alice:{SECRET}@"),
    )
    calls = {
        "download": lambda: download(url, tmp_path / "f.csv.gz", attempts=1, timeout_seconds=0.5),
        "probe": lambda: probe(url, timeout_seconds=0.5),
        "fetch_small": lambda: fetch_small(url, attempts=1, backoff_seconds=0, timeout_seconds=0.5),
    }
    for path, call in calls.items():
        if fault == "ReadTimeout" and path == "probe":
            continue  # a HEAD has no body to stall
        with pytest.raises(UpstreamError) as err:
            call()
        _assert_no_secret(err.value)
        assert "***@" in str(err.value) or "://" not in url, path
        assert fault.split()[0] in str(err.value) or fault in ("ReadTimeout", "InvalidURL host"), (path, err.value)
    assert not (tmp_path / "f.csv.gz").exists()


def _http_exception_classes() -> list[type[BaseException]]:
    import requests
    import urllib3

    return [
        value
        for module in (requests.exceptions, urllib3.exceptions)
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == module.__name__
    ]


def _built_with(cls: type[BaseException], text: str) -> BaseException:
    """An instance of `cls` whose arguments carry `text` where they can (the constructors differ;
    IncompleteRead takes only numbers, JSONDecodeError a position, InvalidChunkLength a response)."""
    import types

    response = types.SimpleNamespace(tell=lambda: 0, length_remaining=None)
    for count in range(1, 5):
        for args in ([text] * count, [text] * (count - 1) + [0], [0] * count, [response] + [text] * (count - 1)):
            try:
                exc = cls(*args)
                str(exc)
                return exc
            except (TypeError, AttributeError):
                continue
    raise AssertionError(f"could not construct {cls.__name__}")


def test_every_exception_of_the_http_layer_is_converted_without_the_secret():
    """Finding 8, exhaustively: every exception class requests and urllib3 define, constructed with
    the credentialled URL in its text, through the conversion every request path uses."""
    import urllib3

    from taxi_assets.upstream import guarded, request_error

    url = f"http://alice:{SECRET}@127.0.0.1:8080/yellow/yellow_tripdata_2021-01.csv.gz"
    classes = _http_exception_classes()
    assert len(classes) > 40  # both modules were walked
    for cls in classes:
        original = _built_with(cls, f"Failed to parse: {url}?X-Amz-Signature={SECRET}")
        if not isinstance(original, urllib3.exceptions.IncompleteRead | urllib3.exceptions.InvalidChunkLength):
            # the test would catch a leak
            assert SECRET in str(original) or SECRET in repr(original), cls
        converted = request_error(url, original)
        _assert_no_secret(converted)
        assert cls.__name__ in str(converted) and "http://***@127.0.0.1:8080/yellow/" in str(converted)

        def raising(exc=original):
            raise exc

        with pytest.raises(BaseException) as err:
            guarded(url, raising)
        _assert_no_secret(err.value)


def test_a_redirect_to_another_host_does_not_echo_its_body(mirror, tmp_path):
    """Low: a redirect to an internal host put that host's body in the error message."""
    mirror.publish("yellow", "2021-01", b"INTERNAL-ONLY admin_token=0123456789abcdef\n")
    mirror.fail_always("yellow", "2021-01", "elsewhere")
    with pytest.raises(UpstreamError) as err:
        _download(mirror, tmp_path)
    message = str(err.value)
    assert "INTERNAL" not in message and "admin_token" not in message
    assert "(43 bytes) from 127.0.0.2, where it was redirected" in message
    assert not isinstance(err.value, TransientUpstreamError)


@pytest.mark.parametrize(
    "setting, value",
    [
        ("attempts", 0),
        ("backoff_seconds", -1.0),
        ("timeout_seconds", 0.0),
        ("give_up_after_seconds", float("nan")),
        ("max_download_bytes", 0),
        ("max_lookup_bytes", -5),
        ("max_concurrent_requests", 0),
    ],
)
def test_out_of_range_settings_fail_naming_the_setting(setting, value):
    """Low: `attempts: 0` gave an AssertionError, a negative backoff or a zero timeout a raw
    ValueError from deep inside, NaN was taken."""
    from taxi_assets.resources.upstream_files import UpstreamFiles

    with pytest.raises(ValueError, match=f"UpstreamFiles.{setting} must be"):
        UpstreamFiles.of(RELEASES, base_url="http://127.0.0.1:1", **{setting: value})


def test_a_bad_setting_fails_the_run_when_it_starts_naming_it(mirror, tmp_path, instance):
    import dagster as dg

    from taxi_assets.assets import build_assets
    from taxi_assets.resources.upstream_files import ReleaseFiles
    from taxi_assets_tests.helpers import local_resources

    raw_trips = build_assets(RELEASES, "local").raw_trips

    files = ReleaseFiles.configure_at_launch()
    resources = {**local_resources(tmp_path, mirror), "upstream_files": files}
    result = dg.materialize(
        [raw_trips],
        partition_key="yellow|2021-01-01",
        resources=resources,
        instance=instance,
        run_config={"resources": {"upstream_files": {"config": {"base_url": mirror.base_url, "attempts": 0}}}},
        raise_on_error=False,
    )
    assert not result.success
    failures = [str(event.event_specific_data.error.to_string()) for event in result.all_events if event.is_failure]
    assert any("UpstreamFiles.attempts must be at least 1, got 0" in text for text in failures), failures
    assert mirror.requests == []


def test_a_trickling_zone_lookup_stops_at_its_timeout(mirror):
    """Finding 1 as reported: timeout_seconds 5 never fired while the body trickled; a small file's
    attempt now ends `timeout_seconds` after it began."""
    import time

    from taxi_assets.upstream import fetch_small

    mirror.fail_zones_always("trickle")
    started = time.monotonic()
    with pytest.raises(UpstreamError, match=r"gave up mid-transfer at the time bound \(timeout_seconds\)"):
        fetch_small(f"{mirror.base_url}/misc/taxi_zone_lookup.csv", attempts=3, backoff_seconds=0.01, timeout_seconds=1)
    assert time.monotonic() - started < 1 + 1.0
