"""The manifest: every exported item with its size and checksums, at each destination.

It is written from the journal, streamed, as JSON Lines under
``manifest/manifest.jsonl`` and published atomically like any object, so a
person holding only the destination can check every byte without exitplan's
workspace. Each row says whether the item was ``verified`` against the
source's own checksum, or stored ``unchecked`` because the source offered
none (its ``source_checksum`` then says why). ``verify_destination``
re-reads every stored object, checks its size and sha256, and marks what it
finds missing or changed as damaged in the journal, so the next resume (or
``exitplan verify --repair``) copies exactly those again.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from orchestrator.errors import ExitplanError
from orchestrator.run.journal import Journal
from providers.interfaces.object_store import ObjectNotFound, ObjectStore

MANIFEST_KEY = "manifest/manifest.jsonl"
#: Where each shard of a sharded export (``exitplan export --shard K/N``)
#: writes its own manifest; ``exitplan merge`` joins them into MANIFEST_KEY.
SHARD_MANIFESTS = "manifest/shards/"
_SHARD_NAME = re.compile(r"(\d+)-of-(\d+)\.jsonl")


def shard_manifest_key(index: int, count: int) -> str:
    return f"{SHARD_MANIFESTS}{index}-of-{count}.jsonl"


class _Named(Protocol):
    """A destination: its name and its store (``transfer.Destination``)."""

    @property
    def name(self) -> str: ...

    @property
    def store(self) -> ObjectStore: ...


def manifest_lines(journal: Journal, destination: str) -> Iterator[bytes]:
    for item in journal.stored_items(destination):
        row = {
            "kind": item.kind,
            "key": item.dest_key,
            "size": item.size,
            "sha256": item.sha256,
            "source_checksum": item.source_checksum,
            "verified": item.state == "verified",
            "source": dict(item.source),
        }
        yield (json.dumps(row, sort_keys=True) + "\n").encode()


def publish_manifest(
    journal: Journal, destination: str, store: ObjectStore, key: str = MANIFEST_KEY
) -> int:
    """Write the manifest of ``destination`` under ``key``; returns its size in bytes.

    Raises what ``store.put_stream`` raises (``StoreWriteError`` on a full disk).
    """
    return store.put_stream(key, manifest_lines(journal, destination)).size


@dataclass
class ManifestOutcome:
    """Manifests written (destination -> bytes) and the ones that could not be."""

    written: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        text = f"{len(self.written)} manifest(s), {sum(self.written.values())} bytes"
        for name, error in self.failed.items():
            text += f"; {name}: not written: {error}"
        return text


def publish_manifests(
    journal: Journal, destinations: Sequence[_Named], key: str | None = None
) -> ManifestOutcome:
    """The manifest of every destination (under ``key``, default ``MANIFEST_KEY``);
    one that cannot be written (a full disk) is reported in the outcome, never
    raised, so the others are written and the run still ends with its report.
    Retry-safe: yes."""
    outcome = ManifestOutcome()
    for destination in destinations:
        try:
            outcome.written[destination.name] = publish_manifest(
                journal, destination.name, destination.store, key or MANIFEST_KEY
            )
        except ExitplanError as exc:
            outcome.failed[destination.name] = str(exc)
    return outcome


@dataclass
class VerifyResult:
    checked: int = 0
    checked_bytes: int = 0
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    #: Of the objects found sound, how many are stored unchecked (the source
    #: offered no checksum when they were copied).
    unchecked: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.mismatched

    @property
    def damaged(self) -> list[str]:
        return self.missing + self.mismatched


def verify_destination(
    journal: Journal,
    destination: str,
    store: ObjectStore,
    on_item: Callable[[str, bool], None] | None = None,
    *,
    mark_damaged: bool = True,
) -> VerifyResult:
    """Re-read every stored item at ``destination`` and compare size and sha256.

    With ``mark_damaged`` (the default) each missing or changed object is
    marked ``damaged`` in the journal at once: it no longer counts as saved,
    and the next resume copies it again. Retry-safe: yes.
    """
    result = VerifyResult()
    for item in journal.stored_items(destination):
        digest = hashlib.sha256()
        size = 0
        try:
            for chunk in store.get(item.dest_key):
                digest.update(chunk)
                size += len(chunk)
        except ObjectNotFound:
            result.missing.append(item.dest_key)
            if mark_damaged:
                journal.mark_damaged(
                    destination, item.dest_key, f"verify: {item.dest_key} is missing"
                )
            if on_item:
                on_item(item.dest_key, False)
            continue
        good = size == item.size and digest.hexdigest() == item.sha256
        if not good:
            result.mismatched.append(item.dest_key)
            if mark_damaged:
                journal.mark_damaged(
                    destination,
                    item.dest_key,
                    f"verify: {item.dest_key} has {size} bytes, sha256 {digest.hexdigest()}; "
                    f"{item.size} bytes, sha256 {item.sha256} were stored",
                )
        elif item.state == "unchecked":
            result.unchecked += 1
        result.checked += 1
        result.checked_bytes += size
        if on_item:
            on_item(item.dest_key, good)
    return result


# -- merging the manifests of a sharded export ---------------------------------------


@dataclass
class MergeOutcome:
    """What ``merge_shard_manifests`` found at one destination."""

    #: Shard numbers found, and how many shards the export was split in.
    shards: list[int] = field(default_factory=list)
    count: int = 0
    rows: int = 0
    size: int = 0
    #: Why nothing was written (shards missing, two shards disagreeing), or "".
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


def merge_shard_manifests(store: ObjectStore) -> MergeOutcome:
    """Join the shard manifests at ``store`` into ``MANIFEST_KEY``.

    Every shard K of N must be there, all of the same N; a key listed by two
    shards must be the same row in both. The rows are written in key order, so
    the merged manifest is what one unsharded export writes. Writes nothing
    and says why (``problem``) when a shard is missing or two disagree.
    Raises what ``store`` raises on reads and the write. Retry-safe: yes.
    """
    outcome = MergeOutcome()
    found: dict[int, dict[int, str]] = {}
    for stored in store.list(SHARD_MANIFESTS):
        match = _SHARD_NAME.fullmatch(stored.key[len(SHARD_MANIFESTS) :])
        if match:
            found.setdefault(int(match.group(2)), {})[int(match.group(1))] = stored.key
    if not found:
        outcome.problem = f"no shard manifests under {SHARD_MANIFESTS}"
        return outcome
    if len(found) > 1:
        outcome.problem = (
            "shard manifests of different splits: "
            + ", ".join(f"{len(v)} of {n}" for n, v in sorted(found.items()))
            + f"; remove the ones of the split you do not mean under {SHARD_MANIFESTS}"
        )
        return outcome
    ((count, shards),) = found.items()
    outcome.count = count
    outcome.shards = sorted(shards)
    missing = [k for k in range(1, count + 1) if k not in shards]
    if missing:
        outcome.problem = (
            f"shard(s) {', '.join(f'{k}/{count}' for k in missing)} not exported yet "
            "(no manifest): run `exitplan export --shard K/N` for them first"
        )
        return outcome
    # Each shard's manifest is in key order: merged as streams, never held whole.
    streams = [_keyed_rows(store, shards[index]) for index in outcome.shards]
    previous: tuple[str, bytes] | None = None
    conflict: list[str] = []

    def merged() -> Iterator[bytes]:
        nonlocal previous
        for key, line in heapq.merge(*streams):
            if previous is not None and previous[0] == key:
                if previous[1] != line:
                    conflict.append(key)
                    raise _Conflict(key)
                continue
            previous = (key, line)
            outcome.rows += 1
            yield line

    try:
        outcome.size = store.put_stream(MANIFEST_KEY, merged()).size
    except _Conflict:
        outcome.rows = 0
        outcome.problem = (
            f"{conflict[0]} is in two shards with different contents; export it again "
            "with one of them (`exitplan export --shard K/N`), then merge"
        )
    return outcome


class _Conflict(Exception):
    """Two shards list one key with different rows: nothing is published."""


def _keyed_rows(store: ObjectStore, key: str) -> Iterator[tuple[str, bytes]]:
    """(item key, row with its newline) of each line of a stored manifest, in order."""
    tail = b""
    for chunk in store.get(key):
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        for line in lines:
            if line.strip():
                yield str(json.loads(line)["key"]), line + b"\n"
    if tail.strip():
        yield str(json.loads(tail)["key"]), tail + b"\n"
