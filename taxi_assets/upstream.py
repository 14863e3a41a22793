"""The upstream trip files of either source TAXI_SOURCE picks (the DataTalksClub releases' CSV.gz
files, or the TLC's own Parquet files): a streaming, verified, retried download, a HEAD probe, and
the small zone lookup."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import itertools
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import requests
import urllib3
from isal import isal_zlib

from taxi_assets.retrying import retry

CHUNK_BYTES = 1 << 20
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

# Bounds on what upstream can make us hold or write (UpstreamFiles's settings of the same names).
MAX_DOWNLOAD_BYTES = 4 << 30  # a trip file: the biggest real month is ~1 GB
MAX_LOOKUP_BYTES = 1 << 20  # the zone lookup: ~12 KB
INFLATE_OUTPUT_BYTES = 1 << 20  # the gzip check's output per call, whatever the compression ratio
SHOWN_BYTES = 80  # of an unexpected body, when it comes from the host that was asked (never from another)
SHOWN_DETAIL = 160  # characters of an exception's text in a message


GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"  # at the start of a Parquet file and at the end of its footer


def checked_base_url(url: str) -> str:
    """A base URL the downloader may use: http or https only (no file://, no bare host)."""
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise ValueError(f"TAXI_SOURCE_URL must be an http:// or https:// URL, got {redact(url)!r}")
    return url


# The userinfo of a URL (`user:token@`), found without parsing: a URL that does not parse
# (a bad port, a broken IPv6 host, no scheme) must be shown redacted all the same.
_URL_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?(?://)?)([^/?#\s]*)@")


def redact(url: str) -> str:
    """The URL as messages and metadata show it: credentials in it (user:token@) become ***."""
    return _URL_USERINFO.sub(lambda m: f"{m.group(1)}***@", url, count=1)


class UpstreamError(Exception):
    """The file could not be fetched whole; the message names the URL (credentials redacted) and
    what went wrong, and it carries no cause or context: nothing of the original exception, whose
    text may hold the URL unredacted, reaches a log or the event log."""


class NotPublished(UpstreamError):
    """Upstream has no file for this month (404; the TLC answers 403): retrying will not help."""


class TransientUpstreamError(UpstreamError):
    """A failure worth retrying: 5xx, 429, timeouts, resets, a transfer cut short."""


# What the HTTP layer can raise: requests wraps most of urllib3's errors, not all (a body read raises
# urllib3's own), and below both are http.client's and the socket's; a bad URL can raise ValueError.
# Their warnings too: under `-W error` (PYTHONWARNINGS=error) a warning is raised like an error.
HTTP_ERRORS = (
    requests.RequestException,
    requests.exceptions.RequestsWarning,
    urllib3.exceptions.HTTPError,
    urllib3.exceptions.HTTPWarning,
    http.client.HTTPException,
    OSError,
    ValueError,
)
_TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
    http.client.IncompleteRead,
    ConnectionError,
    TimeoutError,
)
_USERINFO = re.compile(r"(?<=//)[^/\s@'\"]*@")
_QUERY = re.compile(r"\?[^\s'\")]*")


def scrubbed(text: str, url: str) -> str:
    """`text` (an exception's) safe to show: the credentials of `url` and of any URL in it become
    ***, query strings (signed redirect URLs carry tokens there) are dropped, and it is cut short."""
    userinfo = _URL_USERINFO.match(url)
    secrets = userinfo.group(2).split(":", 1) + [userinfo.group(2)] if userinfo else []
    for form in sorted({form for secret in secrets for form in (secret, unquote(secret))}, key=len, reverse=True):
        if len(form) >= 3:  # a 1-2 character user name would blank out half the text, and hides nothing
            text = text.replace(form, "***")
    text = _QUERY.sub("?...", _USERINFO.sub("***@", text))
    text = " ".join(text.split())
    return text if len(text) <= SHOWN_DETAIL else text[: SHOWN_DETAIL - 3] + "..."


def request_error(url: str, exc: BaseException, doing: str = "") -> UpstreamError:
    """The UpstreamError for an exception of the HTTP layer (requests, urllib3, http.client, the
    socket), for every request this module makes: a TransientUpstreamError for what a retry may
    cure (connection errors, timeouts, a broken transfer), an UpstreamError otherwise (an invalid
    URL, a redirect loop, ...). Its message shows the URL redacted and the exception's text scrubbed;
    raise it outside the `except` block (as `guarded` does), so it has no context either."""
    name = type(exc).__name__
    if isinstance(exc, requests.TooManyRedirects):
        return UpstreamError(
            f"{redact(url)}: redirect loop: more than {requests.models.DEFAULT_REDIRECT_LIMIT} redirects ({name})"
        )
    detail = scrubbed(str(exc), url)
    message = f"{redact(url)}: {doing}{name}" + (f": {detail}" if detail else "")
    if isinstance(exc, _TRANSIENT) and not isinstance(exc, requests.exceptions.InvalidURL):
        return TransientUpstreamError(message)
    return UpstreamError(message)


T = TypeVar("T")


def guarded(url: str, fn: Callable[..., T], *args, doing: str = "", **kwargs) -> T:
    """`fn(*args, **kwargs)`, an HTTP call; what the HTTP layer raises becomes `request_error`'s
    UpstreamError, raised with no cause and no context."""
    try:
        return fn(*args, **kwargs)
    except HTTP_ERRORS as exc:
        error = request_error(url, exc, doing)
    raise error


@dataclass(frozen=True)
class Fingerprint:
    """What the server says about a file's version, used to notice it changed."""

    etag: str | None
    last_modified: str | None
    content_length: int | None

    @classmethod
    def from_headers(cls, headers) -> Fingerprint:
        """The fingerprint a HEAD or GET response's headers give (missing headers stay None)."""
        length = headers.get("Content-Length")
        return cls(
            etag=headers.get("ETag"),
            last_modified=headers.get("Last-Modified"),
            content_length=int(length) if length and length.isdigit() else None,
        )

    def token(self) -> str:
        """`ETag|Last-Modified|size` as one string: what the sensor compares and a run records."""
        return "|".join(str(v) for v in (self.etag, self.last_modified, self.content_length))


@dataclass(frozen=True)
class Downloaded:
    """A finished download: its URL and file, size and sha256, the server's fingerprint, attempts and seconds."""

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
        # At most INFLATE_OUTPUT_BYTES out per call: a gzip bomb (1 MB of input can inflate to 1 GB)
        # costs time, not memory.
        while True:
            out = self._inflater.decompress(chunk, INFLATE_OUTPUT_BYTES)
            if self._inflater.eof:
                self._complete = True
                chunk = self._inflater.unused_data
                if not chunk:
                    return
                # another gzip member follows
                self._inflater = isal_zlib.decompressobj(wbits=isal_zlib.MAX_WBITS | 16)
                self._complete = False
                continue
            self._complete = False
            chunk = self._inflater.unconsumed_tail
            if not chunk and len(out) < INFLATE_OUTPUT_BYTES:  # a full output may have more pending
                return


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


def _same_host(url: str, response: requests.Response) -> bool:
    asked, answered = urlsplit(url), urlsplit(response.url or url)
    return (asked.hostname, asked.port) == (answered.hostname, answered.port)


def _printable(data: bytes, limit: int) -> str:
    text = data[: limit * 4].decode("utf-8", "replace")
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:limit]


