"""Free space on local disks, said in errors and warnings: which folder, how many bytes are left.

A full disk is the one write failure that says nothing about where: an OSError from a write call
knows no file name, Dagster's compute-log capture swallows it, a service's log stops growing. So
every place that can meet one names the folder and what is free there.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def existing_folder(path: Path | str) -> Path:
    """`path` if it is a folder, else its nearest existing ancestor (a file's folder, a folder not
    made yet): the filesystem that a write to `path` would land on."""
    current = Path(path).absolute()
    while not current.is_dir() and current != current.parent:
        current = current.parent
    return current


def free_bytes(path: Path | str) -> int:
    """Bytes free for this user on the filesystem of `path` (or of its nearest existing ancestor)."""
    return shutil.disk_usage(existing_folder(path)).free


def space_left(path: Path | str) -> str:
    """`12,288 bytes free in /data/lake`: the folder and what is left there, for a message."""
    folder = existing_folder(path)
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        return f"free space in {folder} unknown ({exc.strerror or exc})"
    return f"{free:,} bytes free in {folder}"
