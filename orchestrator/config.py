"""The exitplan config file: YAML in, typed frozen dataclasses out.

Every error is one ``ConfigError`` (exit code 2) shaped

    FILE:LINE:COLUMN: FIELD.PATH: what is wrong; how to fix it

with 1-based positions taken from the YAML node the problem is in (for a
missing field, the mapping it should be added to), so an editor can jump
there. Values are read with the safe loader only: a config file is data, and
must never be able to construct arbitrary Python objects.

``${NAME}`` in any string value is replaced with the environment variable
``NAME`` (``$${`` writes a literal ``${``). Options a provider declares secret
must be written only as such references: credentials come from the
environment, never from the file, and are carried as ``Secret`` so they cannot
leak into logs, reprs or error messages.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import hmac
import importlib.util
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import yaml
from yaml.constructor import SafeConstructor

from orchestrator.errors import ConfigError
from orchestrator.run.deadline import check_deadline_syntax, parse_duration
from providers.registry import (
    OptionSpec,
    ProviderKind,
    ProviderSpec,
    get_provider_spec,
    provider_names,
)

#: Resource kinds a priority rule can match (the exporters that exist).
RESOURCE_KINDS: tuple[str, ...] = ("s3", "ebs", "rds", "dynamodb", "route53", "secrets", "ec2")

#: S3 multipart limits: every part but the last must be at least 5 MiB, and at
#: most 5 GiB. Destinations are S3-compatible, so the same bounds hold there.
MIN_PART_SIZE = 5 * 1024**2
MAX_PART_SIZE = 5 * 1024**3

DEFAULT_SAFETY_MARGIN = "30m"
DEFAULT_WORKSPACE = ".exitplan"
#: From bench/RESULTS.md: on two cores small objects are CPU-bound past 8-16
#: workers, and 16 connections still cover S3 latency (see the sweep there).
DEFAULT_CONCURRENCY = 16
DEFAULT_PART_SIZE = "16MiB"


class Secret:
    """A credential read from the environment; shows as ``Secret('***')`` everywhere.

    ``reveal()`` is the only way to the value, so a call site that hands it to
    a provider is easy to find and review. ``reference`` is the ``${NAME}``
    text it came from: safe to log.
    """

    __slots__ = ("_value", "reference")

    def __init__(self, value: str, reference: str = "") -> None:
        self._value = value
        self.reference = reference

    def reveal(self) -> str:
        """The secret value itself; pass it straight to the provider, never to a log."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> NoReturn:
        # Pickling would write the value in clear to wherever the pickle goes.
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True)
class AwsSourceConfig:
    """The AWS account to evacuate. ``sandbox`` marks the built-in moto account."""

    regions: tuple[str, ...]
    profile: str | None = None
    endpoint_url: str | None = None
    sandbox: bool = False


@dataclass(frozen=True)
class SourceConfig:
    """Where the service runs now; mirrors the ``source:`` section."""

    aws: AwsSourceConfig


#: ``source: {sandbox: true}``: the built-in moto account, in its one region.
SANDBOX_SOURCE = SourceConfig(AwsSourceConfig(regions=("us-east-1",), sandbox=True))


@dataclass(frozen=True)
class PriorityRule:
    """Resources matching every key of ``match`` (glob patterns) belong to ``tier``.

    Keys are among kind, bucket, table, zone, name; a rule with an empty
    ``match`` matches everything. Rules are ordered: earlier rules save first.
    """

    tier: str
    match: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class DestinationConfig:
    """One place to put copies. ``options`` are the storage driver's, validated
    against the registry, with defaults filled in, ``Path`` options absolute
    and secret options as ``Secret``."""

    name: str
    driver: str
    options: Mapping[str, object]
    recipients: tuple[str, ...] = ()


@dataclass(frozen=True)
class CandidateConfig:
    """An alternative place to run the service (a compute provider and its options)."""

    name: str
    kind: str
    options: Mapping[str, object]


@dataclass(frozen=True)
class DnsConfig:
    """The DNS provider used at cutover, its options, and what the cutover moves.

    ``nameservers`` is the new zone's apex NS set (what the registrar gets);
    ``service_names`` are the names flipped to the new host (relative to the
    zone, ``@`` for the apex; empty: the names that point at the service's
    old addresses, found from the inventory).
    """

    driver: str
    options: Mapping[str, object]
    nameservers: tuple[str, ...] = ()
    service_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class DrillConfig:
    """A drill's objectives: ``drill: {rto: 4h, rpo: 1h, every: 90d}`` (each optional)."""

    rto: timedelta | None = None
    rpo: timedelta | None = None
    every: timedelta | None = None


#: Where copy tasks run: ``threads`` of this process, or a ``dask`` cluster.
EXECUTORS: tuple[str, ...] = ("threads", "dask")
_SCHEDULER_RE = re.compile(r"(tcp|tls)://[A-Za-z0-9._\-\[\]:]+:\d{1,5}")


@dataclass(frozen=True)
class TransferConfig:
    """Copy-engine settings. Sizes in bytes; ``bwlimit`` in bytes/second, None = unlimited.

    ``executor: dask`` with ``scheduler`` (a ``tcp://host:port`` address) runs
    copies on a Dask cluster; ``workers`` (``--workers N`` on the command line,
    not a key of the file) starts a local cluster of N worker processes instead.
    """

    concurrency: int = DEFAULT_CONCURRENCY
    part_size: int = 16 * 1024**2
    bwlimit: int | None = None
    executor: str = "threads"
    scheduler: str | None = None
    workers: int | None = None


@dataclass(frozen=True)
class Config:
    """A validated exitplan configuration.

    ``deadline`` is kept as written (syntax already checked): whether it has
    passed depends on when the run starts, so ``parse_deadline`` decides that.
    Paths are absolute. ``source_file`` is None for the built-in sandbox.
    """

    source: SourceConfig
    destinations: tuple[DestinationConfig, ...]
    deadline: str | None = None
    safety_margin: timedelta = timedelta(minutes=30)
    workspace: Path = Path(DEFAULT_WORKSPACE)
    priorities: tuple[PriorityRule, ...] = ()
    candidates: tuple[CandidateConfig, ...] = ()
    dns: DnsConfig | None = None
    playbook: Path | None = None
    drill: DrillConfig | None = None
    transfer: TransferConfig = field(default_factory=TransferConfig)
    source_file: Path | None = None


# ---------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "byte": 1,
    "bytes": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)")


def parse_size(text: str, field: str) -> int:
    """Bytes in a size such as ``16MiB``, ``512KiB``, ``1.5GiB``, ``100MB`` or ``4096``.

    Binary units (KiB, MiB, GiB, TiB) are powers of 1024, decimal ones (KB,
    MB, GB, TB) powers of 1000; case does not matter; a bare number is bytes.
    Raises ``ConfigError`` naming ``field`` otherwise. Fractions of a byte are
    rounded down.
    """
    match = _SIZE_RE.fullmatch(text.strip())
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ConfigError(
            f"{field}: {text!r} is not a size; write a number with a unit, "
            "e.g. 16MiB, 512KiB, 1GiB, 100MB, or a plain number of bytes"
        )
    number = match.group(1)
    if "." in number:
        whole, frac = number.split(".")
        scale = 10 ** len(frac)
        return (int(whole) * scale + int(frac)) * _SIZE_UNITS[unit] // scale
    return int(number) * _SIZE_UNITS[unit]


