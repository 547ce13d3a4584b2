"""The provider registry: names, declared options, lazy import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import ConfigError, FatalError
from providers.registry import (
    PROVIDER_KINDS,
    OptionSpec,
    ProviderSpec,
    get_provider_spec,
    load_provider_class,
    provider_names,
)

REPO = Path(__file__).resolve().parents[2]


def test_registered_names_per_kind() -> None:
    assert PROVIDER_KINDS == ("storage", "compute", "dns")
    assert provider_names("storage") == (
        "backblaze_b2",
        "digitalocean_spaces",
        "local",
        "minio",
        "s3",
        "wasabi",
    )
    assert provider_names("compute") == ("libcloud", "local", "ssh-pool")
    assert provider_names("dns") == ("local", "powerdns")


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        get_provider_spec("storage", "sftp")
    assert str(err.value) == (
        "unknown storage provider 'sftp'; known storage providers: backblaze_b2, "
        "digitalocean_spaces, local, minio, s3, wasabi"
    )
    assert err.value.exit_code == 2


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown provider kind 'queue'"):
        provider_names("queue")
    with pytest.raises(ValueError, match="unknown provider kind 'queue'"):
        get_provider_spec("queue", "sqs")


def test_local_storage_declares_its_path() -> None:
    spec = get_provider_spec("storage", "local")
    assert (spec.module, spec.cls) == ("providers.storage", "LocalObjectStore")
    assert spec.options == (
        OptionSpec("path", Path, required=True, help="directory that holds the copies"),
    )


def test_s3_like_aliases_share_class_and_options_but_not_summary() -> None:
    base = get_provider_spec("storage", "s3")
    assert (base.module, base.cls) == ("providers.storage", "S3CompatibleObjectStore")
    summaries = {base.summary}
    for alias in ("minio", "backblaze_b2", "wasabi", "digitalocean_spaces"):
        spec = get_provider_spec("storage", alias)
        assert (spec.module, spec.cls, spec.options) == (base.module, base.cls, base.options)
        summaries.add(spec.summary)
    assert len(summaries) == 5


def test_s3_options_types_defaults_and_secrets() -> None:
    spec = get_provider_spec("storage", "s3")
    table = {o.name: (o.type, o.required, o.default, o.secret) for o in spec.options}
    assert table == {
        "host": (str, True, None, False),
        "port": (int, False, None, False),
        "secure": (bool, False, True, False),
        "region": (str, False, "us-east-1", False),
        "container": (str, True, None, False),
        "key": (str, True, None, True),
        "secret": (str, True, None, True),
    }
    assert spec.option("container") is not None
    assert spec.option("container").help == "bucket name at the destination"  # type: ignore[union-attr]
    assert spec.option("bucket") is None


def test_compute_providers() -> None:
    pool = get_provider_spec("compute", "ssh-pool")
    assert (pool.module, pool.cls) == ("providers.compute", "SshPoolProvider")
    assert pool.option_names() == ("hosts",)
    assert pool.options[0].type is list and pool.options[0].required

    cloud = get_provider_spec("compute", "libcloud")
    assert (cloud.module, cloud.cls) == ("providers.compute", "LibcloudComputeProvider")
    assert cloud.option_names() == (
        "driver",
        "key",
        "secret",
        "size",
        "region",
        "image",
        "host",
        "port",
        "secure",
        "ssh_port",
        "ssh_user",
    )
    assert [o.name for o in cloud.options if o.required] == ["driver", "key"]
    assert [o.name for o in cloud.options if o.secret] == ["key", "secret"]


def test_powerdns_defaults() -> None:
    spec = get_provider_spec("dns", "powerdns")
    assert (spec.module, spec.cls) == ("providers.dns", "LibcloudDnsProvider")
    defaults = {o.name: o.default for o in spec.options}
    assert defaults == {
        "host": None,
        "port": 8081,
        "key": None,
        "server": "localhost",
        "secure": False,
    }
    assert [o.name for o in spec.options if o.secret] == ["key"]


def test_local_dns_declares_its_file_and_listen_address() -> None:
    spec = get_provider_spec("dns", "local")
    assert (spec.module, spec.cls) == ("providers.dns_local", "LocalDnsProvider")
    table = {o.name: (o.type, o.required, o.default) for o in spec.options}
    assert table == {
        "path": (Path, True, None),
        "listen": (str, False, "127.0.0.1"),
        "port": (int, False, 0),
    }
    assert load_provider_class(spec).__name__ == "LocalDnsProvider"


def test_every_option_has_help_for_the_docs() -> None:
    for kind in PROVIDER_KINDS:
        for name in provider_names(kind):
            spec = get_provider_spec(kind, name)
            assert spec.summary, (kind, name)
            assert all(option.help for option in spec.options), (kind, name)


def test_importing_the_registry_imports_no_provider_module() -> None:
    # A fresh interpreter: this test process may already hold the modules.
    code = (
        "import sys, providers.registry as r\n"
        "r.get_provider_spec('storage', 's3')\n"
        "loaded = [m for m in ('providers.storage', 'providers.compute', 'providers.dns',"
        " 'libcloud', 'paramiko') if m in sys.modules]\n"
        "print(loaded)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_load_provider_class_imports_on_first_use() -> None:
    spec = ProviderSpec("storage", "t", "orchestrator.errors", "ConfigError", (), "test")
    assert load_provider_class(spec) is ConfigError


def test_load_provider_class_missing_module_is_fatal_and_named() -> None:
    spec = ProviderSpec("storage", "ghost", "providers.no_such_module", "Ghost", (), "test")
    with pytest.raises(FatalError) as err:
        load_provider_class(spec)
    assert str(err.value) == (
        "storage provider 'ghost' needs module 'providers.no_such_module', which cannot be "
        "imported (No module named 'providers.no_such_module'); reinstall exitplan with its "
        "dependencies"
    )


def test_load_provider_class_missing_class_is_fatal_and_named() -> None:
    spec = ProviderSpec("dns", "ghost", "orchestrator.errors", "NoSuchClass", (), "test")
    with pytest.raises(FatalError) as err:
        load_provider_class(spec)
    assert str(err.value) == (
        "dns provider 'ghost': module 'orchestrator.errors' has no class 'NoSuchClass'; "
        "this exitplan installation is incomplete"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": float}, "unsupported type"),
        ({"required": True, "default": 1}, "a required option cannot have a default"),
        ({"type": int, "secret": True}, "only str options can be secret"),
    ],
)
def test_bad_option_declarations_fail_at_definition(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        OptionSpec("x", **kwargs)  # type: ignore[arg-type]
