"""`make dev`: the Dagster UI (`dg dev`) on the local instance, with the bundled sample mirror served
again when the data folder is `make demo`'s.

`make demo` loads its partitions from the release files bundled in the package, served on a
loopback port that is gone when it ends, and leaves a note (`SAMPLE_MIRROR`) in the data folder.
On that folder `make dev` serves the same files on a new port and points TAXI_SOURCE_URL at them,
so a backfill of the sample partitions from the UI works offline. A TAXI_SOURCE_URL of the user's
own wins; without the note, runs download from the real upstream, as always.

    python -m taxi_assets.dev [dg dev options]     # e.g. -h 127.0.0.1 -p 3000
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from taxi_assets import settings
from taxi_assets.mirror import SAMPLE_MIRROR, SAMPLE_NOTE, SAMPLE_URL_ENV, serve_folder


def ensure_dagster_home(home: Path) -> None:
    """DAGSTER_HOME (0700: run history and logs are private to the user) with the project's instance
    settings (taxi_assets/dagster.yaml) unless it has its own."""
    import shutil

    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(Path(__file__).parent / "dagster.yaml", config)


def serves_sample(data_dir: Path) -> bool:
    """Whether `make dev` serves the bundled sample: on the demo's data folder, unless the user
    set TAXI_SOURCE_URL."""
    return (data_dir / SAMPLE_NOTE).exists() and not os.environ.get("TAXI_SOURCE_URL")


def main(argv: list[str] | None = None) -> int:
    """`make dev`: `dg dev` on the project, serving the bundled sample again on make demo's data folder."""
    from dagster_dg_cli.cli import cli as dg

    args = list(sys.argv[1:] if argv is None else argv)
    if sys.prefix != sys.base_prefix:  # run from the project's venv (make dev): dg then sees it as active
        os.environ.setdefault("VIRTUAL_ENV", sys.prefix)
    data_dir = settings.data_dir()
    ensure_dagster_home(Path(os.environ.setdefault("DAGSTER_HOME", str(data_dir / "dagster_home"))))
    with contextlib.ExitStack() as stack:
        if serves_sample(data_dir):
            base_url = stack.enter_context(serve_folder(SAMPLE_MIRROR))
            # Read by each run when it starts (runs inherit this process's environment).
            os.environ["TAXI_SOURCE_URL"] = os.environ[SAMPLE_URL_ENV] = base_url
            print(
                f"make dev: {data_dir} is make demo's: serving the bundled sample mirror at {base_url} "
                "(set TAXI_SOURCE_URL to download from elsewhere)",
                flush=True,
            )
        # dg dev in this process, so the mirror lives exactly as long as the UI; Ctrl-C stops both.
        dg.main(["dev", *args], prog_name="dg")  # exits (SystemExit) when dg dev does
    return 0


if __name__ == "__main__":
    sys.exit(main())
