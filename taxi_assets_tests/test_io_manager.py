"""The lake IO manager: stores what assets return where their metadata says, hands back LakeFile handles."""

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_assets import layout
from taxi_assets.assets import build_assets
from taxi_assets.assets.common import LAKE_IO
from taxi_assets.io_manager import LakeFile, LakeIOManager, NewFile, PublishCopy, stored_file
from taxi_assets.resources.lake import Lake
from taxi_assets.resources.local.lake import LocalLake
from taxi_assets.resources.workdir import WorkDir
from taxi_assets.sources import RELEASES
from taxi_assets_tests.helpers import step_failure_messages

ASSETS = build_assets(RELEASES, "local")  # the assets as the releases' code location has them
clean_trips, gcs_parquet, raw_trips = ASSETS.clean_trips, ASSETS.gcs_parquet, ASSETS.raw_trips

KEY = "green|2020-10-01"


@pytest.fixture
def lake(tmp_path):
    return LocalLake(root=str(tmp_path / "lake"))


def _parquet(path, rows=3):
    pq.write_table(pa.table({"passenger_count": [None] + list(range(1, rows)), "x": list(range(rows))}), path)
    return path


def _definition(asset: dg.AssetsDefinition | str) -> dict:
    """What Dagster hands an IO manager for an asset: its key and its definition metadata."""
    if isinstance(asset, str):  # an asset the lake does not store: no lake metadata
        return {"asset_key": dg.AssetKey(asset), "definition_metadata": {}}
    return {
        "asset_key": asset.key,
        "definition_metadata": asset.metadata_by_key[asset.key],
        "asset_partitions_def": asset.partitions_def,
    }


def _out(asset, partition_key: str | None = KEY):
    return dg.build_output_context(**_definition(asset), partition_key=partition_key)


def _in(upstream, partition_key: str = KEY):
    return dg.build_input_context(
        upstream_output=dg.build_output_context(**_definition(upstream)),
        asset_key=dg.AssetKey("downstream"),
        partition_key=partition_key,
        asset_partitions_def=_definition(upstream).get("asset_partitions_def"),  # the upstream asset's
    )


def test_a_new_file_is_moved_to_its_declared_key_and_comes_back_as_a_handle(lake, tmp_path):
    manager = LakeIOManager(lake=lake)
    made = _parquet(tmp_path / "made.parquet")
    manager.handle_output(_out(clean_trips), NewFile(made))
    key = "staging/clean_trips/green/green_tripdata_2020-10.parquet"
    assert not made.exists()  # moved, not copied
    assert lake.stat(key).size > 0

    handle = manager.load_input(_in(clean_trips))
    assert (handle.key, handle.uri) == (key, lake.uri(key))
    assert handle.parquet.num_rows == 3
    assert handle.parquet.null_counts == {"passenger_count": 1, "x": 0}
    assert not handle.downloads  # a folder lake: the bytes are already on this disk
    with handle.local_copy() as path:
        assert pq.read_table(path).num_rows == 3


def test_a_declared_side_file_is_stored_beside_its_version_and_a_stale_one_removed(lake, tmp_path):
    manager = LakeIOManager(lake=lake)
    rejected = tmp_path / "rejected.csv.gz"
    rejected.write_bytes(b"line,reason,text\n")
    context = _out(clean_trips)
    manager.handle_output(context, NewFile(_parquet(tmp_path / "a.parquet"), side_files={"rejected": rejected}))
    side = "rejected/green/green_tripdata_2020-10.csv.gz"
    assert lake.stat(side).size == len(b"line,reason,text\n")
    assert context.get_logged_metadata()["rejected_uri"] == dg.MetadataValue.text(lake.uri(side))

    manager.handle_output(_out(clean_trips), NewFile(_parquet(tmp_path / "b.parquet")))  # no rows set aside
    assert lake.stat(side) is None


