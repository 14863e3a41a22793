"""The long run: `make serve` on the Celery layout left alone for months while the TLC publishes.

    .venv/bin/python benchmarks/soak.py                 # 24 simulated months (10 to 23 minutes here)
    .venv/bin/python benchmarks/soak.py --months 3      # a short one

What runs, as a user deploys it: a throwaway PostgreSQL cluster (the instance), a throwaway Redis
(the Celery broker), `make serve` (deploy/serve.py: code server, webserver, daemon, lost-task
watchdog) with `TAXI_SOURCE=tlc` on the local target, and one `make worker` (deploy/worker.py)
sharing its TAXI_DATA_DIR. `upstream_files_sensor` and `newest_month_schedule` are turned on over
GraphQL, as in the UI; the automation sensor, the grid upkeep and the retention schedule are on by
themselves. Upstream is a loopback mirror of the TLC's layout (`trip-data/{color}_tripdata_{YYYY-MM}.parquet`,
404 for a month not out) with small files (ROWS rows, shaped like the TLC's newest schema era):
only yellow and green are published, to keep a simulated month around a minute.

The clock: every service process (serve.py and all it starts, the worker and its Celery pool, the
runs) runs its wall clock at real time plus an offset read from a file (benchmarks/soak_clock/
sitecustomize.py, time-machine; the monotonic clock stays real, so Python's timed waits and
Dagster's loop intervals keep working). Rewriting the file moves them all within 0.1 s, with no
restart: the same processes keep the definitions loaded at the start for every month of the run.
PostgreSQL keeps the real clock. Before the run, the calendar is 2026-12-24; each simulated month
C then takes two jumps, and waits for the runs they bring:

- A, C-25 05:30 UTC (a month less 30 minutes after the last B): the mirror has just published
  yellow C-2 and revised an older yellow file (C-6, a few more rows): the sensor (hourly) loads both.
  Crossing the 1st of C, the retention schedule (TAXI_RETENTION_CRON, set monthly here) ran.
- B, C-25 06:00:30: green C-2 was published at 05:45: the schedule (06:00 on the 25th) loads it;
  yellow C-2 it finds loaded, fhv and fhvhv not out. The sensor is not due (30 minutes since A).

A jump is made only when no run is in flight (a run STARTING across a jump would look minutes late
to run monitoring). The code server's gRPC child shuts itself down when no heartbeat came within
DAGSTER_GRPC_PROXY_HEARTBEAT_TTL_SECONDS by its own wall clock, so a jump of a month would look like
a month without heartbeats: the soak sets that TTL to 40 days (Dagster's documented variable), so
what it shows is the same serving process (the PIDs are compared around every jump) keeping up.

Printed per simulated month: ticks run and failed (upstream sensor, schedule, grid upkeep,
automation, retention), runs launched and failed, partitions loaded and revised, the resident size
and open descriptors of the daemon, webserver, code server, its gRPC child, the worker and its
Celery pool processes (together), the size of DAGSTER_HOME (the service's and the worker's), of the
PostgreSQL database, of the work folders, of the lake and of the warehouse. Then the first and last
months side by side, each figure's growth per month over the last 12 months, and the targets: no
failed tick, no failed run, every published month loaded once and every revision reloaded once,
the same serving PIDs, every figure flat but the lake and warehouse (the data).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
from taxi_assets.mirror import serve_folder  # noqa: E402
from taxi_assets.run_history import TRIGGER_TAG  # noqa: E402
from taxi_assets_harness.graphql import graphql, run_tags, runs, wait_until  # noqa: E402
from taxi_assets_harness.instances import make_serve, make_worker  # noqa: E402
from taxi_assets_harness.postgres import postgres_server  # noqa: E402
from taxi_assets_harness.redis import redis_server  # noqa: E402
from taxi_assets_tests.tlc.eras import ERAS, write_era  # noqa: E402

UTC = dt.timezone.utc
CLOCK_DIR = ROOT / "benchmarks" / "soak_clock"
ZONES = ROOT / "taxi_assets_tests" / "fixtures" / "real" / "taxi_zone_lookup.csv"
SETUP_AT = dt.datetime(2026, 12, 24, 12, 0, tzinfo=UTC)  # the calendar when the deployment starts
FIRST_MONTH = dt.date(2026, 12, 1)  # the first simulated month
# A few thousand rows: the soak is about what months of ticks and runs leave behind, not throughput.
ROWS = 2_000
# Longer than a jump (a month): the gRPC child compares heartbeats with its own wall clock.
HEARTBEAT_TTL_SECONDS = 40 * 86_400
REPOSITORY = {"repositoryLocationName": "taxi_assets", "repositoryName": "__repository__"}
SENSORS = {"sensor": "upstream_files_sensor", "upkeep": "grid_upkeep_sensor", "automation": "analytics_automation"}
SCHEDULES = {"schedule": "newest_month_schedule", "retention": "retention_schedule"}
IN_FLIGHT = ["NOT_STARTED", "QUEUED", "STARTING", "STARTED", "CANCELING"]
ROLES = {  # the first key found in a process's command line names it
    "api grpc": "grpc child",
    "code-server": "code server",
    "dagster-webserver": "webserver",
    "dagster-daemon": "daemon",
    "taxi_celery:app": "worker",
}
SERVING = ("code server", "grpc child", "webserver", "daemon")  # their PIDs must not change
# Flat: over the last FLAT_MONTHS simulated months, a process's resident size grows less than
# PROCESS_MB_PER_MONTH (a tenth of what Python's allocator moves between two looks) and its
# descriptors less than FDS_PER_MONTH (none leaked every month). The database, lake and warehouse
# grow with the months loaded: the soak prints their growth per month beside the data's. The
# worker's pool processes grow with the runs they ran and are replaced after 50 (a sawtooth):
# printed, not held to this.
FLAT_MONTHS = 12
PROCESS_MB = ("daemon MB", "webserver MB", "code server MB", "grpc child MB", "worker MB")
PROCESS_MB_PER_MONTH = 1.0
FDS_PER_MONTH = 0.25


def month_add(month: dt.date, n: int) -> dt.date:
    y, m = divmod(month.year * 12 + month.month - 1 + n, 12)
    return dt.date(y, m + 1, 1)


def key(color: str, month: dt.date) -> str:
    return f"{color}|{month:%Y-%m-%d}"


class Clock:
    """The services' wall clock: the offset file that benchmarks/soak_clock/sitecustomize.py reads."""

    def __init__(self, path: Path, at: dt.datetime):
        self.path = path
        self.set(at)

    def set(self, at: dt.datetime) -> None:
        self.offset = at.timestamp() - time.time()
        partial = self.path.with_suffix(".new")
        partial.write_text(f"{self.offset:.3f}\n")
        partial.replace(self.path)  # atomic: a reader sees the old offset or the new one

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(time.time() + self.offset, UTC)


