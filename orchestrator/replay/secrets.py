"""Secrets by reference: a playbook names a secret, the exported bundle holds its value.

``secrets: {db_password: {secret: microblog/db-password}}`` names a Secrets
Manager secret (its ``AWSCURRENT`` version), ``{parameter: /x/y}`` an SSM
parameter, and ``key:`` one field of a secret that is a JSON object. The
value comes from ``secrets/<region>/bundle.json.age`` at a destination
(checked against the manifest like any artifact), decrypted in memory with
the operator's age identity. Every value is registered with the redactor
before anything else sees it, so it is scrubbed from output, logs, the
journal, diffs and reports; it reaches the host only in a file of mode 0600
or in a command's environment (the ops enforce both).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.replay.artifacts import ArtifactSource
from orchestrator.replay.templating import Redactor

BUNDLE_SUFFIX = "/bundle.json.age"


@dataclass(frozen=True)
class SecretRef:
    """One entry of a playbook's ``secrets:``; never a value."""

    name: str
    #: "secret" (Secrets Manager) or "parameter" (SSM).
    source: str
    source_name: str
    key: str | None = None
    region: str | None = None
    where: str = ""


@dataclass(frozen=True)
class ResolvedSecrets:
    """Values by playbook name (kept in memory only), and secret-free version markers."""

    values: Mapping[str, str]
    #: name -> the version id / parameter version: goes into inputs hashes, so a
    #: rotated secret re-runs the steps that use it (a hash of the value would not
    #: be safe to keep: a short password's hash can be brute-forced).
    versions: Mapping[str, str]


def bundle_keys(artifacts: ArtifactSource) -> list[str]:
    return sorted(
        k
        for k in artifacts.manifest_keys()
        if k.startswith("secrets/") and k.endswith(BUNDLE_SUFFIX)
    )


def resolve_secrets(
    refs: Mapping[str, SecretRef],
    artifacts: ArtifactSource,
    identity: Path | None,
    scratch: Path,
    redactor: Redactor,
) -> ResolvedSecrets:
    """Decrypt the bundles and pick out each referenced value; register them with ``redactor``.

    Raises ``ConfigError`` (nothing has run yet) for a missing identity, a
    bundle it cannot open, or a reference the bundle does not hold.
    """
    if not refs:
        return ResolvedSecrets({}, {})
    from orchestrator.export.exporters.secrets import decrypt_bundle

    if identity is None or not identity.is_file():
        raise ConfigError(
            f"the playbook references {len(refs)} secret(s), which need the age identity the "
            "export was encrypted to: pass --identity FILE or set EXITPLAN_AGE_IDENTITY"
            + (f" ({identity} does not exist)" if identity else "")
        )
    documents: dict[str, dict[str, Any]] = {}
    for key in bundle_keys(artifacts):
        region = key.split("/")[1]
        path = artifacts.fetch(key, scratch)
        documents[region] = decrypt_bundle(path, identity)
    values: dict[str, str] = {}
    versions: dict[str, str] = {}
    for name, ref in refs.items():
        value, version = _find(ref, documents)
        redactor.add(name, value)
        values[name] = value
        versions[name] = version
    return ResolvedSecrets(values, versions)


def _find(ref: SecretRef, documents: Mapping[str, Mapping[str, Any]]) -> tuple[str, str]:
    regions = [ref.region] if ref.region else sorted(documents)
    for region in regions:
        document = documents.get(region or "")
        if document is None:
            continue
        if ref.source == "secret":
            for secret in document.get("secrets", []):
                if secret.get("name") != ref.source_name:
                    continue
                for version in secret.get("versions", []):
                    if "AWSCURRENT" in version.get("stages", []) and "secret_string" in version:
                        return _pick(ref, version["secret_string"]), str(version.get("version_id"))
        else:
            for parameter in document.get("parameters", []):
                if parameter.get("name") == ref.source_name and "value" in parameter:
                    return _pick(ref, parameter["value"]), str(parameter.get("version"))
    where = f"{ref.where}: " if ref.where else ""
    raise ConfigError(
        f"{where}secrets.{ref.name}: the exported bundle(s) ({', '.join(sorted(documents)) or 'none'}) "
        f"hold no {'secret' if ref.source == 'secret' else 'SSM parameter'} {ref.source_name!r}; "
        "check the name against `exitplan inventory`"
    )


def _pick(ref: SecretRef, value: str) -> str:
    if ref.key is None:
        return value
    try:
        document = json.loads(value)
    except ValueError:
        document = None
    if not isinstance(document, dict) or ref.key not in document:
        raise ConfigError(
            f"{ref.where}: secrets.{ref.name}: {ref.source_name} is not a JSON object with a "
            f"{ref.key!r} field; drop `key:` or name a field it has"
        )
    return str(document[ref.key])
