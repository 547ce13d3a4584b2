"""Scratch targets: a drill writes under its own prefix at every destination.

A drill must never touch what a real exit wrote: every key it writes goes
under ``exitplan-drill/<run id>/`` of the same store, and its journal rows
are kept under a destination name of their own (``<name>~drill``), so a
drill neither skips objects a migrate verified nor is skipped by one. The
cleanup deletes the prefix, and says what it could not delete.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from providers.interfaces.object_store import (
    ObjectStore,
    PartWriter,
    StoredObject,
    check_object_key,
)

SCRATCH_ROOT = "exitplan-drill"


def scratch_prefix(run_id: str) -> str:
    """``exitplan-drill/<run id>/``: where one drill's objects go at each destination."""
    return f"{SCRATCH_ROOT}/{run_id.lower()}/"


def scratch_name(destination: str) -> str:
    """The journal's name for a destination's drill copy."""
    return f"{destination}{_SCRATCH_SUFFIX}"


def base_name(destination: str) -> str:
    """The configured destination a (scratch) destination name stands for."""
    return destination.removesuffix(_SCRATCH_SUFFIX)


_SCRATCH_SUFFIX = "~drill"


class ScratchStore(ObjectStore):
    """Another store with every key under ``prefix``; its own keys stay as the engine wrote them."""

    def __init__(self, inner: ObjectStore, prefix: str) -> None:
        super().__init__(scratch_name(inner.name))
        if not prefix.endswith("/"):
            raise ValueError(f"scratch prefix {prefix!r} must end with '/'")
        check_object_key(prefix.rstrip("/"))
        self.inner = inner
        self.prefix = prefix
        self.capabilities = inner.capabilities

    def _key(self, key: str) -> str:
        return self.prefix + check_object_key(key)

    def _strip(self, stored: StoredObject) -> StoredObject:
        return StoredObject(stored.key[len(self.prefix) :], stored.size, stored.sha256)

    def describe(self) -> str:
        return f"{self.inner.describe()} under {self.prefix}"

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> StoredObject:
        return self._strip(self.inner.put_stream(self._key(key), chunks))

    def stat(self, key: str) -> StoredObject | None:
        stored = self.inner.stat(self._key(key))
        return None if stored is None else self._strip(stored)

    def get(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        return self.inner.get(self._key(key), start, end)

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        for stored in self.inner.list(self.prefix + prefix):
            yield self._strip(stored)

    def delete(self, key: str) -> None:
        self.inner.delete(self._key(key))

    def open_part_writer(self, key: str, size: int, resume_token: str) -> PartWriter:
        return _ScratchPartWriter(
            self.inner.open_part_writer(self._key(key), size, resume_token), self
        )


class _ScratchPartWriter(PartWriter):
    def __init__(self, inner: PartWriter, store: ScratchStore) -> None:
        self.inner = inner
        self.store = store

    def write_at(self, offset: int, data: bytes) -> None:
        self.inner.write_at(offset, data)

    def read_back(self) -> Iterator[bytes]:
        return self.inner.read_back()

    def commit(self) -> StoredObject:
        return self.store._strip(self.inner.commit())

    def abort(self) -> None:
        self.inner.abort()

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()


def delete_scratch(store: ObjectStore, prefix: str) -> tuple[int, list[str]]:
    """Delete every object under ``prefix``: (objects deleted, keys that could not be)."""
    deleted, stuck = 0, []
    for stored in list(store.list(prefix)):
        try:
            store.delete(stored.key)
            deleted += 1
        except Exception as exc:  # one stuck object must not keep the rest behind
            stuck.append(f"{stored.key}: {type(exc).__name__}: {exc}")
    return deleted, stuck
