"""The project's image (Containerfile), built with podman on a Debian base made here (see
containers.py), and run alone: it materializes a partition from the test mirror (on 127.0.0.1: the
container shares the host's network) into a mounted data folder, as its non-root user."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from urllib.parse import urlsplit, urlunsplit

import duckdb
import pytest

from taxi_assets_tests.containers import NO_PODMAN, UID, build_image, podman
from taxi_assets_tests.helpers import real_rows

ROWS = real_rows("yellow_tripdata_2020-07_sample266.csv")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.extended,
    pytest.mark.skipif(shutil.which("podman") is None, reason=NO_PODMAN),
]


def index_url_with_a_token() -> tuple[str, str]:
    """The package index the build uses ($PIP_INDEX_URL, else PyPI's, which ignores credentials)
    with a credential in it, as a private index's URL carries one; and the credential."""
    parts = urlsplit(os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple")
    if parts.password:
        return parts.geturl(), parts.password
    token = f"taxi-token-{secrets.token_hex(8)}"
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=f"taxi-build:{token}@{host}")), token


INDEX_URL, INDEX_TOKEN = index_url_with_a_token()


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    # Built with a credential in the index URL, as `make image` passes PIP_INDEX_URL (a build secret).
    return build_image(tmp_path_factory.mktemp("base"), index_url=INDEX_URL)


def test_the_index_credential_leaves_no_trace_in_the_image(image):
    """Build arguments are recorded in the image's history; the index URL is a build secret, so
    neither the history nor the image's config holds the credential it carried."""
    history = podman("history", "--no-trunc", "--format", "json", image, capture_output=True).stdout
    config = podman("image", "inspect", image, capture_output=True).stdout
    assert "RUN" in history or "pip install" in history  # the history is there to be read
    assert INDEX_TOKEN not in history
    assert INDEX_TOKEN not in config


@pytest.mark.timeout(1800)  # a first run builds the base and the dependency layer: ~4 minutes here
def test_the_image_alone_materializes_a_partition_as_a_non_root_user(image, mirror, tmp_path):
    mirror.publish("yellow", "2020-07", ROWS)
    mirror.publish_zones()
    data = tmp_path / "data"
    data.mkdir()
    if os.geteuid() == 0:
        os.chown(data, UID, UID)  # the mounted folder belongs to the image's user, as a volume would
    else:
        data.chmod(0o777)

    user = podman("image", "inspect", image, "--format", "{{.Config.User}}", capture_output=True).stdout.strip()
    assert user.split(":")[0] == str(UID), user

    started = time.monotonic()
    run = podman(
        "run",
        "--rm",
        "--network",
        "host",
        "-v",
        f"{data}:/data",
        "-e",
        f"TAXI_SOURCE_URL={mirror.base_url}",
        image,
        "sh",
        "-c",
        'echo "uid=$(id -u)" && exec dagster asset materialize -m taxi_assets.definitions '
        "--select '*bq_rides_table' --partition 'yellow|2020-07-01'",
        capture_output=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    print(f"materialize in the container: {time.monotonic() - started:.0f} s")
    assert f"uid={UID}" in run.stdout.splitlines()[0]

    warehouse = data / "warehouse.duckdb"
    assert warehouse.stat().st_uid == UID != 0  # written by the container's user, not root
    assert all(p.stat().st_uid == UID for p in data.rglob("*")), [
        (str(p), p.stat().st_uid) for p in data.rglob("*") if p.stat().st_uid != UID
    ]
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        slices = conn.execute("SELECT color, strftime(month, '%Y-%m'), count(*) FROM rides GROUP BY ALL").fetchall()
    assert slices == [("yellow", "2020-07", len(ROWS) - 1)]
    assert any(p.suffix == ".parquet" for p in (data / "lake").rglob("*"))


def test_the_image_has_every_roles_command_and_no_compiler_or_cache(image):
    """One image for every role: the code server, the webserver, the daemon, the runs (with either
    launcher's package, for run containers and pods), and nothing left from the build."""
    script = (
        "set -e; id -u; "
        "for c in cc gcc g++ make; do if command -v $c; then echo COMPILER $c; fi; done; "
        "for d in /root/.cache /home/taxi/.cache /tmp/pip*; do if [ -e $d ]; then echo CACHE $d; fi; done; "
        "dagster code-server start --help >/dev/null; dagster-webserver --help >/dev/null; "
        "dagster-daemon run --help >/dev/null; dagster api execute_run --help >/dev/null; "
        "python -c 'import dagster_docker, dagster_k8s, dagster_postgres, taxi_assets.definitions'; echo OK"
    )
    out = podman("run", "--rm", "--user", "0", image, "sh", "-c", script, capture_output=True, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    lines = out.stdout.split()
    assert lines[0] == "0" and lines[-1] == "OK"  # run as root here only to look into /root
    assert not [line for line in out.stdout.splitlines() if line.startswith(("COMPILER", "CACHE"))], out.stdout
