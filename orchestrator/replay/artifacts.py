"""Artifacts: exported objects a playbook uses, named by manifest key, checked before use.

A playbook names artifacts by their key in the destination's manifest
(``manifest/manifest.jsonl``), or by a key prefix (every object under it).
Nothing is used on faith: a fetched copy whose sha256 differs from the
manifest's is refused (the next destination holding it is tried), and the
copy on the host is hashed again there before any op uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import ConfigError
from orchestrator.export.manifest import MANIFEST_KEY
from orchestrator.replay.ops.base import OpFailed
from providers.interfaces.object_store import ObjectNotFound, ObjectStore


@dataclass(frozen=True)
class ManifestEntry:
    key: str
    kind: str
    size: int
    sha256: str


def read_manifest(store: ObjectStore) -> dict[str, ManifestEntry]:
    """The manifest at one destination, by key; ``ConfigError`` if it has none."""
    try:
        data = b"".join(store.get(MANIFEST_KEY))
    except ObjectNotFound:
        raise ConfigError(
            f"{store.describe()} holds no {MANIFEST_KEY}: export first (`exitplan export`), "
            "then replay"
        ) from None
    entries = {}
    for line in data.decode("utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            entries[row["key"]] = ManifestEntry(
                row["key"], row.get("kind", ""), int(row["size"]), row["sha256"]
            )
    return entries


class ArtifactSource:
    """The exported objects of one or more destinations, fetched and checked on demand."""

    def __init__(self, stores: Iterable[tuple[str, ObjectStore]]) -> None:
        self.stores = list(stores)
        self.entries: dict[str, ManifestEntry] = {}
        self._holders: dict[str, list[tuple[str, ObjectStore]]] = {}
        for name, store in self.stores:
            for key, entry in read_manifest(store).items():
                self.entries.setdefault(key, entry)
                self._holders.setdefault(key, []).append((name, store))
        self._lock = threading.Lock()

    def manifest_keys(self) -> set[str]:
        return set(self.entries)

    def entry(self, key: str) -> ManifestEntry:
        try:
            return self.entries[key]
        except KeyError:
            raise OpFailed(f"artifact {key} is not in the export's manifest") from None

    def under(self, prefix: str) -> list[ManifestEntry]:
        """Every manifest entry whose key starts with ``prefix``, by key."""
        return [self.entries[k] for k in sorted(self.entries) if k.startswith(prefix)]

    def fetch(self, key: str, scratch: Path) -> Path:
        """A local copy of ``key`` whose sha256 and size equal the manifest's.

        Cached in ``scratch`` by sha256. Tries each destination holding it;
        raises ``OpFailed`` naming every copy that did not match.
        """
        entry = self.entry(key)
        scratch.mkdir(parents=True, exist_ok=True)
        cached = scratch / f"{entry.sha256}.artifact"
        if cached.exists():
            return cached
        problems = []
        for name, store in self._holders.get(key, []):
            tmp = scratch / f".{entry.sha256}.{threading.get_ident()}.part"
            digest = hashlib.sha256()
            size = 0
            try:
                with tmp.open("wb") as out:
                    for chunk in store.get(key):
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
            except ObjectNotFound:
                problems.append(f"{name}: missing")
                tmp.unlink(missing_ok=True)
                continue
            if digest.hexdigest() != entry.sha256 or size != entry.size:
                problems.append(
                    f"{name}: sha256 {digest.hexdigest()} ({size} bytes), the manifest says "
                    f"{entry.sha256} ({entry.size} bytes)"
                )
                tmp.unlink(missing_ok=True)
                continue
            with self._lock:
                os.replace(tmp, cached)
            return cached
        raise OpFailed(
            f"artifact {key} does not match the manifest at any destination ({'; '.join(problems)}); "
            "it was damaged or changed after the export: `exitplan verify` lists what is bad, "
            "and a new export replaces it"
        )
