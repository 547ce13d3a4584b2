"""What every playbook operation is: declared arguments, check -> apply -> verify, undo.

An op never trusts what was true before it ran (pyinfra v3's lesson): its
``check`` reads the host *now*, and says either "no change" (with why) or what
it would change (with a diff). Only then, and never in ``--check`` mode,
does ``apply`` change the host, after the runner has journaled the undo
that ``undo_record`` describes; ``verify`` then reads the host again and
fails the step when the change did not take.
"""

from __future__ import annotations

import hashlib
import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from orchestrator.errors import ExitplanError, FatalError
from orchestrator.replay.templating import Redactor
from orchestrator.run.cancel import CancelToken
from providers.interfaces.host import CommandResult, Host

if TYPE_CHECKING:
    from orchestrator.replay.artifacts import ArtifactSource
    from orchestrator.replay.hostinfo import HostFacts


class OpFailed(ExitplanError):
    """The op could not bring the host to the state asked for; the message says why.

    Messages are redacted by the runner before they go anywhere.
    """


class ArgError(FatalError):
    """A rendered argument has the wrong type or value (caught at run time: it was a template)."""


@dataclass(frozen=True)
class Arg:
    """One argument an op accepts.

    ``kind``: ``str``, ``int``, ``float``, ``bool``, ``path`` (absolute on the
    host, no ``..``), ``local`` (a file next to the playbook), ``mode``
    (octal), ``argv`` (a list of strings), ``strings``, ``env`` (a mapping of
    names to strings), ``any``.
    """

    kind: str
    required: bool = False
    default: Any = None
    doc: str = ""
    #: The value may carry a secret (an env value, a file's content).
    secret_ok: bool = False


@dataclass(frozen=True)
class Check:
    """What an op found on the host before acting."""

    satisfied: bool
    #: Why no change is needed, or what will change (one line).
    reason: str
    #: A unified diff of what would change (files), for ``--check --diff``.
    diff: str = ""
    #: Whatever ``apply``/``undo_record`` need from what was read (existed, old mode, ...).
    state: dict[str, Any] = field(default_factory=dict)
    #: Output to register when no change is needed.
    output: dict[str, Any] = field(default_factory=dict)


