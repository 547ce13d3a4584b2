"""Every playbook op, by the key that names it in a step."""

from __future__ import annotations

from orchestrator.replay.ops.base import Op
from orchestrator.replay.ops.commands import CommandOp, PackagesOp, ShellOp, UserOp
from orchestrator.replay.ops.database import PgRestoreOp, PostgresDbOp
from orchestrator.replay.ops.files import DirectoryOp, PutOp, SyncOp, TemplateOp
from orchestrator.replay.ops.service import HttpCheckOp, PauseOp, ServiceOp, WaitForOp

OPS: dict[str, Op] = {
    op.name: op
    for op in (
        PackagesOp(),
        UserOp(),
        DirectoryOp(),
        PutOp(),
        TemplateOp(),
        CommandOp(),
        ShellOp(),
        PostgresDbOp(),
        PgRestoreOp(),
        SyncOp(),
        ServiceOp(),
        WaitForOp(),
        HttpCheckOp(),
        PauseOp(),
    )
}