#: The concurrency a transfer may be given: at least one worker, and no more
#: connections than a source or destination sensibly takes from one machine.
MIN_CONCURRENCY = 1
MAX_CONCURRENCY = 512
#: What ``bwlimit`` takes to mean "no limit".
_NO_LIMIT_WORDS = ("off",)


def parse_bwlimit(value: str | int, field: str) -> int | None:
    """A bandwidth limit in bytes/second, or None for no limit (``off``).

    The one rule for ``transfer.bwlimit`` in a config and ``--bwlimit`` on the
    command line: a size as :func:`parse_size` reads it (a bare number is
    bytes), more than 0; ``off`` means unlimited (so the command line can
    lift a config's limit). Raises ``ConfigError`` naming ``field``; ``0`` is
    refused rather than read as "unlimited" or as "stop".
    """
    if isinstance(value, str) and value.strip().lower() in _NO_LIMIT_WORDS:
        return None
    limit = value if isinstance(value, int) else parse_size(value, field)
    if limit <= 0:
        raise ConfigError(
            f"{field}: must be more than 0 bytes per second; write a size such as 50MiB, "
            "or off for no limit"
        )
    return limit


def parse_concurrency(value: str | int, field: str) -> int:
    """The number of parallel transfers: a whole number from 1 to 512.

    The one rule for ``transfer.concurrency`` and ``--concurrency``; ``0`` is
    refused, never taken to mean the default. Raises ``ConfigError`` naming
    ``field``.
    """
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise ConfigError(
                f"{field}: {value!r} is not a whole number; write digits only, e.g. 16"
            )
        value = int(value.strip())
    if not MIN_CONCURRENCY <= value <= MAX_CONCURRENCY:
        raise ConfigError(
            f"{field}: {value} is out of range; use a number from {MIN_CONCURRENCY} to "
            f"{MAX_CONCURRENCY}"
        )
    return value


# ---------------------------------------------------------------------------
# Reading: a YAML node tree walked with its positions
# ---------------------------------------------------------------------------

#: Examples shown when a required schema field is missing.
_EXAMPLES: dict[str, str] = {
    "source": "'source: {aws: {regions: [us-east-1]}}'",
    "aws": "'aws: {regions: [us-east-1]}'",
    "regions": "'regions: [us-east-1]'",
    "destinations": "'destinations: [{name: vault, storage: {driver: local, path: ./evacuated}}]'",
    "name": "'name: vault'",
    "storage": "'storage: {driver: local, path: ./evacuated}'",
    "recipients": "'recipients: [age1...]'",
    "tier": "'tier: critical'",
}

_ENV_REF_RE = re.compile(r"\$(\$?)\{([^}]*)(\}?)")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ONLY_ENV_REFS_RE = re.compile(r"(?:\$\{[A-Za-z_][A-Za-z0-9_]*\})+")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_REGION_RE = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d+")

_T = TypeVar("_T")
_U = TypeVar("_U")


@dataclass(frozen=True)
class _At:
    """A YAML node and the dotted path of the field it holds."""

    node: yaml.Node
    path: str

    def key(self, name: str, node: yaml.Node) -> _At:
        return _At(node, f"{self.path}.{name}" if self.path else name)

    def index(self, i: int, node: yaml.Node) -> _At:
        return _At(node, f"{self.path}[{i}]")


@dataclass(frozen=True)
class _Entry:
    """One key of a mapping: where the key is written, and its value."""

    key_node: yaml.Node
    value: _At


def _close_match(word: str, choices: Sequence[str]) -> str:
    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {found[0]!r}? " if found else ""


class _Abandon(Exception):
    """The value being read is wrong (the finding is recorded); read the next one."""


