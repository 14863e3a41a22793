"""podman for the container tests (test_image.py, test_compose.py): the settings that make it work on
these machines, a Debian base image made with debootstrap (no registry is reachable here) and kept
between runs, and the project's image built on it.

The base (`localhost/debian-python:bookworm`: Debian's python3 and python3-venv, from the mirror apt
uses) takes about 1.5 minutes once. The project's image is built each run; podman's layer cache keeps
that to seconds unless constraints.txt changes (then 2 to 3 minutes here for the dependency layer).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taxi_assets_harness.graphql import wait_until

ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = "localhost/debian-python:bookworm"
IMAGE = "localhost/taxi-assets:test"
PACKAGES = "python3,python3-venv,ca-certificates"  # debootstrap's --include for the base
UID = 10001  # the image's user (Containerfile)
CONTAINERS_CONF = Path(__file__).parent / "fixtures" / "containers.conf"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
NO_PODMAN = "podman is not installed (.ci/run installs podman, runc, debootstrap)"


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


def build_image(scratch: Path, tag: str = IMAGE, index_url: str | None = None) -> str:
    """The project's image on the Debian base, with this machine's CA bundle trusted by pip;
    `index_url` (default: $PIP_INDEX_URL) is passed as `make image` passes it."""
    index_url = index_url if index_url is not None else os.environ.get("PIP_INDEX_URL")
    ensure_base_image(scratch)
    args = ["build", "-f", str(ROOT / "Containerfile"), "-t", tag, "--network", "host"]
    args += ["--build-arg", f"BASE={BASE_IMAGE}"]
    if CA_BUNDLE.exists():
        args += ["-v", f"{CA_BUNDLE}:/etc/pip-ca.crt:ro", "--build-arg", "PIP_CERT=/etc/pip-ca.crt"]
    if index_url:
        # As `make image` passes it: a build secret, in a file only this user reads.
        secret = scratch / "pip_index_url"
        secret.touch(mode=0o600)
        secret.write_text(index_url)
        args += ["--secret", f"id=pip_index_url,src={secret}"]
    started = time.monotonic()
    build = podman(*args, str(ROOT), capture_output=True, check=False)
    if build.returncode != 0:
        pytest.fail(f"podman build failed: {build.stdout[-4000:]}{build.stderr[-4000:]}")
    print(f"image {tag}: built in {time.monotonic() - started:.0f} s")
    return tag


@contextlib.contextmanager
def podman_api_socket(folder: Path) -> Iterator[Path]:
    """podman's Docker API on a socket of the test's own, as podman makes it: root's, 0600."""
    path = folder / "podman.sock"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{path}"], env=podman_env(), stderr=subprocess.DEVNULL
    )
    try:
        wait_until(path.exists, 30, "podman's API socket")
        assert path.stat().st_mode & 0o077 == 0
        yield path
    finally:
        service.terminate()
        service.wait(timeout=30)
