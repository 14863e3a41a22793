"""The project's own environment variables, with their defaults, and when they are read.
(Dagster's, Google's and `make serve`'s are listed with these in docs/configuration.md.)

Two moments, on purpose:
- when the code location loads: `TAXI_TARGET` picks the resource classes (local or gcp), because
  the asset graph shows them (kinds, descriptions); `TAXI_SOURCE` picks the upstream, and with it
  the colors, the partition grid and the pinned schemas; `TAXI_LAST_MONTH` ends the releases' grid;
  `TAXI_DATA_DIR` names the DuckDB file that `targets.py` hands to both of its users.
  Changing them means reloading the code location.
- when a run or a sensor tick starts: everything else (lake and work paths, URLs, credentials). Resources hold
  `None` for "from the environment" and call these functions when they are used, never at import,
  so `import taxi_assets.definitions` reads nothing else and a changed value needs no reload.
GCP's required settings (`GCP_PROJECT`, `GCS_BUCKET`, `BQ_DATASET`) are Dagster `EnvVar`s in
`targets.py`: they resolve at launch too, and the UI shows their names, never values.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

TARGETS = ("local", "gcp")
SOURCES = ("releases", "tlc")
DEFAULT_SOURCE_URL = "https://github.com/DataTalksClub/nyc-tlc-data/releases/download"
DEFAULT_TLC_URL = "https://d37ci6vzurychx.cloudfront.net"


def target() -> str:
    """TAXI_TARGET: `local` (a folder and DuckDB, the default) or `gcp` (GCS and BigQuery)."""
    value = os.environ.get("TAXI_TARGET", "local")
    if value not in TARGETS:
        raise ValueError(f"TAXI_TARGET must be one of {TARGETS}, got {value!r}")
    return value


def source() -> str:
    """TAXI_SOURCE: `releases` (DataTalksClub's CSV releases, 2019-01..2021-07, the default) or
    `tlc` (the TLC's own Parquet files, 2011 to this month, four colors)."""
    value = os.environ.get("TAXI_SOURCE", "releases")
    if value not in SOURCES:
        raise ValueError(f"TAXI_SOURCE must be one of {SOURCES}, got {value!r}")
    return value


def tlc_url() -> str:
    """TAXI_TLC_URL: the TLC's base URL, `{base}/trip-data/{color}_tripdata_{YYYY-MM}.parquet`."""
    return os.environ.get("TAXI_TLC_URL") or DEFAULT_TLC_URL


def last_month() -> dt.date:
    """TAXI_LAST_MONTH (YYYY-MM, default 2021-07, the releases' last month): the grid's last month."""
    value = os.environ.get("TAXI_LAST_MONTH") or "2021-07"
    try:
        return dt.date.fromisoformat(f"{value}-01")
    except ValueError:
        raise ValueError(f"TAXI_LAST_MONTH must be a month like 2021-07, got {value!r}") from None


def data_dir() -> Path:
    """TAXI_DATA_DIR (default ./data): the local target's lake and warehouse live here."""
    return Path(os.environ.get("TAXI_DATA_DIR") or "data").resolve()


def lake_root() -> Path:
    """The local target's lake folder: `$TAXI_DATA_DIR/lake`."""
    return data_dir() / "lake"


def duckdb_path() -> Path:
    """The local target's DuckDB file: `$TAXI_DATA_DIR/warehouse.duckdb`."""
    return data_dir() / "warehouse.duckdb"


def work_dir() -> Path:
    """TAXI_WORK_DIR: local disk for files in the making (downloads, Parquet being written).

    Default: `$TAXI_DATA_DIR/work` on the local target, so that storing a finished file in the lake
    is a rename on the same filesystem, never a copy; the system's temp folder on gcp.
    """
    if os.environ.get("TAXI_WORK_DIR"):
        return Path(os.environ["TAXI_WORK_DIR"]).resolve()
    if target() == "local":
        return data_dir() / "work"
    return Path(tempfile.gettempdir()) / "taxi_assets_work"


def source_url() -> str:
    """TAXI_SOURCE_URL: the release base URL, `{base}/{color}/{color}_tripdata_{YYYY-MM}.csv.gz`."""
    return os.environ.get("TAXI_SOURCE_URL") or DEFAULT_SOURCE_URL


def progress_seconds() -> float:
    """TAXI_PROGRESS_SECONDS (default 5): at most one progress line per step this often in a run's
    log (0: a line for every chunk or batch). Read when a step starts."""
    value = os.environ.get("TAXI_PROGRESS_SECONDS") or "5"
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # NaN too
        raise ValueError(f"TAXI_PROGRESS_SECONDS must be a number of seconds, 0 or more, got {value!r}")
    return seconds


def automation_interval_seconds() -> int:
    """TAXI_AUTOMATION_INTERVAL_SECONDS (default 10): how often the sensor `analytics_automation`
    evaluates the analytics assets' conditions. Read when the code location loads. Dagster's asset
    daemon looks at its sensors every 5 s at most, so less than 5 changes nothing; each tick costs
    the daemon a few hundredths of a CPU second (docs/performance.md#from-a-backfill-to-the-chart)."""
    value = os.environ.get("TAXI_AUTOMATION_INTERVAL_SECONDS") or "10"
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"TAXI_AUTOMATION_INTERVAL_SECONDS must be whole seconds, 1 or more, got {value!r}")
    return int(value)


def bq_location() -> str:
    """BQ_LOCATION (default US): where the BigQuery dataset is created when missing."""
    return os.environ.get("BQ_LOCATION") or "US"


def gcp_credentials() -> str | None:
    """GCP_CREDENTIALS: an optional base64 service-account key (else Application Default Credentials)."""
    return os.environ.get("GCP_CREDENTIALS") or None


def _number(name: str, default: float, minimum: float) -> float:
    value = os.environ.get(name) or str(default)
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name} must be at least {minimum:g}, got {value!r}")
    return number


def retention_days() -> float:
    """TAXI_RETENTION_DAYS (default 30): the retention job removes compute logs, sensor and schedule
    ticks, and runs that hold no partition's latest materialization or check, once older than this.
    30 days covers a month of the hourly sensor and one run of the monthly schedule, enough to see
    why a partition changed; what each partition holds now is never removed (retention.py)."""
    return _number("TAXI_RETENTION_DAYS", 30, 0)


def retention_cron() -> str:
    """TAXI_RETENTION_CRON (default `17 3 * * *`, daily at 03:17 UTC): when the retention schedule
    runs; read when the code location loads."""
    return os.environ.get("TAXI_RETENTION_CRON") or "17 3 * * *"


def min_free_mb() -> float:
    """TAXI_MIN_FREE_MB (default 1024): `make serve` and `make worker` warn at start when
    DAGSTER_HOME, the work folder or TAXI_DATA_DIR has less free. The biggest upstream months are
    about 1 GB, and a run holds its download and its Parquet in the work folder before the lake
    takes them: below 1 GB the next big month can fill the disk mid-run."""
    return _number("TAXI_MIN_FREE_MB", 1024, 0)
