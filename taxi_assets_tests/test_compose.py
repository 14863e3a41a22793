"""deploy/compose.yaml on podman: PostgreSQL (a local image of Debian's postgresql on the test base,
standing in for postgres:16), the code server, the webserver, the daemon and the Docker API proxy, from
the project's image, with podman-compose (PyPI) and DockerRunLauncher talking to podman's Docker API
socket through the proxy (the socket root's, 0600, mounted into the proxy only). A backfill of
4 partitions over GraphQL; each run is seen in a container of its own while it runs (through the
Docker API) and the container is gone after; rows exact in the DuckDB file on the shared volume; run
storage in PostgreSQL; everything stopped and removed at the end.

podman-compose, not `podman kube play`: it reads the same compose.yaml users run with
`docker compose` (one file, tested as shipped), where kube play needs a second, Kubernetes-shaped copy.
The release files are served by a `mirror` service inside the compose network
(fixtures/compose.mirror.yaml), so containers reach them by name.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import duckdb
import pytest

from taxi_assets.sources import RELEASES
from taxi_assets_harness.graphql import location_loaded, wait_until
from taxi_assets_harness.instances import backfill_runs, launch_backfill
from taxi_assets_harness.ports import free_port
from taxi_assets_tests.containers import NO_PODMAN, ROOT, build_image, podman, podman_api_socket, podman_env
from taxi_assets_tests.helpers import Mirror, real_rows

PODMAN_COMPOSE = shutil.which("podman-compose") or str(Path(sys.executable).with_name("podman-compose"))
POSTGRES_IMAGE = "localhost/taxi-postgres:test"
IMAGE = "localhost/taxi-assets:compose-test"  # a tag of this test's own: other tests build theirs in parallel
FILES = {
    ("yellow", "2021-01"): real_rows("yellow_tripdata_2021-01_head3000.csv"),
    ("yellow", "2020-07"): real_rows("yellow_tripdata_2020-07_sample266.csv"),
    ("green", "2020-10"): real_rows("green_tripdata_2020-10_head3000.csv"),
    ("green", "2019-01"): real_rows("green_tripdata_2020-10_tail500.csv"),
}
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.extended,
    pytest.mark.skipif(shutil.which("podman") is None, reason=NO_PODMAN),
    pytest.mark.skipif(not Path(PODMAN_COMPOSE).exists(), reason="podman-compose is not installed (make install)"),
]


class DockerAPI:
    """The few Docker API calls the test needs, over podman's socket."""

    def __init__(self, path: str):
        self.path = path

    def get(self, url: str):
        class Connection(http.client.HTTPConnection):
            def connect(conn):
                conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.sock.connect(self.path)

        conn = Connection("localhost", timeout=10)
        try:
            conn.request("GET", url)
            response = conn.getresponse()
            assert response.status == 200, (url, response.status)
            return json.loads(response.read())
        finally:
            conn.close()

    def run_containers(self) -> dict[str, str]:
        """Run id -> container id, for the containers DockerRunLauncher started (labelled dagster/run_id)."""
        filters = urllib.parse.quote(json.dumps({"label": ["dagster/run_id"]}))
        return {
            c["Labels"]["dagster/run_id"]: c["Id"] for c in self.get(f"/containers/json?all=true&filters={filters}")
        }


def postgres_image(folder: Path) -> str:
    if podman("image", "exists", POSTGRES_IMAGE, check=False).returncode != 0:
        build = podman(
            "build", "--network", "host", "-t", POSTGRES_IMAGE, str(folder), capture_output=True, check=False
        )
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return POSTGRES_IMAGE


