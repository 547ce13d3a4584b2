"""The manifest: every exported item with its size and checksums, at each destination.

It is written from the journal, streamed, as JSON Lines under
``manifest/manifest.jsonl`` and published atomically like any object, so a
person holding only the destination can check every byte without exitplan's
workspace. ``verify_destination`` re-reads every object and checks its sha256.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from orchestrator.run.journal import Journal
from providers.interfaces.object_store import ObjectNotFound, ObjectStore

MANIFEST_KEY = "manifest/manifest.jsonl"


def manifest_lines(journal: Journal, destination: str) -> Iterator[bytes]:
    for item in journal.verified_items(destination):
        row = {
            "kind": item.kind,
            "key": item.dest_key,
            "size": item.size,
            "sha256": item.sha256,
            "source_checksum": item.source_checksum,
            "source": dict(item.source),
        }
        yield (json.dumps(row, sort_keys=True) + "\n").encode()


def publish_manifest(journal: Journal, destination: str, store: ObjectStore) -> int:
    """Write the manifest of ``destination``; returns its size in bytes."""
    return store.put_stream(MANIFEST_KEY, manifest_lines(journal, destination)).size


@dataclass
class VerifyResult:
    checked: int = 0
    checked_bytes: int = 0
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.mismatched


def verify_destination(
    journal: Journal,
    destination: str,
    store: ObjectStore,
    on_item: Callable[[str, bool], None] | None = None,
) -> VerifyResult:
    """Re-read every verified item at ``destination`` and compare its sha256."""
    result = VerifyResult()
    for item in journal.verified_items(destination):
        digest = hashlib.sha256()
        size = 0
        try:
            for chunk in store.get(item.dest_key):
                digest.update(chunk)
                size += len(chunk)
        except ObjectNotFound:
            result.missing.append(item.dest_key)
            if on_item:
                on_item(item.dest_key, False)
            continue
        good = size == item.size and digest.hexdigest() == item.sha256
        if not good:
            result.mismatched.append(item.dest_key)
        result.checked += 1
        result.checked_bytes += size
        if on_item:
            on_item(item.dest_key, good)
    return result
