"""S3: every object (every version, in versioned buckets) to the destinations.

Layout at a destination:
  ``s3/<bucket>/<key>``                          the current version
  ``s3-versions/<bucket>/<key>@<version-id>``    each noncurrent version
Key segments a file system cannot hold as they are (empty, ``.``, ``..``) are
escaped with ``%`` (and ``%`` itself as ``%25``); the manifest keeps the
original key.

Each object is read with the version or ETag the listing saw (``VersionId``
or ``If-Match``), so what is copied is exactly what the idempotency key
names. Its md5 is checked against a single-part ETag, and its sha256 against
an S3 full-object SHA256 checksum where the object has one.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

import botocore.exceptions

from orchestrator.errors import ChecksumMismatch, RetryableError
from orchestrator.exporters.base import Exporter, ExportItem, Part, RangedSource, SourceStream

_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG = re.compile(r"^([0-9a-f]{32})-(\d+)$")
_CHUNK = 1024 * 1024


def escape_segment(segment: str) -> str:
    """Make one S3 key segment safe as a path segment, reversibly and collision-free."""
    segment = segment.replace("%", "%25")
    if segment == "":
        return "%"
    if segment in (".", ".."):
        return segment.replace(".", "%2E")
    if segment.startswith(".exitplan-"):
        return "%2E" + segment[1:]
    return segment


def destination_key(bucket: str, key: str, version_id: str | None, is_latest: bool) -> str:
    path = "/".join(escape_segment(part) for part in key.split("/"))
    if is_latest:
        return f"s3/{bucket}/{path}"
    return f"s3-versions/{bucket}/{path}@{version_id or 'null'}"


class MultipartEtag:
    """Recomputes a multipart ETag (md5 of the parts' md5s, "-N") from the bytes.

    S3 does not say where the parts of an upload ended; ``HeadObject`` with
    ``PartNumber=1`` gives the first part's size, and uploaders (the AWS CLI,
    SDKs, rclone) use one size for every part but the last. An upload with
    uneven parts cannot be checked this way; that case is told apart by the
    size of the last part and reported, never failed.
    """

    def __init__(self, etag: str, part_size: int, parts: int) -> None:
        self.etag = etag
        self.part_size = part_size
        self.parts = parts
        self._digests: list[bytes] = []
        self._current = hashlib.md5(usedforsecurity=False)
        self._filled = 0

    def update(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            take = min(len(view), self.part_size - self._filled)
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.part_size:
                self._digests.append(self._current.digest())
                self._current = hashlib.md5(usedforsecurity=False)
                self._filled = 0

    def hexdigest(self) -> str:
        digests = list(self._digests)
        if self._filled:
            digests.append(self._current.digest())
        return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"

    def uniform_layout_fits(self, size: int) -> bool:
        return (self.parts - 1) * self.part_size < size <= self.parts * self.part_size

    def check(self, name: str, size: int) -> str:
        computed = self.hexdigest()
        if computed == self.etag:
            return f"etag:{self.etag}"
        if not self.uniform_layout_fits(size):
            return f"etag:{self.etag} (uneven parts: length checked only)"
        raise ChecksumMismatch(f"{name}: multipart md5 {computed} does not match ETag {self.etag}")


class S3SourceStream(SourceStream):
    def __init__(
        self, item: ExportItem, response: Mapping[str, Any], multipart: MultipartEtag | None
    ) -> None:
        self.item = item
        self.response = response
        self.body = response["Body"]
        self.multipart = multipart

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self.body.iter_chunks(_CHUNK):
                if self.multipart is not None:
                    self.multipart.update(chunk)
                yield chunk
        except botocore.exceptions.BotoCoreError as exc:
            raise RetryableError(
                f"{self.item.source['bucket']}/{self.item.source['key']}: "
                f"reading the body failed ({type(exc).__name__})"
            ) from exc

    def verify(self, *, size: int, md5_hex: str, sha256_hex: str) -> str | None:
        return self.verify_response(
            self.item, self.response, size, md5_hex, sha256_hex, self.multipart
        )

    @staticmethod
    def verify_response(
        item: ExportItem,
        response: Mapping[str, Any],
        size: int,
        md5_hex: str,
        sha256_hex: str,
        multipart: MultipartEtag | None = None,
    ) -> str | None:
        """Check what was read against the GET response's length, ETag and checksum."""
        name = f"s3://{item.source['bucket']}/{item.source['key']}"
        expected_size = int(response.get("ContentLength", size))
        if size != expected_size:
            raise ChecksumMismatch(f"{name}: got {size} of {expected_size} bytes")
        etag = str(response.get("ETag", "")).strip('"')
        encrypted_by_kms = response.get("ServerSideEncryption", "").startswith("aws:kms")
        # ETags of SSE-KMS and SSE-C objects are not the md5 of the content.
        if (
            _MD5_ETAG.match(etag)
            and not encrypted_by_kms
            and not response.get("SSECustomerAlgorithm")
        ):
            if md5_hex != etag:
                raise ChecksumMismatch(f"{name}: md5 {md5_hex} does not match ETag {etag}")
            return f"md5:{etag}"
        sha256_b64 = response.get("ChecksumSHA256")
        if sha256_b64 and "-" not in sha256_b64:
            expected = base64.b64decode(sha256_b64).hex()
            if sha256_hex != expected:
                raise ChecksumMismatch(f"{name}: sha256 {sha256_hex} does not match {expected}")
            return f"sha256:{expected}"
        if multipart is not None:
            return multipart.check(name, size)
        return f"etag:{etag}" if etag else None

    def close(self) -> None:
        self.body.close()


