"""Real rows parse with the pinned schemas; bad files fail naming the file, column and line."""

import datetime as dt
import gzip

import pyarrow.parquet as pq
import pytest

from taxi_assets.cleaning import BadTripFile, clean_trip_file
from taxi_assets.schema import RELEASES_SCHEMAS
from taxi_assets_tests.helpers import fhv_month, real_rows


def _gz(tmp_path, lines, name="in.csv.gz"):
    path = tmp_path / name
    path.write_bytes(gzip.compress("".join(lines).encode()))
    return path


def _set_field(lines, index, field, value):
    """Replace one value of one CSV line, the rest of the line as it was."""
    fields = lines[index].split(",")
    fields[field] = value
    lines[index] = ",".join(fields)


def _clean(tmp_path, lines, color, ym):
    start = dt.date.fromisoformat(f"{ym}-01")
    end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    out = tmp_path / "out.parquet"
    result = clean_trip_file(
        _gz(tmp_path, lines),
        out,
        color=color,
        schema=RELEASES_SCHEMAS[color],
        month_start=start,
        month_end=end,
        file_label=f"test {color} {ym}",
    )
    return result, pq.read_table(out)


def test_green_tail_with_empty_integer_columns_keeps_integer_types(tmp_path):
    result, table = _clean(tmp_path, real_rows("green_tripdata_2020-10_tail500.csv"), "green", "2020-10")
    assert table.schema.equals(RELEASES_SCHEMAS["green"])
    assert result.rows == table.num_rows == 500
    assert str(table.schema.field("VendorID").type) == "int64"
    for column in (
        "VendorID",
        "RatecodeID",
        "passenger_count",
        "payment_type",
        "trip_type",
        "store_and_fwd_flag",
        "ehail_fee",
    ):
        assert table.column(column).null_count == 500, column
    assert result.null_counts["passenger_count"] == 500


def test_green_head_and_tail_share_one_schema(tmp_path):
    head = real_rows("green_tripdata_2020-10_head3000.csv")
    tail = real_rows("green_tripdata_2020-10_tail500.csv")[1:]
    result, table = _clean(tmp_path, head + tail, "green", "2020-10")
    assert result.rows == 3500
    assert table.column("VendorID").null_count == 500
    assert table.column("PULocationID").null_count == 0


def test_yellow_head_decimals_and_negative_totals(tmp_path):
    result, table = _clean(tmp_path, real_rows("yellow_tripdata_2021-01_head3000.csv"), "yellow", "2021-01")
    assert result.rows == 3000
    assert table.schema.equals(RELEASES_SCHEMAS["yellow"])
    assert table.column("trip_distance")[1].as_py() == pytest.approx(0.2)  # ".20" in the file
    negatives = sum(1 for v in table.column("total_amount").to_pylist() if v is not None and v < 0)
    assert negatives == 26
    zero_passengers = table.column("passenger_count").to_pylist().count(0)
    assert zero_passengers == 49


def test_yellow_2020_07_counts_out_of_month_pickups_and_reads_last_row_without_newline(tmp_path):
    lines = real_rows("yellow_tripdata_2020-07_sample266.csv")
    lines[-1] = lines[-1].rstrip("\n")
    result, table = _clean(tmp_path, lines, "yellow", "2020-07")
    assert result.rows == table.num_rows == 266
    assert result.pickups_outside_month == 5
    assert result.min_pickup.date() == dt.date(2020, 6, 30)


def test_fhv_2019_without_affiliated_base_number_gets_the_column_as_nulls(tmp_path):
    result, table = _clean(tmp_path, fhv_month("2019-01"), "fhv", "2019-01")
    assert table.schema.equals(RELEASES_SCHEMAS["fhv"])
    assert result.rows == 18
    assert table.column("Affiliated_base_number").null_count == 18
    assert table.column("PULocationID").null_count > 0  # empty location ids stay NULL


def test_fhv_release_casing_of_2019_maps_to_the_pinned_names(tmp_path):
    lines = fhv_month("2019-02")
    lines[0] = "dispatching_base_num,pickup_datetime,dropOff_datetime,PUlocationID,DOlocationID,SR_Flag\n"
    result, table = _clean(tmp_path, lines, "fhv", "2019-02")
    assert result.rows == 16
    assert table.schema.names == RELEASES_SCHEMAS["fhv"].names
    assert table.column("DOLocationID").null_count == 0


