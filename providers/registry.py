"""Which providers exist, where their code lives, and which options each takes.

A provider is registered as ``("module", "Class")`` and imported only when it
is first used, so reading the registry (to validate a config or write the
docs) never pulls in libcloud, paramiko or a half-written provider module.
The option declarations here are the single source of truth: config
validation, secret handling and documentation are all derived from them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from orchestrator.errors import ConfigError, FatalError

ProviderKind = Literal["storage", "compute", "dns"]

#: The kinds of provider, in the order the docs list them.
PROVIDER_KINDS: tuple[ProviderKind, ...] = ("storage", "compute", "dns")

#: The value types an option may declare. ``Path`` is a string the config
#: loader resolves against the config file's directory.
OPTION_TYPES: tuple[type, ...] = (str, int, bool, list, Path)


@dataclass(frozen=True)
class OptionSpec:
    """One option a provider accepts in the config.

    ``secret`` options must be written as ``${ENV_VAR}`` references and are
    handed to the provider wrapped in ``orchestrator.config.Secret``.
    ``default`` applies when the option is absent; ``None`` means "no value".
    """

    name: str
    type: type = str
    required: bool = False
    default: object = None
    help: str = ""
    secret: bool = False

    def __post_init__(self) -> None:
        # Caught at import, so a bad declaration never reaches a user's config.
        if self.type not in OPTION_TYPES:
            raise TypeError(f"option {self.name!r}: unsupported type {self.type!r}")
        if self.required and self.default is not None:
            raise TypeError(f"option {self.name!r}: a required option cannot have a default")
        if self.secret and self.type is not str:
            raise TypeError(f"option {self.name!r}: only str options can be secret")


@dataclass(frozen=True)
class ProviderSpec:
    """A registered provider: its kind and name, where its class lives, its options."""

    kind: ProviderKind
    name: str
    module: str
    cls: str
    options: tuple[OptionSpec, ...]
    summary: str

    def option(self, name: str) -> OptionSpec | None:
        """The declared option called ``name``, or None."""
        for option in self.options:
            if option.name == name:
                return option
        return None

    def option_names(self) -> tuple[str, ...]:
        """Declared option names, in declaration order."""
        return tuple(option.name for option in self.options)


def _s3_options() -> tuple[OptionSpec, ...]:
    return (
        OptionSpec("host", str, required=True, help="endpoint host name, e.g. s3.wasabisys.com"),
        OptionSpec("port", int, help="endpoint port; the scheme's default when absent"),
        OptionSpec("secure", bool, default=True, help="use https"),
        OptionSpec("region", str, default="us-east-1", help="region the bucket lives in"),
        OptionSpec("container", str, required=True, help="bucket name at the destination"),
        OptionSpec("key", str, required=True, secret=True, help="access key id"),
        OptionSpec("secret", str, required=True, secret=True, help="secret access key"),
    )


_S3_MODULE = ("providers.storage", "S3CompatibleObjectStore")
_S3_LIKE_SUMMARIES = {
    "s3": "any S3-compatible object store",
    "minio": "MinIO (S3-compatible)",
    "backblaze_b2": "Backblaze B2 through its S3-compatible API",
    "wasabi": "Wasabi hot cloud storage (S3-compatible)",
    "digitalocean_spaces": "DigitalOcean Spaces (S3-compatible)",
}

_SPECS: tuple[ProviderSpec, ...] = (
    ProviderSpec(
        kind="storage",
        name="local",
        module="providers.storage",
        cls="LocalObjectStore",
        options=(OptionSpec("path", Path, required=True, help="directory that holds the copies"),),
        summary="a directory on this machine (or a mounted disk)",
    ),
    *(
        ProviderSpec(
            kind="storage",
            name=name,
            module=_S3_MODULE[0],
            cls=_S3_MODULE[1],
            options=_s3_options(),
            summary=summary,
        )
        for name, summary in _S3_LIKE_SUMMARIES.items()
    ),
    ProviderSpec(
        kind="compute",
        name="local",
        module="providers.compute",
        cls="LocalMachineProvider",
        options=(),
        summary="this machine as the target (the sandbox's candidate)",
    ),
    ProviderSpec(
        kind="compute",
        name="ssh-pool",
        module="providers.compute",
        cls="SshPoolProvider",
        options=(
            OptionSpec(
                "hosts",
                list,
                required=True,
                help="hosts you already rent: each a mapping of address, port, user, "
                "host_key and key_file",
            ),
        ),
        summary="pre-arranged hosts reached over SSH with pinned host keys",
    ),
    ProviderSpec(
        kind="compute",
        name="libcloud",
        module="providers.compute",
        cls="LibcloudComputeProvider",
        options=(
            OptionSpec("driver", str, required=True, help="libcloud compute driver name"),
            OptionSpec("key", str, required=True, secret=True, help="API key or token"),
            OptionSpec("secret", str, secret=True, help="API secret, where the driver needs one"),
            OptionSpec("size", str, help="size (instance type) to provision"),
            OptionSpec("region", str, help="region or location to provision in"),
            OptionSpec("image", str, help="image to boot"),
            OptionSpec("host", str, help="API endpoint host, for self-hosted clouds"),
            OptionSpec("port", int, help="API endpoint port"),
            OptionSpec("secure", bool, help="use https for the API endpoint"),
            OptionSpec("ssh_port", int, help="port new servers answer SSH on (default 22)"),
            OptionSpec("ssh_user", str, help="user to log in to new servers as (default root)"),
        ),
        summary="a new server from any cloud libcloud supports",
    ),
    ProviderSpec(
        kind="dns",
        name="powerdns",
        module="providers.dns",
        cls="LibcloudDnsProvider",
        options=(
            OptionSpec("host", str, required=True, help="PowerDNS API host"),
            OptionSpec("port", int, default=8081, help="PowerDNS API port"),
            OptionSpec("key", str, required=True, secret=True, help="PowerDNS API key"),
            OptionSpec("server", str, default="localhost", help="PowerDNS server id"),
            OptionSpec("secure", bool, default=False, help="use https for the API"),
        ),
        summary="PowerDNS authoritative server through its HTTP API",
    ),
    ProviderSpec(
        kind="dns",
        name="local",
        module="providers.dns_local",
        cls="LocalDnsProvider",
        options=(
            OptionSpec(
                "path", Path, required=True, help="file that holds the zones, in the workspace"
            ),
            OptionSpec("listen", str, default="127.0.0.1", help="address the DNS server binds"),
            OptionSpec("port", int, default=0, help="DNS port (UDP and TCP); 0 picks a free one"),
        ),
        summary="zones in a file, answered by an authoritative server in process (the sandbox's)",
    ),
)

_REGISTRY: dict[tuple[str, str], ProviderSpec] = {(s.kind, s.name): s for s in _SPECS}
if len(_REGISTRY) != len(_SPECS):  # pragma: no cover - a registration mistake
    raise RuntimeError("a provider is registered twice under the same kind and name")


def _check_kind(kind: str) -> None:
    if kind not in PROVIDER_KINDS:
        raise ValueError(f"unknown provider kind {kind!r}; kinds are {', '.join(PROVIDER_KINDS)}")


def provider_names(kind: str) -> tuple[str, ...]:
    """Registered provider names of ``kind``, sorted. ``ValueError`` for an unknown kind."""
    _check_kind(kind)
    return tuple(sorted(name for k, name in _REGISTRY if k == kind))


def get_provider_spec(kind: str, name: str) -> ProviderSpec:
    """The registered provider ``name`` of ``kind``.

    Raises ``ConfigError`` listing the known names of that kind when ``name``
    is not registered; ``ValueError`` for an unknown kind (a programming error).
    """
    _check_kind(kind)
    spec = _REGISTRY.get((kind, name))
    if spec is None:
        raise ConfigError(
            f"unknown {kind} provider {name!r}; known {kind} providers: "
            + ", ".join(provider_names(kind))
        )
    return spec


def load_provider_class(spec: ProviderSpec) -> type:
    """Import the provider's module (first use only; Python caches it) and return the class.

    Raises ``FatalError`` naming the module and class if either is missing:
    that is a broken installation, not something the user's config can fix.
    """
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        raise FatalError(
            f"{spec.kind} provider {spec.name!r} needs module {spec.module!r}, which cannot "
            f"be imported ({exc}); reinstall exitplan with its dependencies"
        ) from exc
    cls = getattr(module, spec.cls, None)
    if not isinstance(cls, type):
        raise FatalError(
            f"{spec.kind} provider {spec.name!r}: module {spec.module!r} has no class "
            f"{spec.cls!r}; this exitplan installation is incomplete"
        )
    return cls