class _Reader:
    """Turns the composed YAML tree into config values, collecting every problem.

    ``fail`` records a finding and abandons the value being read; ``note``
    records one and reads on. ``each`` marks the places where reading goes
    on after an abandoned value (sections, list items, options), so one run
    reports every independent problem, as ``terraform validate`` does.
    """

    def __init__(self, source_name: str, base_dir: Path, env: Mapping[str, str]) -> None:
        self.source_name = source_name
        self.base_dir = Path(os.path.normpath(base_dir.absolute()))
        self.env = env
        # One constructor per file: it turns single scalars into Python values
        # exactly as yaml.safe_load would (ints, bools, nulls, timestamps).
        self._constructor = SafeConstructor()
        self._findings: list[tuple[int, int, str]] = []
        self._flattened: set[int] = set()
        #: Per mapping node, the keys an unknown key was taken for ("did you
        #: mean 'path'?"): their absence is not reported a second time.
        self._suggested: dict[int, set[str]] = {}

    # -- failing -----------------------------------------------------------

    def where(self, mark: yaml.Mark) -> str:
        return f"{self.source_name}:{mark.line + 1}:{mark.column + 1}"

    def note(self, at: _At, message: str, node: yaml.Node | None = None) -> None:
        """Record a problem with ``at`` (at ``node``'s position if given) and go on."""
        mark = (node or at.node).start_mark
        self._findings.append((mark.line, mark.column, f"{self.where(mark)}: {at.path}: {message}"))

    def fail(self, at: _At, message: str, node: yaml.Node | None = None) -> NoReturn:
        """Record a problem with ``at`` and abandon reading the value it is in."""
        self.note(at, message, node)
        raise _Abandon

    def relay(self, at: _At, call: Callable[[], _T]) -> _T:
        """Run a parser whose errors already start with the field; add the position."""
        try:
            return call()
        except ConfigError as exc:
            mark = at.node.start_mark
            for finding in exc.findings:
                self._findings.append((mark.line, mark.column, f"{self.where(mark)}: {finding}"))
            raise _Abandon from None

    def each(self, read: Callable[..., _T], *args: Any, instead: _U, **kwargs: Any) -> _T | _U:
        """``read(*args, **kwargs)``, or ``instead`` when it was abandoned (its
        problems are recorded)."""
        try:
            return read(*args, **kwargs)
        except _Abandon:
            return instead

    def suggested(self, node: yaml.Node, key: str) -> bool:
        """Whether a misspelt key in mapping ``node`` was already taken for ``key``."""
        return key in self._suggested.get(id(node), set())

    def raise_findings(self) -> None:
        """Raise one ``ConfigError`` with every finding, in file order, if there are any."""
        if self._findings:
            ordered = sorted(self._findings, key=lambda f: (f[0], f[1]))
            unique = list(dict.fromkeys(text for _, _, text in ordered))
            raise ConfigError(*unique)

    def describe(self, node: yaml.Node, *, show_value: bool = True) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        value = self.scalar(node)
        if value is None:
            return "nothing (null)"
        kind = (
            "true/false"
            if isinstance(value, bool)
            else "a number"
            if isinstance(value, int | float)
            else "a date"
            if isinstance(value, date)
            else "a string"
        )
        return f"{kind} {node.value!r}" if show_value else kind

    def wrong_type(self, at: _At, expected: str, fix: str) -> NoReturn:
        self.fail(at, f"expected {expected}, got {self.describe(at.node)}; {fix}")

    # -- structure ---------------------------------------------------------

    def scalar(self, node: yaml.Node) -> object:
        return self._constructor.construct_object(node, deep=True)

    def mapping(
        self,
        at: _At,
        known: Sequence[str],
        required: Sequence[str] = (),
        *,
        owner: str = "",
        fix: str = "write its settings as 'key: value' lines indented under it",
    ) -> dict[str, _Entry]:
        """The entries of a mapping, after checking its keys against ``known``.

        Checks, in order: it is a mapping, no key is repeated, every key is
        known (suggesting the closest), every ``required`` key is present.
        """
        if not isinstance(at.node, yaml.MappingNode):
            self.wrong_type(at, "a mapping", fix)
        if id(at.node) not in self._flattened:
            own: dict[str, yaml.Node] = {}
            for key_node, _ in at.node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self._key_text(at, key_node)
                if key in own:
                    line = own[key].start_mark.line + 1
                    self.note(
                        at.key(key, key_node),
                        f"key given twice in the same mapping (first at line {line}); keep one",
                        key_node,
                    )
                own[key] = key_node
            # Resolve '<<: *anchor' merges the way safe_load does, once per node
            # (an alias can lead to the same node twice).
            self._constructor.flatten_mapping(at.node)
            self._flattened.add(id(at.node))
        entries: dict[str, _Entry] = {}
        for key_node, value_node in at.node.value:
            key = self._key_text(at, key_node)
            entries[key] = _Entry(key_node, at.key(key, value_node))
        suggested = self._suggested.setdefault(id(at.node), set())
        for key, entry in list(entries.items()):
            if key not in known:
                where = f" for {owner}" if owner else ""
                close = _close_match(key, known)
                if close:
                    suggested.update(difflib.get_close_matches(key, known, n=1, cutoff=0.6))
                self.note(
                    entry.value,
                    f"unknown key{where}; "
                    + (
                        f"{close}(known keys: {', '.join(known)})"
                        if close
                        else f"use one of: {', '.join(known)}"
                    ),
                    entry.key_node,
                )
                del entries[key]
        missing = [key for key in required if key not in entries]
        for key in missing:
            if key in suggested:
                continue  # the misspelt key's "did you mean" already says it
            parent = f"under {at.path!r}" if at.path else "at the top level"
            example = f", e.g. {_EXAMPLES[key]}" if key in _EXAMPLES else ""
            self.note(at.key(key, at.node), f"required field is missing; add it {parent}{example}")
        if missing:
            raise _Abandon
        return entries

    def _key_text(self, at: _At, key_node: yaml.Node) -> str:
        if not isinstance(key_node, yaml.ScalarNode):
            self.fail(at, "keys must be plain words, not lists or mappings", key_node)
        return str(key_node.value)

    def sequence(self, at: _At, *, example: str, non_empty: bool = False) -> list[_At]:
        if not isinstance(at.node, yaml.SequenceNode):
            self.wrong_type(at, "a list", f"write it as a list, e.g. {example}")
        items = [at.index(i, node) for i, node in enumerate(at.node.value)]
        if non_empty and not items:
            self.fail(at, f"must list at least one entry; e.g. {example}")
        return items

    # -- scalars -----------------------------------------------------------

    def _raw_text(self, at: _At) -> str | None:
        """The string a scalar holds, or None if YAML read it as no kind of text.

        Unquoted numbers and dates count as text here (taken as written):
        users write ``deadline: 2021-01-10T23:59:00-08:00`` or ``container:
        2021`` without quotes, and mean the characters, not a YAML timestamp.
        """
        if not isinstance(at.node, yaml.ScalarNode):
            return None
        value = self.scalar(at.node)
        if isinstance(value, str):
            return value
        if isinstance(value, int | float | date) and not isinstance(value, bool):
            return str(at.node.value)
        return None

    def interpolate(self, at: _At, raw: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            escaped, name, closed = match.groups()
            if not closed:
                self.fail(at, "'${' is not closed; write ${NAME}, or $${ for a literal '${'")
            if escaped:
                return "${" + name + "}"
            if not _ENV_NAME_RE.fullmatch(name):
                self.fail(
                    at,
                    f"'${{{name}}}' is not a valid environment variable reference; names "
                    "are letters, digits and '_', not starting with a digit, e.g. ${B2_KEY}",
                )
            if name not in self.env:
                self.fail(
                    at,
                    f"environment variable {name} is not set; export {name} before "
                    "running exitplan",
                )
            return self.env[name]

        return _ENV_REF_RE.sub(substitute, raw)

    def text(self, at: _At, *, fix: str = "write a plain text value") -> str:
        raw = self._raw_text(at)
        if raw is None:
            self.wrong_type(at, "a string", fix)
        return self.interpolate(at, raw)

    def secret(self, at: _At, env_hint: str) -> Secret:
        raw = self._raw_text(at)
        if raw is None or not _ONLY_ENV_REFS_RE.fullmatch(raw):
            # Never echo the value: it may be the credential itself.
            var = re.sub(r"[^A-Za-z0-9]+", "_", env_hint).strip("_").upper()
            self.fail(
                at,
                "is a secret and cannot be written in the file; credentials come from the "
                f"environment, write '${{{var}}}' and export {var}",
            )
        return Secret(self.interpolate(at, raw), raw)

    def integer(self, at: _At, *, low: int | None = None, high: int | None = None) -> int:
        value = self.scalar(at.node) if isinstance(at.node, yaml.ScalarNode) else None
        if isinstance(value, str) and "${" in value:
            expanded = self.interpolate(at, value)
            try:
                value = int(expanded)
            except ValueError:
                self.fail(at, f"expected a whole number, got {expanded!r} from the environment")
        if not isinstance(value, int) or isinstance(value, bool):
            self.wrong_type(at, "a whole number", "write digits only, e.g. 8081")
        if (low is not None and value < low) or (high is not None and value > high):
            self.fail(at, f"{value} is out of range; use a number from {low} to {high}")
        return value

    def boolean(self, at: _At) -> bool:
        value = self.scalar(at.node) if isinstance(at.node, yaml.ScalarNode) else None
        if isinstance(value, str) and "${" in value:
            expanded = self.interpolate(at, value).strip().lower()
            if expanded in ("true", "yes", "on", "1"):
                return True
            if expanded in ("false", "no", "off", "0"):
                return False
            self.fail(at, f"expected true or false, got {expanded!r} from the environment")
        if not isinstance(value, bool):
            self.wrong_type(at, "true or false", "write true or false")
        return value

    def path(self, at: _At) -> Path:
        text = self.text(at, fix="write a file or directory path")
        if not text:
            self.fail(at, "is empty; write a file or directory path")
        # Relative to the config file, not the working directory, so the same
        # file means the same places wherever exitplan is started from.
        return Path(os.path.normpath(self.base_dir / Path(text).expanduser()))

    def text_list(self, at: _At, *, example: str, non_empty: bool = False) -> tuple[str, ...]:
        return tuple(
            self.text(item) for item in self.sequence(at, example=example, non_empty=non_empty)
        )

    def name(self, at: _At, what: str) -> str:
        value = self.text(at)
        if not _NAME_RE.fullmatch(value):
            self.fail(
                at,
                f"{value!r} is not a usable {what} name; use letters, digits, '.', '_' and "
                "'-', starting with a letter or digit",
            )
        return value


# ---------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------

#: What each ssh-pool host entry takes; the registry declares ``hosts`` as a
#: list, and its items are checked here with the same machinery as options.
SSH_HOST_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("address", str, required=True, help="IP address or host name"),
    OptionSpec("port", int, default=22, help="SSH port"),
    OptionSpec("user", str, required=True, help="login user"),
    OptionSpec(
        "host_key",
        str,
        required=True,
        help="the host's public key, pinned; get it with "
        "'ssh-keyscan -t ed25519 ADDRESS' and paste the 'ssh-ed25519 AAAA...' part",
    ),
    OptionSpec("key_file", Path, help="private key to log in with (default: ssh agent)"),
)


