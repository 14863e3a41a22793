"""What the assets share: their group, retry policies, and how resource errors become failures."""

import contextlib
from collections.abc import Iterator

import dagster as dg
import pyarrow as pa

from taxi_assets.partitions import TripMonth
from taxi_assets.resources.errors import SetupError

GROUP = "nyc_tlc"

# Download attempts inside one run cover short blips; these cover an upstream outage.
UPSTREAM_RETRY = dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
STORAGE_RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    """An Arrow schema as the `dagster/column_schema` metadata the UI shows."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(f.name, str(f.type), constraints=dg.TableColumnConstraints(nullable=f.nullable))
            for f in schema
        ]
    )


@contextlib.contextmanager
def fail_fast_on_setup_errors(month: TripMonth) -> Iterator[None]:
    """A missing bucket, a 403 or incompatible locations: fail now, naming the partition; retries
    would only repeat the same refusal."""
    try:
        yield
    except SetupError as exc:
        raise dg.Failure(description=f"partition {month}: {exc}", allow_retries=False) from exc