def _not_expected(url: str, response: requests.Response, first: bytes, expected: str) -> UpstreamError:
    """What came back instead of the file, said so that the fix is clear. Its first bytes are shown
    only if they come from the host that was asked: a redirect may lead to an internal host whose
    body is nobody's business (its content type and the bytes received are shown instead)."""
    shown = redact(url)
    content_type = _printable((response.headers.get("Content-Type") or "no Content-Type").encode(), 60)
    start = _printable(first, SHOWN_BYTES)
    if _same_host(url, response):
        got = f"{content_type} starting {start!r}"
    else:
        got = f"{content_type} ({len(first):,} bytes) from {urlsplit(response.url).hostname}, where it was redirected"
    message = f"{shown}: expected {expected}, got {got}"
    if "html" in content_type.lower() or start.lower().startswith(("<!doctype html", "<html")):
        message += (
            ". That is a web page: does the base URL (TAXI_SOURCE_URL, or TAXI_TLC_URL) point at a page instead of "
            "the files' download URL (`{base}/{color}/{color}_tripdata_{YYYY-MM}.csv.gz`, `{base}/trip-data/...`)?"
        )
    return UpstreamError(message)


def _set_read_timeout(response: requests.Response, seconds: float) -> None:
    """The socket's timeout for the next reads of the body (so a read ends at the deadline)."""
    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.settimeout(max(seconds, 0.001))