class TlcMirror:
    """A folder in the TLC's layout, served on 127.0.0.1, that publishes and revises files."""

    def __init__(self, root: Path, rows: int):
        self.root, self.rows = root, rows
        (root / "misc").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ZONES, root / "misc" / "taxi_zone_lookup.csv")
        self.sizes: dict[str, int] = {}

    def publish(self, color: str, month: dt.date, at: dt.datetime, extra_rows: int = 0) -> str:
        newest = max((e for e in ERAS if e.color == color), key=lambda e: e.month)
        path = self.root / "trip-data" / f"{color}_tripdata_{month:%Y-%m}.parquet"
        write_era(dataclasses.replace(newest, month=f"{month:%Y-%m}"), path, rows=self.rows + extra_rows)
        os.utime(path, (at.timestamp(), at.timestamp()))  # Last-Modified: when the TLC put it out
        return key(color, month)


# -- what the deployment did, as the UI reads it (GraphQL) -------------------------------------------

TICKS = """
query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor { sensorState {
  ticks(limit: 500) { tickId status timestamp runIds error { message } } } } } }
"""
SCHEDULE_TICKS = """
query($s: ScheduleSelector!) { scheduleOrError(scheduleSelector: $s) { ... on Schedule { scheduleState {
  ticks(limit: 500) { tickId status timestamp runIds error { message } } } } } }
"""


