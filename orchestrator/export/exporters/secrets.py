"""Secrets Manager secrets and SSM parameters -> one age-encrypted bundle per region.

The bundle (``secrets/<region>/bundle.json.age``) is a JSON document
(:data:`BUNDLE_FORMAT`) holding every secret (every staged version: its
value, name, ARN, description, tags, KMS key, rotation settings) and every
SSM parameter (name, type, value, tier, description, version) of the
region, encrypted with age to the X25519 recipients a destination declares
(``encrypt: {recipients: [age1...]}``). ``age -d -i key.txt`` or
:func:`decrypt_bundle_to_text` gives the JSON back.

How plaintext is kept in, because values must never reach disk, logs, the
journal, the manifest or an error message:

* values are read only in ``open`` and held in memory just long enough to
  encrypt them (once per distinct recipient set); only ciphertext is kept
  and streamed. Python cannot wipe memory, so the plaintext lingers in freed
  memory until it is reused: a swap or core dump could hold it.
* ``ExportItem.source`` and the idempotency key carry counts, recipients
  and a hash of names, version ids and change dates: never a value, nor a
  hash of one (a hash of a short password can be brute-forced).
* botocore logs response bodies at DEBUG; while this module reads values,
  records of botocore's wire loggers from that thread are dropped.
* AWS error messages name secrets, never their values, so they are safe to
  pass on; anything built here names secrets only.

Destinations sharing the same recipients share one item (one encryption);
a destination without recipients gets no bundle. With no recipients at all,
nothing is exported and :meth:`SecretsExporter.warnings` says how many
secrets and parameters were left behind and how to fix it.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import botocore.exceptions

from orchestrator import age
from orchestrator.errors import ConfigError, FatalError
from orchestrator.export.exporters.base import (
    BytesStream,
    ExportContext,
    Exporter,
    ExportItem,
    SourceStream,
    TierOf,
)
from orchestrator.export.iam_policy import missing_action
from providers.aws import AwsAccount, call_aws

#: Format marker of the decrypted JSON document; bump when its shape changes.
BUNDLE_FORMAT = "exitplan.secrets.bundle/1"
BUNDLE_NAME = "bundle.json.age"

_CHUNK = 64 * 1024
#: GetParameters takes at most this many names per call.
_SSM_BATCH = 10

#: Loggers that may write request or response bodies (with values) at DEBUG.
_WIRE_LOGGERS = (
    "botocore.parsers",
    "botocore.endpoint",
    "botocore.hooks",
    "botocore.httpsession",
    "botocore.awsrequest",
    "botocore.retryhandler",
    "urllib3.connectionpool",
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- quiet wire logs


class _WireQuiet(logging.Filter):
    """Drops wire-log records made by a thread that is reading secret values.

    A logger filter, not a level change: other threads (S3 copies running at
    the same time) keep their DEBUG logs.
    """

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self._local, "depth", 0)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self._local.depth = getattr(self._local, "depth", 0) + 1
        try:
            yield
        finally:
            self._local.depth -= 1


_QUIET = _WireQuiet()
for _name in _WIRE_LOGGERS:
    logging.getLogger(_name).addFilter(_QUIET)


# --------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class _RegionListing:
    """What is in a region, from list calls that return no values."""

    region: str
    #: ``ListSecrets`` entries, by name.
    secrets: tuple[Mapping[str, Any], ...]
    #: ``DescribeParameters`` entries, by name.
    parameters: tuple[Mapping[str, Any], ...]

    @property
    def empty(self) -> bool:
        return not self.secrets and not self.parameters

    @property
    def digest(self) -> str:
        """A change marker built from names, version ids and change dates, never values.

        Any new value gets a new version (Secrets Manager VersionId, SSM
        Version), so an unchanged digest means unchanged content.
        """
        marker = {
            "secrets": [
                [
                    s["Name"],
                    sorted(
                        (v, sorted(st)) for v, st in s.get("SecretVersionsToStages", {}).items()
                    ),
                    _iso(s.get("LastChangedDate")),
                ]
                for s in self.secrets
            ],
            "parameters": [
                [p["Name"], p.get("Version"), _iso(p.get("LastModifiedDate"))]
                for p in self.parameters
            ],
        }
        text = json.dumps(marker, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return None if value is None else str(value)


def _group_id(recipients: Sequence[str]) -> str:
    """A short stable name for a recipient set (recipients are public)."""
    return hashlib.sha256("\n".join(sorted(recipients)).encode()).hexdigest()[:16]


def _recipient_groups(
    recipients: Mapping[str, Sequence[str]],
) -> tuple[dict[tuple[str, ...], frozenset[str]], tuple[str, ...]]:
    """(sorted recipient set -> destinations declaring exactly it, destinations with none).

    Raises ConfigError naming the destination and the bad recipient.
    """
    groups: dict[tuple[str, ...], set[str]] = {}
    without: list[str] = []
    for destination, declared in sorted(recipients.items()):
        # A lone string would otherwise be read one character per recipient.
        values = (declared,) if isinstance(declared, str) else declared
        cleaned = tuple(sorted({str(r).strip() for r in values}))
        if not cleaned:
            without.append(destination)
            continue
        age.validate_recipients(cleaned, where=f"destination {destination!r}: encrypt.recipients")
        groups.setdefault(cleaned, set()).add(destination)
    return {k: frozenset(v) for k, v in groups.items()}, tuple(without)


# --------------------------------------------------------------------------- streaming


# --------------------------------------------------------------------------- exporter


class SecretsExporter(Exporter):
    """One encrypted bundle per region and distinct recipient set (see the module doc).

    Items have ``size=None`` (the ciphertext exists only once ``open`` has
    read the values) and ``destinations`` set to the destinations declaring
    that recipient set. ``open`` reads exactly the versions listed (secret
    VersionIds, SSM ``name:version``), so the bundle always matches its key.

    Raises ConfigError at construction when a declared recipient is invalid.
    """

    kind: ClassVar[str] = "secrets"

    def __init__(
        self, account: AwsAccount, *, tier_of: TierOf, context: ExportContext | None = None
    ) -> None:
        super().__init__(account, tier_of=tier_of, context=context)
        self._groups, self._unencrypted = _recipient_groups(self.context.recipients)
        self._lock = threading.Lock()
        self._region_locks: dict[str, threading.Lock] = {}
        self._warnings: list[str] = []
        #: idem_key -> the listing it was made from (for ``open``).
        self._listings: dict[str, _RegionListing] = {}
        #: idem_key -> ciphertext, kept from ``open`` until the item settles.
        self._ciphertexts: dict[str, bytes] = {}

    # -- what the run orchestrator reads ------------------------------------

    def warnings(self) -> list[str]:
        """Problems a person must see, in plain words, collected so far.

        Read after ``TransferEngine.export``: secrets left behind because no
        destination declares recipients, destinations that get no bundle,
        secrets or parameters that could not be read. Never holds a value.
        """
        with self._lock:
            return list(self._warnings)

    def _warn(self, message: str) -> None:
        log.warning("%s", message)
        with self._lock:
            if message not in self._warnings:
                self._warnings.append(message)

    # -- AWS ----------------------------------------------------------------

    def _aws(self, what: str, fn: Callable[[], Any]) -> Any:
        return call_aws(what, fn)

    def _list_region(self, region: str) -> _RegionListing:
        sm = self.account.client("secretsmanager", region)
        ssm = self.account.client("ssm", region)
        secrets = self._aws(
            f"list Secrets Manager secrets in {region}",
            lambda: [
                s
                for page in sm.get_paginator("list_secrets").paginate()
                for s in page["SecretList"]
            ],
        )
        parameters = self._aws(
            f"describe SSM parameters in {region}",
            lambda: [
                p
                for page in ssm.get_paginator("describe_parameters").paginate()
                for p in page["Parameters"]
            ],
        )
        return _RegionListing(
            region=region,
            secrets=tuple(sorted(secrets, key=lambda s: s["Name"])),
            parameters=tuple(sorted(parameters, key=lambda p: p["Name"])),
        )

    def _read_secret(self, sm: Any, entry: Mapping[str, Any]) -> dict[str, Any]:
        name = entry["Name"]
        versions: list[dict[str, Any]] = []
        unreadable: list[str] = []
        staged = {v: st for v, st in entry.get("SecretVersionsToStages", {}).items() if st}
        # A secret listed without stages (some endpoints omit them) is read as AWSCURRENT.
        wanted: list[tuple[str | None, list[str]]] = (
            sorted(staged.items()) if staged else [(None, ["AWSCURRENT"])]
        )
        for version_id, stages in wanted:
            kwargs: dict[str, str] = {"SecretId": entry.get("ARN", name)}
            if version_id is not None:
                kwargs["VersionId"] = version_id
            try:
                with _QUIET.active():
                    response = self._aws(
                        f"read secret {name}", functools.partial(sm.get_secret_value, **kwargs)
                    )
            except botocore.exceptions.ClientError as exc:
                # One unreadable secret (KMS key denied, deleted meanwhile) must not
                # cost the others: it is named in the bundle and in the warnings.
                code = exc.response.get("Error", {}).get("Code", "ClientError")
                lacking = missing_action(exc)
                unreadable.append(
                    f"version {version_id or 'AWSCURRENT'}: {code}"
                    + (f", the source credentials lack {lacking}" if lacking else "")
                )
                continue
            version: dict[str, Any] = {
                "version_id": response.get("VersionId", version_id),
                "stages": sorted(response.get("VersionStages", stages)),
                "created_date": _iso(response.get("CreatedDate")),
            }
            if "SecretString" in response:
                version["secret_string"] = response["SecretString"]
            if "SecretBinary" in response:
                version["secret_binary_base64"] = base64.b64encode(response["SecretBinary"]).decode(
                    "ascii"
                )
            versions.append(version)
        secret: dict[str, Any] = {
            "name": name,
            "arn": entry.get("ARN"),
            "description": entry.get("Description"),
            "kms_key_id": entry.get("KmsKeyId"),
            "tags": {t["Key"]: t["Value"] for t in entry.get("Tags", [])},
            "rotation": {
                "enabled": bool(entry.get("RotationEnabled", False)),
                "lambda_arn": entry.get("RotationLambdaARN"),
                "rules": entry.get("RotationRules"),
            },
            "last_changed_date": _iso(entry.get("LastChangedDate")),
            "versions": versions,
        }
        if unreadable:
            secret["unreadable"] = unreadable
        return secret

    def _read_parameters(
        self, ssm: Any, entries: Sequence[Mapping[str, Any]], region: str
    ) -> tuple[list[dict[str, Any]], list[str]]:
        values: dict[str, Mapping[str, Any]] = {}
        missing: list[str] = []
        for start in range(0, len(entries), _SSM_BATCH):
            batch = entries[start : start + _SSM_BATCH]
            # name:version pins what was listed, so the bundle matches its idem_key.
            selectors = [
                f"{p['Name']}:{p['Version']}" if p.get("Version") else p["Name"] for p in batch
            ]
            with _QUIET.active():
                response = self._aws(
                    f"read SSM parameters in {region}",
                    functools.partial(ssm.get_parameters, Names=selectors, WithDecryption=True),
                )
            for parameter in response.get("Parameters", []):
                values[parameter["Name"]] = parameter
            missing += response.get("InvalidParameters", [])
        parameters = []
        for entry in entries:
            got = values.get(entry["Name"])
            if got is None:
                continue
            parameters.append(
                {
                    "name": entry["Name"],
                    "type": entry.get("Type", got.get("Type")),
                    "value": got.get("Value"),
                    "version": got.get("Version", entry.get("Version")),
                    "tier": entry.get("Tier"),
                    "description": entry.get("Description"),
                    "data_type": entry.get("DataType", got.get("DataType")),
                    "key_id": entry.get("KeyId"),
                    "allowed_pattern": entry.get("AllowedPattern"),
                    "last_modified_date": _iso(entry.get("LastModifiedDate")),
                    "arn": got.get("ARN"),
                }
            )
        return parameters, missing

    def _render_plaintext(self, listing: _RegionListing) -> bytes:
        """The bundle's JSON. Callers encrypt it at once and drop it."""
        region = listing.region
        sm = self.account.client("secretsmanager", region)
        ssm = self.account.client("ssm", region)
        secrets = [self._read_secret(sm, entry) for entry in listing.secrets]
        parameters, missing = self._read_parameters(ssm, listing.parameters, region)
        problems = [
            f"secret {s['name']} ({'; '.join(s['unreadable'])})"
            for s in secrets
            if s.get("unreadable")
        ] + [f"SSM parameter {m} (changed or deleted since listing)" for m in missing]
        if problems:
            self._warn(
                f"secrets bundle for {region} is missing {len(problems)} value(s) that could "
                f"not be read: {', '.join(problems)}; grant read access (and kms:Decrypt) "
                "and export again"
            )
        document = {
            "format": BUNDLE_FORMAT,
            "region": region,
            "listing_digest": listing.digest,
            "secrets": secrets,
            "parameters": parameters,
            "unreadable": problems,
        }
        return json.dumps(document, sort_keys=True, ensure_ascii=False).encode("utf-8")

    # -- the Exporter contract ------------------------------------------------

    def list_items(self) -> Iterator[ExportItem]:
        """One item per region holding secrets or parameters and per recipient set.

        Reads names and version markers only (no values). With no recipients
        at all, yields nothing and records a warning with the counts.
        """
        if not self._groups:
            self._warn_nothing_encrypted()
            return
        if self._unencrypted:
            self._warn(
                f"destination(s) {', '.join(self._unencrypted)} declare no age recipients: "
                "they get no secrets bundle; add `encrypt: {recipients: [age1...]}` to them "
                "to keep a copy there too"
            )
        for region in self.account.regions:
            listing = self._list_region(region)
            if listing.empty:
                continue
            for recipients, destinations in self._groups.items():
                idem_key = f"secrets:{region}:{_group_id(recipients)}:{listing.digest}"
                with self._lock:
                    self._listings[idem_key] = listing
                source = {
                    "kind": self.kind,
                    "region": region,
                    "secrets": len(listing.secrets),
                    "parameters": len(listing.parameters),
                    "recipients": list(recipients),
                    "format": "age",
                }
                yield self.new_item(
                    idem_key=idem_key,
                    dest_key=f"secrets/{region}/{BUNDLE_NAME}",
                    size=None,
                    source=source,
                    destinations=destinations,
                )

    def _warn_nothing_encrypted(self) -> None:
        secrets = parameters = 0
        for region in self.account.regions:
            listing = self._list_region(region)
            secrets += len(listing.secrets)
            parameters += len(listing.parameters)
        if secrets or parameters:
            self._warn(
                f"{secrets} secret(s) and {parameters} SSM parameter(s) were NOT exported: "
                "no destination declares age recipients, and secrets are never written in "
                "clear. Add `encrypt: {recipients: [age1...]}` to a destination (make a key "
                "with `age-keygen -o key.txt`) and export again"
            )

    def open(self, item: ExportItem) -> SourceStream:
        """The encrypted bundle of ``item``.

        Values are read once per region for all recipient sets; each
        ciphertext is kept until its item settles, so a retry re-sends the
        same bytes. Raises FatalError if the region changed since a listing
        made by another process (list again). Retry-safe: yes.
        """
        with self._lock:
            ciphertext = self._ciphertexts.get(item.idem_key)
        if ciphertext is not None:
            return BytesStream(ciphertext, "the encrypted bundle")
        region = str(item.source["region"])
        with self._lock:
            region_lock = self._region_locks.setdefault(region, threading.Lock())
        with region_lock:
            with self._lock:
                ciphertext = self._ciphertexts.get(item.idem_key)
                listing = self._listings.get(item.idem_key)
            if ciphertext is not None:
                return BytesStream(ciphertext, "the encrypted bundle")
            if listing is None:
                listing = self._list_region(region)
            if not item.idem_key.endswith(f":{listing.digest}"):
                raise FatalError(
                    f"secrets in {region} changed after they were listed; list the items "
                    "again to export the new versions"
                )
            self._encrypt_region(listing)
            with self._lock:
                ciphertext = self._ciphertexts[item.idem_key]
        return BytesStream(ciphertext, "the encrypted bundle")

    def _encrypt_region(self, listing: _RegionListing) -> None:
        """Read the region's values once and keep one ciphertext per recipient set."""
        plaintext = self._render_plaintext(listing)
        try:
            encrypted = {
                f"secrets:{listing.region}:{_group_id(r)}:{listing.digest}": age.encrypt(
                    plaintext, r
                )
                for r in self._groups
            }
        finally:
            del plaintext
        with self._lock:
            self._ciphertexts.update(encrypted)

    def item_settled(self, item: ExportItem, status: str) -> None:
        """Drop the item's ciphertext: it has been written or given up on."""
        with self._lock:
            self._ciphertexts.pop(item.idem_key, None)