@pytest.mark.timeout(1800)
def test_compose_on_podman_backfills_in_a_container_per_run(tmp_path, tmp_path_factory):
    if podman("container", "exists", "taxi-assets_daemon_1", check=False).returncode == 0 or any(
        podman(kind, "exists", "taxi-assets" + suffix, check=False).returncode == 0
        for kind, suffix in (("network", ""), ("network", "-docker-api"), ("volume", "-data"), ("volume", "-postgres"))
    ):
        pytest.skip("a taxi-assets compose deployment already exists on this machine: not touching it")
    image = build_image(tmp_path_factory.mktemp("base"), IMAGE)
    postgres = postgres_image(ROOT / "taxi_assets_tests" / "fixtures" / "postgres")

    mirror = Mirror(tmp_path / "mirror", RELEASES)
    for (color, ym), lines in FILES.items():
        mirror.publish(color, ym, lines)
    mirror.publish_zones()
    os.chmod(tmp_path, 0o755)  # the mirror service's user (10001) reads the files
    subprocess.run(["chmod", "-R", "o+rX", str(mirror.root)], check=True)

    port = free_port()
    with podman_api_socket(tmp_path) as sock:
        env = {
            **podman_env(),
            "TAXI_IMAGE": image,
            "POSTGRES_IMAGE": postgres,
            "DOCKER_SOCKET": str(sock),
            "MIRROR_DIR": str(mirror.root),
            "TAXI_SOURCE_URL": "http://mirror:8000",
            "WEBSERVER_PORT": str(port),
        }
        compose = [
            PODMAN_COMPOSE,
            "-f",
            "compose.yaml",
            "-f",
            str(ROOT / "taxi_assets_tests/fixtures/compose.mirror.yaml"),
        ]

        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [*compose, *args], cwd=ROOT / "deploy", env=env, capture_output=True, text=True, timeout=300
            )

        def logs() -> str:
            return "".join(
                f"\n== {c}\n"
                + podman("logs", "--tail", "30", f"taxi-assets_{c}_1", capture_output=True, check=False).stderr
                for c in ("code", "webserver", "daemon", "docker-api")
            )

        api = DockerAPI(str(sock))
        started = time.monotonic()
        try:
            up = run("up", "-d")
            assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
            wait_until(lambda: location_loaded(port), 180, "the webserver and the code location", interval=1)
            print(f"compose up: {time.monotonic() - started:.0f} s")
            # Pool limits before the first runs (a pool's row is created on first use: two runs racing
            # to create it can collide), as the compose file's header says.
            for pool, limit in (("warehouse", "1"), ("upstream", "2")):
                podman(
                    "exec",
                    "taxi-assets_daemon_1",
                    "dagster",
                    "instance",
                    "concurrency",
                    "set",
                    pool,
                    limit,
                    capture_output=True,
                )

            backfill = launch_backfill(port, [f"{color}|{ym}-01" for color, ym in FILES])
            containers: dict[str, str] = {}

            hardened: dict[str, bool] = {}

            def finished() -> list[dict] | None:
                containers.update(api.run_containers())
                for cid in set(containers.values()) - set(hardened):
                    with contextlib.suppress(AssertionError):  # gone already: removed at its run's end
                        host = api.get(f"/containers/{cid}/json")["HostConfig"]
                        hardened[cid] = "no-new-privileges" in (host.get("SecurityOpt") or [])
                runs = backfill_runs(port, backfill)
                return runs if len(runs) == len(FILES) and all(r["status"] in FINISHED for r in runs) else None

            runs = wait_until(finished, 600, "the backfill's runs", interval=0.3)
            assert {r["status"] for r in runs} == {"SUCCESS"}, logs()
            ids = {r["runId"] for r in runs}
            assert ids <= set(containers), f"runs never seen in a container: {ids - set(containers)}"
            assert len({containers[i] for i in ids}) == len(ids)  # a container of its own, each
            wait_until(lambda: not ids & set(api.run_containers()), 60, "the run containers to be removed")
            print(f"compose backfill of {len(FILES)} partitions: {time.monotonic() - started:.0f} s from up")

            # The runs went through the proxy: the daemon has no socket, each run's container was
            # created, started and inspected by the proxy, and carries its hardening.
            daemon = json.loads(podman("inspect", "taxi-assets_daemon_1", capture_output=True).stdout)[0]
            assert not [m for m in daemon["Mounts"] if m["Source"] == str(sock)], daemon["Mounts"]
            assert daemon["HostConfig"].get("GroupAdd") in (None, []), daemon["HostConfig"].get("GroupAdd")
            proxy_log = podman("logs", "taxi-assets_docker-api_1", capture_output=True)
            proxy_lines = (proxy_log.stdout + proxy_log.stderr).splitlines()
            creates = sum("allowed POST /v1.41/containers/create -> 201" in line for line in proxy_lines)
            assert creates >= len(FILES), logs()
            # DockerRunLauncher's own calls (launch, health checks) are all on the proxy's list.
            assert not [line for line in proxy_lines if " refused " in line or " failed " in line], proxy_lines
            print(f"the proxy: {len(proxy_lines) - 1} calls allowed, {creates} run containers created")
            assert hardened and all(hardened.values()), hardened

            count = podman(
                "exec",
                "-e",
                "PGPASSWORD=dagster",
                "taxi-assets_postgres_1",
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                "dagster",
                "-d",
                "dagster",
                "-tAc",
                "SELECT count(*) FROM runs",
                capture_output=True,
            ).stdout.strip()
            assert int(count) >= len(FILES)

            volume = podman(
                "volume", "inspect", "taxi-assets-data", "--format", "{{.Mountpoint}}", capture_output=True
            ).stdout.strip()
            with duckdb.connect(str(Path(volume) / "warehouse.duckdb"), read_only=True) as conn:
                slices = conn.execute(
                    "SELECT color, strftime(month, '%Y-%m'), count(*) FROM rides GROUP BY ALL"
                ).fetchall()
            assert {(c, ym): n for c, ym, n in slices} == {key: len(lines) - 1 for key, lines in FILES.items()}
        finally:
            # The daemon first, so that no run starts (the analytics sensor requests runs after the
            # backfill's), then any run container still there (a removed volume cannot be in use).
            podman("stop", "taxi-assets_daemon_1", check=False, capture_output=True)
            for container in api.run_containers().values():
                podman("rm", "-f", container, check=False, capture_output=True)
            down = run("down", "-v")
        assert down.returncode == 0, down.stderr[-2000:]
        assert podman("volume", "exists", "taxi-assets-data", check=False).returncode != 0
        assert podman("network", "exists", "taxi-assets", check=False).returncode != 0
        assert not podman("ps", "-a", "--filter", "name=taxi-assets_", "-q", capture_output=True).stdout.strip()
    print(f"compose test: {time.monotonic() - started:.0f} s")