def test_a_side_file_the_asset_does_not_declare_is_refused_before_anything_is_written(lake, tmp_path):
    stray = tmp_path / "notes.txt"
    stray.write_text("notes")
    with pytest.raises(dg.Failure, match=r"gcs_parquet: returned side files \['notes'\] it does not declare"):
        LakeIOManager(lake=lake).handle_output(
            _out(gcs_parquet), NewFile(_parquet(tmp_path / "a.parquet"), side_files={"notes": stray})
        )
    assert not (tmp_path / "lake").exists()


def test_a_publish_copy_lands_at_the_published_key_with_the_sources_facts(lake, tmp_path):
    manager = LakeIOManager(lake=lake)
    manager.handle_output(_out(clean_trips), NewFile(_parquet(tmp_path / "made.parquet", rows=5)))
    staged = manager.load_input(_in(clean_trips))
    manager.handle_output(_out(gcs_parquet), PublishCopy(staged))
    published = manager.load_input(_in(gcs_parquet))
    assert published.key == "data/green/green_tripdata_2020-10.parquet"
    assert published.parquet == staged.parquet
    assert pq.read_metadata(published.uri).num_rows == 5


def test_a_raw_file_that_is_kept_must_still_be_there(lake, tmp_path):
    manager = LakeIOManager(lake=lake)
    raw = tmp_path / "raw.csv.gz"
    raw.write_bytes(b"\x1f\x8b fake but stored as bytes")
    manager.handle_output(_out(raw_trips), NewFile(raw))
    stored = manager.load_input(_in(raw_trips))
    assert stored.parquet is None
    manager.handle_output(_out(raw_trips), stored)  # keep it: no error
    (tmp_path / "lake" / stored.key).write_bytes(b"replaced behind our back")
    with pytest.raises(dg.Failure, match="changed or vanished while being kept"):
        manager.handle_output(_out(raw_trips), stored)


def test_a_missing_upstream_says_what_to_materialize(lake):
    with pytest.raises(
        dg.Failure, match=r"partition green\|2020-10-01: raw_trips is not in the lake at .*materialize raw_trips first"
    ):
        LakeIOManager(lake=lake).load_input(_in(raw_trips))


def test_an_asset_without_a_lake_path_fails_saying_how_to_declare_one(lake, tmp_path):
    manager = LakeIOManager(lake=lake)
    with pytest.raises(dg.Failure, match="bq_rides_table: no 'lake/path' metadata"):
        manager.handle_output(_out("bq_rides_table"), NewFile(_parquet(tmp_path / "x.parquet")))
    with pytest.raises(dg.Failure, match="bq_rides_table: no 'lake/path' metadata"):
        manager.load_input(_in("bq_rides_table"))


def test_outputs_of_other_types_and_runs_over_ranges_are_refused(lake, tmp_path):
    manager = LakeIOManager(lake=lake)
    with pytest.raises(TypeError, match="must return NewFile, PublishCopy or its own LakeFile, got DataFrame"):
        manager.handle_output(_out(clean_trips), type("DataFrame", (), {})())
    with pytest.raises(dg.Failure, match="one month x color partition per run, got 0"):
        manager.handle_output(_out(clean_trips, partition_key=None), NewFile(_parquet(tmp_path / "x.parquet")))


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


# A lake asset that exists only here: its place is its own metadata, with no edit to layout.py or
# io_manager.py. It writes a CSV per partition, and a side file of notes when asked to.


class ExtraConfig(dg.Config):
    notes: bool = True


@dg.asset(
    partitions_def=ASSETS.partitions_def,
    io_manager_key=LAKE_IO,
    metadata=layout.lake_metadata(
        layout.partition_path("reports/extra", ".csv"), notes=layout.partition_path("reports/extra_notes", ".txt")
    ),
)
def extra_report(context: dg.AssetExecutionContext, config: ExtraConfig, workdir: WorkDir):
    made = workdir.path("extra.csv")
    made.write_text(f"partition\n{context.partition_key}\n")
    notes = workdir.path("notes.txt") if config.notes else None
    if notes is not None:
        notes.write_text("made in a test")
    return NewFile(made, side_files={"notes": notes})


