"""Secrets and SSM parameters leave only as age ciphertext, and leak nowhere else.

Runs the exporter through the real TransferEngine into local destinations,
against the seeded sandbox (module-scoped, read-only), then decrypts the
bundle with the identity and greps every file the run wrote, the manifest
and the captured DEBUG logs for the sandbox's canary secret values.
"""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest

from orchestrator import age
from orchestrator.errors import ConfigError
from orchestrator.export.exporters.base import ExportContext, load_exporter
from orchestrator.export.exporters.secrets import (
    BUNDLE_FORMAT,
    SecretsExporter,
    _RegionListing,
    decrypt_bundle,
    decrypt_bundle_to_text,
)
from orchestrator.export.manifest import MANIFEST_KEY, publish_manifest
from orchestrator.plan.priorities import Prioritizer
from orchestrator.sandbox.account import (
    API_KEYS_JSON,
    API_KEYS_SECRET,
    DB_PASSWORD,
    DB_PASSWORD_SECRET,
    FEATURE_FLAGS_PARAMETER,
    FEATURE_FLAGS_VALUE,
    SANDBOX_REGION,
    SECRET_CANARIES,
    SMTP_PASSWORD,
    SMTP_PASSWORD_PARAMETER,
    Sandbox,
)
from tests.support.engine import ExportHarness

BUNDLE_KEY = f"secrets/{SANDBOX_REGION}/bundle.json.age"


class Run(ExportHarness):
    """One export run; ``bundle`` is where a destination's secrets bundle lands."""

    def bundle(self, name: str) -> Path:
        return self.tmp / name / BUNDLE_KEY


def exporter_for(sandbox: Sandbox, recipients: dict[str, tuple[str, ...]]) -> SecretsExporter:
    return SecretsExporter(
        sandbox.account,
        tier_of=Prioritizer([]),
        context=ExportContext(run_id="test", recipients=recipients),
    )


def leaks_in_files(root: Path) -> list[str]:
    """Every (file, canary) pair where a canary's bytes appear in a file under ``root``."""
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {c}" for c in SECRET_CANARIES if c.encode() in data]
    return found


