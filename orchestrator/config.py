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
import hashlib
import hmac
import json
import os
import re
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
    text it came from: safe to log, and what ``config_digest`` records.
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
    """The DNS provider used at cutover, and its options."""

    driver: str
    options: Mapping[str, object]


@dataclass(frozen=True)
class TransferConfig:
    """Copy-engine settings. Sizes in bytes; ``bwlimit`` in bytes/second, None = unlimited."""

    concurrency: int = DEFAULT_CONCURRENCY
    part_size: int = 16 * 1024**2
    bwlimit: int | None = None


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


class _Reader:
    """Turns the composed YAML tree into config values, failing at the first problem."""

    def __init__(self, source_name: str, base_dir: Path, env: Mapping[str, str]) -> None:
        self.source_name = source_name
        self.base_dir = Path(os.path.normpath(base_dir.absolute()))
        self.env = env
        # One constructor per file: it turns single scalars into Python values
        # exactly as yaml.safe_load would (ints, bools, nulls, timestamps).
        self._constructor = SafeConstructor()

    # -- failing -----------------------------------------------------------

    def where(self, mark: yaml.Mark) -> str:
        return f"{self.source_name}:{mark.line + 1}:{mark.column + 1}"

    def fail(self, at: _At, message: str, node: yaml.Node | None = None) -> NoReturn:
        mark = (node or at.node).start_mark
        raise ConfigError(f"{self.where(mark)}: {at.path}: {message}")

    def relay(self, at: _At, call: Callable[[], _T]) -> _T:
        """Run a parser whose errors already start with the field; add the position."""
        try:
            return call()
        except ConfigError as exc:
            raise ConfigError(f"{self.where(at.node.start_mark)}: {exc}") from None

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
        own: dict[str, yaml.Node] = {}
        for key_node, _ in at.node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self._key_text(at, key_node)
            if key in own:
                line = own[key].start_mark.line + 1
                self.fail(
                    at.key(key, key_node),
                    f"key given twice in the same mapping (first at line {line}); keep one",
                    key_node,
                )
            own[key] = key_node
        # Resolve '<<: *anchor' merges the way safe_load does; the node tree is ours.
        self._constructor.flatten_mapping(at.node)
        entries: dict[str, _Entry] = {}
        for key_node, value_node in at.node.value:
            key = self._key_text(at, key_node)
            entries[key] = _Entry(key_node, at.key(key, value_node))
        for key, entry in entries.items():
            if key not in known:
                where = f" for {owner}" if owner else ""
                self.fail(
                    entry.value,
                    f"unknown key{where}; "
                    + (
                        f"{_close_match(key, known)}(known keys: {', '.join(known)})"
                        if _close_match(key, known)
                        else f"use one of: {', '.join(known)}"
                    ),
                    entry.key_node,
                )
        for key in required:
            if key not in entries:
                parent = f"under {at.path!r}" if at.path else "at the top level"
                example = f", e.g. {_EXAMPLES[key]}" if key in _EXAMPLES else ""
                self.fail(
                    at.key(key, at.node), f"required field is missing; add it {parent}{example}"
                )
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
    """Values for declared ``options`` from ``entries`` (unknown keys already refused)."""
    values: dict[str, object] = {}
    for spec in options:
        entry = entries.get(spec.name)
        if entry is None:
            if spec.required:
                parent = f"under {at.path!r}" if at.path else "at the top level"
                r.fail(
                    at.key(spec.name, at.node),
                    f"required field is missing; add it {parent} ({spec.help})",
                )
            if spec.default is not None:
                values[spec.name] = spec.default
            continue
        values[spec.name] = _read_option(r, spec, entry.value, f"{env_hint}_{spec.name}")
    return MappingProxyType(values)


def _read_ssh_hosts(r: _Reader, at: _At) -> tuple[Mapping[str, object], ...]:
    hosts = []
    known = [o.name for o in SSH_HOST_OPTIONS]
    for item in r.sequence(
        at, example="hosts: [{address: 203.0.113.10, user: deploy, host_key: ...}]", non_empty=True
    ):
        entries = r.mapping(item, known, owner="an ssh-pool host")
        hosts.append(_read_options(r, item, entries, SSH_HOST_OPTIONS, env_hint="SSH"))
    return tuple(hosts)


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


def _peek(r: _Reader, at: _At, key: str, help: str) -> _At:
    """The value of ``key`` in mapping ``at``, read before the mapping's keys are checked."""
    assert isinstance(at.node, yaml.MappingNode)
    for key_node, value_node in at.node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return at.key(key, value_node)
    r.fail(at.key(key, at.node), f"required field is missing; add it under {at.path!r} ({help})")


def _check_unique(r: _Reader, what: str, names: list[tuple[str, _At]]) -> None:
    seen: dict[str, _At] = {}
    for value, at in names:
        if value in seen:
            line = seen[value].node.start_mark.line + 1
            r.fail(
                at,
                f"duplicate {what} name {value!r} (first used at line {line}); "
                f"give each {what} a unique name",
            )
        seen[value] = at


