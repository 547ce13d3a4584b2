"""Rollback of a replay: undo handler for the ``replay-step`` kind.

Each entry names the host (how to reach it again, with its pinned key) and
what one op made there; the op's own ``undo`` removes it (stop a service,
remove a directory or file the replay created, delete a user), or the
step's ``undo:`` op runs. Idempotent: what is already gone is reported so.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.replay.ops import OPS
from providers.compute import open_host
from providers.interfaces.compute import ReadyHost


def _ready(resource: Mapping[str, Any]) -> ReadyHost:
    return ReadyHost(
        address=str(resource["address"]),
        port=int(resource["port"]),
        user=str(resource["user"]),
        host_key=str(resource["host_key"]),
        node_id=str(resource["node_id"]),
        key_file=Path(resource["key_file"]) if resource.get("key_file") else None,
        transport=str(resource.get("transport", "ssh")),
    )


def undo_replay_step(resource: Mapping[str, Any], context: Any) -> str:
    """Undo handler for ``replay-step`` (see the module docstring)."""
    op = OPS[str(resource["op"])]
    with open_host(_ready(resource["host"])) as host:
        if "custom" in resource:
            args = resource["custom"]
            argv = op.argv(args) if hasattr(op, "argv") else None
            if argv is None:
                return f"{resource['step']}: undo op {op.name} cannot run at rollback"
            result = host.run(argv, timeout=600, env=args.get("env"), cwd=args.get("cwd"))
            if not result.ok:
                from orchestrator.replay.ops.base import OpFailed, describe_failure

                raise OpFailed(f"{resource['step']}: undo failed: {describe_failure(result)}")
            return f"{resource['step']}: ran {op.describe(args)}"
        return f"{resource['step']}: {type(op).undo(host, resource['record'])}"