# --------------------------------------------------------------------------- decrypting


def decrypt_bundle(bundle: Path | bytes, identity_path: Path) -> dict[str, Any]:
    """The document inside an encrypted bundle (``exitplan secrets decrypt``).

    ``bundle`` is the file's path or its bytes. Raises ConfigError when the
    bundle cannot be read, the identity is not one of its recipients
    (``age.DecryptionFailed``), or the plaintext is not an exitplan bundle.
    Writes nothing anywhere.
    """
    if isinstance(bundle, Path):
        try:
            data = bundle.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read secrets bundle {bundle}: {exc.strerror}") from None
    else:
        data = bundle
    identity = age.load_identity(identity_path)
    plaintext = age.decrypt(data, identity)
    try:
        document = json.loads(plaintext)
    except (UnicodeDecodeError, json.JSONDecodeError):
        # Never echo the plaintext: it may be a secret of some other kind.
        raise ConfigError(
            "the file decrypts, but is not an exitplan secrets bundle (not JSON)"
        ) from None
    if not isinstance(document, dict) or document.get("format") != BUNDLE_FORMAT:
        raise ConfigError(
            f"the file decrypts, but is not an exitplan secrets bundle ({BUNDLE_FORMAT})"
        )
    return document


def decrypt_bundle_to_text(bundle: Path, identity: Path) -> str:
    """The bundle's document as indented JSON text, for printing to a terminal or pipe."""
    document = decrypt_bundle(bundle, identity)
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
