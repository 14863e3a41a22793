"""Helpers the tests share: real fixture rows, a misbehaving mirror of either source on 127.0.0.1
(`Mirror`, `serving`), the code location wired to it (`build_test_defs`, `local_resources`), and
readers of a run's result. The fixtures that use them are in conftest.py."""

from __future__ import annotations

import contextlib
import gzip
import http.server
import os
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from taxi_assets.mirror import serve_folder
from taxi_assets.partitions import TripMonth
from taxi_assets.sources import RELEASES, Source
from taxi_assets_harness.postgres import server_binaries
from taxi_assets_harness.redis import redis_binary

FIXTURES = Path(__file__).parent / "fixtures"
# The marks of a test that runs the production instance with Celery: PostgreSQL and Redis installed.
NEEDS_POSTGRES_AND_REDIS = [
    pytest.mark.skipif(
        server_binaries() is None, reason="PostgreSQL server not installed (apt-get install postgresql)"
    ),
    pytest.mark.skipif(redis_binary() is None, reason="Redis server not installed (apt-get install redis-server)"),
]
REAL = FIXTURES / "real"


def real_rows(name: str) -> list[str]:
    """Lines of a real fixture file, header included, each ending in a newline."""
    lines = (REAL / name).read_text().splitlines()
    return [line + "\n" for line in lines]


def fhv_month(ym: str) -> list[str]:
    lines = real_rows("fhv_tripdata_2019_TLCoriginal_monthly_heads.csv")
    return [lines[0]] + [line for line in lines[1:] if line.split(",")[1].startswith(ym)]


class Mirror:
    """A folder laid out like the source's files (the releases' `{color}/...csv.gz`, or the TLC's
    `trip-data/...parquet`), served over HTTP, with scripted faults
    per file. A month not there answers as the source does: 404, or CloudFront's 403 for the TLC.

    Faults, for the next responses of a file (`fail_next`) or all of them (`fail_always`):
    - an HTTP status ("503", "401", ...);
    - "cut": close the connection half way through a body that announced its full length;
    - "stall": send the headers and half the body, then nothing for STALL_SECONDS;
    - "html": answer 200 with a web page, as a release's HTML page would;
    - "loop": redirect to itself, forever;
    - "elsewhere": redirect (302) to the same file on another loopback host (`storage_url`), as
      GitHub release downloads redirect to their storage host;
    - "endless": answer 200 without a Content-Length and send a valid start (a gzip stream, a
      Parquet magic, CSV rows: by the path's suffix) that never ends, as fast as the client reads;
    - "trickle": the same endless body, TRICKLE_BYTES every TRICKLE_SECONDS (no read ever times out);
    - "huge": announce a Content-Length of HUGE_BYTES, then send the endless body.
    An endless body stops when the client goes away, or after ENDLESS_SECONDS.
    `hold_zones()` holds the zone lookup's requests until the event it returns is set (at most
    HOLD_SECONDS), as a slow upstream would.
    """

    STALL_SECONDS = 5
    TRICKLE_BYTES, TRICKLE_SECONDS = 64, 0.02
    HUGE_BYTES = 5 << 40
    ENDLESS_SECONDS = 120
    HOLD_SECONDS = 120

    def __init__(self, root: Path, source: Source):
        self.root = root
        self.source = source
        self.base_url = ""
        self.storage_url = ""
        self.faults: dict[str, list[str]] = defaultdict(list)
        self.always: dict[str, str] = {}
        self.requests: list[str] = []
        self.held: dict[str, threading.Event] = {}

    def path(self, color: str, ym: str) -> Path:
        return self.root / self._url_path(color, ym).lstrip("/")

    def touch(self, color: str, ym: str, seconds: int) -> None:
        """Set the file's time, which the server sends as Last-Modified."""
        os.utime(self.path(color, ym), (seconds, seconds))

    def publish(self, color: str, ym: str, lines: list[str] | bytes) -> Path:
        """Put a month's file on the mirror (gzipped CSV lines, or raw bytes as given)."""
        path = self.path(color, ym)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = lines if isinstance(lines, bytes) else gzip.compress("".join(lines).encode(), mtime=0)
        path.write_bytes(data)
        return path

    def publish_zones(self) -> Path:
        """The real zone lookup at `misc/taxi_zone_lookup.csv`, as in the releases."""
        path = self.root / "misc" / "taxi_zone_lookup.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((REAL / "taxi_zone_lookup.csv").read_bytes())
        return path

    def _url_path(self, color: str, ym: str) -> str:
        return self.source.url("", color, ym)

    def fail_next(self, color: str, ym: str, *faults: str) -> None:
        self.faults[self._url_path(color, ym)].extend(faults)

    def fail_always(self, color: str, ym: str, fault: str) -> None:
        self.always[self._url_path(color, ym)] = fault

    def hold_zones(self) -> threading.Event:
        """Hold requests of the zone lookup until the returned event is set; then answer as usual."""
        self.held["/misc/taxi_zone_lookup.csv"] = released = threading.Event()
        return released

    def fail_zones_always(self, fault: str) -> None:
        """A fault for every request of the zone lookup (`misc/taxi_zone_lookup.csv`)."""
        self.always["/misc/taxi_zone_lookup.csv"] = fault

    @staticmethod
    def endless_body(path: str):
        """Pieces of a body that never ends and never turns invalid, for a file at `path`."""
        if path.endswith(".csv"):
            yield b"LocationID,Borough,Zone,service_zone\n"
            row = b"1,EWR,Newark Airport,EWR\n" * 40_000
            while True:
                yield row
        elif path.endswith(".parquet"):
            yield b"PAR1"
            noise = os.urandom(1 << 20)
            while True:
                yield noise
        else:  # a gzip stream of random bytes: after a full flush each block stands alone, so repeat one
            deflate = zlib.compressobj(1, zlib.DEFLATED, 31)
            noise = os.urandom(1 << 20)
            yield deflate.compress(noise) + deflate.flush(zlib.Z_FULL_FLUSH)
            block = deflate.compress(noise) + deflate.flush(zlib.Z_FULL_FLUSH)
            while True:
                yield block

    def handler(self):
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _fault(self) -> str | None:
                mirror.requests.append(f"{self.command} {self.path}")
                if self.path in mirror.held:
                    mirror.held[self.path].wait(mirror.HOLD_SECONDS)
                queue = mirror.faults.get(self.path)
                return queue.pop(0) if queue else mirror.always.get(self.path)

            def _answer_fault(self, fault: str | None) -> bool:
                if fault is None and not Path(self.translate_path(self.path)).exists():
                    fault = str(min(mirror.source.not_published))  # 403 from the TLC, 404 from the releases
                if fault is None:
                    return False
                if fault.isdigit():
                    self.send_error(int(fault))
                elif fault in ("loop", "elsewhere"):
                    target = self.path if fault == "loop" else mirror.storage_url + self.path
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif fault == "html":
                    page = b"<!DOCTYPE html><html><head><title>Release 2021 - GitHub</title></head><body></body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    if self.command == "GET":
                        self.wfile.write(page)
                else:
                    return False
                return True

            def do_HEAD(self):
                if not self._answer_fault(self._fault()):
                    super().do_HEAD()

            def do_GET(self):
                fault = self._fault()
                if self._answer_fault(fault):
                    return
                if fault in ("endless", "trickle", "huge"):
                    self._send_endless(fault)
                    return
                if fault in ("cut", "stall"):
                    data = Path(self.translate_path(self.path)).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    if fault == "stall":
                        time.sleep(mirror.STALL_SECONDS)
                    self.close_connection = True
                    return
                super().do_GET()

            def _send_endless(self, fault: str) -> None:
                self.send_response(200)
                content_type = "text/csv" if self.path.endswith(".csv") else "application/octet-stream"
                self.send_header("Content-Type", content_type)
                if fault == "huge":
                    self.send_header("Content-Length", str(mirror.HUGE_BYTES))
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                stop = time.monotonic() + mirror.ENDLESS_SECONDS
                try:
                    for piece in mirror.endless_body(self.path):
                        if time.monotonic() > stop:
                            return
                        if fault != "trickle":
                            self.wfile.write(piece)
                            continue
                        for at in range(0, len(piece), mirror.TRICKLE_BYTES):
                            self.wfile.write(piece[at : at + mirror.TRICKLE_BYTES])
                            self.wfile.flush()
                            time.sleep(mirror.TRICKLE_SECONDS)
                            if time.monotonic() > stop:
                                return
                except OSError:  # the client went away
                    return

        return Handler


