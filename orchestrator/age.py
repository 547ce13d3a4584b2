"""A thin, typed wrapper over pyrage: age encryption to X25519 recipients.

age (https://age-encryption.org) is the format secrets bundles are written
in: a file encrypted to one or more *recipients* (``age1...``, public) can be
opened by any one of the matching *identities* (``AGE-SECRET-KEY-1...``,
private), with the ``age`` command line tool as well as with exitplan.

Contracts that the rest of exitplan relies on:

* an error message never contains an identity (secret key) or plaintext;
  it may name a recipient, which is public;
* an identity file is only ever created with mode 0600 and atomically: it is
  either absent or complete, and an existing one is never overwritten;
* only X25519 recipients are accepted (no ssh or plugin recipients), so what
  this module encrypts, ``age -d -i key.txt`` decrypts.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyrage
from pyrage import x25519

from orchestrator.errors import ConfigError

#: What every X25519 recipient starts with.
RECIPIENT_PREFIX = "age1"
#: What every X25519 identity starts with (upper case, as age-keygen writes it).
IDENTITY_PREFIX = "AGE-SECRET-KEY-1"


class DecryptionFailed(ConfigError):
    """The data could not be decrypted with the given identity (wrong key, or not age).

    A ConfigError (exit 2): the input is wrong and nothing has been changed.
    """


@dataclass(frozen=True)
class AgeIdentity:
    """One or more X25519 identities loaded from an identity file.

    ``repr`` never shows the keys; ``recipients`` are their public halves.
    """

    path: Path
    recipients: tuple[str, ...]
    _keys: tuple[Any, ...] = field(repr=False)


def _shown(value: str) -> str:
    """A recipient as it may appear in a message: public, but possibly garbage, so cut."""
    return repr(value if len(value) <= 80 else value[:77] + "...")


def parse_recipient(value: str, *, where: str = "encrypt.recipients") -> Any:
    """The pyrage recipient for ``value`` (``age1...``).

    Raises ConfigError naming ``where`` and the bad value, except when the
    value is an identity (a secret key pasted in by mistake): that one is
    never echoed.
    """
    text = value.strip() if isinstance(value, str) else value
    if not isinstance(text, str) or not text:
        raise ConfigError(f"{where}: a recipient is empty; expected an age recipient 'age1...'")
    if text.upper().startswith("AGE-SECRET-KEY-"):
        raise ConfigError(
            f"{where}: an entry is an age identity (a SECRET key), not a recipient; "
            "put its public key ('age1...', shown by `age-keygen -y KEYFILE`) there instead, "
            "and treat that secret key as leaked if this config was shared"
        )
    if not text.startswith(RECIPIENT_PREFIX):
        raise ConfigError(
            f"{where}: {_shown(text)} is not an age X25519 recipient; expected 'age1...' "
            "as printed by `age-keygen` (ssh and plugin recipients are not supported)"
        )
    try:
        return x25519.Recipient.from_str(text)
    except pyrage.RecipientError as exc:
        raise ConfigError(
            f"{where}: {_shown(text)} is not a valid age X25519 recipient ({exc}); "
            "copy it again from `age-keygen -y KEYFILE`"
        ) from None


def validate_recipients(recipients: Iterable[str], *, where: str = "encrypt.recipients") -> None:
    """Raise ConfigError naming the first bad recipient in ``recipients``; pure."""
    for value in recipients:
        parse_recipient(value, where=where)


def encrypt(data: bytes, recipients: Iterable[str]) -> bytes:
    """``data`` encrypted (binary age format) so that any one of ``recipients`` can read it.

    Raises ConfigError for a bad or missing recipient. The ciphertext differs
    on every call (a fresh file key each time), its length does not.
    """
    parsed = [parse_recipient(r) for r in recipients]
    if not parsed:
        raise ConfigError("encrypt.recipients is empty: name at least one age recipient")
    result: bytes = pyrage.encrypt(data, parsed)
    return result


def decrypt(data: bytes, identity: AgeIdentity) -> bytes:
    """The plaintext of age ciphertext ``data``.

    Raises DecryptionFailed (a ConfigError) when no key of ``identity`` is a
    recipient of ``data``, or when ``data`` is not intact age ciphertext.
    """
    try:
        result: bytes = pyrage.decrypt(data, list(identity._keys))
    except pyrage.DecryptError as exc:
        if not data.startswith(b"age-encryption.org/"):
            raise DecryptionFailed(
                "the file is not age-encrypted (no 'age-encryption.org' header)"
            ) from None
        raise DecryptionFailed(
            f"cannot decrypt with identity file {identity.path} (public key "
            f"{', '.join(identity.recipients)}): {exc}. Use the identity whose public key "
            "is listed in the destination's encrypt.recipients"
        ) from None
    return result


def load_identity(path: Path | str) -> AgeIdentity:
    """The identities in an age identity file (the format ``age-keygen`` writes).

    Lines starting with ``#`` and blank lines are ignored. Raises ConfigError
    naming the file and line when it cannot be read or a line is not an
    X25519 identity; the line itself is never shown.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"cannot read age identity file {path}: {reason}") from None
    keys: list[Any] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith(IDENTITY_PREFIX):
            raise ConfigError(
                f"{path}:{number}: not an age X25519 identity (expected 'AGE-SECRET-KEY-1...', "
                "as written by `age-keygen`)"
            )
        try:
            keys.append(x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise ConfigError(f"{path}:{number}: the age identity is damaged") from None
    if not keys:
        raise ConfigError(f"{path}: holds no age identity ('AGE-SECRET-KEY-1...')")
    return AgeIdentity(
        path=path, recipients=tuple(str(k.to_public()) for k in keys), _keys=tuple(keys)
    )


def generate_identity(path: Path | str) -> str:
    """Write a new X25519 identity to ``path`` (mode 0600) and return its recipient.

    The file looks like ``age-keygen``'s output, so the ``age`` tool reads it.
    It is written to a temporary file in the same directory and then linked
    into place, so ``path`` is never seen half-written and an existing file
    (someone's only copy of a key) is never replaced: that raises ConfigError.
    """
    path = Path(path)
    key = x25519.Identity.generate()
    recipient = str(key.to_public())
    created = datetime.now(UTC).replace(microsecond=0).isoformat()
    body = f"# created: {created}\n# public key: {recipient}\n{key}\n".encode()
    directory = path.parent if str(path.parent) else Path(".")
    try:
        # mkstemp creates the file 0600 from the start: the key is never readable by others.
        fd, tmp_name = tempfile.mkstemp(prefix=".age-identity-", dir=directory)
    except OSError as exc:
        raise ConfigError(
            f"cannot create an identity file in {directory}: {exc.strerror}"
        ) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp_name, path)
        except FileExistsError:
            raise ConfigError(
                f"{path} already exists; refusing to overwrite an identity (it may be the "
                "only copy of a key): choose another path"
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot write identity file {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
    return recipient
