"""The project's image (Containerfile), built with podman on a Debian base made here, and run alone:
it materializes a partition from the test mirror (on 127.0.0.1: the container shares the host's
network) into a mounted data folder, as its non-root user.

No registry is reachable here, so the base (`localhost/debian-python:bookworm`: Debian's python3 and
python3-venv, by debootstrap from the mirror apt uses) is built once and kept between runs (about
1.5 minutes). The project's image is built each run; podman's layer cache keeps that to seconds
unless constraints.txt changes (a cold build of the dependency layer is about 2 minutes here).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import duckdb
import pytest

from taxi_assets_tests.conftest import real_rows

ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = "localhost/debian-python:bookworm"
IMAGE = "localhost/taxi-assets:test"
PACKAGES = "python3,python3-venv,ca-certificates"  # debootstrap's --include for the base
UID = 10001  # the image's user (Containerfile)
CONTAINERS_CONF = Path(__file__).parent / "fixtures" / "containers.conf"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
ROWS = real_rows("yellow_tripdata_2020-07_sample266.csv")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("podman") is None, reason="podman is not installed (.ci/run installs podman, runc, debootstrap)"
    ),
]


def which(name: str) -> str | None:
    """A program on PATH, or in /usr/sbin or /sbin (runc and debootstrap live there; not every PATH has them)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def podman_env() -> dict[str, str]:
    """podman with runc and no raised ulimits where runc is there (crun fails on these machines:
    taxi_assets_tests/fixtures/containers.conf), unless the caller set CONTAINERS_CONF."""
    env = dict(os.environ)
    if "CONTAINERS_CONF" not in env and which("runc"):
        env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    return env


def podman(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=podman_env(), check=check, text=True, **kwargs)


def debian_mirror() -> tuple[str, str]:
    """The Debian mirror and suite apt uses here (deb822 sources first, then sources.list)."""
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    if deb822.exists():
        fields = {}
        for line in deb822.read_text().split("\n\n")[0].splitlines():
            key, _, value = line.partition(":")
            if not line.startswith("#") and value:
                fields[key.strip()] = value.split()
        if fields.get("URIs") and fields.get("Suites"):
            return fields["URIs"][0], fields["Suites"][0]
    for line in (
        Path("/etc/apt/sources.list").read_text().splitlines() if Path("/etc/apt/sources.list").exists() else []
    ):
        parts = line.split()
        if parts[:1] == ["deb"] and len(parts) >= 3 and not parts[1].startswith("["):
            return parts[1], parts[2]
    return "http://deb.debian.org/debian", "bookworm"


def ensure_base_image(scratch: Path) -> None:
    """Debian minbase with python3 and python3-venv, imported as BASE_IMAGE, unless already there."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return
    debootstrap = which("debootstrap")
    if debootstrap is None:
        pytest.skip(f"no {BASE_IMAGE} and no debootstrap to build it (apt-get install debootstrap)")
    mirror, suite = debian_mirror()
    rootfs = scratch / "rootfs"
    started = time.monotonic()
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            suite,
            str(rootfs),
            mirror,
        ],
        check=True,
        capture_output=True,
    )
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    podman("import", "-", BASE_IMAGE, stdin=tar.stdout, capture_output=True)
    assert tar.wait() == 0
    shutil.rmtree(rootfs, ignore_errors=True)
    print(f"base image {BASE_IMAGE}: built in {time.monotonic() - started:.0f} s")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    """The project's image on the Debian base, with this machine's CA bundle trusted by pip."""
    ensure_base_image(tmp_path_factory.mktemp("base"))
    args = ["build", "-f", str(ROOT / "Containerfile"), "-t", IMAGE, "--network", "host"]
    args += ["--build-arg", f"BASE={BASE_IMAGE}"]
    if CA_BUNDLE.exists():
        args += ["-v", f"{CA_BUNDLE}:/etc/pip-ca.crt:ro", "--build-arg", "PIP_CERT=/etc/pip-ca.crt"]
    if os.environ.get("PIP_INDEX_URL"):
        args += ["--build-arg", f"PIP_INDEX_URL={os.environ['PIP_INDEX_URL']}"]
    started = time.monotonic()
    build = podman(*args, str(ROOT), capture_output=True, check=False)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    print(f"image {IMAGE}: built in {time.monotonic() - started:.0f} s")
    return IMAGE


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
