"""What a worker on another machine needs to copy items, without a single secret.

A Dask worker builds its own source account, exporters and destinations
from a ``WorkerSpec``: regions and endpoint, part size, and each
destination's driver and options, where every secret option is kept as the
``${NAME}`` reference the config file gave it and looked up in *the
worker's* environment. Credentials never travel in a task's arguments: those
are pickled, kept by the scheduler and shown on its dashboard.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import ConfigError
from orchestrator.export.exporters.base import ExportContext, Exporter, load_exporter

if TYPE_CHECKING:
    from orchestrator.config import DestinationConfig
    from orchestrator.export.transfer import Destination, TransferSettings
    from providers.aws import AwsAccount

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class EnvReference:
    """A secret option as the config wrote it (``${B2_KEY}``): resolved where it is used."""

    text: str

    def resolve(self, env: Mapping[str, str], where: str) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(
                    f"{where}: environment variable {name} is not set on this worker; "
                    f"export {name} where the worker runs (credentials never travel "
                    "with the tasks)"
                )
            return env[name]

        return _REFERENCE.sub(value, self.text)


@dataclass(frozen=True)
class SourceSpec:
    regions: tuple[str, ...]
    profile: str | None = None
    endpoint_url: str | None = None
    direct_http: bool = True
    max_pool_connections: int = 64


@dataclass(frozen=True)
class DestinationSpec:
    #: The journal's name for it (a drill's is ``<name>~drill``).
    name: str
    #: The name the config gives it.
    config_name: str
    driver: str
    #: Options, secret ones as ``EnvReference``.
    options: tuple[tuple[str, Any], ...]
    #: A drill's scratch prefix (``exitplan-drill/<run>/``), or None.
    scratch_prefix: str | None = None


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker elsewhere needs for one run's items. Holds no secret."""

    run_id: str
    source: SourceSpec
    part_size: int
    destinations: tuple[DestinationSpec, ...]
    settings: TransferSettings
    #: Kinds whose items workers may copy (their exporters are portable).
    kinds: frozenset[str] = field(default_factory=frozenset)
    #: Bytes per second each worker process may read (its share of ``bwlimit``).
    worker_bwlimit: int | None = None

    def key(self) -> str:
        """Stable identity of the spec (a worker keeps one runtime per key)."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:24]


def worker_spec(
    *,
    run_id: str,
    account: AwsAccount,
    destinations: Sequence[Destination],
    configs: Sequence[DestinationConfig],
    part_size: int,
    settings: TransferSettings,
    kinds: frozenset[str],
) -> WorkerSpec | None:
    """The spec for this run, or None when a destination cannot be rebuilt elsewhere
    (it has no config, as in tests that build stores directly)."""
    from orchestrator.config import Secret
    from orchestrator.drill.scratch import ScratchStore, scratch_name

    by_name = {c.name: c for c in configs}
    by_scratch = {scratch_name(c.name): c for c in configs}
    specs = []
    for destination in destinations:
        config = by_name.get(destination.name) or by_scratch.get(destination.name)
        if config is None:
            return None
        options: list[tuple[str, Any]] = []
        for option, value in config.options.items():
            if isinstance(value, Secret):
                if not value.reference:
                    return None
                options.append((option, EnvReference(value.reference)))
            elif isinstance(value, Path):
                options.append((option, str(value)))
            else:
                options.append((option, value))
        store = destination.store
        prefix = store.prefix if isinstance(store, ScratchStore) else None
        specs.append(
            DestinationSpec(destination.name, config.name, config.driver, tuple(options), prefix)
        )
    return WorkerSpec(
        run_id=run_id,
        source=SourceSpec(
            regions=tuple(account.regions),
            profile=account.profile,
            endpoint_url=account.endpoint_url,
            direct_http=account.direct_http,
            max_pool_connections=account.max_pool_connections,
        ),
        part_size=part_size,
        destinations=tuple(specs),
        settings=settings,
        kinds=kinds,
    )


class _NoTiers:
    """Workers get items with their tier already set: nothing to rank."""

    def __call__(self, source: Mapping[str, Any]) -> str:
        return ""

    def rank(self, source: Mapping[str, Any]) -> int:
        return 0


class BuiltFromSpec:
    """A worker's source account, exporters and destinations, built from a spec
    with this process's environment (its credentials)."""

    def __init__(self, spec: WorkerSpec, env: Mapping[str, str] | None = None) -> None:
        from orchestrator.export.transfer import Destination
        from providers.aws import AwsAccount

        self.spec = spec
        env = dict(os.environ) if env is None else env
        source = spec.source
        self.account = AwsAccount(
            regions=source.regions,
            profile=source.profile,
            endpoint_url=source.endpoint_url,
            max_pool_connections=source.max_pool_connections,
            direct_http=source.direct_http,
        )
        self.destinations = [Destination(d.name, _build_store(d, env)) for d in spec.destinations]
        self._lock = threading.Lock()
        self._exporters: dict[str, Exporter] = {}

    def exporter(self, kind: str) -> Exporter:
        if kind not in self.spec.kinds:
            raise ConfigError(f"items of kind {kind!r} are not copied on workers elsewhere")
        with self._lock:
            exporter = self._exporters.get(kind)
            if exporter is None:
                context = ExportContext(run_id=self.spec.run_id, part_size=self.spec.part_size)
                exporter = load_exporter(kind)(self.account, tier_of=_NoTiers(), context=context)
                self._exporters[kind] = exporter
            return exporter


def _build_store(spec: DestinationSpec, env: Mapping[str, str]) -> Any:
    from orchestrator.drill.scratch import ScratchStore
    from providers.registry import get_provider_spec, load_provider_class

    options = {
        name: value.resolve(env, f"destination {spec.config_name}: {name}")
        if isinstance(value, EnvReference)
        else value
        for name, value in spec.options
    }
    cls = load_provider_class(get_provider_spec("storage", spec.driver))
    store = cls(spec.config_name, **options)
    if spec.scratch_prefix is not None:
        store = ScratchStore(store, spec.scratch_prefix)
    return store
