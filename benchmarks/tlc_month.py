"""The TLC source's biggest shape: a high-volume FHV (fhvhv) month of ~20M rows written as ONE row
group (as the TLC wrote yellow 2023-01), through `dagster asset materialize` with TAXI_SOURCE=tlc.
Prints step times, wall time and peak RSS (target: under 1 GB).

    .venv/bin/python benchmarks/tlc_month.py               # 20,000,000 rows
    .venv/bin/python benchmarks/tlc_month.py --rows 2000000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BIN, PACKAGE_ROOT, STEP_DONE, run_measured  # noqa: E402

from taxi_assets.mirror import serve_folder  # noqa: E402

MONTH = "2023-01"


def generate_fhvhv(path: Path, rows: int, seed: int = 7) -> Path:
    """A month of fhvhv trips in the TLC's 2023 types (int32 ids, large_string), one row group."""
    rng = np.random.default_rng(seed)
    start = np.datetime64(f"{MONTH}-01T00:00:00", "us").astype(np.int64)
    pickup = np.sort(start + rng.integers(0, 31 * 86_400_000_000, rows))
    request = pickup - rng.integers(60_000_000, 900_000_000, rows)
    minutes = rng.gamma(2.0, 9.0, rows)
    dropoff = pickup + (minutes * 60_000_000).astype(np.int64)

    def ts(values):
        return pa.array(values, pa.timestamp("us"))

    def flag(p_yes):
        return pa.array(np.where(rng.random(rows) < p_yes, "Y", "N"), pa.large_string())

    base = np.round(rng.gamma(2.5, 9.0, rows), 2)
    licenses = np.array(["HV0003", "HV0005"])[rng.integers(0, 2, rows)]
    table = pa.table(
        {
            "hvfhs_license_num": pa.array(licenses, pa.large_string()),
            "dispatching_base_num": pa.array(np.where(licenses == "HV0003", "B03404", "B03406"), pa.large_string()),
            "originating_base_num": pa.array(np.where(licenses == "HV0003", "B03404", None), pa.large_string()),
            "request_datetime": ts(request),
            "on_scene_datetime": ts(request + 120_000_000),
            "pickup_datetime": ts(pickup),
            "dropoff_datetime": ts(dropoff),
            "PULocationID": pa.array(rng.integers(1, 266, rows), pa.int32()),
            "DOLocationID": pa.array(rng.integers(1, 266, rows), pa.int32()),
            "trip_miles": np.round(rng.gamma(1.6, 3.0, rows), 2),
            "trip_time": (minutes * 60).astype(np.int64),
            "base_passenger_fare": base,
            "tolls": np.where(rng.random(rows) < 0.06, 6.55, 0.0),
            "bcf": np.round(base * 0.03, 2),
            "sales_tax": np.round(base * 0.088, 2),
            "congestion_surcharge": np.where(rng.random(rows) < 0.7, 2.75, 0.0),
            "airport_fee": np.where(rng.random(rows) < 0.05, 2.5, 0.0),
            "tips": np.where(rng.random(rows) < 0.2, np.round(base * 0.15, 2), 0.0),
            "driver_pay": np.round(base * 0.72, 2),
            "shared_request_flag": flag(0.01),
            "shared_match_flag": flag(0.005),
            "access_a_ride_flag": flag(0.0),
            "wav_request_flag": flag(0.05),
            "wav_match_flag": flag(0.1),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=rows, compression="snappy")  # one row group, as the TLC wrote some
    return path


def main() -> None:
    """Generate the fhvhv month once (cached), then time and measure materializing it `--repeat` times."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parents[1] / "bench")
    args = parser.parse_args()
    mirror = args.workdir / f"mirror_fhvhv_{args.rows}"
    source = mirror / "trip-data" / f"fhvhv_tripdata_{MONTH}.parquet"
    if not source.exists():
        print(f"generating {args.rows:,} fhvhv rows in one row group -> {source} ...", flush=True)
        generate_fhvhv(source, args.rows)
    footer = pq.read_metadata(source)
    size = source.stat().st_size / 1e6
    print(f"== fhvhv {MONTH}: {footer.num_rows:,} rows, {footer.num_row_groups} row group(s), {size:.0f} MB ==")
    walls, rss, steps = [], [], []
    with serve_folder(mirror) as base_url:
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
                (Path(tmp) / "home").mkdir()
                env = {
                    **os.environ,
                    "TAXI_SOURCE": "tlc",
                    "TAXI_TLC_URL": base_url,
                    "TAXI_DATA_DIR": f"{tmp}/data",
                    "DAGSTER_HOME": f"{tmp}/home",
                }
                command = [str(BIN / "dagster"), "asset", "materialize", "-m", "taxi_assets.definitions"]
                command += ["--select", "*bq_rides_table", "--partition", f"fhvhv|{MONTH}-01"]
                wall, peak, text = run_measured(command, env, Path(tmp) / "run.log", cwd=PACKAGE_ROOT)
                unit = {"ms": 0.001, "s": 1.0, "m": 60.0}
                steps.append({name: float(v) * unit[u] for name, v, u in STEP_DONE.findall(text)})
                walls.append(wall)
                rss.append(peak)
    step_names = list(steps[0])
    print(
        f"median of {args.repeat}: "
        + ", ".join(f"{n} {statistics.median(s[n] for s in steps):.2f} s" for n in step_names)
        + f"; wall {statistics.median(walls):.1f} s; peak RSS {statistics.median(rss):.0f} MB",
        flush=True,
    )


if __name__ == "__main__":
    main()