def ticks(port: int, figure: str) -> list[dict]:
    if figure in SENSORS:
        found = graphql(port, TICKS, {"s": {**REPOSITORY, "sensorName": SENSORS[figure]}})["sensorOrError"]
        return found["sensorState"]["ticks"]
    found = graphql(port, SCHEDULE_TICKS, {"s": {**REPOSITORY, "scheduleName": SCHEDULES[figure]}})
    return found["scheduleOrError"]["scheduleState"]["ticks"]


def all_runs(port: int, statuses: list[str] | None = None) -> list[dict]:
    """Every run the webserver lists, or those in `statuses`."""
    return runs(port, {"statuses": statuses} if statuses else None)


def failure(port: int, run_id: str) -> str:
    """What a failed run's log says about why (its step failures, or the run's failure)."""
    events = graphql(
        port,
        f'{{ runOrError(runId: "{run_id}") {{ ... on Run {{ eventConnection {{ events {{ __typename '
        f"... on MessageEvent {{ message }} ... on ExecutionStepFailureEvent {{ stepKey error {{ message "
        f"cause {{ message }} }} }} "
        f"... on RunFailureEvent {{ pipelineFailureError: error {{ message }} }} }} }} }} }} }}",
    )["runOrError"]["eventConnection"]["events"]
    said = []
    for event in events:
        if event["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent"):
            error = event.get("error") or event.get("pipelineFailureError") or {}
            cause = (error.get("cause") or {}).get("message")
            said.append(f"{event.get('stepKey') or 'run'}: {cause or error.get('message') or event['message']}")
    return " | ".join(m.strip()[:400] for m in said)


def turn_on(port: int) -> None:
    started = graphql(
        port,
        "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename } }",
        {"s": {**REPOSITORY, "sensorName": SENSORS["sensor"]}},
    )["startSensor"]
    assert started["__typename"] == "Sensor", started
    started = graphql(
        port,
        "mutation($s: ScheduleSelector!) { startSchedule(scheduleSelector: $s) { __typename } }",
        {"s": {**REPOSITORY, "scheduleName": SCHEDULES["schedule"]}},
    )["startSchedule"]
    assert started["__typename"] == "ScheduleStateResult", started


# -- the processes and the disk ----------------------------------------------------------------------


