"""DuckDBWarehouse: one transaction per slice swap; a bad file leaves the old slice whole."""

import datetime as dt

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_assets.resources.local.warehouse import DuckDBWarehouse
from taxi_assets.schema import RELEASES_SCHEMAS

MONTH = dt.date(2019, 1, 1)
FHV = RELEASES_SCHEMAS["fhv"]


def _fhv_file(path, rows):
    schema = RELEASES_SCHEMAS["fhv"]
    columns = {f.name: pa.nulls(rows, f.type) for f in schema}
    columns["dispatching_base_num"] = pa.array(["B00001"] * rows)
    pq.write_table(pa.table(columns, schema=schema), path)
    return str(path)


def test_a_slice_is_replaced_not_appended_and_others_stay(tmp_path):
    warehouse = DuckDBWarehouse(database=str(tmp_path / "w.duckdb"))
    january, february = _fhv_file(tmp_path / "jan.parquet", 5), _fhv_file(tmp_path / "feb.parquet", 7)
    warehouse.replace_slice(source_uri=january, color="fhv", month=MONTH, file_schema=FHV, fill_passenger_count=True)
    warehouse.replace_slice(
        source_uri=february, color="fhv", month=dt.date(2019, 2, 1), file_schema=FHV, fill_passenger_count=True
    )
    load = warehouse.replace_slice(
        source_uri=january, color="fhv", month=MONTH, file_schema=FHV, fill_passenger_count=True
    )
    assert (load.rows, load.table_rows) == (5, 12)
    assert warehouse.slice_row_counts() == {("fhv", MONTH): 5, ("fhv", dt.date(2019, 2, 1)): 7}


def test_a_file_that_fails_to_load_leaves_the_old_slice(tmp_path):
    warehouse = DuckDBWarehouse(database=str(tmp_path / "w.duckdb"))
    warehouse.replace_slice(
        source_uri=_fhv_file(tmp_path / "ok.parquet", 5),
        color="fhv",
        month=MONTH,
        file_schema=FHV,
        fill_passenger_count=True,
    )
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(duckdb.Error):
        warehouse.replace_slice(
            source_uri=str(broken), color="fhv", month=MONTH, file_schema=FHV, fill_passenger_count=True
        )
    assert warehouse.slice_row_counts() == {("fhv", MONTH): 5}


def test_only_local_files_are_loaded(tmp_path):
    with pytest.raises(ValueError, match="local lake files only"):
        DuckDBWarehouse(database=str(tmp_path / "w.duckdb")).replace_slice(
            source_uri="gs://b/k.parquet", color="fhv", month=MONTH, file_schema=FHV, fill_passenger_count=True
        )


def test_a_table_replaced_in_a_data_folder_that_does_not_exist_yet(tmp_path):
    """On a fresh deployment the zones run can be the first to write: the folder is made."""
    warehouse = DuckDBWarehouse(database=str(tmp_path / "new" / "data" / "warehouse.duckdb"))
    assert warehouse.replace_table("zones", pa.table({"LocationID": [1, 2]})) == 2
    assert warehouse.replace_table("zones", pa.table({"LocationID": [3]})) == 1  # replaced, not appended


def test_reads_of_an_empty_warehouse_create_nothing(tmp_path):
    warehouse = DuckDBWarehouse(database=str(tmp_path / "w.duckdb"))
    assert warehouse.slice_rows("fhv", MONTH) == 0
    assert warehouse.slice_row_counts() == {}
    assert not warehouse.has_table("rides")  # the reads above did not create it