@dataclass
class OpContext:
    """What an op may use while it runs on one host."""

    host: Host
    #: Facts read now (the runner reads them again before each step that uses them).
    facts: Callable[[], HostFacts]
    artifacts: ArtifactSource | None
    redactor: Redactor
    cancel: CancelToken
    timeout: float
    #: Local scratch space for this replay (artifacts on their way to the host).
    scratch: Path
    #: Where relative ``local`` paths (template and put sources) are found.
    playbook_dir: Path
    check_mode: bool = False
    #: Asked before a ``pause`` op; None means nobody can answer (non-interactive).
    approve: Callable[[str], bool] | None = None
    #: Renders a template file for the ``template`` op (the runner's context bound in).
    render: Callable[[str], str] | None = None
    #: Artifact name -> manifest key (or prefix), as the playbook declares them.
    artifact_keys: Mapping[str, str] = field(default_factory=dict)

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        input: bytes | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run ``argv`` on the host, as ``user`` when given (``runuser`` from root)."""
        self.cancel.raise_if_set()
        return self.host.run(
            self.as_user(argv, user),
            timeout=timeout or self.timeout,
            env=env,
            cwd=cwd,
            input=input,
        )

    def must(self, argv: Sequence[str], what: str, **kwargs: Any) -> CommandResult:
        """Run and require exit status 0; ``OpFailed`` naming ``what`` otherwise."""
        result = self.run(argv, **kwargs)
        if not result.ok:
            raise OpFailed(f"{what}: {describe_failure(result)}")
        return result

    def as_user(self, argv: Sequence[str], user: str | None) -> list[str]:
        """``argv`` to run as ``user``: unchanged if we are that user, ``runuser`` if root."""
        if not user:
            return list(argv)
        facts = self.facts()
        if user == facts.user:
            return list(argv)
        if facts.uid != 0:
            raise OpFailed(
                f"cannot run as {user!r}: exitplan is logged in to {self.host.describe()} as "
                f"{facts.user!r}, not root; log in as root or drop `user:`"
            )
        return ["runuser", "-u", user, "--", *argv]


def describe_failure(result: CommandResult) -> str:
    tail = (result.stderr or result.stdout)[-1500:].decode("utf-8", "replace").strip()
    text = f"`{shlex.join(result.argv)}` exited with status {result.exit_status}"
    return f"{text}: {tail}" if tail else text


class Op(ABC):
    """One kind of playbook operation (``directory``, ``put``, ``command``, ...)."""

    #: The key that names the op in a step.
    name: ClassVar[str]
    #: One line for the README's op reference.
    summary: ClassVar[str]
    args: ClassVar[dict[str, Arg]]
    #: The argument a bare (non-mapping) value fills: ``command: [a, b]`` is ``argv``.
    short: ClassVar[str | None] = None
    #: Shown in plans next to the step (``shell`` runs a shell script).
    marker: ClassVar[str] = ""

    @abstractmethod
    def check(self, ctx: OpContext, args: Mapping[str, Any]) -> Check:
        """Read the host now; never change it."""

    @abstractmethod
    def apply(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> dict[str, Any]:
        """Change the host; return what the step registers (JSON-able)."""

    def verify(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> None:
        """Read the host again; raise ``OpFailed`` if the change did not take."""
        after = self.check(ctx, args)
        if not after.satisfied:
            raise OpFailed(f"after the change the host still differs: {after.reason}")

    def undo_record(self, args: Mapping[str, Any], check: Check) -> dict[str, Any] | None:
        """How to remove what ``apply`` is about to make (secret-free), or None."""
        return None

    @classmethod
    def undo(cls, host: Host, record: Mapping[str, Any]) -> str:
        """Remove what a record says this op made. Idempotent. Returns what it did."""
        return "nothing to undo"

    def describe(self, args: Mapping[str, Any]) -> str:
        """One line for plans and progress (redacted by the caller)."""
        return self.name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _mode(value: Any, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 0755 as octal already.
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip(), 8)
    else:
        raise ArgError(f'{what}: {value!r} is not a file mode; write it quoted, e.g. "0644"')
    if not 0 <= number <= 0o7777:
        raise ArgError(f'{what}: {value!r} is not a file mode; write it quoted, e.g. "0644"')
    return number


def _host_path(value: Any, what: str) -> str:
    text = str(value)
    if not text.startswith("/"):
        raise ArgError(f"{what}: {text!r} must be an absolute path on the host")
    if ".." in text.split("/"):
        raise ArgError(f"{what}: {text!r} contains '..'; write the path without it")
    return text


def coerce_args(op: Op, raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Rendered arguments with defaults filled in and each turned into its kind.

    Raises ``ArgError`` naming ``where`` (step id and op) for a value of the
    wrong kind, which only a template can produce (literals were checked
    when the playbook was read).
    """
    args: dict[str, Any] = {}
    for name, spec in op.args.items():
        what = f"{where}: {op.name}.{name}"
        if name not in raw or raw[name] is None:
            args[name] = spec.default
            continue
        value = raw[name]
        kind = spec.kind
        try:
            if kind in ("str", "artifact", "any"):
                args[name] = value if kind == "any" else str(value)
            elif kind == "int":
                args[name] = int(value)
            elif kind == "float":
                args[name] = float(value)
            elif kind == "bool":
                args[name] = (
                    value if isinstance(value, bool) else str(value).lower() in ("true", "yes", "1")
                )
            elif kind == "mode":
                args[name] = _mode(value, what)
            elif kind == "path":
                args[name] = _host_path(value, what)
            elif kind == "local":
                if ".." in str(value).split("/") or str(value).startswith("/"):
                    raise ArgError(
                        f"{what}: {value!r} must be relative to the playbook, without '..'"
                    )
                args[name] = str(value)
            elif kind in ("argv", "strings"):
                items = value if isinstance(value, list) else [value]
                args[name] = [str(item) for item in items]
                if kind == "argv" and not args[name]:
                    raise ArgError(f"{what} is empty: name the program to run")
            elif kind == "env":
                if not isinstance(value, Mapping):
                    raise ArgError(f"{what} must be a mapping of NAME: value")
                args[name] = {str(k): str(v) for k, v in value.items()}
            else:  # pragma: no cover - a kind no op declares
                raise AssertionError(kind)
        except (TypeError, ValueError):
            raise ArgError(f"{what}: {value!r} is not a {kind}") from None
    return args