def _descendants(root_pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [root_pid]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def processes() -> dict[str, list[dict]]:
    """The service's processes by role: pid, parent, resident MB, open descriptors."""
    by_role: dict[str, list[dict]] = {}
    for pid in _descendants(os.getpid()):
        proc = Path("/proc") / str(pid)
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
            fds = len(os.listdir(proc / "fd"))
        except OSError:
            continue
        role = next((r for k, r in ROLES.items() if k in cmdline), None)
        if role:
            rss = int(status.get("VmRSS", "0 kB").split()[0]) / 1024
            by_role.setdefault(role, []).append({"pid": pid, "ppid": int(status["PPid"]), "rss": rss, "fds": fds})
    # Celery's pool processes (children of the worker) are replaced after 50 runs each
    # (DAGSTER_CELERY_MAX_TASKS_PER_CHILD): counted apart from the worker process that stays.
    workers = by_role.pop("worker", [])
    pids = {p["pid"] for p in workers}
    by_role["worker"] = [p for p in workers if p["ppid"] not in pids]
    by_role["worker pool"] = [p for p in workers if p["ppid"] in pids]
    return by_role


def serving_pids(by_role: dict[str, list[dict]]) -> dict[str, tuple[int, ...]]:
    pids = {role: tuple(sorted(p["pid"] for p in by_role.get(role, []))) for role in SERVING}
    pids["worker"] = tuple(sorted(p["pid"] for p in by_role.get("worker", [])))
    return pids


def folder_mb(*folders: Path) -> float:
    total = 0
    for folder in folders:
        if folder.is_file():
            total += folder.stat().st_size
        for path in folder.rglob("*") if folder.is_dir() else ():
            with contextlib.suppress(OSError):
                if path.is_file():
                    total += path.stat().st_size
    return total / 2**20


# -- the soak ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Soak:
    port: int
    clock: Clock
    mirror: TlcMirror
    workdir: Path
    database_mb: Callable[[], float]
    database_tables: Callable[[], list]
    out: Callable[[str], None] = print
    expected: Counter = dataclasses.field(default_factory=Counter)  # key -> loads it should have had
    revisions: set = dataclasses.field(default_factory=set)
    runs: dict = dataclasses.field(default_factory=dict)  # run id -> the latest look at it
    ticks_seen: dict = dataclasses.field(default_factory=dict)  # figure -> tick ids already counted
    runs_counted: set = dataclasses.field(default_factory=set)
    pid_changes: list = dataclasses.field(default_factory=list)
    pids_at_start: dict = dataclasses.field(default_factory=dict)
    pids_at_end: dict = dataclasses.field(default_factory=dict)
    rows: list = dataclasses.field(default_factory=list)

    def quiet(self, timeout: float = 600) -> None:
        """Until no run is queued, starting or running."""
        wait_until(lambda: not all_runs(self.port, IN_FLIGHT), timeout, "no run in flight", interval=1)

    def jump(self, at: dt.datetime, figure: str, since: dt.datetime) -> None:
        """Move every clock to `at`, with no run in flight; wait for `figure`'s tick at or after
        `since` (the tick's own time: a schedule's is its cron time) and for the runs it requested."""
        self.quiet()
        before = serving_pids(processes())
        self.clock.set(at)

        def ticked():
            found = [t for t in ticks(self.port, figure) if t["timestamp"] >= since.timestamp() - 1]
            return [t for t in found if t["status"] != "STARTED"]

        done = wait_until(ticked, 300, f"{figure}'s tick after {at:%Y-%m-%d %H:%M}", interval=1)
        self.quiet()
        after = serving_pids(processes())
        if before != after:
            self.pid_changes.append((at, before, after))
        for tick in done:
            if tick["error"]:
                self.out(f"  {figure} tick at {at:%Y-%m-%d %H:%M} failed: {tick['error']['message'][:300]}")

    def setup(self, history: dict[str, list[dt.date]]) -> None:
        """The deployment's first day: what upstream has so far, the sensor and schedule turned on."""
        for color, months in history.items():
            for month in months:
                self.expected[self.mirror.publish(color, month, SETUP_AT - dt.timedelta(days=60))] += 1
        turn_on(self.port)  # the sensor's first tick comes at once: it loads the history
        wait_until(
            lambda: [t for t in ticks(self.port, "sensor") if t["status"] != "STARTED"], 180, "the sensor's first tick"
        )
        self.quiet()
        self.report("setup")

    def month(self, month: dt.date) -> None:
        """One simulated calendar month (see the module's docstring)."""
        at_a = dt.datetime.combine(month.replace(day=25), dt.time(5, 30), UTC)
        new = month_add(month, -2)
        self.expected[self.mirror.publish("yellow", new, at_a - dt.timedelta(hours=1))] += 1
        old = month_add(month, -6)
        revised = self.mirror.publish("yellow", old, at_a - dt.timedelta(minutes=30), extra_rows=7)
        self.expected[revised] += 1
        self.revisions.add(revised)
        self.jump(at_a, "sensor", at_a)
        self.expected[self.mirror.publish("green", new, at_a + dt.timedelta(minutes=15))] += 1
        cron = at_a.replace(hour=6, minute=0)
        self.jump(cron + dt.timedelta(seconds=30), "schedule", cron)
        self.report(f"{month:%Y-%m}")

    def settle(self, timeout: float = 300) -> None:
        """Until the automation sensor has ticked, requesting nothing, after the last run ended."""

        def settled():
            if all_runs(self.port, IN_FLIGHT):
                return False
            last_end = max((r["endTime"] or 0 for r in all_runs(self.port)), default=0)
            latest = ticks(self.port, "automation")[:1]
            return latest and latest[0]["timestamp"] > last_end and latest[0]["status"] == "SKIPPED"

        wait_until(settled, timeout, "the automation sensor to request nothing more", interval=2)

    def report(self, label: str) -> dict:
        row: dict = {"month": label, "clock": f"{self.clock.now():%Y-%m-%d}"}
        for figure in (*SENSORS, *SCHEDULES):
            seen = self.ticks_seen.setdefault(figure, set())
            new = [t for t in ticks(self.port, figure) if t["tickId"] not in seen and t["status"] != "STARTED"]
            seen.update(t["tickId"] for t in new)
            row[f"{figure} ticks"] = len(new)
            row[f"{figure} failed"] = sum(t["status"] == "FAILURE" for t in new)
        for run in all_runs(self.port):
            if run["status"] == "FAILURE" and self.runs.get(run["runId"], {}).get("status") != "FAILURE":
                run["why"] = failure(self.port, run["runId"])
                self.out(f"  run {run['runId']} ({run['jobName']}) failed: {run['why']}")
            self.runs[run["runId"]] = run
        finished = [r for r in self.runs.values() if r["status"] not in IN_FLIGHT]
        new_runs = [r for r in finished if r["runId"] not in self.runs_counted]
        self.runs_counted.update(r["runId"] for r in new_runs)
        trips = [r for r in new_runs if r["jobName"] == "trips_job" and r["status"] == "SUCCESS"]
        triggers = Counter(run_tags(r).get(TRIGGER_TAG) for r in trips)
        row |= {
            "runs": len(new_runs),
            "runs failed": sum(r["status"] != "SUCCESS" for r in new_runs),
            "loaded": triggers["new"] + triggers["schedule"],
            "revised": triggers["changed"],
        }
        by_role = processes()
        for role in (*SERVING, "worker", "worker pool"):
            found = by_role.get(role, [])
            row[f"{role} MB"] = sum(p["rss"] for p in found)
            row[f"{role} fds"] = sum(p["fds"] for p in found)
        data = self.workdir / "data"
        row["DAGSTER_HOME MB"] = folder_mb(self.workdir / "home", self.workdir / "w1" / "home")
        tick_logs = self.workdir / "home" / "storage" / "__repository__"  # a file per tick that logged
        row["tick logs"] = sum(1 for path in tick_logs.rglob("*") if path.is_file())
        row["database MB"] = self.database_mb()
        row["work MB"] = folder_mb(data / "work", self.workdir / "w1" / "work")
        row["lake MB"] = folder_mb(data / "lake")
        row["warehouse MB"] = folder_mb(data / "warehouse.duckdb")
        self.rows.append(row)
        self.out(format_row(row, header=len(self.rows) == 1))
        return row

    def loads(self) -> Counter:
        """Successful trips_job runs per partition, over the whole soak (retention deletes old runs
        from the instance; every run was looked at before it could)."""
        return Counter(
            run_tags(r)["dagster/partition"]
            for r in self.runs.values()
            if r["jobName"] == "trips_job" and r["status"] == "SUCCESS"
        )

    def problems(self) -> list[str]:
        """The targets that failed, in words (empty: all met)."""
        found = []
        for figure in (*SENSORS, *SCHEDULES):
            failed = sum(row[f"{figure} failed"] for row in self.rows)
            if failed:
                found.append(f"{failed} failed {figure} ticks")
        failed_runs = [r for r in self.runs.values() if r["status"] not in ("SUCCESS", *IN_FLIGHT)]
        for run in failed_runs:
            found.append(
                f"run {run['runId']} ({run['jobName']}, {run_tags(run).get('dagster/partition')}) "
                f"{run['status']}: {run.get('why', '')}"
            )
        loads, expected = self.loads(), self.expected
        if loads != expected:
            wrong = {k: (loads[k], expected[k]) for k in set(loads) | set(expected) if loads[k] != expected[k]}
            found.append(f"partitions loaded a different number of times than published (loads, expected): {wrong}")
        for at, before, after in self.pid_changes:
            found.append(f"serving processes changed at the jump to {at:%Y-%m-%d %H:%M}: {before} -> {after}")
        return found


COLUMNS = [
    ("month", "month", "{}"),
    ("sensor ticks", "sens", "{}"),
    ("schedule ticks", "sched", "{}"),
    ("upkeep ticks", "upk", "{}"),
    ("automation ticks", "auto", "{}"),
    ("retention ticks", "ret", "{}"),
    ("ticks failed", "tfail", "{}"),
    ("runs", "runs", "{}"),
    ("runs failed", "rfail", "{}"),
    ("loaded", "load", "{}"),
    ("revised", "rev", "{}"),
    ("daemon MB", "daemon", "{:.0f}"),
    ("webserver MB", "web", "{:.0f}"),
    ("code server MB", "code", "{:.0f}"),
    ("grpc child MB", "grpc", "{:.0f}"),
    ("worker MB", "worker", "{:.0f}"),
    ("worker pool MB", "pool", "{:.0f}"),
    ("daemon fds", "fd:dmn", "{}"),
    ("webserver fds", "web", "{}"),
    ("code server fds", "code", "{}"),
    ("grpc child fds", "grpc", "{}"),
    ("worker fds", "wrk", "{}"),
    ("worker pool fds", "pool", "{}"),
    ("DAGSTER_HOME MB", "home", "{:.1f}"),
    ("tick logs", "tlogs", "{}"),
    ("database MB", "pg", "{:.1f}"),
    ("work MB", "work", "{:.2f}"),
    ("lake MB", "lake", "{:.2f}"),
    ("warehouse MB", "wh", "{:.1f}"),
]


def format_row(row: dict, header: bool = False) -> str:
    row = {**row, "ticks failed": sum(row[f"{f} failed"] for f in (*SENSORS, *SCHEDULES))}
    line = " ".join(f"{fmt.format(row[name]):>{max(len(short), 6)}}" for name, short, fmt in COLUMNS)
    if not header:
        return line
    title = " ".join(f"{short:>{max(len(short), 6)}}" for _, short, _ in COLUMNS)
    return f"{title}\n{line}"


def flatness(rows: list[dict], last: int) -> dict[str, float]:
    """Each figure's growth per simulated month over the last `last` months (least squares)."""
    tail = rows[-last:]
    out = {}
    for name, _, _ in COLUMNS[COLUMNS.index(("daemon MB", "daemon", "{:.0f}")) :]:
        values = [row[name] for row in tail]
        if len(values) < 2:
            continue
        out[name] = statistics.linear_regression(range(len(values)), values).slope
    return out


@contextlib.contextmanager
def deployment(workdir: Path, rows: int, out: Callable[[str], None] = print) -> Iterator[Soak]:
    """PostgreSQL, Redis, the mirror, `make serve` and one `make worker`, all on the soak's clock."""
    clock = Clock(workdir / "clock", SETUP_AT)
    mirror = TlcMirror(workdir / "mirror", rows)
    with (
        postgres_server(workdir / "pg") as pg,
        redis_server(workdir / "redis") as broker,
        serve_folder(mirror.root) as base_url,
    ):
        env = {
            "TAXI_SOURCE": "tlc",
            "TAXI_TARGET": "local",
            "TAXI_TLC_URL": base_url,
            "TAXI_DATA_DIR": str(workdir / "data"),  # the worker's too: the local target's shared folder
            "TAXI_RETENTION_CRON": "17 3 1 * *",  # monthly: a daily one would catch up 5 runs per jump
            "DAGSTER_CELERY_BROKER_URL": broker.url,
            "DAGSTER_GRPC_PROXY_HEARTBEAT_TTL_SECONDS": str(HEARTBEAT_TTL_SECONDS),
            "SOAK_CLOCK_FILE": str(clock.path),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(CLOCK_DIR), os.environ.get("PYTHONPATH")])),
        }

        def database_tables() -> list[tuple[str, int, float]]:
            """The database's biggest tables: name, live rows, MB with their indexes and TOAST."""
            with contextlib.closing(pg.connect("dagster")) as conn, conn.cursor() as cursor:
                cursor.execute(
                    "SELECT relname, n_live_tup, pg_total_relation_size(relid) / 1048576.0 FROM pg_stat_user_tables "
                    "ORDER BY 3 DESC LIMIT 8"
                )
                return [(name, rows, float(mb)) for name, rows, mb in cursor.fetchall()]

        def database_mb() -> float:
            with contextlib.closing(pg.connect("dagster")) as conn, conn.cursor() as cursor:
                cursor.execute("SELECT pg_database_size(current_database())")
                return cursor.fetchone()[0] / 2**20

        with make_serve(workdir, pg.url, env) as port, make_worker(workdir / "w1", pg.url, broker.url, env):
            yield Soak(port, clock, mirror, workdir, database_mb, database_tables, out)


