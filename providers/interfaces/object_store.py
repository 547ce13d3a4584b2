"""ObjectStore: where the evacuated bytes go, and its contract.

Each method's docstring says what it returns, which errors it raises and
whether calling it again after a failure is safe. Optional abilities are
declared in ``capabilities`` and asked for, never guessed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from orchestrator.errors import ExitplanError, FatalError

# ---------------------------------------------------------------------------
# Object storage: where the evacuated bytes go.
# ---------------------------------------------------------------------------


class ObjectNotFound(ExitplanError):
    """The named object does not exist in the store."""


class StoreWriteError(FatalError):
    """The store did not take bytes it was given: no space left, a quota or a
    file-size limit, an I/O error. Nothing was published under the key.

    The message says it in plain words, names where, and what to do (free
    space, then ``exitplan resume``). Not retried within a run: the same
    write fails again until someone makes room.
    """


@dataclass(frozen=True)
class StoredObject:
    """What a store knows about one published object."""

    key: str
    size: int
    #: sha256 of the bytes the store wrote (what its write calls accepted,
    #: never merely what it was offered), when it measured them; ``None``
    #: where it only reports a size.
    sha256: str | None = None


class ObjectStore(ABC):
    """A place to put bytes that the source cloud does not control.

    Keys are ``/``-separated relative paths. A key never starts with ``/``,
    never contains ``..`` segments, and never begins with ``.exitplan-``
    (reserved for staging); ``put_stream`` raises ``ValueError`` otherwise.
    """

    #: Declared optional abilities: ``"ranged_get"``, ``"delete"``, ``"sha256"``
    #: (put_stream reports the sha256 of what it stored).
    capabilities: frozenset[str] = frozenset()

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def put_stream(self, key: str, chunks: Iterable[bytes]) -> StoredObject:
        """Store the bytes of ``chunks`` under ``key``, visible only once complete.

        The object is written under a staging name (or as an unfinished
        multipart upload) and published atomically when ``chunks`` is
        exhausted. If iterating ``chunks`` raises, nothing is published, the
        staging copy is removed and the exception propagates unchanged: a
        partial object is never visible as complete. If the store cannot take
        the bytes (no space, quota, I/O error) it raises ``StoreWriteError``
        and publishes nothing. The returned size and sha256 are of the bytes
        written, never of the bytes offered. An existing object under ``key``
        is replaced. Retry-safe: yes.
        """

    @abstractmethod
    def stat(self, key: str) -> StoredObject | None:
        """The published object under ``key``, or ``None``. Retry-safe: yes."""

    @abstractmethod
    def get(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream bytes ``[start, end)`` of the object (to its end when ``end`` is None).

        Raises ``ObjectNotFound``. Retry-safe: yes.
        """

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        """Published objects whose key starts with ``prefix``, streamed.

        Staging copies are never listed. Order is unspecified. Retry-safe: yes.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error. Retry-safe: yes."""

    def open_part_writer(self, key: str, size: int, resume_token: str) -> PartWriter:
        """A writer for an object of ``size`` bytes, written in place (``"part_write"``).

        The same ``resume_token`` (a stable name, e.g. a hash of the item's
        idempotency key) reopens the staged bytes of an interrupted attempt.
        Stores without the capability raise NotImplementedError.
        """
        raise NotImplementedError(f"{self.describe()} cannot write objects in place")

    def describe(self) -> str:
        """A one-line, secret-free description for reports, e.g. ``local:/srv/vault``."""
        return self.name


class PartWriter(ABC):
    """A staged object written in place, part by part, then published whole.

    Obtained from ``ObjectStore.open_part_writer`` on stores that declare the
    ``"part_write"`` capability. The staged bytes survive a killed process:
    opening a writer again with the same ``resume_token`` finds them, so an
    interrupted large object resumes from its completed parts.
    """

    @abstractmethod
    def write_at(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset``; thread-safe for disjoint ranges.

        Raises ``StoreWriteError`` when the store cannot take the bytes. Retry-safe: yes.
        """

    @abstractmethod
    def read_back(self) -> Iterator[bytes]:
        """The staged bytes, in order, as they are stored (holes read as zeros)."""

    @abstractmethod
    def commit(self) -> StoredObject:
        """Publish atomically under the key; the staging copy is gone afterwards.

        Raises ``StoreWriteError`` when the staged bytes cannot be made durable
        (then nothing is published).
        """

    @abstractmethod
    def abort(self) -> None:
        """Drop the staging copy; nothing is published. Safe to call twice."""


def check_object_key(key: str) -> str:
    """Reject keys that could escape the store or collide with staging names."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"object key {key!r} is not a relative '/'-separated path")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"object key {key!r} has an empty, '.' or '..' segment")
    if parts[0].startswith(".exitplan-"):
        raise ValueError(f"object key {key!r} uses the reserved prefix '.exitplan-'")
    return key