def _read_option(r: _Reader, spec: OptionSpec, at: _At, env_hint: str) -> object:
    if spec.secret:
        return r.secret(at, env_hint)
    if spec.type is int:
        return r.integer(at)
    if spec.type is bool:
        return r.boolean(at)
    if spec.type is Path:
        return r.path(at)
    if spec.type is list:
        if spec.name == "hosts":
            return _read_ssh_hosts(r, at)
        return r.text_list(at, example=f"{spec.name}: [a, b]")
    return r.text(at, fix=f"write {spec.help or 'a text value'}")


def _read_options(
    r: _Reader,
    at: _At,
    entries: Mapping[str, _Entry],
    options: Sequence[OptionSpec],
    *,
    env_hint: str,
) -> Mapping[str, object]:
    """Values for declared ``options`` from ``entries`` (unknown keys already refused).

    Each option is read on its own, so every wrong or missing one is reported;
    the mapping is abandoned at the end if any was.
    """
    values: dict[str, object] = {}
    wrong = False
    for spec in options:
        entry = entries.get(spec.name)
        if entry is None:
            if spec.required:
                if not r.suggested(at.node, spec.name):
                    parent = f"under {at.path!r}" if at.path else "at the top level"
                    r.note(
                        at.key(spec.name, at.node),
                        f"required field is missing; add it {parent} ({spec.help})",
                    )
                wrong = True
            elif spec.default is not None:
                values[spec.name] = spec.default
            continue
        value = r.each(
            _read_option, r, spec, entry.value, f"{env_hint}_{spec.name}", instead=_MISSING
        )
        if value is _MISSING:
            wrong = True
        else:
            values[spec.name] = value
    if wrong:
        raise _Abandon
    return MappingProxyType(values)


#: Stands for a value that could not be read (its problem is recorded).
_MISSING: Any = object()


def _read_ssh_hosts(r: _Reader, at: _At) -> tuple[Mapping[str, object], ...]:
    known = [o.name for o in SSH_HOST_OPTIONS]

    def read_host(item: _At) -> Mapping[str, object]:
        entries = r.mapping(item, known, owner="an ssh-pool host")
        options = r.each(
            _read_options, r, item, entries, SSH_HOST_OPTIONS, env_hint="SSH", instead=None
        )
        key = entries.get("host_key")
        key_ok = key is None or r.each(_check_host_key, r, key.value, instead=False)
        if options is None or not key_ok:
            raise _Abandon
        return options

    items = r.sequence(
        at, example="hosts: [{address: 203.0.113.10, user: deploy, host_key: ...}]", non_empty=True
    )
    hosts = [r.each(read_host, item, instead=_MISSING) for item in items]
    if any(host is _MISSING for host in hosts):
        raise _Abandon
    return tuple(hosts)


def _check_host_key(r: _Reader, at: _At) -> bool:
    """Refuse a pinned key that is not a public key: found now, not at the first probe."""
    from providers.ssh import parse_host_key  # paramiko: imported only when a key is pinned

    line = r.text(at)

    def parse() -> None:
        try:
            parse_host_key(line)
        except ConfigError as exc:
            raise ConfigError(f"{at.path}: {exc}") from None

    r.relay(at, parse)
    return True


def _provider(
    r: _Reader,
    at: _At,
    kind: ProviderKind,
    selector: str,
    own_keys: Sequence[str],
    env_hint: str,
) -> tuple[ProviderSpec, Mapping[str, object], dict[str, _Entry]]:
    """Validate a provider section: ``selector`` picks the provider, the rest are its options."""
    if not isinstance(at.node, yaml.MappingNode):
        r.wrong_type(at, "a mapping", f"write '{selector}:' and its options as 'key: value' lines")
    # Pick the provider first so the unknown-key check knows its options.
    names = provider_names(kind)
    chosen_at = _peek(r, at, selector, f"one of: {', '.join(names)}")
    chosen = r.text(chosen_at, fix=f"write one of: {', '.join(names)}")
    if chosen not in names:
        noun = "kind" if selector == "kind" else "driver"
        r.fail(
            chosen_at,
            f"unknown {kind} {noun} {chosen!r}; {_close_match(chosen, names)}"
            f"known {kind} {noun}s: {', '.join(names)}",
        )
    spec = get_provider_spec(kind, chosen)
    known = [*own_keys, *spec.option_names()]
    entries = r.mapping(at, known, owner=f"{kind} {selector} {chosen!r}")
    options = _read_options(r, at, entries, spec.options, env_hint=env_hint)
    return spec, options, entries


def _read_drill(r: _Reader, at: _At) -> DrillConfig:
    entries = r.mapping(at, ["rto", "rpo", "every"], owner="drill")
    values: dict[str, timedelta] = {}
    for key, entry in entries.items():
        text = r.text(entry.value, fix="write a duration, e.g. 4h, 90m, 90d")
        values[key] = r.relay(entry.value, functools.partial(parse_duration, text, f"drill.{key}"))
    return DrillConfig(**values)


def _peek(r: _Reader, at: _At, key: str, help: str) -> _At:
    """The value of ``key`` in mapping ``at``, read before the mapping's keys are checked."""
    assert isinstance(at.node, yaml.MappingNode)
    for key_node, value_node in at.node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return at.key(key, value_node)
    r.fail(at.key(key, at.node), f"required field is missing; add it under {at.path!r} ({help})")


