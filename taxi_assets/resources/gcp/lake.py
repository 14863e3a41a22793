"""The lake in a GCS bucket: `gs://{bucket}/{key}`."""

from __future__ import annotations

import base64
import contextlib
from pathlib import Path

import pyarrow.parquet as pq
from dagster_gcp import GCSResource
from google.api_core.exceptions import NotFound, PreconditionFailed
from pydantic import PrivateAttr

from taxi_assets.resources.gcp.clients import Bounds, call_retry, explained
from taxi_assets.resources.lake import Lake, LakeObject, SourceReplaced

GRANT = "roles/storage.objectAdmin on the bucket"


class GCSLake(Lake):
    """A GCS bucket through dagster-gcp's GCSResource. An object becomes visible only once its upload
    or copy completes: readers see the old generation or the new one, never a part."""

    gcs: GCSResource
    bucket: str
    # Every call's bound (`Bounds`): the client library retries a 429, a 5xx or a rateLimitExceeded
    # with backoff from `first_pause_seconds`, starting no new request after `call_deadline_seconds`
    # (the library's own default is 120 s), each request cut at `request_timeout_seconds` (its
    # default, 60 s: a 100 MiB upload chunk at 2 MB/s); then the step fails as retryable.
    call_deadline_seconds: float = 120.0
    request_timeout_seconds: float = 60.0
    first_pause_seconds: float = 1.0
    _client = PrivateAttr(default=None)

    def _bucket(self):
        if self._client is None:
            self._client = self.gcs.get_client()
        return self._client.bucket(self.bucket)

    def _bounds(self) -> Bounds:
        return Bounds(self.call_deadline_seconds, self.request_timeout_seconds, self.first_pause_seconds)

    def _explained(self, doing: str, needs: str) -> contextlib.AbstractContextManager:
        return explained(
            self._client,
            service="GCS",
            doing=doing,
            needs=needs,
            grant=GRANT,
            bounds=self._bounds(),
            bucket=self.bucket,
        )

    def _limits(self, doing: str) -> dict:
        """The `retry=` and `timeout=` of a call: our predicate (a 403 rateLimitExceeded too) and bound."""
        retry = call_retry(self._bounds(), service="GCS", doing=doing)
        return {"retry": retry, "timeout": self.request_timeout_seconds}

    def uri(self, key: str) -> str:
        """The object's gs:// URI."""
        return f"gs://{self.bucket}/{key}"

    def _describe(self, blob) -> LakeObject:
        crc32c = blob.crc32c and base64.b64decode(blob.crc32c).hex()
        md5 = blob.md5_hash and base64.b64decode(blob.md5_hash).hex()
        return LakeObject(
            key=blob.name,
            uri=self.uri(blob.name),
            size=int(blob.size),
            generation=blob.generation,
            md5=md5 or None,
            crc32c=crc32c or None,
        )

    def store(self, local_path: Path, key: str) -> LakeObject:
        """Upload the file under `key` (checksummed; a new generation replaces the old object at once)."""
        blob = self._bucket().blob(key)
        doing = f"write {self.uri(key)}"
        with self._explained(doing, "storage.objects.create and storage.objects.delete"):
            # Retried whole or by chunk: the same bytes under the same key (a new generation).
            blob.upload_from_filename(str(local_path), checksum="crc32c", **self._limits(doing))
        return self._describe(blob)

    def copy(self, src_key: str, dst_key: str, src_generation: int | None = None) -> LakeObject:
        """Server-side copy (a rewrite), of exactly `src_generation` when given, else SourceReplaced."""
        bucket = self._bucket()
        # With a generation, the source is that version of the object (the rewrite's
        # sourceGeneration), never whatever another run stored under the key since: GCS answers 404
        # when that generation is gone (overwritten, no object versioning), and 412 when a
        # precondition on it fails. gcp-storage-emulator ignores sourceGeneration (and the
        # if*GenerationMatch preconditions): it copies the live object, so only the error path is
        # tested against it, with GCS's answers injected.
        source, copied = bucket.blob(src_key, generation=src_generation), bucket.blob(dst_key)
        doing = f"copy {self.uri(src_key)} to {self.uri(dst_key)}"
        try:
            with self._explained(doing, "storage.objects.get and storage.objects.create"):
                # Server-side: the bytes do not pass through the worker. Large objects take several
                # rewrite calls; the destination appears only when the last one completes. Retried
                # by the client (its default retries a rewrite only with a generation precondition,
                # and ours carries the source generation instead): a retried call copies the same
                # source generation again, so it is as safe as a precondition would make it.
                token, _, _ = copied.rewrite(source, **self._limits(doing))
                while token is not None:
                    token, _, _ = copied.rewrite(source, token=token, **self._limits(doing))
        except (NotFound, PreconditionFailed) as exc:
            if src_generation is None:
                raise
            raise SourceReplaced(
                f"{self.uri(src_key)} generation {src_generation}, the version this run checked, is no longer "
                f"there (HTTP {exc.code}): another run replaced it. Nothing was published to {self.uri(dst_key)}; "
                "rerun the partition"
            ) from None
        return self._describe(copied)

    def stat(self, key: str) -> LakeObject | None:
        """The object's size, generation and checksums, or None if there is none."""
        bucket = self._bucket()
        doing = f"read {self.uri(key)}"
        with self._explained(doing, "storage.objects.get"):
            blob = bucket.get_blob(key, **self._limits(doing))
        return self._describe(blob) if blob is not None else None

    def delete(self, key: str) -> bool:
        """Delete the object if there is one; whether there was."""
        bucket = self._bucket()
        doing = f"delete {self.uri(key)}"
        with self._explained(doing, "storage.objects.delete"):
            try:
                bucket.blob(key).delete(**self._limits(doing))
            except NotFound:
                return False
        return True

    def download(self, key: str, dest: Path) -> Path:
        """Copy the object to the local file `dest`."""
        bucket = self._bucket()
        doing = f"read {self.uri(key)}"
        with self._explained(doing, "storage.objects.get"):
            bucket.blob(key).download_to_filename(str(dest), **self._limits(doing))
        return dest

    def parquet_footer(self, key: str) -> pq.FileMetaData:
        """The Parquet footer, read through a seekable reader on the object, never downloaded to disk."""
        bucket = self._bucket()
        doing = f"read {self.uri(key)}"
        with (
            self._explained(doing, "storage.objects.get"),
            bucket.blob(key).open("rb", **self._limits(doing)) as reader,
        ):
            return pq.read_metadata(reader)
