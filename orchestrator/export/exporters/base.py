"""The shape every exporter has, and the registry that finds one by kind.

An exporter turns part of the source account into *items*: named byte
streams with an idempotency key. It lists its items lazily (a 100,000-object
bucket is never held in memory) and opens each one as a ``SourceStream``.
Everything else (concurrency, retries, fan-out to every destination,
checksums, journaling, progress) is the transfer engine's job, so that every
kind of resource is resumable and verified in the same way.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from orchestrator.errors import ChecksumMismatch, ConfigError
from orchestrator.run.cancel import CancelToken
from providers.aws import AwsAccount


@dataclass(frozen=True)
class ExportItem:
    """One unit of export: copied, checked and journaled as a whole."""

    kind: str
    #: Names the source *and its version*: a changed source gets a new key
    #: and is copied again; an unchanged one is skipped once verified.
    idem_key: str
    #: Where it goes in every destination (``group/...``, see ObjectStore).
    dest_key: str
    #: Size in bytes when known before reading (S3), else None (generated files).
    size: int | None
    #: Secret-free description of where it came from, for the manifest.
    source: Mapping[str, Any] = field(default_factory=dict)
    tier: str = ""
    #: Names of the destinations this item goes to; None means every one.
    #: (An encrypted secrets bundle goes only where recipients are declared.)
    destinations: frozenset[str] | None = None
    #: The dest_key of an item listed earlier by the same exporter whose bytes
    #: this one describes (a DynamoDB meta file, an RDS dump's checksums).
    #: Wherever the engine copies that item, it copies this one again too, so
    #: the two always agree.
    depends_on: str | None = None
    #: Whether items depend on this one: its stream leaves a ``record`` that
    #: the journal keeps with it, and a verified copy without one is copied
    #: again (everywhere), since its dependents could not be written.
    keeps_record: bool = False


@dataclass(frozen=True)
class ExportContext:
    """What exporters may need beyond the account. Holds no secret values."""

    #: The run this export belongs to (part of idempotency keys of items with
    #: no cheap change marker, such as DynamoDB tables).
    run_id: str = ""
    #: Scratch space on this machine, for exporters that must stage (pg_dump).
    scratch_dir: Path | None = None
    #: Destination name -> age recipients declared for it (absent: none).
    recipients: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: The built-in sandbox: tools it cannot assume on a new machine
    #: (PostgreSQL for the database dump) are optional there, with a warning.
    sandbox: bool = False
    #: Large objects are read as parallel ranged parts of this size.
    part_size: int = 16 * 1024 * 1024
    #: Where credentials such as PGPASSWORD are looked up; never logged.
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    #: The run's cancel token: long work of an exporter's own (a snapshot to
    #: wait for, pg_dump) stops when it is set, not when it happens to end.
    cancel: CancelToken = field(default_factory=CancelToken)
    #: Records something the export created outside the workspace (an EBS or
    #: RDS snapshot) in the run's undo log: (kind, resource, description).
    record_undo: Callable[[str, Mapping[str, Any], str], int] | None = None
    #: Told about each thing an exporter starts outside the workspace (the RDS
    #: restore check's PostgreSQL server), with a JSON-able record of it, as
    #: soon as it exists: the caller journals the undo
    #: (``orchestrator.postgres.stop_recorded_cluster``).
    on_resource_started: Callable[[dict[str, Any]], None] | None = None


@dataclass(frozen=True)
class Part:
    """One independently readable range of a ranged item."""

    index: int
    offset: int
    length: int


class RangedSource(ABC):
    """An item read as independent parts, in parallel, each written in place.

    Large S3 objects (ranged GETs) and EBS snapshots (one block per part) are
    read this way. Bytes not covered by any part are zeros, so an image with
    holes stays sparse at a destination that can write in place.
    """

    #: Total size of the item in bytes.
    size: int
    #: Whether ``verify`` needs the md5 of the bytes (the slowest hash: a
    #: source with a cheaper checksum of its own says False).
    wants_md5: bool = True

    @abstractmethod
    def parts(self) -> Iterator[Part]:
        """The parts that hold data, each with a stable index. Retry-safe: yes."""

    @abstractmethod
    def read_part(self, part: Part) -> bytes:
        """Read one part, checked against its own checksum where the source has one.

        Raises RetryableError (ChecksumMismatch included) on a transient or
        damaged read. Retry-safe: yes.
        """

    def stream_part(self, part: Part, start: int = 0) -> Iterator[bytes]:
        """The part's bytes from ``start`` (within the part) to its end, in pieces,
        so a large part is never held whole and a half-written one carries on.

        The default reads the part at once (right for small parts such as EBS
        blocks, whose checksum covers the whole block); sources of large
        parts override it. The pieces add up to ``part.length - start``.
        """
        yield self.read_part(part)[start:]

    def observe(self, chunk: bytes) -> None:  # noqa: B027 - optional hook
        """Sees the assembled bytes in order (as re-read from the destination) before
        ``verify``; for checks that need more than the whole md5 and sha256."""

    @abstractmethod
    def verify(self, *, size: int, md5_hex: str, sha256_hex: str) -> str | None:
        """Check the assembled whole, like ``SourceStream.verify``, before publishing."""


#: What ``verify`` returns, as ``"unchecked: <why>"``, for bytes the source
#: offers nothing to check against (an SSE-KMS object with no checksum, a
#: multipart object whose parts cannot be read one by one). The item is
#: stored, its sha256 recorded, and it is labelled unchecked in the journal,
#: the manifest and the report: never verified.
UNCHECKED = "unchecked"


def unchecked(why: str) -> str:
    """The ``verify`` result for bytes that cannot be checked, saying why."""
    return f"{UNCHECKED}: {why}"


def is_unchecked(source_checksum: str | None) -> bool:
    return source_checksum is None or source_checksum.startswith(f"{UNCHECKED}:")


class SourceStream(ABC):
    """The bytes of one item, read once, and the source's own word on them."""

    #: Whether ``verify`` needs the md5 of the bytes (see RangedSource.wants_md5).
    wants_md5: bool = True

    @abstractmethod
    def __iter__(self) -> Iterator[bytes]:
        """Yield the item's bytes. Raises RetryableError on a transient fault."""

    @abstractmethod
    def verify(self, *, size: int, md5_hex: str, sha256_hex: str) -> str | None:
        """Check what was read against what the source promised.

        Called after the last chunk and *before* the destination publishes,
        so raising ``ChecksumMismatch`` here keeps a damaged copy invisible.
        Returns the source checksum that was checked (``"md5:<hex>"``), or
        ``unchecked(why)`` (None counts as one) when the source offers
        nothing to check these bytes against: never "checked" on a length.
        """

    def record(self) -> Mapping[str, Any] | None:
        """After a passing ``verify``: what items depending on this one need
        (JSON-able, never a secret), for items with ``keeps_record``. The
        journal keeps it with the verified item; a later run gets it back
        through ``Exporter.recall`` instead of reading the item again."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, most streams need none
        """Release the connection behind the stream, if any."""


class TierOf(Protocol):
    """The planner's answer to "how important is this source?" (see planner.Prioritizer)."""

    def __call__(self, source: Mapping[str, Any]) -> str: ...

    def rank(self, source: Mapping[str, Any]) -> int: ...