# Upstream before the deployment starts: the months a new deployment's first sensor tick loads.
HISTORY = {
    "yellow": [dt.date(2026, 6, 1), dt.date(2026, 7, 1), dt.date(2026, 8, 1), dt.date(2026, 9, 1)],
    "green": [dt.date(2026, 9, 1)],
}


def run_soak(workdir: Path, months: int, rows: int = ROWS, out: Callable[[str], None] = print) -> Soak:
    """The soak for `months` simulated months from FIRST_MONTH; returns it with its figures."""
    with deployment(workdir, rows, out) as soak:
        soak.pids_at_start = serving_pids(processes())
        out(f"serving processes at the start: {soak.pids_at_start}")
        soak.setup(HISTORY)
        tables_at_start = soak.database_tables()
        for n in range(months):
            soak.month(month_add(FIRST_MONTH, n))
        soak.settle()
        soak.report("settled")
        at_start = {name: (rows, mb) for name, rows, mb in tables_at_start}
        out("biggest tables (live rows, MB with indexes), after the setup and at the end:")
        for name, rows, mb in soak.database_tables():
            then = at_start.get(name, (0, 0.0))
            out(f"  {name:28} {then[0]:>8} {then[1]:>7.2f}  ->  {rows:>8} {mb:>7.2f}")
        soak.pids_at_end = serving_pids(processes())
        out(f"serving processes at the end:   {soak.pids_at_end}")
    return soak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--months", type=int, default=24, help="simulated months (default 24)")
    parser.add_argument("--rows", type=int, default=ROWS, help="rows per published file")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    started, load_before = time.monotonic(), os.getloadavg()
    tmp = Path(tempfile.mkdtemp(dir=args.workdir, prefix="soak-"))
    soak = run_soak(tmp, args.months, args.rows)  # on failure, tmp stays for its logs
    wall = time.monotonic() - started
    months = [row for row in soak.rows if row["month"] not in ("setup", "settled")]
    print(
        f"\n== {args.months} simulated months in {wall / 60:.1f} min of wall time; load average "
        f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} / {os.getloadavg()[1]:.1f} / "
        f"{os.getloadavg()[2]:.1f} after (1/5/15 min), {os.cpu_count()} cores =="
    )
    first, last = months[0], months[-1]
    print(
        f"{'':18}{'first (' + first['month'] + ')':>16}{'last (' + last['month'] + ')':>16}{'per month, last 12':>20}"
    )
    slopes = flatness(months, FLAT_MONTHS)
    for name, _, fmt in COLUMNS[1:]:
        a = fmt.format(format_value(first, name))
        b = fmt.format(format_value(last, name))
        slope = f"{slopes[name]:+.3f}" if name in slopes else ""
        print(f"{name:18}{a:>16}{b:>16}{slope:>20}")
    problems = soak.problems()
    for name, slope in slopes.items() if len(months) >= FLAT_MONTHS else ():
        if name in PROCESS_MB and slope > PROCESS_MB_PER_MONTH:
            problems.append(f"{name} grows {slope:+.2f} MB per month over the last {FLAT_MONTHS} months")
        if name.endswith("fds") and name != "worker pool fds" and slope > FDS_PER_MONTH:
            problems.append(f"{name} grows {slope:+.2f} per month over the last {FLAT_MONTHS} months")
    kept = sum(soak.expected.values())
    print(
        f"data kept at the end: {len(soak.expected)} partitions ({kept} loads); the database, lake and "
        "warehouse grow with them (growth per month above, last 12 months)"
    )
    print("\ntargets: " + ("all met" if not problems else "NOT MET:\n- " + "\n- ".join(problems)))
    if problems:
        print(f"logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if not problems else 1


def format_value(row: dict, name: str):
    if name == "ticks failed":
        return sum(row[f"{f} failed"] for f in (*SENSORS, *SCHEDULES))
    return row[name]


if __name__ == "__main__":
    sys.exit(main())