def test_fhvhv_release_rows_parse_as_fhv(tmp_path):
    result, table = _clean(tmp_path, real_rows("fhvhv_tripdata_2021-06_DTCrelease_head10.csv"), "fhv", "2021-06")
    assert result.rows == 10
    assert table.column("SR_Flag").to_pylist()[0] == "N"


def test_integers_written_as_floats_are_accepted(tmp_path):
    lines = real_rows("green_tripdata_2020-10_head3000.csv")[:3]
    lines[1] = lines[1].replace("2,2020-10-01", "2.0,2020-10-01", 1)
    result, table = _clean(tmp_path, lines, "green", "2020-10")
    assert table.column("VendorID").to_pylist()[:2] == [2, 2]


def test_wrong_header_names_file_and_columns(tmp_path):
    lines = real_rows("green_tripdata_2020-10_head3000.csv")[:10]
    with pytest.raises(BadTripFile) as err:
        _clean(tmp_path, lines, "yellow", "2020-10")
    message = str(err.value)
    assert "test yellow 2020-10" in message
    assert "wrong header" in message
    assert "lpep_pickup_datetime" in message and "tpep_pickup_datetime" in message
    assert not (tmp_path / "out.parquet").exists()


def test_unparseable_value_names_column_and_line(tmp_path):
    lines = real_rows("yellow_tripdata_2021-01_head3000.csv")
    _set_field(lines, 1500, 4, "1.2.3")  # trip_distance
    with pytest.raises(BadTripFile) as err:
        _clean(tmp_path, lines, "yellow", "2021-01")
    message = str(err.value)
    assert "'trip_distance'" in message
    assert "line 1501" in message
    assert "'1.2.3'" in message
    assert not (tmp_path / "out.parquet").exists()


def test_unparseable_timestamp_names_column_and_line(tmp_path):
    lines = real_rows("yellow_tripdata_2021-01_head3000.csv")[:50]
    lines[7] = lines[7].replace("2021-01-01", "2021-13-01", 1)
    with pytest.raises(BadTripFile, match=r"'tpep_pickup_datetime', line 8: cannot read '2021-13-01"):
        _clean(tmp_path, lines, "yellow", "2021-01")


def test_fractional_integer_names_column_and_line(tmp_path):
    lines = real_rows("yellow_tripdata_2021-01_head3000.csv")[:50]
    _set_field(lines, 20, 3, "1.5")  # passenger_count
    with pytest.raises(BadTripFile, match=r"'passenger_count', line 21: cannot read '1.5' as int64"):
        _clean(tmp_path, lines, "yellow", "2021-01")


def test_fractional_integer_in_a_file_of_float_written_integers(tmp_path):
    lines = real_rows("yellow_tripdata_2021-01_head3000.csv")[:50]
    lines[5] = "2.0" + lines[5][1:]  # VendorID "2.0": integers written as floats
    _set_field(lines, 20, 3, "1.5")  # passenger_count
    with pytest.raises(BadTripFile, match=r"'passenger_count', line 21: value 1.5 is not a whole number"):
        _clean(tmp_path, lines, "yellow", "2021-01")


def test_row_with_missing_fields_names_the_line(tmp_path):
    lines = real_rows("yellow_tripdata_2021-01_head3000.csv")[:50]
    lines[30] = ",".join(lines[30].split(",")[:10]) + "\n"
    with pytest.raises(BadTripFile, match=r"line 31: expected 18 fields"):
        _clean(tmp_path, lines, "yellow", "2021-01")


def test_not_gzip_fails_clearly(tmp_path):
    path = tmp_path / "in.csv.gz"
    path.write_bytes(b"VendorID,foo\n1,2\n")
    with pytest.raises(BadTripFile, match="not a readable gzip file"):
        clean_trip_file(
            path,
            tmp_path / "o.parquet",
            color="yellow",
            schema=RELEASES_SCHEMAS["yellow"],
            month_start=dt.date(2021, 1, 1),
            month_end=dt.date(2021, 2, 1),
            file_label="x",
        )


def test_truncated_gzip_fails_clearly_and_leaves_no_parquet(tmp_path):
    whole = gzip.compress("".join(real_rows("yellow_tripdata_2021-01_head3000.csv")).encode())
    path = tmp_path / "in.csv.gz"
    path.write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "o.parquet"
    with pytest.raises(BadTripFile, match="x: unreadable: .*end-of-stream marker"):
        clean_trip_file(
            path,
            out,
            color="yellow",
            schema=RELEASES_SCHEMAS["yellow"],
            month_start=dt.date(2021, 1, 1),
            month_end=dt.date(2021, 2, 1),
            file_label="x",
        )
    assert not out.exists()