def _check_unique(r: _Reader, what: str, names: Sequence[tuple[str, _At]]) -> None:
    """Note every name used before, pointing at its first use."""
    seen: dict[str, _At] = {}
    for value, at in names:
        if value in seen:
            line = seen[value].node.start_mark.line + 1
            r.note(
                at,
                f"duplicate {what} name {value!r} (first used at line {line}); "
                f"give each {what} a unique name",
            )
        else:
            seen[value] = at


def _read_source(r: _Reader, at: _At) -> SourceConfig:
    entries = r.mapping(
        at,
        ["aws", "sandbox"],
        fix="write 'aws: {regions: [...]}', or 'sandbox: true' for the built-in sandbox",
    )
    if "sandbox" in entries:
        sandbox_at = entries["sandbox"].value
        if not r.boolean(sandbox_at):
            r.fail(
                sandbox_at,
                "only 'sandbox: true' is meaningful; write it for the built-in sandbox, or "
                "remove it and describe the account under 'aws:'",
            )
        if "aws" in entries:
            r.fail(
                entries["aws"].value,
                "the built-in sandbox has its own account; remove either 'aws:' or 'sandbox: true'",
                entries["aws"].key_node,
            )
        return SANDBOX_SOURCE
    if "aws" not in entries:
        r.fail(
            at.key("aws", at.node),
            "required field is missing; add it under 'source', e.g. "
            f"{_EXAMPLES['aws']}, or write 'sandbox: true' for the built-in sandbox",
        )
    aws_at = entries["aws"].value
    aws = r.mapping(aws_at, ["profile", "regions", "endpoint_url"], ["regions"])

    def regions() -> tuple[str, ...]:
        regions_at = aws["regions"].value
        names = r.text_list(regions_at, example="regions: [us-east-1]", non_empty=True)
        bad = False
        for i, region in enumerate(names):
            if not _REGION_RE.fullmatch(region):
                r.note(
                    regions_at.index(i, regions_at.node.value[i]),
                    f"{region!r} is not an AWS region name; write it like us-east-1 or eu-west-2",
                )
                bad = True
        if bad:
            raise _Abandon
        return names

    def endpoint_url() -> str:
        url_at = aws["endpoint_url"].value
        url = r.text(url_at)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            r.fail(url_at, f"{url!r} is not an http(s) URL; write it like http://127.0.0.1:5000")
        return url

    names = r.each(regions, instead=_MISSING)
    profile = (
        r.each(lambda: r.text(aws["profile"].value), instead=_MISSING) if "profile" in aws else None
    )
    url = r.each(endpoint_url, instead=_MISSING) if "endpoint_url" in aws else None
    if _MISSING in (names, profile, url):
        raise _Abandon
    return SourceConfig(AwsSourceConfig(names, profile, url))


def _read_priorities(r: _Reader, at: _At) -> tuple[PriorityRule, ...]:
    match_keys = ["kind", "bucket", "table", "zone", "name"]

    def patterns(key: str, value_at: _At) -> tuple[str, ...]:
        if isinstance(value_at.node, yaml.SequenceNode):
            items = r.sequence(value_at, example=f"{key}: [a, b]", non_empty=True)
        else:
            items = [value_at]
        fix = "write a glob pattern or a list of them"
        found = tuple(r.text(item, fix=fix) for item in items)
        if key == "kind":
            bad = False
            for pattern, item in zip(found, items, strict=True):
                if not fnmatch.filter(RESOURCE_KINDS, pattern):
                    r.note(
                        item,
                        f"{pattern!r} matches no resource kind; "
                        f"{_close_match(pattern, RESOURCE_KINDS)}"
                        f"kinds are: {', '.join(RESOURCE_KINDS)}",
                    )
                    bad = True
            if bad:
                raise _Abandon
        return found

    def rule(item: _At) -> PriorityRule:
        entries = r.mapping(item, ["tier", "match"], ["tier"])
        tier = r.each(lambda: r.name(entries["tier"].value, "tier"), instead=_MISSING)
        match: dict[str, tuple[str, ...]] = {}
        wrong = tier is _MISSING
        if "match" in entries:
            match_entries = r.each(
                lambda: r.mapping(entries["match"].value, match_keys), instead=None
            )
            wrong = wrong or match_entries is None
            for key, entry in (match_entries or {}).items():
                found = r.each(patterns, key, entry.value, instead=None)
                if found is None:
                    wrong = True
                else:
                    match[key] = found
        if wrong:
            raise _Abandon
        return PriorityRule(tier, MappingProxyType(match))

    items = r.sequence(at, example="[{tier: critical, match: {kind: rds}}]")
    rules = [r.each(rule, item, instead=_MISSING) for item in items]
    if _MISSING in rules:
        raise _Abandon
    return tuple(rules)


def _read_destinations(r: _Reader, at: _At) -> tuple[DestinationConfig, ...]:
    example = "[{name: vault, storage: {driver: local, path: ./evacuated}}]"
    names: list[tuple[str, _At]] = []

    def destination(item: _At) -> DestinationConfig:
        entries = r.mapping(item, ["name", "storage", "encrypt"], ["name", "storage"])
        name_at = entries["name"].value
        name = r.each(lambda: r.name(name_at, "destination"), instead=_MISSING)
        if name is not _MISSING:
            names.append((name, name_at))
        storage = r.each(
            lambda: _provider(
                r,
                entries["storage"].value,
                "storage",
                "driver",
                ["driver"],
                env_hint=name if name is not _MISSING else "DESTINATION",
            ),
            instead=None,
        )
        recipients: Any = ()
        if "encrypt" in entries:

            def read_recipients() -> tuple[str, ...]:
                enc = r.mapping(entries["encrypt"].value, ["recipients"], ["recipients"])
                return r.text_list(
                    enc["recipients"].value, example="recipients: [age1...]", non_empty=True
                )

            recipients = r.each(read_recipients, instead=_MISSING)
        if name is _MISSING or storage is None or recipients is _MISSING:
            raise _Abandon
        spec, options, _ = storage
        return DestinationConfig(name, spec.name, options, recipients)

    items = r.sequence(at, example=example, non_empty=True)
    destinations = [r.each(destination, item, instead=_MISSING) for item in items]
    _check_unique(r, "destination", names)
    if _MISSING in destinations:
        raise _Abandon
    return tuple(destinations)


