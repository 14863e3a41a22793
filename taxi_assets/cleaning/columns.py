"""Matching a file's columns (a CSV header, a Parquet schema) to the color's pinned names."""

from __future__ import annotations

import pyarrow as pa

from taxi_assets.cleaning.errors import BadTripFile
from taxi_assets.schema import OPTIONAL_COLUMNS, canonical_column


def pin_columns(color: str, pinned: pa.Schema, columns: list[str], file_label: str, what: str) -> dict[str, str]:
    """Pinned name -> the file's column, in file order (names match whatever their case). Fails,
    naming both lists, on a column the color does not have, a duplicate, or a required one missing.
    `what` names the file's columns in the message ("header", "columns")."""
    found: dict[str, str] = {}
    unknown = []
    for column in columns:
        name = canonical_column(pinned, column)
        if name is None or name in found:
            unknown.append(column)
        else:
            found[name] = column
    missing = [n for n in pinned.names if n not in found and n not in OPTIONAL_COLUMNS[color]]
    if unknown or missing:
        problems = [f"unexpected column(s) {_listed(unknown)}"] if unknown else []
        problems += [f"missing column(s) {missing}"] if missing else []
        raise BadTripFile(
            f"{file_label}: wrong {what} for a {color} trip file: {'; '.join(problems)}. "
            f"The file has {_listed(columns)}; expected {pinned.names}"
        )
    return found


def _listed(names: list[str], limit: int = 30) -> str:
    """A list of column names for a message, cut after `limit` names and each name after 60
    characters (a 10,000-column header made a 179,000-character message)."""
    shown = [name if len(name) <= 60 else name[:60] + "..." for name in names[:limit]]
    return str(shown) if len(names) <= limit else f"{str(shown)[:-1]}, ... ({len(names) - limit} more)]"