def test_the_bundle_decrypts_to_every_value_and_no_canary_leaks_anywhere(
    sandbox: Sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    keys = tmp_path / "keys"
    keys.mkdir()
    recipient = age.generate_identity(keys / "vault.txt")
    run = Run(tmp_path / "run", ("vault", "plain"))
    exporter = exporter_for(sandbox, {"vault": (recipient,), "plain": ()})

    run.export(exporter)

    assert [e.status for e in run.seen] == ["verified"]
    assert not run.bundle("plain").exists(), "a destination without recipients got secrets"
    assert any("plain" in w and "no secrets bundle" in w for w in exporter.warnings())
    document = decrypt_bundle(run.bundle("vault"), keys / "vault.txt")
    assert document["format"] == BUNDLE_FORMAT
    secrets = {s["name"]: s for s in document["secrets"]}
    assert set(secrets) == {DB_PASSWORD_SECRET, API_KEYS_SECRET}
    current = {
        name: next(v for v in s["versions"] if "AWSCURRENT" in v["stages"])
        for name, s in secrets.items()
    }
    assert current[DB_PASSWORD_SECRET]["secret_string"] == DB_PASSWORD
    assert current[API_KEYS_SECRET]["secret_string"] == API_KEYS_JSON
    assert secrets[DB_PASSWORD_SECRET]["arn"].startswith("arn:aws:secretsmanager:")
    parameters = {p["name"]: p for p in document["parameters"]}
    assert parameters[SMTP_PASSWORD_PARAMETER]["value"] == SMTP_PASSWORD
    assert parameters[SMTP_PASSWORD_PARAMETER]["type"] == "SecureString"
    assert parameters[FEATURE_FLAGS_PARAMETER]["value"] == FEATURE_FLAGS_VALUE
    assert parameters[FEATURE_FLAGS_PARAMETER]["tier"] == "Standard"
    assert document["unreadable"] == []

    manifest_sizes = [
        publish_manifest(run.journal, name, d.store)
        for name, d in zip(("vault", "plain"), run.destinations, strict=True)
    ]
    assert manifest_sizes[0] > 0
    manifest = (run.tmp / "vault" / MANIFEST_KEY).read_text()
    assert BUNDLE_KEY in manifest
    run.journal.close()
    # The run directory holds the journal (and its WAL), both destinations'
    # files and manifests: plaintext must be in none of them.
    assert leaks_in_files(run.tmp) == []
    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert [c for c in SECRET_CANARIES if c in logged] == []
    # The check above can fail: the values did pass through this process.
    assert any(
        c in decrypt_bundle_to_text(run.bundle("vault"), keys / "vault.txt")
        for c in SECRET_CANARIES
    )


def test_destinations_sharing_recipients_share_one_bundle_and_others_get_their_own(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    one = age.generate_identity(tmp_path / "one.txt")
    two = age.generate_identity(tmp_path / "two.txt")
    exporter = exporter_for(sandbox, {"a": (one,), "b": (one,), "c": (two, one)})
    items = list(exporter.list_items())
    assert sorted(sorted(i.destinations or ()) for i in items) == [["a", "b"], ["c"]]
    assert all(i.dest_key == BUNDLE_KEY for i in items)

    run = Run(tmp_path / "run", ("a", "b", "c"))
    run.export(exporter)
    assert sorted(e.status for e in run.seen) == ["verified", "verified"]
    assert run.bundle("a").read_bytes() == run.bundle("b").read_bytes()  # one read, fanned out
    for name in ("a", "b", "c"):
        assert decrypt_bundle(run.bundle(name), tmp_path / "one.txt")["format"] == BUNDLE_FORMAT
    assert decrypt_bundle(run.bundle("c"), tmp_path / "two.txt")["format"] == BUNDLE_FORMAT
    with pytest.raises(age.DecryptionFailed, match=r"two\.txt.*encrypt\.recipients") as caught:
        decrypt_bundle(run.bundle("a"), tmp_path / "two.txt")
    assert caught.value.exit_code == 2

    run.seen.clear()
    run.export(exporter_for(sandbox, {"a": (one,), "b": (one,), "c": (two, one)}))
    assert [e.status for e in run.seen] == ["skipped", "skipped"]


def test_without_recipients_nothing_is_exported_and_the_warning_says_how_to_fix_it(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    exporter = exporter_for(sandbox, {"vault": ()})
    run = Run(tmp_path, ("vault",))
    run.export(exporter)
    assert run.seen == []
    assert not (tmp_path / "vault" / "secrets").exists()
    (warning,) = exporter.warnings()
    assert "2 secret(s) and 2 SSM parameter(s) were NOT exported" in warning
    assert "encrypt: {recipients: [age1...]}" in warning


def test_an_invalid_recipient_is_a_config_error_naming_it_and_its_destination(
    sandbox: Sandbox,
) -> None:
    with pytest.raises(ConfigError, match=r"'b2'.*'age1notakey'") as caught:
        exporter_for(sandbox, {"b2": ("age1notakey",)})
    assert caught.value.exit_code == 2


def test_a_secret_key_pasted_as_recipient_is_refused_without_echoing_it(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    age.generate_identity(tmp_path / "k.txt")
    secret_line = (tmp_path / "k.txt").read_text().splitlines()[-1]
    with pytest.raises(ConfigError, match="SECRET key") as caught:
        exporter_for(sandbox, {"vault": (secret_line,)})
    assert secret_line not in str(caught.value)
    assert secret_line[20:40] not in str(caught.value)


def test_the_registry_finds_the_secrets_exporter() -> None:
    assert load_exporter("secrets") is SecretsExporter


def test_the_change_marker_follows_versions_not_values() -> None:
    secret = {"Name": "s", "SecretVersionsToStages": {"v1": ["AWSCURRENT"]}}
    param = {"Name": "/p", "Version": 1}
    base = _RegionListing("r", (secret,), (param,))
    rotated = _RegionListing(
        "r", ({**secret, "SecretVersionsToStages": {"v2": ["AWSCURRENT"]}},), (param,)
    )
    bumped = _RegionListing("r", (secret,), ({**param, "Version": 2},))
    assert len({base.digest, rotated.digest, bumped.digest}) == 3
    assert base.digest == _RegionListing("r", (dict(secret),), (dict(param),)).digest


# --------------------------------------------------------------------------- age itself


def test_generate_identity_writes_0600_atomically_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "key.txt"
    recipient = age.generate_identity(path)
    assert recipient.startswith("age1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key.txt"]  # no temporary file left
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        age.generate_identity(path)
    assert path.read_bytes() == before
    identity = age.load_identity(path)
    assert identity.recipients == (recipient,)
    assert "AGE-SECRET-KEY" not in repr(identity)
    assert age.decrypt(age.encrypt(b"hello", [recipient]), identity) == b"hello"


def test_a_damaged_identity_file_names_the_line_but_not_its_content(tmp_path: Path) -> None:
    path = tmp_path / "key.txt"
    path.write_text("# comment\nAGE-SECRET-KEY-1NOTREALLYAKEYATALLBUTLONGENOUGH\n")
    with pytest.raises(ConfigError, match=r"key\.txt:2") as caught:
        age.load_identity(path)
    assert "NOTREALLY" not in str(caught.value)


def test_decrypting_something_that_is_not_age_says_so(tmp_path: Path) -> None:
    age.generate_identity(tmp_path / "k.txt")
    (tmp_path / "bundle.json.age").write_bytes(json.dumps({"not": "encrypted"}).encode())
    with pytest.raises(age.DecryptionFailed, match="not age-encrypted"):
        decrypt_bundle_to_text(tmp_path / "bundle.json.age", tmp_path / "k.txt")