def _body(
    url: str,
    response: requests.Response,
    *,
    read_timeout: float,
    deadline: float,
    max_bytes: int,
    setting: str,
    time_setting: str = "give_up_after_seconds",
) -> Iterator[bytes]:
    """The body's bytes as they arrive (as sent: no Content-Encoding decoded), stopping with an
    UpstreamError past `max_bytes` (announced or received) or past `deadline` (time.monotonic()),
    even while bytes keep trickling in: each read waits at most until the deadline."""
    shown = redact(url)
    announced = response.headers.get("Content-Length", "")
    if announced.isdigit() and int(announced) > max_bytes:
        raise UpstreamError(
            f"{shown}: announced {int(announced):,} bytes, over the limit of {max_bytes:,} ({setting}); not downloaded"
        )
    gave_up = f"{{shown}}: gave up mid-transfer at the time bound ({time_setting}), {{size:,}} bytes received"
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise UpstreamError(gave_up.format(shown=shown, size=size))
        _set_read_timeout(response, min(read_timeout, left))
        try:
            chunk = response.raw.read1(CHUNK_BYTES, decode_content=False)
        except HTTP_ERRORS as exc:
            error = request_error(url, exc, f"transfer broken after {size:,} bytes: ")
        else:
            error = None
        if error is not None:  # raised here, outside the except block: no context
            if time.monotonic() >= deadline:  # the read timed out at the bound
                raise UpstreamError(gave_up.format(shown=shown, size=size))
            raise error
        if not chunk:
            return
        size += len(chunk)
        if size > max_bytes:
            raise UpstreamError(f"{shown}: over the limit of {max_bytes:,} bytes ({setting}); stopped there")
        yield chunk