class S3RangedSource(RangedSource):
    """A large object as ranged GETs, each pinned to the version or ETag listed."""

    def __init__(self, exporter: S3Exporter, item: ExportItem, part_size: int) -> None:
        self.exporter = exporter
        self.item = item
        self.size = int(item.size or 0)
        self.part_size = part_size
        self.multipart = exporter.multipart_etag(item)
        #: Headers of the first part's response stand for the object's.
        self._response: dict[str, Any] = {}

    def observe(self, chunk: bytes) -> None:
        if self.multipart is not None:
            self.multipart.update(chunk)

    def parts(self) -> Iterator[Part]:
        for index, offset in enumerate(range(0, self.size, self.part_size)):
            yield Part(index=index, offset=offset, length=min(self.part_size, self.size - offset))

    def read_part(self, part: Part) -> bytes:
        return b"".join(self.stream_part(part))

    def stream_part(self, part: Part) -> Iterator[bytes]:
        params = self.exporter.get_params(self.item)
        params["Range"] = f"bytes={part.offset}-{part.offset + part.length - 1}"
        response = self.exporter.account.client("s3").get_object(**params)
        if not self._response:
            self._response = {k: v for k, v in response.items() if k != "Body"}
        try:
            yield from response["Body"].iter_chunks(_CHUNK)
        except botocore.exceptions.BotoCoreError as exc:
            raise RetryableError(
                f"{self.item.dest_key}: reading part {part.index} failed ({type(exc).__name__})"
            ) from exc
        finally:
            response["Body"].close()

    def verify(self, *, size: int, md5_hex: str, sha256_hex: str) -> str | None:
        # A ranged response's ContentLength is the part's; the object's size
        # is what was listed.
        response = {**self._response, "ContentLength": self.size}
        response.pop("ChecksumSHA256", None)  # ranged GETs carry no whole-object checksum
        response.setdefault("ETag", f'"{self.item.source.get("etag", "")}"')
        return S3SourceStream.verify_response(
            self.item, response, size, md5_hex, sha256_hex, self.multipart
        )


class S3Exporter(Exporter):
    kind = "s3"

    def list_items(self) -> Iterator[ExportItem]:
        client = self.account.client("s3")
        buckets = [b["Name"] for b in client.list_buckets().get("Buckets", [])]
        ranked = sorted(buckets, key=lambda b: (self.tier_of.rank({"kind": "s3", "bucket": b}), b))
        for bucket in ranked:
            tier = self.tier_of({"kind": "s3", "bucket": bucket})
            versioning = client.get_bucket_versioning(Bucket=bucket).get("Status")
            if versioning in ("Enabled", "Suspended"):
                yield from self._list_versions(client, bucket, tier)
            else:
                yield from self._list_current(client, bucket, tier)

    def _list_current(self, client: Any, bucket: str, tier: str) -> Iterator[ExportItem]:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                yield self._item(bucket, obj, version_id=None, is_latest=True, tier=tier)

    def _list_versions(self, client: Any, bucket: str, tier: str) -> Iterator[ExportItem]:
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
            # Delete markers hold no bytes; the manifest of versions says enough.
            for obj in page.get("Versions", []):
                yield self._item(
                    bucket,
                    obj,
                    version_id=obj.get("VersionId"),
                    is_latest=bool(obj.get("IsLatest")),
                    tier=tier,
                )

    def _item(
        self,
        bucket: str,
        obj: Mapping[str, Any],
        *,
        version_id: str | None,
        is_latest: bool,
        tier: str,
    ) -> ExportItem:
        key = obj["Key"]
        etag = str(obj.get("ETag", "")).strip('"')
        return ExportItem(
            kind="s3",
            idem_key=f"s3:{bucket}/{key}?version={version_id or 'null'}&etag={etag}",
            dest_key=destination_key(bucket, key, version_id, is_latest),
            size=int(obj.get("Size", 0)),
            source={
                "bucket": bucket,
                "key": key,
                "version_id": version_id,
                "etag": etag,
                "is_latest": is_latest,
            },
            tier=tier,
        )

    def get_params(self, item: ExportItem) -> dict[str, Any]:
        """GetObject arguments that read exactly the version the listing saw."""
        source = item.source
        params: dict[str, Any] = {
            "Bucket": source["bucket"],
            "Key": source["key"],
            "ChecksumMode": "ENABLED",
        }
        if source.get("version_id"):
            params["VersionId"] = source["version_id"]
        elif source.get("etag"):
            params["IfMatch"] = f'"{source["etag"]}"'
        return params

    def multipart_etag(self, item: ExportItem) -> MultipartEtag | None:
        """For an object uploaded in parts, what it takes to recompute its ETag."""
        match = _MULTIPART_ETAG.match(str(item.source.get("etag", "")))
        if match is None:
            return None
        params = self.get_params(item)
        params.pop("ChecksumMode", None)
        # Some servers answer a part's own ETag to a PartNumber HEAD, so an
        # If-Match on the object's ETag would fail; the GET itself keeps it.
        params.pop("IfMatch", None)
        head = self.account.client("s3").head_object(PartNumber=1, **params)
        return MultipartEtag(
            str(item.source["etag"]), int(head["ContentLength"]), int(match.group(2))
        )

    def open(self, item: ExportItem) -> SourceStream:
        multipart = self.multipart_etag(item)
        response = self.account.client("s3").get_object(**self.get_params(item))
        return S3SourceStream(item, response, multipart)

    def open_ranged(self, item: ExportItem) -> RangedSource | None:
        """Objects larger than one part are fetched as parallel ranged GETs."""
        part_size = self.context.part_size
        if item.size is None or item.size <= part_size:
            return None
        return S3RangedSource(self, item, part_size)