@contextlib.contextmanager
def serving(root: Path, source: Source) -> Iterator[Mirror]:
    m = Mirror(root, source)
    m.root.mkdir()
    with serve_folder(m.root, handler=m.handler()) as url, serve_folder(m.root, host="127.0.0.2") as storage:
        m.base_url, m.storage_url = url, storage
        yield m


def run_partition(defs: dg.Definitions, key: str, instance: dg.DagsterInstance, **kwargs):
    job = defs.resolve_job_def("trips_job")
    return job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False, **kwargs)


def step_failure_messages(result) -> list[str]:
    """Each failed step's error as the UI shows it: the message and the messages of its causes
    (a failure after retries reads "Exceeded max_retries", caused by the real error)."""
    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            error, parts = event.event_specific_data.error, []
            while error is not None:
                parts.append(error.message.strip())
                error = error.cause
            messages.append("\n".join(parts))
    return messages


def month(key: str, source: Source = RELEASES) -> TripMonth:
    return TripMonth.from_key(key, source.colors)


# Keys in the layout existing lakes have (test_layout.py holds the assets' declarations to it).
def raw_key(m: TripMonth) -> str:
    return f"raw/{m.color}/{m.file_stem}.csv.gz"


def published_key(m: TripMonth) -> str:
    return f"data/{m.color}/{m.file_stem}.parquet"


def mirror_settings(mirror: Mirror) -> dict[str, object]:
    """`UpstreamFiles` settings that read from the mirror."""
    # Short pauses between download attempts; the backoff itself is tested in test_upstream.
    return {"base_url": mirror.base_url, "backoff_seconds": 0.01}


def mirror_files(mirror: Mirror):
    """The `upstream_files` resource of the mirror's source, reading from the mirror."""
    from taxi_assets.resources.upstream_files import UpstreamFiles

    return UpstreamFiles.of(mirror.source, **mirror_settings(mirror))


def build_test_defs(target: str, mirror: Mirror) -> dg.Definitions:
    """The code location for the mirror's source."""
    from taxi_assets.definitions import build_defs

    return build_defs(target, mirror.source, **mirror_settings(mirror))


def local_resources(root: Path, mirror: Mirror) -> dict[str, object]:
    """The local target's resources in a folder, reading from the test mirror: for materializing
    single assets with `dg.materialize`."""
    from taxi_assets.io_manager import LakeIOManager
    from taxi_assets.resources.local.lake import LocalLake
    from taxi_assets.resources.local.warehouse import DuckDBWarehouse
    from taxi_assets.resources.workdir import WorkDir

    lake = LocalLake(root=str(root / "lake"))
    return {
        "upstream_files": mirror_files(mirror),
        "workdir": WorkDir(root=str(root / "work")),
        "lake": lake,
        "lake_io_manager": LakeIOManager(lake=lake),
        "warehouse": DuckDBWarehouse(database=str(root / "warehouse.duckdb")),
    }