def test_a_bad_value_late_in_a_big_file_stops_the_parse_thread(tmp_path):
    """The consumer fails while the parser is blocks ahead: the parse thread must not hang."""
    import threading

    lines = real_rows("yellow_tripdata_2021-01_head3000.csv")
    lines = lines + lines[1:] * 40  # 123k rows, ~11 MB: several 2 MB blocks, parsed ahead
    lines[150] = "2.0" + lines[150][1:]  # integers written as floats: the float path with its cast
    _set_field(lines, 60_000, 3, "1.5")  # fails in the consumer's cast, with the rest still to parse
    with pytest.raises(BadTripFile, match="line 60001"):
        _clean(tmp_path, lines, "yellow", "2021-01")
    assert not [t for t in threading.enumerate() if t.name == "csv-parse"]


# Quarantine: bad rows set aside instead of failing the month.


def _quarantine(tmp_path, lines, color="yellow", ym="2021-01"):
    start = dt.date.fromisoformat(f"{ym}-01")
    end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    out, rejected = tmp_path / "out.parquet", tmp_path / "rejected.csv.gz"
    result = clean_trip_file(
        _gz(tmp_path, lines),
        out,
        color=color,
        schema=RELEASES_SCHEMAS[color],
        month_start=start,
        month_end=end,
        file_label="t",
        rejected_path=rejected,
    )
    return result, pq.read_table(out), rejected


def test_quarantine_sets_bad_rows_aside_whole_with_line_and_reason(tmp_path):
    import csv

    lines = real_rows("yellow_tripdata_2021-01_head3000.csv")
    lines = lines + lines[1:] * 10  # 33,000 rows over several blocks
    bad = {
        101: lambda: _set_field(lines, 100, 4, "1.2.3"),  # trip_distance
        2_500: lambda: _set_field(lines, 2_499, 3, "1.5"),  # passenger_count, not whole
        9_000: lambda: lines.__setitem__(8_999, ",".join(lines[8_999].split(",")[:10]) + "\n"),  # short row
        20_000: lambda: lines.__setitem__(19_999, lines[19_999].replace("2021-01-", "2021-13-", 1)),  # pickup
        30_001: lambda: _set_field(lines, 30_000, 0, "x"),  # VendorID
    }
    for spoil in bad.values():
        spoil()
    lines[5] = "2.0" + lines[5][1:]  # an integer written as a float is not a bad row
    expected_text = {line: lines[line - 1].rstrip("\n") for line in bad}
    result, table, rejected = _quarantine(tmp_path, lines)

    assert result.rows_rejected == 5
    assert result.rows == table.num_rows == 33_000 - 5  # source lines = lake rows + rejected rows
    assert table.schema.equals(RELEASES_SCHEMAS["yellow"])
    assert table.column("VendorID")[4].as_py() == 2
    with gzip.open(rejected, "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["line"]) for r in rows] == sorted(bad)
    assert {int(r["line"]): r["text"] for r in rows} == expected_text  # whole, as in the file
    reasons = {int(r["line"]): r["reason"] for r in rows}
    assert reasons[101] == "column 'trip_distance': cannot read '1.2.3' as double"
    assert reasons[2_500] == "column 'passenger_count': cannot read '1.5' as int64"
    assert reasons[9_000] == "expected 18 fields, found 10"
    assert reasons[20_000].startswith("column 'tpep_pickup_datetime': cannot read '2021-13-01")
    assert reasons[30_001] == "column 'VendorID': cannot read 'x' as int64"


def test_quarantine_of_a_clean_file_gives_the_same_parquet_and_no_rejected_file(tmp_path):
    lines = real_rows("green_tripdata_2020-10_head3000.csv") + real_rows("green_tripdata_2020-10_tail500.csv")[1:]
    result, table, rejected = _quarantine(tmp_path, lines, "green", "2020-10")
    assert (result.rows, result.rows_rejected) == (3500, 0) and not rejected.exists()
    normal, _ = _clean(
        tmp_path / "normal" if (tmp_path / "normal").mkdir() is None else tmp_path, lines, "green", "2020-10"
    )
    assert table.equals(pq.read_table(tmp_path / "normal" / "out.parquet"))
