"""Talking to a running webserver as the UI does: its GraphQL endpoint."""

from __future__ import annotations

import json
import time
import urllib.request


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    """POST one query to the webserver at `port`; its `data`, or an AssertionError with the errors."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    if body.get("errors"):
        raise AssertionError(f"GraphQL errors: {body['errors']}")
    return body["data"]


def wait_until(predicate, timeout: float, what: str, interval: float = 1.0):
    """Poll `predicate` until it returns something true (returned), or fail after `timeout` s naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def location_loaded(port: int, location: str = "taxi_assets") -> bool:
    """The webserver answers and the code location has loaded (a code server starts after the
    webserver can already answer)."""
    try:
        data = graphql(
            port,
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { __typename } } } } }",
        )
    except OSError:
        return False
    entries = {e["name"]: e for e in data["workspaceOrError"].get("locationEntries", [])}
    entry = entries.get(location)
    return bool(
        entry and entry["loadStatus"] == "LOADED" and entry["locationOrLoadError"]["__typename"] == "RepositoryLocation"
    )


RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    ... on Runs { results { runId status jobName creationTime startTime endTime tags { key value } } }
  }
}
"""


def runs(port: int, run_filter: dict | None = None) -> list[dict]:
    """The runs the webserver lists, with their status, times and tags (`run_filter`: a RunsFilter)."""
    return graphql(port, RUNS, {"filter": run_filter or {}})["runsOrError"]["results"]


def run_tags(run: dict) -> dict[str, str]:
    """A run's tags (as `runs` lists them) as a dict."""
    return {t["key"]: t["value"] for t in run["tags"]}


def max_overlap(finished_runs: list[dict]) -> int:
    """The most runs that were running at the same moment, from their start and end times."""
    events = sorted(
        [(r["startTime"], 1) for r in finished_runs] + [(r["endTime"], -1) for r in finished_runs],
        key=lambda e: (e[0], e[1]),  # an end before a start at the same instant
    )
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


GRID = """
query Grid($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      partitionDefinition { type dimensionTypes { name type } }
      partitionKeysByDimension { name type partitionKeys }
      assetPartitionStatuses {
        __typename
        ... on MultiPartitionStatuses {
          primaryDimensionName
          ranges {
            primaryDimStartKey
            primaryDimEndKey
            secondaryDim { ... on DefaultPartitionStatuses { materializedPartitions failedPartitions } }
          }
        }
      }
    }
  }
}
"""


def partition_grid(port: int, asset: str) -> dict:
    """An asset's grid as the UI's partitions page and launch dialog read it: the dimensions, each
    one's keys, and the materialized keys ("yellow|2021-01-01") of a month x color grid."""
    node = graphql(port, GRID, {"key": {"path": asset.split("/")}})["assetNodeOrError"]
    keys = {d["name"]: d["partitionKeys"] for d in node["partitionKeysByDimension"]}
    statuses = node["assetPartitionStatuses"]
    primary = statuses["primaryDimensionName"]
    [secondary] = [name for name in keys if name != primary]
    materialized = set()
    for span in statuses["ranges"]:
        months = keys[primary][
            keys[primary].index(span["primaryDimStartKey"]) : keys[primary].index(span["primaryDimEndKey"]) + 1
        ]
        for other in span["secondaryDim"]["materializedPartitions"]:
            parts = {primary: "", secondary: other}
            for month in months:
                parts[primary] = month
                materialized.add("|".join(parts[name] for name in sorted(parts)))  # dimensions sort by name
    return {
        "type": node["partitionDefinition"]["type"],
        "dimensions": {d["name"]: d["type"] for d in node["partitionDefinition"]["dimensionTypes"]},
        "primary": primary,
        "keys": keys,
        "materialized": materialized,
    }
