"""The contract every ``ObjectStore`` passes.

A store's test module subclasses ``ObjectStoreContract`` and provides
``store`` (empty, or at least empty under ``prefix``) and ``prefix`` (a key
prefix the test owns; stores that need a "group/" get one here). Optional
abilities are asked for through ``capabilities``; a missing one is a skip
that says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from providers.interfaces.object_store import ObjectNotFound, ObjectStore

KNOWN_CAPABILITIES = frozenset({"ranged_get", "delete", "sha256", "part_write"})
PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit, not a round number
#: As the engine makes them: a hash of the item's idempotency key.
RESUME_TOKEN = hashlib.sha256(b"contract resume").hexdigest()


def require(store: ObjectStore, capability: str) -> None:
    if capability not in store.capabilities:
        pytest.skip(f"{store.describe()} does not declare {capability!r}")


def chunked(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


class SourceFailed(Exception):
    """Raised by a test stream part-way through."""


def failing_stream(good: bytes) -> Iterator[bytes]:
    yield from chunked(good)
    raise SourceFailed("the source went away")


class ObjectStoreContract:
    """Behaviour every ``ObjectStore`` shows. Subclass and provide ``store`` and ``prefix``."""

    __test__ = False

    @pytest.fixture
    def store(self) -> Iterator[ObjectStore]:
        raise NotImplementedError("an ObjectStoreContract subclass must provide `store`")

    @pytest.fixture
    def prefix(self) -> str:
        raise NotImplementedError("an ObjectStoreContract subclass must provide `prefix`")

    def read(self, store: ObjectStore, key: str, start: int = 0, end: int | None = None) -> bytes:
        return b"".join(store.get(key, start, end))

    def listed(self, store: ObjectStore, prefix: str) -> dict[str, int]:
        return {obj.key: obj.size for obj in store.list(prefix)}

    # -- put / stat / get -----------------------------------------------------

    def test_capabilities_are_declared_known_strings(self, store: ObjectStore) -> None:
        assert isinstance(store.capabilities, frozenset)
        assert store.capabilities <= KNOWN_CAPABILITIES

    def test_put_then_stat_get_and_list(self, store: ObjectStore, prefix: str) -> None:
        key = f"{prefix}dir/object.bin"
        stored = store.put_stream(key, chunked(PAYLOAD))
        assert stored.key == key and stored.size == len(PAYLOAD)
        if "sha256" in store.capabilities:
            assert stored.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
        stat = store.stat(key)
        assert stat is not None and stat.size == len(PAYLOAD)
        assert self.read(store, key) == PAYLOAD
        assert self.listed(store, prefix) == {key: len(PAYLOAD)}

    def test_empty_object(self, store: ObjectStore, prefix: str) -> None:
        key = f"{prefix}empty"
        assert store.put_stream(key, iter([])).size == 0
        assert self.read(store, key) == b""

    def test_put_replaces_an_existing_object(self, store: ObjectStore, prefix: str) -> None:
        key = f"{prefix}replaced"
        store.put_stream(key, [b"first version, longer"])
        store.put_stream(key, [b"second"])
        assert self.read(store, key) == b"second"
        assert self.listed(store, prefix) == {key: 6}

    def test_missing_object(self, store: ObjectStore, prefix: str) -> None:
        assert store.stat(f"{prefix}absent") is None
        with pytest.raises(ObjectNotFound):
            self.read(store, f"{prefix}absent")

    def test_awkward_keys_round_trip(self, store: ObjectStore, prefix: str) -> None:
        keys = [f"{prefix}with space/file name.txt", f"{prefix}ünïcödé/✓ δοκιμή.bin"]
        for i, key in enumerate(keys):
            store.put_stream(key, [f"payload {i}".encode()])
        assert self.listed(store, prefix) == {key: 9 for key in keys}
        for i, key in enumerate(keys):
            assert self.read(store, key) == f"payload {i}".encode()

    def test_list_filters_by_prefix(self, store: ObjectStore, prefix: str) -> None:
        store.put_stream(f"{prefix}a/1", [b"1"])
        store.put_stream(f"{prefix}a/2", [b"22"])
        store.put_stream(f"{prefix}b/3", [b"333"])
        assert self.listed(store, f"{prefix}a/") == {f"{prefix}a/1": 1, f"{prefix}a/2": 2}

    @pytest.mark.parametrize("key", ["/abs", "a/../b", "a//b", ".exitplan-staging/x", ""])
    def test_bad_keys_are_refused(self, store: ObjectStore, key: str) -> None:
        with pytest.raises(ValueError):
            store.put_stream(key, [b"x"])

    # -- atomic publish -----------------------------------------------------------

    def test_a_failing_stream_publishes_nothing(self, store: ObjectStore, prefix: str) -> None:
        key = f"{prefix}partial.bin"
        everything_before = self.listed(store, "")
        with pytest.raises(SourceFailed):
            store.put_stream(key, failing_stream(PAYLOAD))
        assert store.stat(key) is None
        # Nothing new anywhere in the store: no staging copy under another name.
        assert self.listed(store, "") == everything_before

    def test_a_failing_stream_keeps_the_previous_version(
        self, store: ObjectStore, prefix: str
    ) -> None:
        key = f"{prefix}kept.bin"
        store.put_stream(key, [b"the good copy"])
        with pytest.raises(SourceFailed):
            store.put_stream(key, failing_stream(PAYLOAD))
        assert self.read(store, key) == b"the good copy"
        assert self.listed(store, prefix) == {key: 13}

    # -- optional abilities ---------------------------------------------------------

    def test_ranged_get(self, store: ObjectStore, prefix: str) -> None:
        require(store, "ranged_get")
        key = f"{prefix}ranged.bin"
        store.put_stream(key, chunked(PAYLOAD))
        assert self.read(store, key, 10, 20) == PAYLOAD[10:20]
        assert self.read(store, key, len(PAYLOAD) - 4) == b"tail"
        assert self.read(store, key, 0, 1) == PAYLOAD[:1]

    def test_delete(self, store: ObjectStore, prefix: str) -> None:
        require(store, "delete")
        key = f"{prefix}deleted"
        store.put_stream(key, [b"x"])
        store.delete(key)
        assert store.stat(key) is None
        assert self.listed(store, prefix) == {}
        store.delete(key)  # deleting a missing object is not an error

    def test_part_writer_publishes_whole_on_commit(self, store: ObjectStore, prefix: str) -> None:
        require(store, "part_write")
        key = f"{prefix}parts.bin"
        half = len(PAYLOAD) // 2
        writer = store.open_part_writer(key, len(PAYLOAD), hashlib.sha256(b"contract").hexdigest())
        writer.write_at(half, PAYLOAD[half:])
        assert store.stat(key) is None  # nothing visible before commit
        assert self.listed(store, prefix) == {}
        writer.write_at(0, PAYLOAD[:half])
        stored = writer.commit()
        assert stored.size == len(PAYLOAD)
        assert self.read(store, key) == PAYLOAD

    def test_part_writer_resumes_and_aborts(self, store: ObjectStore, prefix: str) -> None:
        require(store, "part_write")
        key = f"{prefix}resumed.bin"
        first = store.open_part_writer(key, 8, RESUME_TOKEN)
        first.write_at(0, b"abcd")
        again = store.open_part_writer(key, 8, RESUME_TOKEN)  # as after a killed process
        assert b"".join(again.read_back())[:4] == b"abcd"
        again.abort()
        again.abort()
        assert store.stat(key) is None
        assert self.listed(store, prefix) == {}