def _fetch_once(
    session: requests.Session,
    url: str,
    dest: Path,
    timeout: float,
    suffix: str,
    not_published: frozenset[int],
    deadline: float,
    max_bytes: int,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> tuple[int, str, Fingerprint]:
    shown = redact(url)
    magic, end_check, expected, truncated = _FORMATS[suffix]
    wait = min(timeout, max(deadline - time.monotonic(), 0.001))
    response = guarded(url, session.get, url, stream=True, timeout=wait)
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
        size, start = 0, b""
        body = _body(
            url, response, read_timeout=timeout, deadline=deadline, max_bytes=max_bytes, setting="max_download_bytes"
        )
        try:
            with open(dest, "wb") as out:
                # Not decoded: keep the file's own gzip bytes even if a server adds Content-Encoding: gzip.
                for chunk in body:
                    if len(start) < SHOWN_BYTES:
                        start += chunk[: SHOWN_BYTES - len(start)]
                        if not (start.startswith(magic) or magic.startswith(start)):
                            raise _not_expected(url, response, start, expected)
                    file_end.feed(chunk)
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    if on_progress is not None:
                        on_progress(size, fingerprint.content_length)
            complete = file_end.finish()
        except isal_zlib.error as exc:
            raise UpstreamError(f"{shown}: not a valid gzip file ({exc})") from exc
        finally:
            body.close()
            file_end.close()
    if fingerprint.content_length is not None and size != fingerprint.content_length:
        raise TransientUpstreamError(
            f"{shown}: transfer incomplete: got {size:,} of {fingerprint.content_length:,} bytes"
        )
    if not complete:
        raise TransientUpstreamError(f"{shown}: " + truncated.format(size=size))
    return size, digest.hexdigest(), fingerprint


def _deadline(started: float, give_up_after_seconds: float | None) -> float:
    return math.inf if give_up_after_seconds is None else started + give_up_after_seconds


def download(
    url: str,
    dest: Path,
    *,
    attempts: int = 4,
    backoff_seconds: float = 1.0,
    timeout_seconds: float = 60.0,
    give_up_after_seconds: float | None = None,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    suffix: str = ".csv.gz",
    not_published: frozenset[int] = frozenset({404}),
    session: requests.Session | None = None,
    log: logging.Logger | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> Downloaded:
    """Stream `url` to `dest`, verifying length and completeness (the gzip end-of-stream marker
    of a `.csv.gz`, the footer magic of a `.parquet`), retrying transient failures.

    Retries use exponential backoff with full jitter, up to `attempts` tries and, if given, no new
    try after `give_up_after_seconds`; that bound also stops a transfer still going when it passes
    (a body that never ends, or trickles). A body over `max_bytes` (announced or received) fails at
    once, as does a `not_published` status (`NotPublished`). On failure `dest` is removed, so a
    partial file is never left behind. `on_progress(bytes received, bytes announced or None)` is
    called after each chunk written.
    """
    log = log or logging.getLogger(__name__)
    # A session of our own is closed at the end; a caller's stays open.
    with contextlib.nullcontext(session) if session is not None else requests.Session() as session:
        started, tries = time.perf_counter(), itertools.count(1)
        deadline = _deadline(time.monotonic(), give_up_after_seconds)

        def fetch_once() -> Downloaded:
            attempt = next(tries)
            try:
                size, sha256, fingerprint = _fetch_once(
                    session, url, dest, timeout_seconds, suffix, not_published, deadline, max_bytes, on_progress
                )
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
    with contextlib.nullcontext(session) if session is not None else requests.Session() as session:
        response = guarded(url, session.head, url, allow_redirects=True, timeout=timeout_seconds)
    if response.status_code in not_published:
        return None
    if not response.ok:
        raise UpstreamError(f"{shown}: HTTP {response.status_code} {response.reason}")
    return Fingerprint.from_headers(response.headers)


def zone_lookup_url(base_url: str) -> str:
    """`{base}/misc/taxi_zone_lookup.csv`: the 265 taxi zones, beside the trip files at either source."""
    return f"{base_url.rstrip('/')}/misc/taxi_zone_lookup.csv"


def fetch_small(
    url: str,
    *,
    attempts: int,
    backoff_seconds: float,
    timeout_seconds: float,
    give_up_after_seconds: float = 60.0,
    max_bytes: int = MAX_LOOKUP_BYTES,
) -> bytes:
    """A small file's bytes (a few KB, read into memory), with the trip files' rules: 404 is
    NotPublished at once, 401/403 and other 4xx fail at once, 5xx, 429 and timeouts are retried.
    Bounded like a download: more than `max_bytes` fails at once, and so does a body still
    arriving `timeout_seconds` after its attempt began (a small file has no reason to trickle) or
    after `give_up_after_seconds` in all."""
    shown = redact(url)
    deadline = _deadline(time.monotonic(), give_up_after_seconds)

    def get() -> bytes:
        now = time.monotonic()
        wait = min(timeout_seconds, max(deadline - now, 0.001))
        by_timeout = now + timeout_seconds < deadline
        # identity: the cap counts the bytes as they will be used, nothing left to inflate.
        with requests.Session() as session:
            response = guarded(
                url, session.get, url, stream=True, timeout=wait, headers={"Accept-Encoding": "identity"}
            )
            with response:
                status = f"HTTP {response.status_code} {response.reason}"
                if response.status_code == 404:
                    raise NotPublished(f"{shown}: not published upstream (HTTP 404)")
                if response.status_code in RETRYABLE_STATUS:
                    raise TransientUpstreamError(f"{shown}: {status}")
                if response.status_code != 200:
                    raise UpstreamError(f"{shown}: {status}")
                encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    raise UpstreamError(f"{shown}: sent with Content-Encoding {_printable(encoding.encode(), 20)!r}")
                body = _body(
                    url,
                    response,
                    read_timeout=timeout_seconds,
                    deadline=now + timeout_seconds if by_timeout else deadline,
                    max_bytes=max_bytes,
                    setting="max_lookup_bytes",
                    time_setting="timeout_seconds" if by_timeout else "give_up_after_seconds",
                )
                return b"".join(body)

    return retry(
        get,
        retry_on=TransientUpstreamError,
        attempts=attempts,
        give_up_after_seconds=give_up_after_seconds,
        first_pause=backoff_seconds,
        on_give_up=lambda attempt, exc, __: TransientUpstreamError(
            f"{exc} (gave up after {attempt} attempt{'s' * (attempt > 1)})"
        ),
        chain=False,
    )
