"""A release mirror on 127.0.0.1: serves a folder laid out like the upstream releases.

The demo serves the sample files shipped in `taxi_assets/sample_mirror`; tests serve their own.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

SAMPLE_MIRROR = Path(__file__).parent / "sample_mirror"


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
