"""The lake IO manager: stores what assets return under layout's keys, hands back LakeFile handles."""

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_assets.io_manager import LakeFile, LakeIOManager, NewFile, PublishCopy
from taxi_assets.resources.local.lake import LocalLake

KEY = "green|2020-10-01"


@pytest.fixture
def lake(tmp_path):
    return LocalLake(root=str(tmp_path / "lake"))


def _parquet(path, rows=3):
    pq.write_table(pa.table({"passenger_count": [None] + list(range(1, rows)), "x": list(range(rows))}), path)
    return path


def _out(asset: str, partition_key: str | None = KEY):
    return dg.build_output_context(asset_key=dg.AssetKey(asset), partition_key=partition_key)


def _in(upstream: str, partition_key: str = KEY):
    return dg.build_input_context(
        upstream_output=dg.build_output_context(asset_key=dg.AssetKey(upstream)),
        asset_key=dg.AssetKey("downstream"),
        partition_key=partition_key,
    )


def test_a_new_file_is_moved_to_its_layout_key_and_comes_back_as_a_handle(lake, tmp_path):
    manager = LakeIOManager(lake=lake)
    made = _parquet(tmp_path / "made.parquet")
    manager.handle_output(_out("clean_trips"), NewFile(made))
    key = "staging/clean_trips/green/green_tripdata_2020-10.parquet"
    assert not made.exists()  # moved, not copied
    assert lake.stat(key).size > 0

    handle = manager.load_input(_in("clean_trips"))
    assert (handle.key, handle.uri) == (key, lake.uri(key))
    assert handle.parquet.num_rows == 3
    assert handle.parquet.null_counts == {"passenger_count": 1, "x": 0}
    assert not handle.downloads  # a folder lake: the bytes are already on this disk
    with handle.local_copy() as path:
        assert pq.read_table(path).num_rows == 3


def test_a_publish_copy_lands_at_the_published_key_with_the_sources_facts(lake, tmp_path):
    manager = LakeIOManager(lake=lake)
    manager.handle_output(_out("clean_trips"), NewFile(_parquet(tmp_path / "made.parquet", rows=5)))
    staged = manager.load_input(_in("clean_trips"))
    manager.handle_output(_out("gcs_parquet"), PublishCopy(staged))
    published = manager.load_input(_in("gcs_parquet"))
    assert published.key == "data/green/green_tripdata_2020-10.parquet"
    assert published.parquet == staged.parquet
    assert pq.read_metadata(published.uri).num_rows == 5


def test_a_raw_file_that_is_kept_must_still_be_there(lake, tmp_path):
    manager = LakeIOManager(lake=lake)
    raw = tmp_path / "raw.csv.gz"
    raw.write_bytes(b"\x1f\x8b fake but stored as bytes")
    manager.handle_output(_out("raw_trips"), NewFile(raw))
    stored = manager.load_input(_in("raw_trips"))
    assert stored.parquet is None
    manager.handle_output(_out("raw_trips"), stored)  # keep it: no error
    (tmp_path / "lake" / stored.key).write_bytes(b"replaced behind our back")
    with pytest.raises(dg.Failure, match="changed or vanished while being kept"):
        manager.handle_output(_out("raw_trips"), stored)


def test_a_missing_upstream_says_what_to_materialize(lake):
    with pytest.raises(
        dg.Failure, match=r"partition green\|2020-10-01: raw_trips is not in the lake at .*materialize raw_trips first"
    ):
        LakeIOManager(lake=lake).load_input(_in("raw_trips"))


def test_outputs_of_other_types_and_runs_over_ranges_are_refused(lake, tmp_path):
    manager = LakeIOManager(lake=lake)
    with pytest.raises(TypeError, match="must return NewFile, PublishCopy or its own LakeFile, got DataFrame"):
        manager.handle_output(_out("clean_trips"), type("DataFrame", (), {})())
    with pytest.raises(dg.Failure, match="one month x color partition per run, got 0"):
        manager.handle_output(_out("clean_trips", partition_key=None), NewFile(_parquet(tmp_path / "x.parquet")))


def test_a_handle_downloads_only_what_is_not_on_local_disk(tmp_path):
    """A LakeFile without local bytes fetches them for the block, then removes its copy."""
    source = _parquet(tmp_path / "remote.parquet")
    fetched = []

    def fetch(dest):
        fetched.append(dest)
        dest.write_bytes(source.read_bytes())
        return dest

    handle = LakeFile(key="data/x.parquet", uri="gs://b/data/x.parquet", size=1, generation=1, fetch=fetch)
    assert handle.downloads
    with handle.local_copy() as path:
        assert pq.read_table(path).num_rows == 3
    assert len(fetched) == 1 and not fetched[0].exists()