def _read_candidates(r: _Reader, at: _At) -> tuple[CandidateConfig, ...]:
    names: list[tuple[str, _At]] = []

    def candidate(item: _At) -> CandidateConfig:
        if not isinstance(item.node, yaml.MappingNode):
            r.wrong_type(item, "a mapping", "write the candidate's name, kind and options")
        # The name comes first: the provider's options are checked after it.
        name_at = _peek(r, item, "name", "a unique name for this candidate")
        name = r.each(lambda: r.name(name_at, "candidate"), instead=_MISSING)
        if name is not _MISSING:
            names.append((name, name_at))
        hint = name if name is not _MISSING else "CANDIDATE"
        spec, options, _ = _provider(r, item, "compute", "kind", ["name", "kind"], hint)
        if name is _MISSING:
            raise _Abandon
        return CandidateConfig(name, spec.name, options)

    items = r.sequence(at, example="[{name: colo, kind: ssh-pool, hosts: [...]}]")
    candidates = [r.each(candidate, item, instead=_MISSING) for item in items]
    _check_unique(r, "candidate", names)
    if _MISSING in candidates:
        raise _Abandon
    return tuple(candidates)


def _read_transfer(r: _Reader, at: _At) -> TransferConfig:
    entries = r.mapping(at, ["concurrency", "part_size", "bwlimit", "executor", "scheduler"])

    def part_size() -> int:
        size_at = entries["part_size"].value
        size = _size(r, size_at)
        if not MIN_PART_SIZE <= size <= MAX_PART_SIZE:
            r.fail(
                size_at,
                f"{size} bytes is outside what S3 multipart uploads allow; "
                "use a size from 5MiB to 5GiB",
            )
        return size

    def scalar_or_text(value_at: _At, fix: str) -> int | str | None:
        value = r.scalar(value_at.node) if isinstance(value_at.node, yaml.ScalarNode) else None
        if value is None and isinstance(value_at.node, yaml.ScalarNode):
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return r.text(value_at, fix=fix)

    def concurrency() -> int:
        value_at = entries["concurrency"].value
        value = scalar_or_text(value_at, "write digits only, e.g. 16")
        if value is None:
            r.wrong_type(value_at, "a whole number", "write digits only, e.g. 16")
        return r.relay(value_at, lambda: parse_concurrency(value, value_at.path))

    def bwlimit() -> int | None:
        value_at = entries["bwlimit"].value
        if r.scalar(value_at.node) is False:
            return None  # YAML reads an unquoted 'off' as false
        value = scalar_or_text(value_at, "write a size, e.g. 50MiB, or off")
        if value is None:
            return None
        return r.relay(value_at, lambda: parse_bwlimit(value, value_at.path))

    def executor() -> str:
        value_at = entries["executor"].value
        value = r.text(value_at, fix=f"write one of: {', '.join(EXECUTORS)}")
        if value not in EXECUTORS:
            r.fail(
                value_at,
                f"unknown executor {value!r}; {_close_match(value, EXECUTORS)}"
                f"use one of: {', '.join(EXECUTORS)}",
            )
        if value == "dask" and importlib.util.find_spec("distributed") is None:
            r.fail(value_at, "dask is not installed; pip install 'exitplan[dask]'")
        return value

    def scheduler() -> str:
        value_at = entries["scheduler"].value
        value = r.text(value_at, fix="write the scheduler's address, e.g. tcp://10.0.0.5:8786")
        if not _SCHEDULER_RE.fullmatch(value):
            r.fail(
                value_at,
                f"{value!r} is not a Dask scheduler address; write tcp://HOST:PORT, "
                "e.g. tcp://10.0.0.5:8786",
            )
        return value

    chosen = r.each(executor, instead=_MISSING) if "executor" in entries else "threads"
    address = r.each(scheduler, instead=_MISSING) if "scheduler" in entries else None
    if "scheduler" in entries and chosen == "threads":
        r.note(
            entries["scheduler"].value,
            "a scheduler is only for the dask executor; add 'executor: dask', or remove it",
            entries["scheduler"].key_node,
        )
        address = _MISSING
    elif chosen == "dask" and "scheduler" not in entries:
        r.note(
            entries["executor"].value,
            "the dask executor needs its scheduler; add 'scheduler: tcp://HOST:8786' under "
            "transfer (for worker processes on this machine, pass --workers N instead)",
        )
        address = _MISSING
    found = TransferConfig(
        concurrency=(
            r.each(concurrency, instead=_MISSING)
            if "concurrency" in entries
            else DEFAULT_CONCURRENCY
        ),
        part_size=(
            r.each(part_size, instead=_MISSING)
            if "part_size" in entries
            else parse_size(DEFAULT_PART_SIZE, "transfer.part_size")
        ),
        bwlimit=r.each(bwlimit, instead=_MISSING) if "bwlimit" in entries else None,
        executor=chosen,
        scheduler=address,
    )
    if _MISSING in (
        found.concurrency,
        found.part_size,
        found.bwlimit,
        found.executor,
        found.scheduler,
    ):
        raise _Abandon
    return found


def _size(r: _Reader, at: _At) -> int:
    value = r.scalar(at.node) if isinstance(at.node, yaml.ScalarNode) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = r.text(at, fix="write a size, e.g. 16MiB")
    return r.relay(at, lambda: parse_size(text, at.path))


_TOP_KEYS = [
    "source",
    "deadline",
    "safety_margin",
    "workspace",
    "priorities",
    "destinations",
    "candidates",
    "dns",
    "playbook",
    "drill",
    "transfer",
]

_STARTER = (
    "start with 'source: {aws: {regions: [us-east-1]}}' and "
    "'destinations: [{name: vault, storage: {driver: local, path: ./evacuated}}]'"
)

#: How deep a config's lists and mappings may nest. A real one nests about
#: six levels; the parser recurses per level, so a runaway file must be
#: refused before it exhausts the stack.
MAX_YAML_DEPTH = 64


class _TooDeep(yaml.composer.ComposerError):
    """Nesting past :data:`MAX_YAML_DEPTH` (directly or through aliases)."""


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, refusing to compose nodes nested deeper than MAX_YAML_DEPTH."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise _TooDeep(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_depth(root: yaml.Node) -> None:
    """Refuse node graphs deeper than MAX_YAML_DEPTH, counting through aliases.

    Each level of composing is checked as it is read, but aliases can stack
    anchored nodes into a deeper graph (and a node can contain itself), which
    the constructor and the reader would then recurse through. Iterative, so
    it cannot overflow the stack it protects.
    """
    height: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            height[key] = 1 + max((height[id(c)] for c in _children(node)), default=0)
            if height[key] > MAX_YAML_DEPTH:
                raise _TooDeep(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", node.start_mark
                )
            continue
        if key in height:
            continue
        if key in on_path:
            raise _TooDeep(
                None, None, "an alias refers to a node that contains it", node.start_mark
            )
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in height)


