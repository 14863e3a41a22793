"""The tlc source's tests run in their own pytest session with TAXI_SOURCE=tlc (`make test` runs
it after the main one): the source fixes the grid and the schemas when the code loads. The shared
`mirror` fixture then serves the TLC's layout and answers 403 for a month not out."""

from taxi_assets.sources import SOURCE

if SOURCE.name != "tlc":
    collect_ignore_glob = ["test_*.py"]
