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
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from orchestrator.errors import ExitplanError
from orchestrator.run.journal import Journal
from providers.interfaces.object_store import ObjectNotFound, ObjectStore

MANIFEST_KEY = "manifest/manifest.jsonl"


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


def publish_manifest(journal: Journal, destination: str, store: ObjectStore) -> int:
    """Write the manifest of ``destination``; returns its size in bytes.

    Raises what ``store.put_stream`` raises (``StoreWriteError`` on a full disk).
    """
    return store.put_stream(MANIFEST_KEY, manifest_lines(journal, destination)).size


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


def publish_manifests(journal: Journal, destinations: Sequence[_Named]) -> ManifestOutcome:
    """The manifest of every destination; one that cannot be written (a full
    disk) is reported in the outcome, never raised, so the others are written
    and the run still ends with its report. Retry-safe: yes."""
    outcome = ManifestOutcome()
    for destination in destinations:
        try:
            outcome.written[destination.name] = publish_manifest(
                journal, destination.name, destination.store
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