def _read_source(r: _Reader, at: _At) -> SourceConfig:
    entries = r.mapping(at, ["aws"], ["aws"])
    aws_at = entries["aws"].value
    aws = r.mapping(aws_at, ["profile", "regions", "endpoint_url"], ["regions"])
    regions_at = aws["regions"].value
    regions = r.text_list(regions_at, example="regions: [us-east-1]", non_empty=True)
    for i, region in enumerate(regions):
        if not _REGION_RE.fullmatch(region):
            r.fail(
                regions_at.index(i, regions_at.node.value[i]),
                f"{region!r} is not an AWS region name; write it like us-east-1 or eu-west-2",
            )
    profile = r.text(aws["profile"].value) if "profile" in aws else None
    endpoint_url = None
    if "endpoint_url" in aws:
        url_at = aws["endpoint_url"].value
        endpoint_url = r.text(url_at)
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            r.fail(
                url_at,
                f"{endpoint_url!r} is not an http(s) URL; write it like http://127.0.0.1:5000",
            )
    return SourceConfig(AwsSourceConfig(regions, profile, endpoint_url))


def _read_priorities(r: _Reader, at: _At) -> tuple[PriorityRule, ...]:
    rules = []
    match_keys = ["kind", "bucket", "table", "zone", "name"]
    for item in r.sequence(at, example="[{tier: critical, match: {kind: rds}}]"):
        entries = r.mapping(item, ["tier", "match"], ["tier"])
        tier = r.name(entries["tier"].value, "tier")
        match: dict[str, tuple[str, ...]] = {}
        if "match" in entries:
            match_at = entries["match"].value
            for key, entry in r.mapping(match_at, match_keys).items():
                value_at = entry.value
                if isinstance(value_at.node, yaml.SequenceNode):
                    items = r.sequence(value_at, example=f"{key}: [a, b]", non_empty=True)
                else:
                    items = [value_at]
                fix = "write a glob pattern or a list of them"
                patterns = tuple(r.text(item, fix=fix) for item in items)
                if key == "kind":
                    for pattern, item in zip(patterns, items, strict=True):
                        if not fnmatch.filter(RESOURCE_KINDS, pattern):
                            r.fail(
                                item,
                                f"{pattern!r} matches no resource kind; "
                                f"{_close_match(pattern, RESOURCE_KINDS)}"
                                f"kinds are: {', '.join(RESOURCE_KINDS)}",
                            )
                match[key] = patterns
        rules.append(PriorityRule(tier, MappingProxyType(match)))
    return tuple(rules)


def _read_destinations(r: _Reader, at: _At) -> tuple[DestinationConfig, ...]:
    destinations = []
    names: list[tuple[str, _At]] = []
    example = "[{name: vault, storage: {driver: local, path: ./evacuated}}]"
    for item in r.sequence(at, example=example, non_empty=True):
        entries = r.mapping(item, ["name", "storage", "encrypt"], ["name", "storage"])
        name_at = entries["name"].value
        name = r.name(name_at, "destination")
        names.append((name, name_at))
        _check_unique(r, "destination", names)
        spec, options, _ = _provider(
            r, entries["storage"].value, "storage", "driver", ["driver"], env_hint=name
        )
        recipients: tuple[str, ...] = ()
        if "encrypt" in entries:
            enc = r.mapping(entries["encrypt"].value, ["recipients"], ["recipients"])
            recipients = r.text_list(
                enc["recipients"].value, example="recipients: [age1...]", non_empty=True
            )
        destinations.append(DestinationConfig(name, spec.name, options, recipients))
    return tuple(destinations)


def _read_candidates(r: _Reader, at: _At) -> tuple[CandidateConfig, ...]:
    candidates = []
    names: list[tuple[str, _At]] = []
    for item in r.sequence(at, example="[{name: colo, kind: ssh-pool, hosts: [...]}]"):
        if not isinstance(item.node, yaml.MappingNode):
            r.wrong_type(item, "a mapping", "write the candidate's name, kind and options")
        # The name comes first: the provider's options are checked after it.
        name_at = _peek(r, item, "name", "a unique name for this candidate")
        name = r.name(name_at, "candidate")
        names.append((name, name_at))
        _check_unique(r, "candidate", names)
        spec, options, _ = _provider(r, item, "compute", "kind", ["name", "kind"], name)
        candidates.append(CandidateConfig(name, spec.name, options))
    return tuple(candidates)


