"""An export and a host for replay tests: a local destination with a manifest, secrets
encrypted to a test identity, a real pg_dump, and placements for sshd or this machine."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator import age
from orchestrator.events import EventBus
from orchestrator.export.exporters.secrets import BUNDLE_FORMAT
from orchestrator.export.manifest import MANIFEST_KEY
from orchestrator.export.transfer import Destination
from orchestrator.placement.provision import Placement
from orchestrator.replay.runner import ReplayOptions, ReplayResult
from orchestrator.replay.steps import REPLAY_UNDO, prepare_replay, redacted_logs
from orchestrator.run.cancel import CancelToken
from orchestrator.run.journal import Journal
from providers.storage import LocalObjectStore
from tests.support.sshd import KeyPair, SshdServer

#: Secret values of the test bundle: distinctive, so leak checks grep for them.
SECRET_VALUES = {
    "app/db-password": "canary-replay-Pw7Qz3Lx",
    "app/api-token": "canary-replay-Tk9Rw2Mb",
}


@dataclass
class Export:
    store: LocalObjectStore
    path: Path
    identity: Path
    entries: dict[str, dict[str, object]]

    @property
    def destinations(self) -> list[Destination]:
        return [Destination("vault", self.store)]

    def tamper(self, key: str) -> None:
        """Flip a byte of ``key`` at the destination (size unchanged)."""
        target = self.path / key
        data = bytearray(target.read_bytes())
        data[0] ^= 0xFF
        target.write_bytes(bytes(data))


def make_export(root: Path, files: Mapping[str, bytes], *, secrets: bool = True) -> Export:
    """A destination under ``root/vault`` holding ``files`` (key -> bytes) and their manifest."""
    store = LocalObjectStore("vault", root / "vault")
    identity = root / "identity.age"
    if not identity.exists():
        age.generate_identity(identity)
    everything = dict(files)
    if secrets:
        document = {
            "format": BUNDLE_FORMAT,
            "region": "us-east-1",
            "secrets": [
                {
                    "name": name,
                    "versions": [
                        {"secret_string": value, "stages": ["AWSCURRENT"], "version_id": "v1"}
                    ],
                }
                for name, value in SECRET_VALUES.items()
            ],
            "parameters": [],
        }
        recipient = age.load_identity(identity).recipients[0]
        everything["secrets/us-east-1/bundle.json.age"] = age.encrypt(
            json.dumps(document).encode(), [recipient]
        )
    entries = {}
    for key, data in sorted(everything.items()):
        store.put_stream(key, [data])
        entries[key] = {
            "kind": key.split("/")[0],
            "key": key,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "source": {},
            "source_checksum": None,
        }
    manifest = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries.values()).encode()
    store.put_stream(MANIFEST_KEY, [manifest])
    return Export(store, root / "vault", identity, entries)


def dump_files(tools: object, conn: object, database: str) -> dict[str, bytes]:
    """A real ``pg_dump --format=directory`` of ``database``, as the RDS exporter lays it out:
    ``rds/test/<db>/dump.tar`` and its ``dump.sha256.json`` with the row counts."""
    from orchestrator.postgres import pg_dump_directory, row_counts

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "dump"
        pg_dump_directory(tools, conn.with_db(database), out, jobs=2)  # type: ignore[attr-defined]
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(out, arcname=f"databases/{database}")
        counts = row_counts(tools, conn.with_db(database))  # type: ignore[attr-defined, arg-type]
    checksums = {
        "databases": [{"name": database, "path": f"databases/{database}", "row_counts": counts}]
    }
    return {
        f"rds/test/{database}/dump.tar": buffer.getvalue(),
        f"rds/test/{database}/dump.sha256.json": json.dumps(checksums).encode(),
    }


def ssh_placement(server: SshdServer, key: KeyPair) -> Placement:
    return Placement(
        candidate="pool",
        target=server.address,
        provider="ssh-pool",
        node_id=f"{server.address}:{server.port}",
        node_name=server.address,
        address=server.address,
        port=server.port,
        user=server.user,
        host_key=server.host_key.public_key,
        host_key_fingerprint="",
        key_file=str(key.private),
        transport="ssh",
    )


def local_placement() -> Placement:
    return Placement(
        "this-machine",
        "localhost",
        "local",
        "localhost",
        "localhost",
        "localhost",
        0,
        "",
        "",
        "",
        None,
        "local",
    )


def replay(
    playbook: Path,
    placement: Placement,
    export: Export,
    journal: Journal,
    run_id: str,
    workdir: Path,
    *,
    options: ReplayOptions | None = None,
    events: EventBus | None = None,
) -> ReplayResult:
    """Validate and replay ``playbook`` in this process, undo recorded in ``journal``."""

    def record_undo(step_id: str, resource: dict, description: str) -> int:
        return journal.record_undo(run_id, "replay", REPLAY_UNDO, resource, description)

    session = prepare_replay(
        path=playbook,
        placement=placement,
        destinations=export.destinations,
        journal=journal,
        run_id=run_id,
        events=events or EventBus(),
        cancel=CancelToken(),
        directory=workdir,
        identity=export.identity,
        record_undo=record_undo,
        options=options or ReplayOptions(),
    )
    try:
        with redacted_logs(session.redactor):
            return session.runner.run()
    finally:
        session.close()


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` by relative path -> sha256 (to prove nothing changed)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }
