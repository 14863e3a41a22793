"""LocalLake: a folder whose every write is a rename, and which never writes outside its root."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_assets.resources.local.lake import LocalLake


@pytest.fixture
def lake(tmp_path):
    return LocalLake(root=str(tmp_path / "lake"))


def test_store_moves_a_file_in_and_replaces_the_old_one(lake, tmp_path):
    first = tmp_path / "a"
    first.write_bytes(b"one")
    stored = lake.store(first, "raw/yellow/x.csv.gz")
    assert not first.exists()
    assert stored.uri == str(tmp_path / "lake" / "raw" / "yellow" / "x.csv.gz")
    assert stored.size == 3 and lake.stat("raw/yellow/x.csv.gz") == stored

    second = tmp_path / "b"
    second.write_bytes(b"second")
    lake.store(second, "raw/yellow/x.csv.gz")
    assert (tmp_path / "lake" / "raw" / "yellow" / "x.csv.gz").read_bytes() == b"second"
    assert [p.name for p in (tmp_path / "lake" / "raw" / "yellow").iterdir()] == ["x.csv.gz"]  # no temp files


def test_copy_is_a_hard_link_and_a_later_replace_leaves_the_copy_alone(lake, tmp_path):
    src = tmp_path / "a"
    src.write_bytes(b"v1")
    lake.store(src, "staging/k")
    lake.copy("staging/k", "data/k")
    assert lake.local_path("data/k").stat().st_ino == lake.local_path("staging/k").stat().st_ino
    src.write_bytes(b"v2")
    lake.store(src, "staging/k")  # a replace is a new file: the published link keeps v1
    assert lake.local_path("data/k").read_bytes() == b"v1"


def test_stat_download_and_footer(lake, tmp_path):
    assert lake.stat("data/missing.parquet") is None and lake.local_path("data/missing.parquet") is None
    made = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), made)
    lake.store(made, "data/t.parquet")
    assert lake.parquet_footer("data/t.parquet").num_rows == 3
    assert pq.read_table(lake.download("data/t.parquet", tmp_path / "copy.parquet")).num_rows == 3


@pytest.mark.parametrize("key", ["../outside", "data/../../outside", "/etc/passwd", "", "."])
def test_keys_outside_the_root_are_refused_before_any_io(lake, tmp_path, key):
    with pytest.raises(ValueError, match="outside the lake root"):
        lake.uri(key)
    src = tmp_path / "a"
    src.write_bytes(b"x")
    with pytest.raises(ValueError, match="outside the lake root"):
        lake.store(src, key)
    assert src.exists() and not (tmp_path / "outside").exists()


def test_the_root_defaults_to_taxi_data_dir_at_use(monkeypatch, tmp_path):
    lake = LocalLake()
    monkeypatch.setenv("TAXI_DATA_DIR", str(tmp_path / "somewhere"))
    assert lake.uri("data/k") == str(tmp_path / "somewhere" / "lake" / "data" / "k")
