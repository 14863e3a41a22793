"""The tlc source's tests run in their own pytest session with TAXI_SOURCE=tlc (`make test` runs
it after the main one): the source fixes the grid and the schemas when the code loads."""

from __future__ import annotations

import http.server
import os
from pathlib import Path

import pytest

from taxi_assets.mirror import serve_folder
from taxi_assets.sources import SOURCE

if SOURCE.name != "tlc":
    collect_ignore_glob = ["test_*.py"]


class TlcMirror:
    """A folder laid out like the TLC's CloudFront bucket (`trip-data/{file}.parquet`), which
    answers 403 for a month that is not out, and Last-Modified from each file's time."""

    def __init__(self, root: Path):
        self.root = root
        self.base_url = ""
        self.requests: list[str] = []

    def path(self, color: str, ym: str) -> Path:
        return self.root / "trip-data" / f"{color}_tripdata_{ym}.parquet"

    def touch(self, color: str, ym: str, seconds: int) -> None:
        os.utime(self.path(color, ym), (seconds, seconds))

    def handler(self):
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _missing(self) -> bool:
                mirror.requests.append(f"{self.command} {self.path}")
                if Path(self.translate_path(self.path)).is_file():
                    return False
                self.send_error(403, "Forbidden")  # CloudFront's answer for a month not out yet
                return True

            def do_HEAD(self):
                if not self._missing():
                    super().do_HEAD()

            def do_GET(self):
                if not self._missing():
                    super().do_GET()

        return Handler


@pytest.fixture
def tlc_mirror(tmp_path):
    mirror = TlcMirror(tmp_path / "tlc")
    mirror.root.mkdir()
    with serve_folder(mirror.root, handler=mirror.handler()) as url:
        mirror.base_url = url
        yield mirror