@dg.asset(partitions_def=ASSETS.partitions_def)
def extra_reader(extra_report: LakeFile):
    with extra_report.local_copy() as path:
        text = path.read_text()
    return dg.MaterializeResult(metadata={"read_from": extra_report.key, "text": text})


# Not partitioned: a fixed name. It keeps what the lake holds, as raw_trips does, by asking the lake.
@dg.asset(io_manager_key=LAKE_IO, metadata=layout.lake_metadata("reports/extra/summary.txt"))
def extra_summary(context: dg.AssetExecutionContext, workdir: WorkDir, lake: Lake):
    stored = stored_file(context, lake)
    if stored is not None:
        return dg.MaterializeResult(value=stored, metadata={"kept": True})
    made = workdir.path("summary.txt")
    made.write_text("summary")
    return dg.MaterializeResult(value=NewFile(made), metadata={"kept": False})


def _resources(tmp_path, lake):
    return {"lake": lake, "lake_io_manager": LakeIOManager(lake=lake), "workdir": WorkDir(root=str(tmp_path / "work"))}


def test_a_new_lake_asset_is_stored_where_its_metadata_says_and_read_back_downstream(lake, tmp_path, instance):
    resources = _resources(tmp_path, lake)
    result = dg.materialize([extra_report, extra_reader], partition_key=KEY, resources=resources, instance=instance)
    assert result.success
    stored = tmp_path / "lake" / "reports" / "extra" / "green" / "green_tripdata_2020-10.csv"
    notes = tmp_path / "lake" / "reports" / "extra_notes" / "green" / "green_tripdata_2020-10.txt"
    assert stored.read_text() == f"partition\n{KEY}\n"
    assert notes.read_text() == "made in a test"
    [made] = result.asset_materializations_for_node("extra_report")
    assert made.metadata["uri"].value == str(stored)
    assert made.metadata["notes_uri"].value == str(notes)
    [read] = result.asset_materializations_for_node("extra_reader")
    assert read.metadata["read_from"].value == "reports/extra/green/green_tripdata_2020-10.csv"
    assert read.metadata["text"].value == f"partition\n{KEY}\n"

    # A new version without notes: the earlier notes do not stay to describe it.
    run_config = {"ops": {"extra_report": {"config": {"notes": False}}}}
    dg.materialize([extra_report], partition_key=KEY, resources=resources, instance=instance, run_config=run_config)
    assert stored.exists() and not notes.exists()


def test_a_new_unpartitioned_lake_asset_has_a_fixed_name_and_can_keep_what_is_stored(lake, tmp_path, instance):
    resources = _resources(tmp_path, lake)
    first = dg.materialize([extra_summary], resources=resources, instance=instance)
    stored = tmp_path / "lake" / "reports" / "extra" / "summary.txt"
    assert stored.read_text() == "summary"
    assert first.asset_materializations_for_node("extra_summary")[0].metadata["kept"].value is False
    written = stored.stat().st_mtime_ns

    again = dg.materialize([extra_summary], resources=resources, instance=instance)
    [kept] = again.asset_materializations_for_node("extra_summary")
    assert kept.metadata["kept"].value is True
    assert kept.metadata["uri"].value == str(stored)
    assert stored.stat().st_mtime_ns == written


def test_a_new_asset_without_a_lake_path_fails_its_step_at_once_saying_so(lake, tmp_path, instance):
    @dg.asset(io_manager_key=LAKE_IO, retry_policy=dg.RetryPolicy(max_retries=2))
    def undeclared(workdir: WorkDir):
        made = workdir.path("x.txt")
        made.write_text("x")
        return NewFile(made)

    result = dg.materialize([undeclared], resources=_resources(tmp_path, lake), instance=instance, raise_on_error=False)
    assert not result.success
    [message] = step_failure_messages(result)
    assert "undeclared: no 'lake/path' metadata, so the lake does not know where it lives" in message
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
