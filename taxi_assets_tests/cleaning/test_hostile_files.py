"""Files crafted to exhaust memory or flood the logs go through `clean_trip_file` in a process of
their own: its peak RSS stays within a stated budget, and the failure names the file and what is
wrong in one short line."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import subprocess
import sys
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from taxi_assets.sources import RELEASES

ROOT = Path(__file__).resolve().parents[2]
# Python, pyarrow and the package take ~120 MB here; a month of ordinary rows ~500 MB.
BUDGET_MB = 450
CHILD = """
import datetime as dt, json, re, sys
from pathlib import Path
from taxi_assets.cleaning import BadTripFile, clean_trip_file
from taxi_assets.sources import RELEASES
raw, out = Path(sys.argv[1]), Path(sys.argv[2])
try:
    result = clean_trip_file(raw, out, color="yellow", schema=RELEASES.schemas["yellow"],
                             month_start=dt.date(2021, 1, 1), month_end=dt.date(2021, 2, 1), file_label=raw.name)
    outcome = {"rows": result.rows}
except BadTripFile as exc:
    outcome = {"error": str(exc)}
# VmHWM: this process's own peak (ru_maxrss would carry over the parent's from before exec)
peak_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
outcome["peak_mb"] = peak_kb // 1024
print(json.dumps(outcome))
"""


def _clean_in_a_process(raw: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(raw), str(raw.with_suffix(".out.parquet"))],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, (done.stdout[-1000:], done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _gzip_bomb(path: Path, prefix: bytes, nul_bytes: int) -> Path:
    """`prefix`, then NUL bytes without a newline, gzipped: ~1 MB for each GiB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    block = b"\0" * (1 << 20)
    with open(path, "wb") as out:
        out.write(compressor.compress(prefix))
        for _ in range(nul_bytes // len(block)):
            out.write(compressor.compress(block))
        out.write(compressor.flush())
    return path


def test_a_gzip_bomb_in_the_header_line_stays_in_budget_and_names_the_file(tmp_path):
    raw = _gzip_bomb(tmp_path / "yellow_tripdata_2021-01.csv.gz", b"VendorID,", 1 << 30)
    assert raw.stat().st_size < 2 << 20
    got = _clean_in_a_process(raw)
    assert got["peak_mb"] < BUDGET_MB, got  # it was 2.4 GB, then a bare _csv.Error
    assert got["error"].startswith("yellow_tripdata_2021-01.csv.gz: the first line is longer than 65536 bytes")


def test_a_gzip_bomb_after_the_header_stays_in_budget_and_names_the_file(tmp_path):
    header = ",".join(RELEASES.schemas["yellow"].names).encode() + b"\n"
    raw = _gzip_bomb(tmp_path / "yellow_tripdata_2021-01.csv.gz", header, 1 << 30)
    got = _clean_in_a_process(raw)
    assert got["peak_mb"] < BUDGET_MB, got
    assert got["error"].startswith("yellow_tripdata_2021-01.csv.gz: "), got
    assert len(got["error"]) < 600


def _values(field: pa.Field, rows: int) -> pa.Array:
    if pa.types.is_timestamp(field.type):
        return pa.array([dt.datetime(2021, 1, 15, 12, 0)] * rows, field.type)
    if pa.types.is_string(field.type):
        return pa.array(["N"] * rows, field.type)
    return pa.array([1] * rows, pa.int64()).cast(field.type)


def test_a_small_parquet_file_of_long_dictionary_strings_stays_in_budget(tmp_path):
    """200k rows whose store_and_fwd_flag is one 20 KB string, dictionary-encoded: 2 MB on disk,
    4 GB decoded. Batches are bounded by bytes as well as rows."""
    rows, schema = 200_000, RELEASES.schemas["yellow"]
    long_flag = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["Y" * 20_000]))
    columns = [long_flag if f.name == "store_and_fwd_flag" else _values(f, rows) for f in schema]
    raw = tmp_path / "yellow_tripdata_2021-01.parquet"
    pq.write_table(pa.Table.from_arrays(columns, names=schema.names), raw, store_schema=False, compression="zstd")
    assert raw.stat().st_size < 5 << 20
    got = _clean_in_a_process(raw)
    assert got == {"rows": rows, "peak_mb": got["peak_mb"]}, got  # the rows are all there
    assert got["peak_mb"] < BUDGET_MB, got  # it was 4.25 GB
    flags = pq.read_table(raw.with_suffix(".out.parquet"), columns=["store_and_fwd_flag"]).column(0)
    assert flags.null_count == 0 and set(flags.unique().to_pylist()) == {"Y" * 20_000}


def test_a_corrupt_parquet_footer_names_the_file(tmp_path):
    raw = tmp_path / "yellow_tripdata_2021-01.parquet"
    table = pa.Table.from_arrays(
        [_values(f, 10) for f in RELEASES.schemas["yellow"]], schema=RELEASES.schemas["yellow"]
    )
    pq.write_table(table, raw)
    data = bytearray(raw.read_bytes())
    data[-40:-8] = b"\xff" * 32  # inside the footer, before its length and the magic bytes
    raw.write_bytes(bytes(data))
    got = _clean_in_a_process(raw)
    assert got["error"].startswith("yellow_tripdata_2021-01.parquet: not a readable Parquet file"), got


def test_a_10000_column_header_gives_a_short_message(tmp_path):
    raw = tmp_path / "yellow_tripdata_2021-01.csv.gz"
    with gzip.open(raw, "wt") as out:
        out.write(",".join(f"c{i}" for i in range(10_000)) + "\n1\n")
    got = _clean_in_a_process(raw)
    assert "wrong header for a yellow trip file" in got["error"] and "(9970 more)" in got["error"], got
    assert len(got["error"]) < 3000  # it was 179,000 characters
