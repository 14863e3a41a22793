"""The upstream trip files of either source TAXI_SOURCE picks (the DataTalksClub releases' CSV.gz
files, or the TLC's own Parquet files): a streaming, verified, retried download, a HEAD probe, and
the small zone lookup."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3
from isal import isal_zlib

from taxi_assets.retrying import retry

CHUNK_BYTES = 1 << 20
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"  # at the start of a Parquet file and at the end of its footer


def checked_base_url(url: str) -> str:
    """A base URL the downloader may use: http or https only (no file://, no bare host)."""
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise ValueError(f"TAXI_SOURCE_URL must be an http:// or https:// URL, got {redact(url)!r}")
    return url


def redact(url: str) -> str:
    """The URL as messages and metadata show it: credentials in it (user:token@) become ***."""
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


class UpstreamError(Exception):
    """The file could not be fetched whole; the message names the URL and what went wrong."""


class NotPublished(UpstreamError):
    """Upstream has no file for this month (404; the TLC answers 403): retrying will not help."""


class TransientUpstreamError(UpstreamError):
    """A failure worth retrying: 5xx, 429, timeouts, resets, a transfer cut short."""


@dataclass(frozen=True)
class Fingerprint:
    """What the server says about a file's version, used to notice it changed."""

    etag: str | None
    last_modified: str | None
    content_length: int | None

    @classmethod
    def from_headers(cls, headers) -> Fingerprint:
        length = headers.get("Content-Length")
        return cls(
            etag=headers.get("ETag"),
            last_modified=headers.get("Last-Modified"),
            content_length=int(length) if length and length.isdigit() else None,
        )

    def token(self) -> str:
        return "|".join(str(v) for v in (self.etag, self.last_modified, self.content_length))


@dataclass(frozen=True)
class Downloaded:
    url: str
    path: Path
    size: int
    sha256: str
    fingerprint: Fingerprint
    attempts: int
    seconds: float


class _GzipEndCheck:
    """Follows a gzip stream (all members) to tell whether it reached its end-of-stream marker.

    A transfer can stop early with no error from the server; only the gzip trailer proves the file
    is whole. Inflating is the costly part of a download, so it uses ISA-L (several times faster
    than zlib: docs/performance.md) on a second thread while the first receives, writes and hashes; both
    release the GIL. Decompressed bytes are discarded as they come, so memory stays flat.
    """

    MAX_QUEUED_CHUNKS = 8

    def __init__(self) -> None:
        self._inflater = isal_zlib.decompressobj(wbits=isal_zlib.MAX_WBITS | 16)
        self._complete = False
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gzip-check")
        self._queued: deque[Future] = deque()

    def feed(self, chunk: bytes) -> None:
        self._queued.append(self._worker.submit(self._inflate, chunk))
        while len(self._queued) > self.MAX_QUEUED_CHUNKS:
            self._queued.popleft().result()

    def finish(self) -> bool:
        """Wait for the chunks fed so far; whether the stream ended at a gzip end-of-stream."""
        while self._queued:
            self._queued.popleft().result()
        return self._complete

    def close(self) -> None:
        self._worker.shutdown(cancel_futures=True)

    def _inflate(self, chunk: bytes) -> None:
        while chunk:
            self._inflater.decompress(chunk, 0)
            if self._inflater.eof:
                self._complete = True
                chunk = self._inflater.unused_data
                if chunk:  # another gzip member follows
                    self._inflater = isal_zlib.decompressobj(wbits=isal_zlib.MAX_WBITS | 16)
                    self._complete = False
            else:
                chunk = b""
                self._complete = False


class _ParquetEndCheck:
    """A Parquet file is whole when it ends with the footer's magic bytes (its start is checked
    with the first chunk). Same interface as _GzipEndCheck."""

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        self._tail = (self._tail + chunk)[-len(PARQUET_MAGIC) :]

    def finish(self) -> bool:
        return self._tail == PARQUET_MAGIC

    def close(self) -> None:
        pass


# What each upstream format starts with, how to tell it arrived whole, and its name in messages.
_FORMATS = {
    ".csv.gz": (
        GZIP_MAGIC,
        _GzipEndCheck,
        "a gzip file",
        "truncated gzip: the stream ended after {size:,} bytes without the gzip end-of-stream marker",
    ),
    ".parquet": (
        PARQUET_MAGIC,
        _ParquetEndCheck,
        "a Parquet file",
        "truncated Parquet: the file ended after {size:,} bytes without its footer",
    ),
}


def _not_expected(url: str, response: requests.Response, first: bytes, expected: str) -> UpstreamError:
    """What came back instead of the file, said so that the fix is clear."""
    content_type = response.headers.get("Content-Type") or "no Content-Type"
    start = " ".join(first[:80].decode("utf-8", "replace").split())
    message = f"{url}: expected {expected}, got {content_type} starting {start!r}"
    if "html" in content_type.lower() or start.lower().startswith(("<!doctype html", "<html")):
        message += (
            ". That is a web page: does the base URL (TAXI_SOURCE_URL, or TAXI_TLC_URL) point at a page instead of "
            "the files' download URL (`{base}/{color}/{color}_tripdata_{YYYY-MM}.csv.gz`, `{base}/trip-data/...`)?"
        )
    return UpstreamError(message)


def _fetch_once(
    session: requests.Session, url: str, dest: Path, timeout: float, suffix: str, not_published: frozenset[int]
) -> tuple[int, str, Fingerprint]:
    shown = redact(url)
    magic, end_check, expected, truncated = _FORMATS[suffix]
    try:
        response = session.get(url, stream=True, timeout=timeout)
    except requests.TooManyRedirects:
        raise UpstreamError(f"{shown}: redirect loop: more than {session.max_redirects} redirects") from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise TransientUpstreamError(f"{shown}: {type(exc).__name__}: {exc}") from exc
    with response:
        status = f"HTTP {response.status_code} {response.reason}"
        if response.status_code in not_published:
            raise NotPublished(f"{shown}: not published upstream (HTTP {response.status_code})")
        if response.status_code in (401, 403):
            raise UpstreamError(
                f"{shown}: refused ({status}): private, or the base URL is wrong (TAXI_SOURCE_URL or TAXI_TLC_URL)"
            )
        if response.status_code in RETRYABLE_STATUS:
            raise TransientUpstreamError(f"{shown}: {status}")
        if response.status_code != 200:
            raise UpstreamError(f"{shown}: {status}")
        fingerprint = Fingerprint.from_headers(response.headers)
        digest = hashlib.sha256()
        file_end = end_check()
        size = 0
        try:
            with open(dest, "wb") as out:
                # decode_content=False: keep the file's own gzip bytes even if a server adds
                # Content-Encoding: gzip.
                for chunk in response.raw.stream(CHUNK_BYTES, decode_content=False):
                    if size == 0 and not chunk.startswith(magic):
                        raise _not_expected(shown, response, chunk, expected)
                    file_end.feed(chunk)
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            complete = file_end.finish()
        except isal_zlib.error as exc:
            raise UpstreamError(f"{shown}: not a valid gzip file ({exc})") from exc
        except (urllib3.exceptions.HTTPError, requests.RequestException, ConnectionError, TimeoutError) as exc:
            raise TransientUpstreamError(
                f"{shown}: transfer broken after {size:,} bytes: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            file_end.close()
    if fingerprint.content_length is not None and size != fingerprint.content_length:
        raise TransientUpstreamError(
            f"{shown}: transfer incomplete: got {size:,} of {fingerprint.content_length:,} bytes"
        )
    if not complete:
        raise TransientUpstreamError(f"{shown}: " + truncated.format(size=size))
    return size, digest.hexdigest(), fingerprint


def download(
    url: str,
    dest: Path,
    *,
    attempts: int = 4,
    backoff_seconds: float = 1.0,
    timeout_seconds: float = 60.0,
    give_up_after_seconds: float | None = None,
    suffix: str = ".csv.gz",
    not_published: frozenset[int] = frozenset({404}),
    session: requests.Session | None = None,
    log: logging.Logger | None = None,
) -> Downloaded:
    """Stream `url` to `dest`, verifying length and completeness (the gzip end-of-stream marker
    of a `.csv.gz`, the footer magic of a `.parquet`), retrying transient failures.

    Retries use exponential backoff with full jitter, up to `attempts` tries and, if given, no new
    try after `give_up_after_seconds`. A `not_published` status is final at once (`NotPublished`).
    On failure `dest` is removed, so a partial file is never left behind.
    """
    log = log or logging.getLogger(__name__)
    # A session of our own is closed at the end; a caller's stays open.
    with contextlib.nullcontext(session) if session is not None else requests.Session() as session:
        started, tries = time.perf_counter(), itertools.count(1)

        def fetch_once() -> Downloaded:
            attempt = next(tries)
            try:
                size, sha256, fingerprint = _fetch_once(session, url, dest, timeout_seconds, suffix, not_published)
            except BaseException:
                dest.unlink(missing_ok=True)  # no partial file, not even while pausing before a retry
                raise
            return Downloaded(url, dest, size, sha256, fingerprint, attempt, time.perf_counter() - started)

        return retry(
            fetch_once,
            retry_on=TransientUpstreamError,
            attempts=attempts,
            give_up_after_seconds=give_up_after_seconds,
            first_pause=backoff_seconds,
            on_retry=lambda attempt, exc, pause, _: log.warning(
                "attempt %d/%d failed: %s; retrying in %.1f s", attempt, attempts, exc, pause
            ),
            on_give_up=lambda attempt, exc, elapsed: TransientUpstreamError(
                f"{exc} (gave up after {attempt} attempt{'s' * (attempt > 1)} in {elapsed:.0f} s)"
            ),
        )


def probe(
    url: str,
    *,
    session: requests.Session | None = None,
    timeout_seconds: float = 15.0,
    not_published: frozenset[int] = frozenset({404}),
) -> Fingerprint | None:
    """HEAD the file: its fingerprint, or None if it is not published (404, or what the source says).
    Anything else wrong is an UpstreamError whose message shows the URL without credentials."""
    shown = redact(url)
    try:
        if session is None:
            with requests.Session() as own:
                response = own.head(url, allow_redirects=True, timeout=timeout_seconds)
        else:
            response = session.head(url, allow_redirects=True, timeout=timeout_seconds)
    except requests.RequestException as exc:
        raise UpstreamError(f"{shown}: {type(exc).__name__}") from None
    if response.status_code in not_published:
        return None
    if not response.ok:
        raise UpstreamError(f"{shown}: HTTP {response.status_code} {response.reason}")
    return Fingerprint.from_headers(response.headers)


def zone_lookup_url(base_url: str) -> str:
    """`{base}/misc/taxi_zone_lookup.csv`: the 265 taxi zones, beside the trip files at either source."""
    return f"{base_url.rstrip('/')}/misc/taxi_zone_lookup.csv"


def fetch_small(url: str, *, attempts: int, backoff_seconds: float, timeout_seconds: float) -> bytes:
    """A small file's bytes (a few KB, read into memory), with the trip files' rules: 404 is
    NotPublished at once, 401/403 and other 4xx fail at once, 5xx, 429 and timeouts are retried."""
    shown = redact(url)

    def get() -> bytes:
        try:
            response = requests.get(url, timeout=timeout_seconds)
        except requests.TooManyRedirects:
            raise UpstreamError(f"{shown}: redirect loop") from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientUpstreamError(f"{shown}: {type(exc).__name__}: {exc}") from exc
        status = f"HTTP {response.status_code} {response.reason}"
        if response.status_code == 200:
            return response.content
        if response.status_code == 404:
            raise NotPublished(f"{shown}: not published upstream (HTTP 404)")
        if response.status_code not in RETRYABLE_STATUS:
            raise UpstreamError(f"{shown}: {status}")
        raise TransientUpstreamError(f"{shown}: {status}")

    return retry(
        get,
        retry_on=TransientUpstreamError,
        attempts=attempts,
        first_pause=backoff_seconds,
        on_give_up=lambda _, exc, __: TransientUpstreamError(f"{exc} (gave up after {attempts} attempts)"),
        chain=False,
    )
