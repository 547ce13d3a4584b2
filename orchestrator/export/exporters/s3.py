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
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import botocore.exceptions

from orchestrator.errors import ChecksumMismatch, RetryableError
from orchestrator.export.exporters.base import (
    Exporter,
    ExportItem,
    Part,
    RangedSource,
    SourceStream,
)

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


class SourceChecks:
    """What S3 promised about an object's bytes, checked as they stream past.

    In order of preference: a full-object CRC32 or SHA256 checksum (S3 keeps
    one for objects uploaded with flexible checksums, the SDKs' default; a
    CRC32 costs a seventh of an md5), the md5 that a single-part ETag is, the
    md5 of part md5s that a multipart ETag is, and at least the length.
    ``wants_md5`` tells the engine whether to spend the md5 at all.
    """

    def __init__(
        self, item: ExportItem, headers: Mapping[str, Any], multipart: MultipartEtag | None
    ) -> None:
        self.name = f"s3://{item.source['bucket']}/{item.source['key']}"
        self.etag = str(headers.get("ETag", "")).strip('"') or str(item.source.get("etag", ""))
        full_object = headers.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT"
        crc32 = headers.get("ChecksumCRC32")
        sha256 = headers.get("ChecksumSHA256")
        self.crc32: int | None = (
            int.from_bytes(base64.b64decode(crc32), "big")
            if crc32 and full_object and "-" not in crc32
            else None
        )
        self.sha256: str | None = (
            base64.b64decode(sha256).hex() if sha256 and full_object and "-" not in sha256 else None
        )
        # ETags of SSE-KMS and SSE-C objects are not the md5 of the content.
        encrypted = str(headers.get("ServerSideEncryption", "")).startswith("aws:kms") or bool(
            headers.get("SSECustomerAlgorithm")
        )
        self.md5_etag = bool(_MD5_ETAG.match(self.etag)) and not encrypted
        self.multipart = multipart if self.crc32 is None and self.sha256 is None else None
        self.wants_md5 = self.crc32 is None and self.sha256 is None and self.md5_etag
        self._crc = 0

    def update(self, chunk: bytes) -> None:
        if self.crc32 is not None:
            self._crc = zlib.crc32(chunk, self._crc)
        elif self.multipart is not None:
            self.multipart.update(chunk)

    def check(self, *, size: int, expected_size: int, md5_hex: str, sha256_hex: str) -> str:
        if size != expected_size:
            raise ChecksumMismatch(f"{self.name}: got {size} of {expected_size} bytes")
        if self.sha256 is not None:
            if sha256_hex != self.sha256:
                raise ChecksumMismatch(
                    f"{self.name}: sha256 {sha256_hex} does not match S3's {self.sha256}"
                )
            return f"sha256:{self.sha256}"
        if self.crc32 is not None:
            if self._crc != self.crc32:
                raise ChecksumMismatch(
                    f"{self.name}: crc32 {self._crc:08x} does not match S3's {self.crc32:08x}"
                )
            return f"crc32:{self.crc32:08x}"
        if self.md5_etag:
            if md5_hex != self.etag:
                raise ChecksumMismatch(
                    f"{self.name}: md5 {md5_hex} does not match ETag {self.etag}"
                )
            return f"md5:{self.etag}"
        if self.multipart is not None:
            return self.multipart.check(self.name, size)
        return f"etag:{self.etag}" if self.etag else "length"


class S3SourceStream(SourceStream):
    """One GET's body; ``response`` holds boto3-named headers, ``body`` the stream."""

    def __init__(
        self,
        item: ExportItem,
        response: Mapping[str, Any],
        body: Any,
        multipart: MultipartEtag | None,
    ) -> None:
        self.item = item
        self.response = response
        self.body = body
        self.checks = SourceChecks(item, response, multipart)
        self.wants_md5 = self.checks.wants_md5

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self.body.iter_chunks(_CHUNK):
                self.checks.update(chunk)
                yield chunk
        except botocore.exceptions.BotoCoreError as exc:
            raise RetryableError(
                f"{self.item.source['bucket']}/{self.item.source['key']}: "
                f"reading the body failed ({type(exc).__name__})"
            ) from exc

    def verify(self, *, size: int, md5_hex: str, sha256_hex: str) -> str | None:
        expected = int(self.response.get("ContentLength", size))
        return self.checks.check(
            size=size, expected_size=expected, md5_hex=md5_hex, sha256_hex=sha256_hex
        )

    def close(self) -> None:
        self.body.close()


class S3RangedSource(RangedSource):
    """A large object as ranged GETs, each pinned to the version or ETag listed.

    Ranged responses carry no whole-object checksum, so one HEAD asks for it
    first; the assembled bytes are checked against it when re-read.
    """

    def __init__(self, exporter: S3Exporter, item: ExportItem, part_size: int) -> None:
        self.exporter = exporter
        self.item = item
        self.size = int(item.size or 0)
        self.part_size = part_size
        params = exporter.get_params(item)
        head = exporter.account.client("s3").head_object(**params)
        self.checks = SourceChecks(item, head, exporter.multipart_etag(item))
        self.wants_md5 = self.checks.wants_md5

    def observe(self, chunk: bytes) -> None:
        self.checks.update(chunk)

    def parts(self) -> Iterator[Part]:
        for index, offset in enumerate(range(0, self.size, self.part_size)):
            yield Part(index=index, offset=offset, length=min(self.part_size, self.size - offset))

    def read_part(self, part: Part) -> bytes:
        return b"".join(self.stream_part(part))

    def stream_part(self, part: Part, start: int = 0) -> Iterator[bytes]:
        _, body = self.exporter.get(self.item, (part.offset + start, part.offset + part.length - 1))
        try:
            yield from body.iter_chunks(_CHUNK)
        except botocore.exceptions.BotoCoreError as exc:
            raise RetryableError(
                f"{self.item.dest_key}: reading part {part.index} failed ({type(exc).__name__})"
            ) from exc
        finally:
            body.close()

    def verify(self, *, size: int, md5_hex: str, sha256_hex: str) -> str | None:
        return self.checks.check(
            size=size, expected_size=self.size, md5_hex=md5_hex, sha256_hex=sha256_hex
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

    def get(
        self, item: ExportItem, byte_range: tuple[int, int] | None = None
    ) -> tuple[Mapping[str, Any], Any]:
        """GET the listed version: (boto3-named headers, body with iter_chunks and close).

        Through the account's direct reader where it has one (the hot path:
        see providers.s3_reader), else through boto3.
        """
        reader = self.account.s3_reader()
        if reader is not None:
            source = item.source
            pinned = source.get("version_id") or None
            response = reader.get(
                source["bucket"],
                source["key"],
                version_id=pinned,
                if_match=f'"{source["etag"]}"' if source.get("etag") and not pinned else None,
                byte_range=byte_range,
            )
            return response.headers, response
        params = self.get_params(item)
        if byte_range is not None:
            params["Range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        result = self.account.client("s3").get_object(**params)
        return result, result["Body"]

    def open(self, item: ExportItem) -> SourceStream:
        multipart = self.multipart_etag(item)
        headers, body = self.get(item)
        return S3SourceStream(item, headers, body, multipart)

    def open_ranged(self, item: ExportItem) -> RangedSource | None:
        """Objects larger than one part are fetched as parallel ranged GETs."""
        part_size = self.context.part_size
        if item.size is None or item.size <= part_size:
            return None
        return S3RangedSource(self, item, part_size)