def _syntax_error(source_name: str, text: str, exc: yaml.YAMLError) -> ConfigError:
    fix = "fix the syntax here (indentation, quotes, brackets, and ': ' after each key)"
    if isinstance(exc, yaml.constructor.ConstructorError):
        fix = "remove the tag: the config is plain YAML data (strings, numbers, lists, mappings)"
    if isinstance(exc, _TooDeep):
        fix = (
            "a config nests a few levels of lists and mappings; look for brackets that "
            "never close or an alias that repeats itself"
        )
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        detail = exc.problem or "unreadable YAML"
        if exc.context:
            detail += f" ({exc.context}"
            if exc.context_mark is not None:
                ctx = exc.context_mark
                detail += f" started at {ctx.line + 1}:{ctx.column + 1}"
            detail += ")"
        where = f"{source_name}:{mark.line + 1}:{mark.column + 1}"
    elif isinstance(exc, yaml.reader.ReaderError):
        before = text[: exc.position]
        line = before.count("\n") + 1
        column = exc.position - (before.rfind("\n") + 1) + 1
        where = f"{source_name}:{line}:{column}"
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        detail = f"control character U+{code:04X} is not allowed in YAML"
    else:  # pragma: no cover - every PyYAML error carries one of the two
        where, detail = f"{source_name}:1:1", str(exc)
    return ConfigError(f"{where}: invalid YAML: {detail}; {fix}")


def compose_yaml(text: str, source_name: str) -> yaml.Node | None:
    """The YAML node tree of ``text`` (None when empty), read safely and bounded.

    Only plain data: a tag the safe loader cannot construct is refused, as is
    nesting past :data:`MAX_YAML_DEPTH` levels (directly or through aliases).
    Raises ``ConfigError`` naming ``source_name:LINE:COLUMN`` and the fix.
    For config files and playbooks alike.
    """
    try:
        root = yaml.compose(text, Loader=_BoundedLoader)
        if root is not None:
            _check_depth(root)
        # Construct a second copy, as safe_load does, for its errors (unknown
        # tags, impossible dates); the reader keeps the positions of the first.
        loader = _BoundedLoader(text)
        try:
            loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _syntax_error(source_name, text, exc) from None
    return root


def parse_config_text(
    text: str, source_name: str, base_dir: Path, env: Mapping[str, str]
) -> Config:
    """Validate config ``text`` and return it typed.

    ``source_name`` names the file in messages; relative paths resolve
    against ``base_dir``; ``${NAME}`` references read ``env``. Raises one
    ``ConfigError`` with every independent problem found (a syntax error
    alone stops the reading), each shaped
    ``FILE:LINE:COLUMN: FIELD.PATH: problem; fix`` and free of secret values,
    in file order. ``source_file`` of the result is None (``load_config`` sets it).
    """
    root = compose_yaml(text, source_name)
    r = _Reader(source_name, base_dir, env)
    if root is None or (isinstance(root, yaml.ScalarNode) and r.scalar(root) is None):
        raise ConfigError(f"{source_name}:1:1: the config is empty; {_STARTER}")
    top = _At(root, "")
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(
            f"{r.where(root.start_mark)}: the top level must be a mapping of settings, "
            f"got {r.describe(root, show_value=False)}; {_STARTER}"
        )
    entries = r.each(lambda: r.mapping(top, _TOP_KEYS, ["source", "destinations"]), instead=None)
    if entries is None:
        # A missing section: still check what is there, then report it all.
        entries = {key: entry for key, entry in _top_entries(top).items() if key in _TOP_KEYS}

    def at(key: str) -> _At:
        return entries[key].value

    def deadline() -> str:
        text = r.text(at("deadline"), fix="write a time, e.g. 2021-01-10T23:59:00-08:00")
        r.relay(at("deadline"), lambda: check_deadline_syntax(text, name="deadline:"))
        return text

    def safety_margin() -> timedelta:
        margin_text = DEFAULT_SAFETY_MARGIN
        if "safety_margin" in entries:
            margin_text = r.text(at("safety_margin"), fix="write a duration, e.g. 30m")
        return r.relay(
            at("safety_margin") if "safety_margin" in entries else top,
            lambda: parse_duration(margin_text, "safety_margin"),
        )

    def dns() -> DnsConfig:
        own = ["driver", "nameservers", "service_names"]
        spec, options, found = _provider(r, at("dns"), "dns", "driver", own, env_hint="DNS")
        lists = {
            key: r.text_list(found[key].value, example=example, non_empty=True)
            for key, example in (
                ("nameservers", "[ns1.example.net., ns2.example.net.]"),
                ("service_names", '["@", www, api]'),
            )
            if key in found
        }
        return DnsConfig(spec.name, options, **lists)

    def section(key: str, read: Callable[[], _T], absent: _U) -> _T | _U:
        return r.each(read, instead=absent) if key in entries else absent

    source = section("source", lambda: _read_source(r, at("source")), None)
    deadline_text = section("deadline", deadline, None)
    margin = r.each(safety_margin, instead=timedelta(0))
    workspace = section("workspace", lambda: r.path(at("workspace")), None)
    priorities = section("priorities", lambda: _read_priorities(r, at("priorities")), ())
    destinations = section("destinations", lambda: _read_destinations(r, at("destinations")), ())
    candidates = section("candidates", lambda: _read_candidates(r, at("candidates")), ())
    dns_config = section("dns", dns, None)
    playbook = section("playbook", lambda: r.path(at("playbook")), None)
    drill = section("drill", lambda: _read_drill(r, at("drill")), None)
    transfer = section("transfer", lambda: _read_transfer(r, at("transfer")), TransferConfig())
    r.raise_findings()
    assert source is not None  # a missing or wrong source is a finding
    return Config(
        source=source,
        destinations=destinations,
        deadline=deadline_text,
        safety_margin=margin,
        workspace=workspace or r.base_dir / DEFAULT_WORKSPACE,
        priorities=priorities,
        candidates=candidates,
        dns=dns_config,
        playbook=playbook,
        drill=drill,
        transfer=transfer,
    )


def _top_entries(top: _At) -> dict[str, _Entry]:
    """The top-level keys as written, after ``mapping`` noted what is wrong with them."""
    assert isinstance(top.node, yaml.MappingNode)
    entries: dict[str, _Entry] = {}
    for key_node, value_node in top.node.value:
        if isinstance(key_node, yaml.ScalarNode):
            entries[str(key_node.value)] = _Entry(
                key_node, top.key(str(key_node.value), value_node)
            )
    return entries


#: The most bytes a config file or playbook may hold. Real ones are a few
#: kilobytes; the limit is checked before parsing, so a wrong path (a disk
#: image, /dev/zero) costs a message, not minutes and gigabytes.
MAX_INPUT_BYTES = 1024 * 1024

