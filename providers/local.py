"""``Host`` on this machine, over ``subprocess``: the embedded default.

It keeps the same contract as ``providers.ssh.SshHost`` (the contract suite in
``tests/contract/host_contract.py`` runs against both), so a playbook that
works on ``LocalHost`` works on a rented host.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from providers.interfaces.host import (
    CommandResult,
    CommandTimeout,
    Host,
    HostPathError,
    check_command,
    check_host_path,
)

log = logging.getLogger(__name__)

_COPY_CHUNK = 1024 * 1024

#: Writes the whole payload to an open binary file.
_Writer = Callable[[BinaryIO], object]


class LocalHost(Host):
    """Runs commands and copies files on the machine exitplan runs on."""

    def __init__(self, name: str = "local") -> None:
        super().__init__(name)

    def describe(self) -> str:
        """``local:<name>``."""
        return f"local:{self.name}"

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> CommandResult:
        """Run ``argv`` here; see ``Host.run`` for the contract."""
        args = check_command(argv, env)
        full_env = {**os.environ, **env} if env else None
        log.debug("running %s on %s", shlex.join(args), self.name)
        started = time.monotonic()
        try:
            # A new session makes the command a process-group leader, so a
            # timeout kills everything it started, not just the first process.
            proc = subprocess.Popen(
                args,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            return self._not_started(args, exc, cwd, time.monotonic() - started)
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_group(proc)
            raise CommandTimeout(
                f"command `{shlex.join(args)}` on {self.name} did not finish within "
                f"{timeout:g}s and was killed; raise the timeout if it needs longer"
            ) from None
        except BaseException:
            # Ctrl-C or anything else: never leave the command running behind us.
            self._kill_group(proc)
            raise
        status = proc.returncode
        if status < 0:
            status = 128 - status  # what a shell reports for death by signal
        return CommandResult(
            argv=args,
            exit_status=status,
            stdout=stdout,
            stderr=stderr,
            duration_s=time.monotonic() - started,
            host=self.name,
        )

    def _not_started(
        self, args: tuple[str, ...], exc: OSError, cwd: str | None, elapsed: float
    ) -> CommandResult:
        # Report as a POSIX shell would (and as ssh does), so callers handle
        # "not found" the same way on every host.
        if cwd is not None and not os.path.isdir(cwd):
            status, what = 1, f"cannot change directory to {cwd}"
        elif exc.errno == errno.ENOENT:
            status, what = 127, f"{args[0]}: command not found"
        else:
            status, what = 126, f"{args[0]}: {exc.strerror}"
        return CommandResult(
            argv=args,
            exit_status=status,
            stdout=b"",
            stderr=f"exitplan: {what}\n".encode(),
            duration_s=elapsed,
            host=self.name,
        )

    @staticmethod
    def _kill_group(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()

    def put_bytes(self, data: bytes, remote: str, mode: int = 0o644) -> None:
        """Write ``data`` to ``remote`` atomically; see ``Host.put_bytes``."""
        self._atomic_write(remote, mode, lambda out: out.write(data))

    def put_file(self, local: Path, remote: str, mode: int = 0o644) -> None:
        """Copy ``local`` to ``remote`` atomically; see ``Host.put_file``."""
        with open(local, "rb") as src:
            self._atomic_write(remote, mode, lambda out: shutil.copyfileobj(src, out, _COPY_CHUNK))

    def get_file(self, remote: str, local: Path) -> None:
        """Copy ``remote`` to ``local`` atomically; see ``Host.get_file``."""
        check_host_path(remote)
        try:
            src = open(remote, "rb")  # noqa: SIM115  (closed below; opened first to map errors)
        except OSError as exc:
            raise HostPathError(
                f"cannot read {remote} on {self.name}: {exc.strerror}; check the path"
            ) from None
        with src:
            write_atomically(Path(local), 0o644, lambda out: shutil.copyfileobj(src, out))

    def _atomic_write(self, remote: str, mode: int, write: _Writer) -> None:
        check_host_path(remote)
        try:
            write_atomically(Path(remote), mode, write)
        except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
            raise HostPathError(
                f"cannot write {remote} on {self.name}: {exc.strerror}; "
                "check that its directory exists and is writable"
            ) from None

    def close(self) -> None:
        """Nothing to release."""


def write_atomically(target: Path, mode: int, write: _Writer) -> None:
    """Write ``target`` atomically: temp file beside it, fsync, chmod ``mode``, rename.

    Readers see the old file or the whole new one. The temp file is created
    0600 and exclusively, and removed if ``write`` raises (which propagates).
    Raises ``OSError`` when the directory is missing or not writable.
    """
    tmp = target.with_name(f".{target.name}.exitplan-{secrets.token_hex(6)}.tmp")
    # O_EXCL with 0o600: nobody else can open the temp file while the bytes go in.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
