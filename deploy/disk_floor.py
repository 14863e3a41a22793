"""The start-up look at free disk space of `make serve` and `make worker`: one line on stderr when
DAGSTER_HOME, TAXI_DATA_DIR or the work folder has less free than TAXI_MIN_FREE_MB (default 1024,
why: taxi_assets/settings.py). A warning, not a refusal: the service may be started to free space."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from taxi_assets.disk import existing_folder, free_bytes
from taxi_assets.settings import min_free_mb


def work_folder(data_dir: Path) -> Path:
    """The work folder a run will use, as taxi_assets.settings.work_dir() finds it, for this
    service's TAXI_DATA_DIR (which serve.py and worker.py resolve and pass on themselves)."""
    if os.environ.get("TAXI_WORK_DIR"):
        return Path(os.environ["TAXI_WORK_DIR"]).resolve()
    if (os.environ.get("TAXI_TARGET") or "local") == "local":
        return data_dir / "work"
    return Path(tempfile.gettempdir()) / "taxi_assets_work"


def warn_low_space(home: Path, data_dir: Path) -> list[str]:
    """Print one line per filesystem under the floor, naming its folders and what is free; return them."""
    floor = int(min_free_mb() * 1024 * 1024)
    by_disk: dict[int, tuple[Path, int, list[str]]] = {}
    folders = {"DAGSTER_HOME": home, "TAXI_DATA_DIR": data_dir, "the work folder": work_folder(data_dir)}
    for label, path in folders.items():
        folder = existing_folder(path)
        free = free_bytes(folder)
        if free < floor:
            entry = by_disk.setdefault(folder.stat().st_dev, (folder, free, []))
            entry[2].append(f"{label} {path}")
    lines = [
        f"WARNING: low disk space: {free:,} bytes free in {folder} ({', '.join(labels)}), under TAXI_MIN_FREE_MB="
        f"{min_free_mb():g}: a run or a log write that fills it fails; free some space there"
        for folder, free, labels in by_disk.values()
    ]
    for line in lines:
        print(line, file=sys.stderr, flush=True)
    return lines
