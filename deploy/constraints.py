"""Print constraints.txt: pinned versions of everything the image installs, the runtime dependencies
of taxi_assets and its `docker` and `k8s` extras (dagster-docker, dagster-k8s: each run's container
or pod loads an instance whose run launcher is DockerRunLauncher or K8sRunLauncher), and none of
the dev extras.

    .venv/bin/python deploy/constraints.py > constraints.txt   # after `make install`; needs the index

pip's resolver (`pip install --dry-run --report`) picks the set for the running interpreter (Python
3.11 on Linux, like the image's), held to the versions installed in this venv where it has them, so
the image runs what the tests ran."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = "docker,k8s"
HEADER = f"""\
# Pinned versions of everything the image installs: taxi_assets' runtime dependencies and its
# [{EXTRAS}] extras, resolved for Python 3.11 / Linux and held to the versions of the project's venv.
# The Containerfile installs from this file; `pip install -c constraints.txt '.[{EXTRAS}]'` does the same
# elsewhere. Regenerate after changing the dependencies: .venv/bin/python deploy/constraints.py > constraints.txt
"""


def installed() -> list[str]:
    """This venv's versions, as constraints (editable installs and the project itself left out)."""
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    return [line for line in frozen if "==" in line and not line.lower().startswith(("taxi-assets", "taxi_assets"))]


def resolve() -> dict[str, str]:
    """The versions pip would install for the image, by package name, held to this venv's where it has them."""
    with tempfile.TemporaryDirectory() as scratch:
        constraints = Path(scratch) / "installed.txt"
        constraints.write_text("\n".join(installed()) + "\n")
        report = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
            + ["--report", "-", "-c", str(constraints), f"{ROOT}[{EXTRAS}]"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    pins = {item["metadata"]["name"]: item["metadata"]["version"] for item in json.loads(report)["install"]}
    return {name: version for name, version in pins.items() if name.lower().replace("_", "-") != "taxi-assets"}


def main() -> None:
    """Print constraints.txt to stdout."""
    pins = resolve()
    print(HEADER + "".join(f"{name}=={pins[name]}\n" for name in sorted(pins, key=str.lower)), end="")


if __name__ == "__main__":
    main()
