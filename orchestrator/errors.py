"""One error hierarchy for the whole engine.

Every message names the thing that is wrong and how to fix it, and never holds
a secret value. The CLI maps ``exit_code`` straight to the process exit code.
"""

from __future__ import annotations


class ExitplanError(Exception):
    """Base of every error exitplan raises on purpose."""

    exit_code = 1


class ConfigError(ExitplanError):
    """Bad input or usage: nothing has been changed. Exit code 2.

    Carries one finding or several independent ones (every problem of a
    config file at once); ``str()`` shows them all, one per line.
    """

    exit_code = 2

    def __init__(self, *findings: str) -> None:
        super().__init__(*findings)
        self.findings: tuple[str, ...] = findings

    def __str__(self) -> str:
        if len(self.findings) == 1:
            return self.findings[0]
        return f"{len(self.findings)} problems:\n" + "\n".join(self.findings)


class RetryableError(ExitplanError):
    """A transient failure; the same call may succeed if made again."""


class FatalError(ExitplanError):
    """The run cannot go on; retrying the same call will not help."""


class ChecksumMismatch(RetryableError):
    """Bytes read or written do not match the checksum they must have.

    Retryable because the usual cause is a short or damaged body on the wire;
    the damaged copy is never published.
    """


class Cancelled(ExitplanError):
    """The run was asked to stop (Ctrl-C or the deadline); work left is journaled."""

    exit_code = 130
