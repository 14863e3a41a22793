"""The seed Prefect flow's three tasks, without Prefect: fetch -> clean -> write_local.

    fetch:       pd.read_csv(url)
    clean:       pd.to_datetime on the two pickup/dropoff columns
    write_local: df.to_parquet(path, compression="gzip")

Prints one JSON line with each step's seconds and the output path.
"""

import json
import sys
import time
from pathlib import Path

import pandas as pd


def main(url: str, out_dir: str, color: str = "yellow") -> None:
    """Run the seed's fetch, clean and write on `url` into `out_dir`; print the seconds per step as JSON."""
    seconds = {}
    t = time.perf_counter()
    df = pd.read_csv(url)
    seconds["fetch"] = time.perf_counter() - t

    t = time.perf_counter()
    prefix = {"yellow": "tpep", "green": "lpep"}[color]
    df[f"{prefix}_pickup_datetime"] = pd.to_datetime(df[f"{prefix}_pickup_datetime"])
    df[f"{prefix}_dropoff_datetime"] = pd.to_datetime(df[f"{prefix}_dropoff_datetime"])
    seconds["clean"] = time.perf_counter() - t

    t = time.perf_counter()
    path = Path(out_dir) / f"{url.rsplit('/', 1)[-1].removesuffix('.csv.gz')}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, compression="gzip")
    seconds["write_local"] = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "rows": len(df), "path": str(path)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