_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind_of_file(mode: int) -> str | None:
    """What a non-regular file is, for the message; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, kind in _FILE_KINDS:
        if test(mode):
            return kind
    return "not a regular file"


def _size_text(n: int) -> str:
    if n >= 1024**2:
        return f"{n / 1024**2:.1f} MiB"
    return f"{n / 1024:.0f} KiB" if n >= 1024 else f"{n} bytes"


def read_bounded_text(
    path: Path,
    *,
    what: str,
    limit: int = MAX_INPUT_BYTES,
    missing_fix: str = "check the path",
) -> str:
    """The UTF-8 text of the regular file at ``path``, refusing anything else.

    ``what`` names the file in messages ("config file", "playbook").
    Refused with a ``ConfigError`` (``PATH: problem; fix``): a missing file
    (with ``missing_fix``), a directory, device, FIFO or socket (checked
    before opening, so a FIFO cannot block the read), a file over ``limit``
    bytes (checked from its size, and by reading at most ``limit + 1`` bytes,
    as files under /proc report size 0), unreadable or not UTF-8 text.
    Nothing is parsed and nothing written.
    """
    too_big = (
        f"{path}: is over {_size_text(limit)}, more than a {what} may be; a {what} is a few "
        f"kilobytes of YAML: check that this is the right file"
    )
    try:
        info = path.stat()
        kind = _kind_of_file(info.st_mode)
        if kind is not None:
            raise ConfigError(
                f"{path}: is {kind}, not a {what}; give the path of the YAML file itself"
            )
        if info.st_size > limit:
            raise ConfigError(too_big)
        # O_NONBLOCK: if the path was swapped for a FIFO since stat, opening
        # it does not wait for a writer; fstat below then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as stream:
            kind = _kind_of_file(os.fstat(stream.fileno()).st_mode)
            if kind is not None:
                raise ConfigError(
                    f"{path}: is {kind}, not a {what}; give the path of the YAML file itself"
                )
            data = stream.read(limit + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found; {missing_fix}") from None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the {what} ({exc.strerror}); check the path and its permissions"
        ) from None
    if len(data) > limit:
        raise ConfigError(too_big)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}); save the {what} as UTF-8"
        ) from None


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file at ``path``.

    ``env`` defaults to ``os.environ``. Relative paths in the file resolve
    against the file's directory. Raises ``ConfigError`` if the file cannot
    be read (see ``read_bounded_text``: at most 1 MiB, a regular file) or is
    invalid (see ``parse_config_text``: every problem at once).
    """
    text = read_bounded_text(
        path,
        what="config file",
        missing_fix="check the path, or leave out --config to run on the built-in sandbox",
    )
    config = parse_config_text(
        text, str(path), path.absolute().parent, os.environ if env is None else env
    )
    return dataclasses.replace(config, source_file=path.absolute())


def default_sandbox_config(base_dir: Path) -> Config:
    """The built-in sandbox: a moto account and a local destination under ``base_dir``.

    Used when no config file is given, so a new user sees the whole path work
    in one command without credentials or targets of their own.
    """
    base = Path(os.path.normpath(base_dir.absolute()))
    return Config(
        source=SANDBOX_SOURCE,
        destinations=(
            DestinationConfig(
                name="sandbox",
                driver="local",
                options=MappingProxyType({"path": base / "exitplan-sandbox"}),
            ),
        ),
        workspace=base / DEFAULT_WORKSPACE,
        safety_margin=parse_duration(DEFAULT_SAFETY_MARGIN, "safety_margin"),
        priorities=(
            PriorityRule(
                "critical", MappingProxyType({"kind": ("rds", "secrets", "route53", "dynamodb")})
            ),
            PriorityRule(
                "important",
                MappingProxyType({"kind": ("s3",), "bucket": ("microblog-user-media",)}),
            ),
            PriorityRule("best-effort", MappingProxyType({"kind": ("s3",)})),
            PriorityRule("best-effort", MappingProxyType({"kind": ("ebs", "ec2")})),
        ),
        # This machine stands in for the host the service moves to.
        candidates=(CandidateConfig("this-machine", "local", MappingProxyType({})),),
        transfer=TransferConfig(),
    )


_SANDBOX_CONFIG_TEMPLATE = """\
# exitplan config: the built-in sandbox, as `exitplan config init` writes it.
# Run it as it is:   exitplan migrate --config {name} --deadline +2h
# Check an edit:     exitplan config validate {name}
# To leave your own account, replace `source` (e.g. source: {{aws: {{profile:
# prod, regions: [us-west-2]}}}}) and `destinations` (storage AWS does not control).

# Where the service runs now. `sandbox: true` is the built-in "microblog"
# account, held in moto inside exitplan: no credentials, nothing real touched.
source:
  sandbox: true

# When the source goes away; --deadline on the command line wins.
# Also "+30h", or "2021-01-10 23:59 America/Los_Angeles".
# deadline: 2021-01-10T23:59:00-08:00

# Time kept spare before the deadline: the plan means to be done by then.
safety_margin: {safety_margin}

# The journal and the reports. Relative paths are relative to this file.
workspace: {workspace}

# What to save first: rules in order, what an earlier rule matches goes first.
priorities:
  - {{tier: critical, match: {{kind: [rds, secrets, route53, dynamodb]}}}}
  - {{tier: important, match: {{kind: s3, bucket: microblog-user-media}}}}
  - {{tier: best-effort, match: {{kind: s3}}}}
  - {{tier: best-effort, match: {{kind: [ebs, ec2]}}}}

# Where the copies go; several destinations get the same bytes from one read.
destinations:
  - name: sandbox
    storage: {{driver: local, path: ./exitplan-sandbox}}
    # Secrets are written only where recipients are named (age public keys);
    # the sandbox encrypts to a key of its own in the workspace.
    # encrypt: {{recipients: ["age1..."]}}

# Where the service can run next, probed and ranked. `local` is this machine.
candidates:
  - {{name: this-machine, kind: local}}

transfer:
  concurrency: {concurrency}    # parallel transfers, {low} to {high}
  part_size: {part_size}   # multipart part size, 5MiB to 5GiB
  # bwlimit: 50MiB   # bytes read per second at most; off for no limit
  # executor: dask   # copies on a Dask cluster (pip install 'exitplan[dask]'),
  # scheduler: tcp://10.0.0.5:8786   # at this scheduler; or --workers N locally
"""


def write_sandbox_config(path: Path) -> None:
    """Write the built-in sandbox's configuration to ``path`` as commented YAML.

    Loading the file gives ``default_sandbox_config(path.parent)`` (paths in
    it are relative to the file), so a user can run it with ``--config`` and
    edit it from there. Never overwrites: raises ``ConfigError`` if ``path``
    exists or its directory does not (nothing is written then).
    """
    text = _SANDBOX_CONFIG_TEMPLATE.format(
        name=path.name,
        safety_margin=DEFAULT_SAFETY_MARGIN,
        workspace=DEFAULT_WORKSPACE,
        concurrency=DEFAULT_CONCURRENCY,
        part_size=DEFAULT_PART_SIZE,
        low=MIN_CONCURRENCY,
        high=MAX_CONCURRENCY,
    )
    try:
        with path.open("x", encoding="utf-8") as out:
            out.write(text)
    except FileExistsError:
        raise ConfigError(
            f"{path}: already exists; config init never overwrites a file: give another "
            "path, or move this one away first"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot write the config ({exc.strerror}); check that its directory "
            "exists and is writable"
        ) from None
