"""The local target: the lake in a folder, `rides` in a DuckDB file (the default, offline)."""
