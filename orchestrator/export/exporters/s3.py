"""S3: every object (every version, in versioned buckets) to the destinations.

Layout at a destination:
  ``s3/<bucket>/<key>``                          the current version
  ``s3-versions/<bucket>/<key>@<version-id>``    each noncurrent version
Key segments a file system cannot hold as they are (empty, ``.``, ``..``) are
escaped with ``%`` (and ``%`` itself as ``%25``); the manifest keeps the
original key.

Each object is read with the version or ETag the listing saw (``VersionId``
or ``If-Match``), so what is copied is exactly what the idempotency key
names. Its bytes are checked against what S3 holds for it (see
``SourceChecks``): a full-object SHA256 or CRC32, the md5 of a single-part
ETag, or, for an object uploaded in parts, each part at the sizes the source
gives (``HeadObject`` with ``PartNumber``, or ``GetObjectAttributes`` with
``ObjectParts`` where S3 keeps per-part checksums), so parts of any sizes
are checked byte for byte. An object with nothing to check against is
stored ``unchecked``, never verified. Needed permissions: s3:ListBucket,
s3:ListBucketVersions, s3:GetObject, s3:GetObjectVersion, and
s3:GetObjectAttributes (optional: without it each part's HEAD is used).
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import botocore.exceptions

from orchestrator.errors import ChecksumMismatch, FatalError, RetryableError
from orchestrator.export.exporters.base import (
    Exporter,
    ExportItem,
    Part,
    RangedSource,
    SourceStream,
    unchecked,
)
from providers.aws import call_aws

_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG = re.compile(r"^([0-9a-f]{32})-(\d+)$")
#: S3 allows at most this many parts in one upload.
MAX_PARTS = 10_000
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


class LayoutUnavailable(Exception):
    """The source will not say where the object's parts end; the object can be
    copied but not checked part by part."""


@dataclass(frozen=True)
class PartLayout:
    """Where the parts of a multipart upload begin and end, from the source."""

    sizes: tuple[int, ...]
    #: Per-part checksums S3 keeps (GetObjectAttributes ObjectParts):
    #: algorithm ("crc32", "sha256") -> base64 value of each part.
    checksums: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def check_layout(name: str, sizes: Sequence[int], total: int, parts: int) -> tuple[int, ...]:
    """The source's part sizes, refused unless they describe the object exactly.

    Raises ``FatalError`` (a source error for this object; retrying reads the
    same metadata) for a part count other than the ETag's, a part of 0 bytes
    or larger than the object, or sizes that do not add up to the object.
    """
    sizes = tuple(int(size) for size in sizes)
    problem = ""
    if len(sizes) != parts:
        problem = f"it lists {len(sizes)} parts, the ETag says {parts}"
    elif total == 0 and sizes == (0,):
        return sizes
    elif any(size <= 0 for size in sizes):
        index = next(i for i, size in enumerate(sizes) if size <= 0)
        problem = f"part {index + 1} has {sizes[index]} bytes"
    elif any(size > total for size in sizes):
        index = next(i for i, size in enumerate(sizes) if size > total)
        problem = f"part {index + 1} has {sizes[index]} bytes, more than the object's {total}"
    elif sum(sizes) != total:
        problem = f"its parts add up to {sum(sizes)} bytes, the object has {total}"
    if problem:
        raise FatalError(
            f"{name}: the source's multipart layout is wrong ({problem}): a source error; "
            "the object was not copied (if it was being replaced, run the export again)"
        )
    return sizes


def layout_from_attributes(
    name: str, pages: Sequence[Mapping[str, Any]], total: int, parts: int
) -> PartLayout | None:
    """The layout in GetObjectAttributes(ObjectParts) pages, or None where S3 gave no
    sizes (it lists parts only for objects uploaded with checksums)."""
    found: list[Mapping[str, Any]] = []
    for page in pages:
        found += list((page.get("ObjectParts") or {}).get("Parts") or [])
    if not found:
        return None
    found.sort(key=lambda part: int(part.get("PartNumber", 0)))
    if [int(part.get("PartNumber", 0)) for part in found] != list(range(1, len(found) + 1)):
        return None
    sizes = check_layout(name, [int(part.get("Size", 0)) for part in found], total, parts)
    checksums: dict[str, tuple[str, ...]] = {}
    for algorithm, field_name in (("crc32", "ChecksumCRC32"), ("sha256", "ChecksumSHA256")):
        values = [part.get(field_name) for part in found]
        if all(values):
            checksums[algorithm] = tuple(str(value) for value in values)
    return PartLayout(sizes, checksums)


class _Crc32:
    """zlib's CRC32 with a hashlib-like face; ``digest`` is 4 bytes, big-endian."""

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes | memoryview) -> None:
        self._value = zlib.crc32(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


def _new_digest(algorithm: str) -> Any:
    if algorithm == "crc32":
        return _Crc32()
    return hashlib.new(algorithm, usedforsecurity=False)


class PartDigests:
    """Digests each of the source's parts as the object's bytes pass, in order.

    Every call consumes its whole chunk or raises: bytes beyond the last part
    are a ``ChecksumMismatch``, and parts have more than 0 bytes (see
    ``check_layout``), so no input can make it loop without progress.
    """

    def __init__(self, name: str, sizes: Sequence[int], algorithms: Sequence[str]) -> None:
        self.name = name
        self.sizes = tuple(sizes)
        self.algorithms = tuple(algorithms)
        self.digests: dict[str, list[bytes]] = {alg: [] for alg in self.algorithms}
        self._index = 0
        self._filled = 0
        self._current = {alg: _new_digest(alg) for alg in self.algorithms}
        self._skip_empty_parts()

    def _skip_empty_parts(self) -> None:
        while self._index < len(self.sizes) and self._filled == self.sizes[self._index]:
            for alg in self.algorithms:
                self.digests[alg].append(self._current[alg].digest())
                self._current[alg] = _new_digest(alg)
            self._index += 1
            self._filled = 0

    def update(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            if self._index >= len(self.sizes):
                raise ChecksumMismatch(
                    f"{self.name}: more bytes than its {len(self.sizes)} parts hold"
                )
            take = min(len(view), self.sizes[self._index] - self._filled)
            for digest in self._current.values():
                digest.update(view[:take])
            self._filled += take
            view = view[take:]
            self._skip_empty_parts()

    def finish(self) -> dict[str, list[bytes]]:
        if self._index != len(self.sizes):
            raise ChecksumMismatch(
                f"{self.name}: ended in part {self._index + 1} of {len(self.sizes)}"
            )
        return self.digests


def multipart_etag(part_md5s: Sequence[bytes]) -> str:
    """S3's ETag of a multipart upload: the md5 of the parts' md5s, then ``-N``."""
    joined = b"".join(part_md5s)
    return f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(part_md5s)}"


def composite_checksum(algorithm: str, part_digests: Sequence[bytes]) -> str:
    """S3's COMPOSITE checksum (base64, no ``-N``): the checksum of the parts' checksums."""
    digest = _new_digest(algorithm)
    digest.update(b"".join(part_digests))
    return base64.b64encode(digest.digest()).decode("ascii")


@dataclass(frozen=True)
class _Claim:
    """One checksum S3 holds for the object, and how it may have been made."""

    algorithm: str  # crc32 | sha256
    value: str  # base64, without any -N
    full_object: bool  # may be the checksum of the whole object
    composite: bool  # may be the checksum of the parts' checksums


class SourceChecks:
    """What S3 promised about an object's bytes, checked as they stream past.

    In order of preference: a full-object SHA256 or CRC32 checksum (S3 keeps
    one for objects uploaded with flexible checksums, the SDKs' default; a
    CRC32 costs a seventh of an md5); the md5 that a single-part ETag is;
    and for objects uploaded in parts, the checksums of each part as the
    source laid them out (sizes from ``HeadObject`` with ``PartNumber``, or
    ``GetObjectAttributes``): a COMPOSITE checksum, or the multipart ETag,
    the md5 of the parts' md5s. Parts of any sizes are checked this way; an
    object is never taken on its length alone. Where nothing can be checked
    (an SSE-KMS or SSE-C object with no checksum, an ETag that is no md5)
    ``check`` returns ``unchecked(why)``. ``wants_md5`` tells the engine
    whether to spend the whole-object md5 at all.
    """

    def __init__(
        self,
        item: ExportItem,
        headers: Mapping[str, Any],
        layout: Callable[[int, bool], PartLayout] | None = None,
    ) -> None:
        self.name = f"s3://{item.source['bucket']}/{item.source['key']}"
        self.etag = str(headers.get("ETag", "")).strip('"') or str(item.source.get("etag", ""))
        multipart = _MULTIPART_ETAG.match(self.etag)
        self.parts_count = int(multipart.group(2)) if multipart else None
        # ETags of SSE-KMS and SSE-C objects are not the md5 of the content.
        self.encrypted = str(headers.get("ServerSideEncryption", "")).startswith("aws:kms") or bool(
            headers.get("SSECustomerAlgorithm")
        )
        claims = self._claims(headers)
        self.full_sha256: str | None = None
        self.full_crc32: str | None = None
        self.md5_etag = False
        self.part_digests: PartDigests | None = None
        self.part_claims: list[_Claim] = []
        self.layout: PartLayout | None = None
        self._whole_crc: _Crc32 | None = None
        self.unchecked_reason = ""

        sure_full = [c for c in claims if c.full_object and not c.composite]
        if any(c.algorithm == "sha256" for c in sure_full):
            self.full_sha256 = next(c.value for c in sure_full if c.algorithm == "sha256")
        elif sure_full:
            self.full_crc32 = sure_full[0].value
            self._whole_crc = _Crc32()
        elif self.parts_count is None and _MD5_ETAG.match(self.etag) and not self.encrypted:
            self.md5_etag = True
        elif self.parts_count is not None and (claims or not self.encrypted):
            if layout is None:
                raise ValueError(f"{self.name}: a multipart object needs its part layout")
            try:
                self.layout = layout(self.parts_count, bool(claims))
            except LayoutUnavailable as exc:
                self.unchecked_reason = f"uploaded in {self.parts_count} parts, and {exc}"
                self.wants_md5 = False
                return
            self.part_claims = claims
            algorithms = {c.algorithm for c in claims}
            if not claims:
                algorithms.add("md5")
            if any(c.full_object for c in claims if c.algorithm == "crc32"):
                self._whole_crc = _Crc32()
            self.part_digests = PartDigests(self.name, self.layout.sizes, sorted(algorithms))
        elif self.encrypted:
            self.unchecked_reason = (
                "encrypted (SSE-KMS or SSE-C): its ETag is not an md5 and S3 keeps no checksum"
            )
        else:
            self.unchecked_reason = f"its ETag {self.etag!r} is not an md5 and S3 keeps no checksum"
        self.wants_md5 = self.md5_etag

    def _claims(self, headers: Mapping[str, Any]) -> list[_Claim]:
        declared = str(headers.get("ChecksumType") or "").upper()
        claims = []
        for algorithm, header in (("sha256", "ChecksumSHA256"), ("crc32", "ChecksumCRC32")):
            raw = headers.get(header)
            if not raw:
                continue
            value, _, suffix = str(raw).partition("-")
            if declared == "FULL_OBJECT":
                full, composite = True, False
            elif declared == "COMPOSITE" or suffix:
                full, composite = False, True
            elif self.parts_count is None:
                full, composite = True, False  # one part: its checksum is the object's
            else:
                # A server that says neither (moto): check the one that fits.
                full, composite = True, True
            if composite and self.parts_count is None:
                continue  # a composite checksum of an object not in parts: nothing to check
            claims.append(_Claim(algorithm, value, full, composite))
        return claims

    def update(self, chunk: bytes) -> None:
        if self._whole_crc is not None:
            self._whole_crc.update(chunk)
        if self.part_digests is not None:
            self.part_digests.update(chunk)

    def reset(self) -> None:
        """Forget the bytes seen, to check another copy of the object from its start."""
        if self._whole_crc is not None:
            self._whole_crc = _Crc32()
        if self.part_digests is not None:
            digests = self.part_digests
            self.part_digests = PartDigests(digests.name, digests.sizes, digests.algorithms)

    def check(self, *, size: int, expected_size: int, md5_hex: str, sha256_hex: str) -> str:
        if size != expected_size:
            raise ChecksumMismatch(f"{self.name}: got {size} of {expected_size} bytes")
        if self.full_sha256 is not None:
            expected = base64.b64decode(self.full_sha256).hex()
            if sha256_hex != expected:
                raise ChecksumMismatch(
                    f"{self.name}: sha256 {sha256_hex} does not match S3's {expected}"
                )
            return f"sha256:{expected}"
        if self.full_crc32 is not None:
            assert self._whole_crc is not None
            got = self._whole_crc.digest().hex()
            expected = base64.b64decode(self.full_crc32).hex()
            if got != expected:
                raise ChecksumMismatch(f"{self.name}: crc32 {got} does not match S3's {expected}")
            return f"crc32:{expected}"
        if self.md5_etag:
            if md5_hex != self.etag:
                raise ChecksumMismatch(
                    f"{self.name}: md5 {md5_hex} does not match ETag {self.etag}"
                )
            return f"md5:{self.etag}"
        if self.part_digests is not None:
            return self._check_parts(sha256_hex)
        return unchecked(self.unchecked_reason or "the source offers no checksum")

    def _check_parts(self, sha256_hex: str) -> str:
        assert self.part_digests is not None and self.layout is not None
        digests = self.part_digests.finish()
        count = len(self.layout.sizes)
        for algorithm, expected_parts in self.layout.checksums.items():
            if algorithm not in digests:
                continue
            for index, (digest, expected) in enumerate(
                zip(digests[algorithm], expected_parts, strict=True)
            ):
                if base64.b64encode(digest).decode("ascii") != expected:
                    raise ChecksumMismatch(
                        f"{self.name}: part {index + 1} of {count} does not match S3's "
                        f"{algorithm} {expected}"
                    )
        checked = []
        for claim in self.part_claims:
            matches = []
            if claim.composite:
                matches.append(composite_checksum(claim.algorithm, digests[claim.algorithm]))
            if claim.full_object:
                whole = (
                    bytes.fromhex(sha256_hex)
                    if claim.algorithm == "sha256"
                    else (self._whole_crc.digest() if self._whole_crc else b"")
                )
                matches.append(base64.b64encode(whole).decode("ascii"))
            if claim.value not in matches:
                raise ChecksumMismatch(
                    f"{self.name}: {claim.algorithm} of its {count} parts does not match "
                    f"S3's {claim.value}"
                )
            checked.append(f"{claim.algorithm}:{base64.b64decode(claim.value).hex()}-{count}")
        if "md5" in digests:
            computed = multipart_etag(digests["md5"])
            if computed != self.etag:
                raise ChecksumMismatch(
                    f"{self.name}: md5 of its {count} parts ({computed}) does not match "
                    f"ETag {self.etag}"
                )
            checked.insert(0, f"etag:{self.etag}")
        return " ".join(checked)


class S3SourceStream(SourceStream):
    """One GET's body; ``response`` holds boto3-named headers, ``body`` the stream."""

    def __init__(
        self, item: ExportItem, response: Mapping[str, Any], body: Any, checks: SourceChecks
    ) -> None:
        self.item = item
        self.response = response
        self.body = body
        self.checks = checks
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
        if part_size <= 0:
            raise ValueError(f"part size must be positive, not {part_size}")
        self.exporter = exporter
        self.item = item
        self.size = int(item.size or 0)
        self.part_size = part_size
        params = exporter.get_params(item)
        head = call_aws(
            f"HEAD s3://{item.source['bucket']}/{item.source['key']}",
            lambda: exporter.account.client("s3").head_object(**params),
        )
        if int(head.get("ContentLength", self.size)) != self.size:
            raise FatalError(
                f"s3://{item.source['bucket']}/{item.source['key']} has "
                f"{head.get('ContentLength')} bytes, the listing said {self.size}: it changed "
                "after it was listed; run the export again to copy the new version"
            )
        self.checks = SourceChecks(item, head, partial(exporter.part_layout, item))
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
        """Check one copy as re-read; the next copy (another destination) starts afresh."""
        try:
            return self.checks.check(
                size=size, expected_size=self.size, md5_hex=md5_hex, sha256_hex=sha256_hex
            )
        finally:
            self.checks.reset()


class S3Exporter(Exporter):
    kind = "s3"
    #: An item names its bucket, key, version and ETag: any worker can read it.
    portable = True

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
                # When S3 last saw this version change: how new the copy's data is (RPO).
                "as_of": _iso(obj.get("LastModified")),
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

    def part_layout(self, item: ExportItem, parts: int, with_checksums: bool) -> PartLayout:
        """The sizes (and, where S3 keeps them, checksums) of the object's parts.

        ``GetObjectAttributes`` with ``ObjectParts`` answers for up to 1000
        parts a call, but only for objects uploaded with checksums; otherwise
        ``HeadObject`` with each ``PartNumber`` gives that part's size. Raises
        ``FatalError`` when the sizes do not describe the object (see
        ``check_layout``), ``RetryableError`` for a transient failure, and
        ``LayoutUnavailable`` when the source refuses part numbers.
        """
        name = f"s3://{item.source['bucket']}/{item.source['key']}"
        total = int(item.size or 0)
        if not 1 <= parts <= MAX_PARTS:
            raise FatalError(
                f"{name}: its ETag says {parts} parts; S3 uploads have 1 to {MAX_PARTS}: "
                "a source error; the object was not copied"
            )
        client = self.account.client("s3")
        params = self.get_params(item)
        params.pop("ChecksumMode", None)
        # Some servers answer a part's own ETag to a PartNumber HEAD, so an
        # If-Match on the object's ETag would fail; the GET itself keeps it.
        params.pop("IfMatch", None)
        if with_checksums:
            layout = self._layout_from_attributes(client, params, name, total, parts)
            if layout is not None:
                return layout

        def size_of(number: int) -> int:
            try:
                head = call_aws(
                    f"HEAD part {number} of {name}",
                    lambda: client.head_object(PartNumber=number, **params),
                )
            except botocore.exceptions.ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "ClientError")
                raise LayoutUnavailable(
                    f"the source does not give their sizes (HeadObject with PartNumber: {code})"
                ) from exc
            count = head.get("PartsCount")
            if count is not None and int(count) != parts:
                raise FatalError(
                    f"{name}: S3 says it has {count} parts, its ETag says {parts}: a source "
                    "error; the object was not copied"
                )
            return int(head.get("ContentLength", 0))

        if parts <= 4:
            sizes = [size_of(number) for number in range(1, parts + 1)]
        else:
            with ThreadPoolExecutor(min(8, parts), thread_name_prefix="exitplan-s3-parts") as pool:
                sizes = list(pool.map(size_of, range(1, parts + 1)))
        return PartLayout(check_layout(name, sizes, total, parts))

    def _layout_from_attributes(
        self, client: Any, params: Mapping[str, Any], name: str, total: int, parts: int
    ) -> PartLayout | None:
        args = {k: v for k, v in params.items() if k in ("Bucket", "Key", "VersionId")}
        pages: list[Mapping[str, Any]] = []
        marker: int | None = None
        try:
            for _ in range(parts // 1000 + 2):  # bounded: 1000 parts a page
                extra = {"PartNumberMarker": marker} if marker else {}
                page = client.get_object_attributes(
                    ObjectAttributes=["ObjectParts"], MaxParts=1000, **args, **extra
                )
                pages.append(page)
                object_parts = page.get("ObjectParts") or {}
                if not object_parts.get("IsTruncated"):
                    break
                marker = int(object_parts.get("NextPartNumberMarker") or 0) or None
                if marker is None:
                    break
        except botocore.exceptions.ClientError:
            return None  # not allowed or not served here: each part's HEAD says as much
        return layout_from_attributes(name, pages, total, parts)

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
        headers, body = self.get(item)
        try:
            # The GET's headers say which checksums S3 holds; only when the
            # object needs its part layout are the parts looked up.
            checks = SourceChecks(item, headers, partial(self.part_layout, item))
        except BaseException:
            body.close()
            raise
        return S3SourceStream(item, headers, body, checks)

    def open_ranged(self, item: ExportItem) -> RangedSource | None:
        """Objects larger than one part are fetched as parallel ranged GETs."""
        part_size = self.context.part_size
        if item.size is None or part_size <= 0 or item.size <= part_size:
            return None
        return S3RangedSource(self, item, part_size)


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if hasattr(moment, "isoformat") else None
