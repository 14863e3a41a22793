"""Print constraints.txt: the pinned closure of taxi_assets' runtime dependencies, from the venv this
runs in (its installed versions, each dependency's extras followed; the dev extras left out).

    .venv/bin/python deploy/constraints.py > constraints.txt   # after `make install`

Markers are evaluated for the running interpreter (Python 3.11 on Linux, like the image's)."""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
HEADER = """\
# Pinned versions of taxi_assets' runtime dependencies (the closure of pyproject.toml's
# [project].dependencies, extras included), as installed in the project's venv on Python 3.11 / Linux.
# The image installs from this file (Containerfile); `pip install -c constraints.txt .` does the same
# elsewhere. Regenerate after changing the dependencies: .venv/bin/python deploy/constraints.py > constraints.txt
"""


def closure(requirements: list[str]) -> dict[str, tuple[str, str]]:
    pinned: dict[str, tuple[str, str]] = {}
    visited: set[tuple[str, frozenset[str]]] = set()

    def visit(name: str, extras: frozenset[str]) -> None:
        if (canonicalize_name(name), extras) in visited:
            return
        visited.add((canonicalize_name(name), extras))
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:  # a marker-excluded or optional dependency that is not installed
            return
        pinned[canonicalize_name(dist.metadata["Name"])] = (dist.metadata["Name"], dist.version)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
                visit(req.name, frozenset(req.extras))

    for line in requirements:
        req = Requirement(line)
        visit(req.name, frozenset(req.extras))
    return pinned


def main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = closure(project["dependencies"])
    pinned.pop(canonicalize_name(project["name"]), None)
    print(HEADER + "".join(f"{name}=={version}\n" for _, (name, version) in sorted(pinned.items())), end="")


if __name__ == "__main__":
    main()
