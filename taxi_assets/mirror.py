"""A release mirror on 127.0.0.1: serves a folder laid out like the upstream releases.

`make demo` and `make dev` serve the sample files shipped in `taxi_assets/sample_mirror`; tests
serve their own. While they serve it, they set SAMPLE_URL_ENV to its URL (as well as
TAXI_SOURCE_URL), so runs record where a file came from in a form that outlives the port: the
public release file's URL, served from the bundled sample (`recorded_source`).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from taxi_assets.settings import DEFAULT_SOURCE_URL, DEFAULT_TLC_URL

SAMPLE_MIRROR = Path(__file__).parent / "sample_mirror"
# Each source's public base URL: what a file served from the bundled sample is a sample of.
PUBLIC_BASE_URL = {"releases": DEFAULT_SOURCE_URL, "tlc": DEFAULT_TLC_URL}
SAMPLE_URL_ENV = "TAXI_SAMPLE_MIRROR_URL"
BUNDLED_SAMPLE = "bundled sample (taxi_assets/sample_mirror)"
# Left in the data folder by `make demo`: `make dev` on that folder serves the sample again.
SAMPLE_NOTE = "SAMPLE_MIRROR"


def serving_sample(base_url: str) -> bool:
    """Whether `base_url` is the bundled sample mirror that this `make demo` / `make dev` serves."""
    sample = os.environ.get(SAMPLE_URL_ENV)
    return bool(sample) and base_url.rstrip("/") == sample.rstrip("/")


def recorded_source(base_url: str, url: str, public_url: str) -> dict[str, str]:
    """Where a file came from, as metadata records it: `url` (credentials already redacted), or,
    when it was served by the bundled sample mirror (a loopback port that dies with the process),
    the public file's URL and the words "bundled sample"."""
    if serving_sample(base_url):
        return {"source_url": public_url, "served_from": BUNDLED_SAMPLE}
    return {"source_url": url}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass


@contextlib.contextmanager
def serve_folder(folder: Path, handler=_QuietHandler, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `folder` over HTTP on a free port of a loopback address; yields the base URL."""
    server = http.server.ThreadingHTTPServer((host, 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
