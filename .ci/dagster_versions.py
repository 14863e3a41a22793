"""`make test-dagster DAGSTER_VERSIONS="1.13.27 1.13.26"`: the upgrade tests of Dagster's internals
(taxi_assets_tests/test_dagster_internals.py) and the fast suite (`pytest -m "not slow"`) against
other Dagster versions, each in a throwaway virtualenv.

A version names a set: the integration packages pin `dagster` exactly, so Dagster 1.M.P goes with
dagster-webserver, dagster-dg-cli 1.M.P and dagster-gcp, dagster-postgres, dagster-celery 0.(M+16).P
(1.13.27 with 0.29.27). Every other dependency is pyproject.toml's (with the dev extra); the project
is installed editable without its own pins, so a set outside `dagster>=1.13,<1.14` can be tried too.
A set that pip cannot install (a package of it not published) is reported as such.

    python .ci/dagster_versions.py 1.13.26 1.12.22          # both sets, the internals' tests, then the fast suite
    python .ci/dagster_versions.py --internals-only 1.12.22 # only test_dagster_internals.py
    python .ci/dagster_versions.py --keep 1.13.26           # keep the venvs (printed) to look around

Prints a line per set: the versions installed, then each pytest run's summary line. Exit status 0
only if every set installed and passed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: the same parser, as Dagster installs it
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CORE = ("dagster", "dagster-webserver", "dagster-dg-cli")  # released as 1.M.P
LIBRARIES = ("dagster-gcp", "dagster-postgres", "dagster-celery")  # released as 0.(M+16).P
INTERNALS_TESTS = "taxi_assets_tests/test_dagster_internals.py"


def dagster_set(version: str) -> dict[str, str]:
    """{package: version} of the set `version` names."""
    match = re.fullmatch(r"1\.(\d+)\.(\d+)", version)
    if not match:
        raise SystemExit(f"a Dagster version is 1.M.P, got {version!r}")
    minor, patch = int(match[1]), int(match[2])
    return {**dict.fromkeys(CORE, version), **dict.fromkeys(LIBRARIES, f"0.{minor + 16}.{patch}")}


def requirements(pins: dict[str, str]) -> list[str]:
    """pyproject.toml's dependencies and dev extra, with the Dagster packages pinned to the set."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + project["optional-dependencies"]["dev"]
    named = [re.match(r"[A-Za-z0-9_.-]+", line)[0].lower() for line in listed]
    others = [line for line, name in zip(listed, named, strict=True) if name not in pins]
    return others + [f"{name}=={version}" for name, version in pins.items()]


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, text=True, capture_output=True, **kwargs)


def summary(output: str) -> str:
    """pytest's last line (`N passed, M failed in S`), and the failed tests' names."""
    lines = output.strip().splitlines()
    failed = [line.split(" ", 2)[1] for line in lines if line.startswith(("FAILED ", "ERROR "))]
    return (lines[-1] if lines else "(no output)") + "".join(f"\n      {name}" for name in failed)


def try_set(version: str, folder: Path, internals_only: bool) -> bool:
    pins = dagster_set(version)
    venv = folder / f"dagster-{version}"
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = run([str(python), "-m", "pip", "install", "--quiet", *requirements(pins)])
    if install.returncode:
        errors = [line for line in install.stderr.splitlines() if line.startswith("ERROR")] or [install.stderr[-1500:]]
        print(f"dagster {version}: the set does not install: " + "; ".join(errors), flush=True)
        return False
    run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "-e", "."], check=True)
    listed = run([str(python), "-m", "pip", "list", "--format=freeze"]).stdout.splitlines()
    print(f"dagster {version}: " + ", ".join(line for line in listed if line.split("==")[0] in pins), flush=True)
    ok = True
    runs = [("internals", [INTERNALS_TESTS])] + ([] if internals_only else [("fast suite", ["-m", "not slow"])])
    for name, arguments in runs:
        # The project's own pytest settings (pyproject.toml), with the venv's packages.
        done = run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *arguments])
        ok = ok and done.returncode == 0
        print(f"  {name}: {summary(done.stdout)}", flush=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("versions", nargs="+", help="Dagster versions, 1.M.P (each names its set)")
    parser.add_argument("--internals-only", action="store_true", help="skip the fast suite")
    parser.add_argument("--keep", action="store_true", help="keep the virtualenvs")
    options = parser.parse_args()
    for version in options.versions:
        dagster_set(version)  # a bad version fails before anything is installed
    folder = Path(tempfile.mkdtemp(prefix="taxi-dagster-versions-"))
    try:
        results = [try_set(version, folder, options.internals_only) for version in options.versions]
    finally:
        if options.keep:
            print(f"virtualenvs kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