class BytesStream(SourceStream):
    """A document rendered in memory (a zone file, a descriptor, an encrypted bundle).

    The source's word on it is its own sha256, so ``verify`` checks that the
    engine read exactly the rendered bytes; no md5 is needed.
    """

    wants_md5 = False
    _CHUNK = 1024 * 1024

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._what = what
        self._sha256 = hashlib.sha256(data).hexdigest()

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self._data), self._CHUNK):
            yield self._data[start : start + self._CHUNK]

    def verify(self, *, size: int, md5_hex: str, sha256_hex: str) -> str | None:
        if size != len(self._data) or sha256_hex != self._sha256:
            raise ChecksumMismatch(
                f"read {size} bytes (sha256 {sha256_hex}) but {self._what} has "
                f"{len(self._data)} bytes (sha256 {self._sha256})"
            )
        return f"sha256:{self._sha256}"


class Exporter(ABC):
    """Turns one kind of resource into export items."""

    kind: ClassVar[str]
    #: Whether a fresh instance elsewhere (a Dask worker) can open this
    #: exporter's items from the items alone, keeping nothing between listing
    #: and opening: only then may a distributed executor copy them.
    portable: ClassVar[bool] = False

    def __init__(
        self, account: AwsAccount, *, tier_of: TierOf, context: ExportContext | None = None
    ) -> None:
        self.account = account
        #: Maps an item's ``source`` description to its priority tier.
        self.tier_of = tier_of
        self.context = context or ExportContext()

    def new_item(
        self,
        *,
        idem_key: str,
        dest_key: str,
        source: Mapping[str, Any],
        size: int | None = None,
        destinations: frozenset[str] | None = None,
    ) -> ExportItem:
        """An item of this exporter's kind, in the tier the planner gives its source."""
        return ExportItem(
            kind=self.kind,
            idem_key=idem_key,
            dest_key=dest_key,
            size=size,
            source=source,
            tier=self.tier_of(source),
            destinations=destinations,
        )

    @abstractmethod
    def list_items(self) -> Iterator[ExportItem]:
        """Yield every item to export, lazily, most important first where known."""

    @abstractmethod
    def open(self, item: ExportItem) -> SourceStream:
        """Open one item for reading. Retry-safe: yes (each call reads afresh)."""

    def open_ranged(self, item: ExportItem) -> RangedSource | None:
        """The item as parallel parts, or None to read it as one stream (the default).

        The engine uses it only when every destination the item goes to can
        write in place; ``open`` must still work for the others.
        """
        return None

    def item_settled(self, item: ExportItem, status: str) -> None:  # noqa: B027 - optional hook
        """Told by the engine when an item is done with: ``verified``, ``skipped``
        (already verified at every destination), ``failed`` (retries spent) or
        ``descoped`` (the planner will not start it).

        Exporters whose items depend on each other use it so that a dependent
        item never waits for one that will not be read in this run.
        """

    def recall(self, item: ExportItem, record: Mapping[str, Any]) -> None:  # noqa: B027
        """Told by the engine, before ``item_settled(item, "skipped")``, what the
        stream of an item with ``keeps_record`` left when it was verified in an
        earlier process, so its dependents can be written without it."""

    def warnings(self) -> list[str]:
        """What a person must know about this export that is not a failure
        (e.g. secrets skipped for want of recipients). Read after ``export``."""
        return []

    def describe(self) -> str:
        return self.kind


_REGISTRY: dict[str, tuple[str, str]] = {
    "s3": ("orchestrator.export.exporters.s3", "S3Exporter"),
    "route53": ("orchestrator.export.exporters.route53", "Route53Exporter"),
    "dynamodb": ("orchestrator.export.exporters.dynamodb", "DynamoDbExporter"),
    "rds": ("orchestrator.export.exporters.rds", "RdsExporter"),
    "secrets": ("orchestrator.export.exporters.secrets", "SecretsExporter"),
    "ec2": ("orchestrator.export.exporters.ec2", "Ec2Exporter"),
    "ebs": ("orchestrator.export.exporters.ebs", "EbsExporter"),
}


def exporter_kinds() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def load_exporter(kind: str) -> type[Exporter]:
    """The exporter class for ``kind``, imported on first use."""
    import importlib

    try:
        module_name, class_name = _REGISTRY[kind]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"no exporter for kind {kind!r}; known kinds: {known}") from None
    cls: type[Exporter] = getattr(importlib.import_module(module_name), class_name)
    return cls