def _read_transfer(r: _Reader, at: _At) -> TransferConfig:
    entries = r.mapping(at, ["concurrency", "part_size", "bwlimit"])
    concurrency = DEFAULT_CONCURRENCY
    if "concurrency" in entries:
        concurrency = r.integer(entries["concurrency"].value, low=1, high=512)
    part_size = parse_size(DEFAULT_PART_SIZE, "transfer.part_size")
    if "part_size" in entries:
        size_at = entries["part_size"].value
        part_size = _size(r, size_at)
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            r.fail(
                size_at,
                f"{part_size} bytes is outside what S3 multipart uploads allow; "
                "use a size from 5MiB to 5GiB",
            )
    bwlimit = None
    if "bwlimit" in entries:
        limit_at = entries["bwlimit"].value
        if r.scalar(limit_at.node) is not None:
            bwlimit = _size(r, limit_at)
            if bwlimit <= 0:
                r.fail(limit_at, "must be more than 0; write null (or leave it out) for no limit")
    return TransferConfig(concurrency, part_size, bwlimit)


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
    "transfer",
]

_STARTER = (
    "start with 'source: {aws: {regions: [us-east-1]}}' and "
    "'destinations: [{name: vault, storage: {driver: local, path: ./evacuated}}]'"
)


def _syntax_error(source_name: str, text: str, exc: yaml.YAMLError) -> ConfigError:
    fix = "fix the syntax here (indentation, quotes, brackets, and ': ' after each key)"
    if isinstance(exc, yaml.constructor.ConstructorError):
        fix = "remove the tag: the config is plain YAML data (strings, numbers, lists, mappings)"
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


def parse_config_text(
    text: str, source_name: str, base_dir: Path, env: Mapping[str, str]
) -> Config:
    """Validate config ``text`` and return it typed.

    ``source_name`` names the file in messages; relative paths resolve
    against ``base_dir``; ``${NAME}`` references read ``env``. Raises one
    ``ConfigError`` for the first problem found, shaped
    ``FILE:LINE:COLUMN: FIELD.PATH: problem; fix`` and free of secret values.
    ``source_file`` of the result is None (``load_config`` sets it).
    """
    try:
        # safe_load first: it reports every syntax and construction error
        # (bad tags included); compose then gives the positions.
        yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _syntax_error(source_name, text, exc) from None
    r = _Reader(source_name, base_dir, env)
    if root is None or (isinstance(root, yaml.ScalarNode) and r.scalar(root) is None):
        raise ConfigError(f"{source_name}:1:1: the config is empty; {_STARTER}")
    top = _At(root, "")
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(
            f"{r.where(root.start_mark)}: the top level must be a mapping of settings, "
            f"got {r.describe(root, show_value=False)}; {_STARTER}"
        )
    entries = r.mapping(top, _TOP_KEYS, ["source", "destinations"])

    def at(key: str) -> _At:
        return entries[key].value

    source = _read_source(r, at("source"))
    deadline = None
    if "deadline" in entries:
        deadline = r.text(at("deadline"), fix="write a time, e.g. 2021-01-10T23:59:00-08:00")
        r.relay(at("deadline"), lambda: check_deadline_syntax(deadline, name="deadline:"))
    margin_text = DEFAULT_SAFETY_MARGIN
    if "safety_margin" in entries:
        margin_text = r.text(at("safety_margin"), fix="write a duration, e.g. 30m")
    safety_margin = r.relay(
        at("safety_margin") if "safety_margin" in entries else top,
        lambda: parse_duration(margin_text, "safety_margin"),
    )
    workspace = r.path(at("workspace")) if "workspace" in entries else None
    priorities = _read_priorities(r, at("priorities")) if "priorities" in entries else ()
    destinations = _read_destinations(r, at("destinations"))
    candidates = _read_candidates(r, at("candidates")) if "candidates" in entries else ()
    dns = None
    if "dns" in entries:
        spec, options, _ = _provider(r, at("dns"), "dns", "driver", ["driver"], env_hint="DNS")
        dns = DnsConfig(spec.name, options)
    playbook = r.path(at("playbook")) if "playbook" in entries else None
    transfer = _read_transfer(r, at("transfer")) if "transfer" in entries else TransferConfig()
    return Config(
        source=source,
        destinations=destinations,
        deadline=deadline,
        safety_margin=safety_margin,
        workspace=workspace or r.base_dir / DEFAULT_WORKSPACE,
        priorities=priorities,
        candidates=candidates,
        dns=dns,
        playbook=playbook,
        transfer=transfer,
    )


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file at ``path``.

    ``env`` defaults to ``os.environ``. Relative paths in the file resolve
    against the file's directory. Raises ``ConfigError`` if the file cannot
    be read or is invalid (see ``parse_config_text``).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found; check the path, or leave out --config "
            "to run on the built-in sandbox"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
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
        source=SourceConfig(AwsSourceConfig(regions=("us-east-1",), sandbox=True)),
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


def _canonical(value: Any) -> Any:
    """A JSON-able form of the config with secrets replaced by their ``${NAME}`` text."""
    if isinstance(value, Secret):
        return {"secret": value.reference}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _canonical(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name != "source_file"
        }
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def config_digest(config: Config) -> str:
    """A stable sha256 (hex) of the settings, for the journal to spot a changed config.

    Secret values are left out (their ``${NAME}`` references count instead),
    as is where the file was read from; equal settings give equal digests.
    """
    canonical = json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
