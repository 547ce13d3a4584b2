"""The playbook format, read and validated before anything runs on any host.

```yaml
name: microblog
vars: {port: 8080, target: "{{ facts.service_root }}/exitplan-target"}
secrets:                       # references into the exported bundle, never values
  db_password: {secret: microblog/db-password}
  smtp_password: {parameter: /microblog/smtp-password}
artifacts:                     # manifest keys of the export (or a prefix)
  dump: rds/us-east-1/microblog-db/dump.tar
  media: {prefix: s3/microblog-user-media/}
defaults: {timeout: 120, retries: 0, retry_delay: 2, on_failure: abort}
steps:
  - id: app-dir
    name: the service's directory
    directory: {path: "{{ target }}", mode: "0755"}
    notify: restart-web
handlers:
  - id: restart-web
    service: {name: web, state: restarted, command: [...]}
service: {url: "http://127.0.0.1:{{ port }}/"}
```

Every problem is one ``ConfigError`` (exit 2) shaped ``FILE:LINE:COLUMN:
what is wrong; how to fix it``: bad YAML, an unknown key or op, a missing or
unknown op argument, a duplicate step id, a ``notify`` of a handler that
does not exist, a template naming an undefined variable (or a secret,
artifact or step that is not declared), an artifact the manifest does not
hold, a literal secret, a secret in a command line, a path with ``..``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml
from jinja2 import TemplateSyntaxError
from yaml.constructor import SafeConstructor

from orchestrator.errors import ConfigError
from orchestrator.replay.ops import OPS
from orchestrator.replay.ops.base import Arg, Op
from orchestrator.replay.secrets import SecretRef
from orchestrator.replay.templating import (
    BUILTIN_NAMES,
    ENVIRONMENT,
    attribute_uses,
    condition_names,
    is_template,
    undeclared_names,
)

TOP_KEYS = ("name", "vars", "secrets", "artifacts", "defaults", "steps", "handlers", "service")
STEP_KEYS = (
    "id",
    "name",
    "if",
    "timeout",
    "retries",
    "retry_delay",
    "on_failure",
    "notify",
    "undo",
)
DEFAULT_KEYS = ("timeout", "retries", "retry_delay", "on_failure")
ON_FAILURE = ("abort", "continue")
DEFAULT_TIMEOUT_S = 300.0

#: Names that say "this is a credential": a literal value under one is refused.
_SECRETIVE = re.compile(r"pass(word|wd)?$|secret|token|api_?key|private_?key|credential", re.I)
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class ArtifactRef:
    """An exported object (``key``) or every object under ``prefix``."""

    name: str
    key: str | None
    prefix: str | None
    where: str


@dataclass(frozen=True)
class StepSpec:
    """One step or handler as written (templates not yet rendered)."""

    id: str
    op: str
    args: Mapping[str, Any]
    name: str
    condition: str | None
    timeout: float
    retries: int
    retry_delay: float
    on_failure: str
    notify: tuple[str, ...]
    #: None: the op's own undo; "none": record nothing; a mapping: {op: args} run at rollback.
    undo: Any
    where: str
    handler: bool = False

    @property
    def title(self) -> str:
        return self.name or f"{self.op} {self.id}"


@dataclass(frozen=True)
class ServiceCheckSpec:
    """How ``verify-service`` proves the service serves the source's data."""

    #: "rows": a JSON endpoint of table counts against a dump's counts;
    #: "files": objects of an artifact prefix fetched over HTTP, by sha256.
    kind: str
    path: str
    artifact: str
    database: str = ""
    sample: int = 1


@dataclass(frozen=True)
class ServiceSpec:
    url: str
    health: str = "/"
    checks: tuple[ServiceCheckSpec, ...] = ()


@dataclass(frozen=True)
class Playbook:
    path: Path
    name: str
    vars: Mapping[str, Any]
    secrets: Mapping[str, SecretRef]
    artifacts: Mapping[str, ArtifactRef]
    steps: tuple[StepSpec, ...]
    handlers: tuple[StepSpec, ...]
    service: ServiceSpec | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def directory(self) -> Path:
        return self.path.parent

    def step(self, step_id: str) -> StepSpec:
        for step in (*self.steps, *self.handlers):
            if step.id == step_id:
                return step
        raise KeyError(step_id)


# --------------------------------------------------------------------------- reading


class _Reader:
    """Walks the composed YAML tree, failing at the first problem with its position."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._constructor = SafeConstructor()

    def where(self, node: yaml.Node) -> str:
        mark = node.start_mark
        return f"{self.source}:{mark.line + 1}:{mark.column + 1}"

    def fail(self, node: yaml.Node, message: str) -> NoReturn:
        raise ConfigError(f"{self.where(node)}: {message}")

    def value(self, node: yaml.Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def mapping(
        self, node: yaml.Node, known: Sequence[str], what: str
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"{what} must be a mapping of 'key: value' lines")
        entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.fail(key_node, f"{what}: keys must be plain words")
            key = str(key_node.value)
            if key in entries:
                line = entries[key][0].start_mark.line + 1
                self.fail(
                    key_node, f"{what}: {key!r} is given twice (first at line {line}); keep one"
                )
            if known and key not in known:
                self.fail(key_node, f"{what}: unknown key {key!r}; {_suggest(key, known)}")
            entries[key] = (key_node, value_node)
        return entries

    def text(self, node: yaml.Node, what: str) -> str:
        value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(value, bool) or value is None or not isinstance(node, yaml.ScalarNode):
            self.fail(node, f"{what} must be text")
        return str(value)

    def number(self, node: yaml.Node, what: str, *, low: float = 0) -> float:
        value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
            self.fail(node, f"{what} must be a number of at least {low:g}")
        return float(value)

    def strings(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node]]:
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        return [(self.text(item, what), item) for item in items]


def _suggest(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}known: {', '.join(known)}"


def _parse(text: str, source: str) -> yaml.Node:
    try:
        yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else f"{source}:1:1"
        hint = "fix the syntax here"
        if "{{" in text and exc.problem and "mapping" in exc.problem:
            hint += '; a value that starts with "{{" must be quoted'
        raise ConfigError(f"{where}: invalid YAML: {exc.problem}; {hint}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}:1:1: invalid YAML: {exc}") from None
    if root is None:
        raise ConfigError(f"{source}:1:1: the playbook is empty; start with 'steps:'")
    return root


def load_playbook(path: Path, manifest_keys: set[str] | None = None) -> Playbook:
    """Read and validate the playbook at ``path``.

    ``manifest_keys``: the export's manifest, to check every artifact
    against (None skips that check: no export to compare with yet). Raises
    ``ConfigError`` for the first problem; nothing else happens.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: playbook not found; check --playbook or `playbook:`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the playbook ({exc})") from None
    return parse_playbook(text, path, manifest_keys)


def parse_playbook(text: str, path: Path, manifest_keys: set[str] | None = None) -> Playbook:
    """Validate playbook ``text`` (named ``path`` in messages); see ``load_playbook``."""
    source = str(path)
    r = _Reader(source)
    root = _parse(text, source)
    top = r.mapping(root, TOP_KEYS, "the playbook")
    if "steps" not in top:
        r.fail(
            root, "the playbook has no 'steps:'; add a list of steps, each '- id: ...' and one op"
        )
    name = r.text(top["name"][1], "name") if "name" in top else path.stem

    variables: dict[str, Any] = {}
    var_nodes: dict[str, yaml.Node] = {}
    if "vars" in top:
        for key, (key_node, value_node) in r.mapping(top["vars"][1], (), "vars").items():
            if not _ID.fullmatch(key) or key in BUILTIN_NAMES:
                r.fail(key_node, f"vars: {key!r} cannot be a variable name (letters, digits, _)")
            value = r.value(value_node)
            if (
                _SECRETIVE.search(key)
                and isinstance(value, str)
                and value
                and not is_template(value)
            ):
                r.fail(value_node, _literal_secret(f"vars.{key}"))
            variables[key] = value
            var_nodes[key] = value_node

    secrets = _read_secrets(r, top["secrets"][1]) if "secrets" in top else {}
    artifacts = _read_artifacts(r, top["artifacts"][1], manifest_keys) if "artifacts" in top else {}
    defaults: dict[str, Any] = {}
    if "defaults" in top:
        for key, (_, value_node) in r.mapping(top["defaults"][1], DEFAULT_KEYS, "defaults").items():
            defaults[key] = _step_setting(r, key, value_node, "defaults")

    names = set(variables) | BUILTIN_NAMES | set(ENVIRONMENT.globals)
    checker = _TemplateChecker(r, names, secrets, artifacts)
    for key, node in var_nodes.items():
        checker.walk(variables[key], node, secret_ok=False, arg=f"vars.{key}")

    steps_node = top["steps"][1]
    if not isinstance(steps_node, yaml.SequenceNode) or not steps_node.value:
        r.fail(steps_node, "steps: must be a list of steps, each '- id: ...' and one op")
    handlers_node = top["handlers"][1] if "handlers" in top else None
    if handlers_node is not None and not isinstance(handlers_node, yaml.SequenceNode):
        r.fail(handlers_node, "handlers: must be a list, each '- id: ...' and one op")
    seen: dict[str, yaml.Node] = {}
    steps = [_read_step(r, node, defaults, seen, handler=False) for node in steps_node.value]
    handlers = [
        _read_step(r, node, defaults, seen, handler=True)
        for node in (handlers_node.value if handlers_node is not None else [])
    ]
    handler_ids = {h.id for h in handlers}
    step_ids: list[str] = []
    for spec, node in zip(
        [*steps, *handlers],
        [*steps_node.value, *(handlers_node.value if handlers_node is not None else [])],
        strict=True,
    ):
        entries = r.mapping(node, (), "step")
        for target, target_node in _notify_nodes(r, entries):
            if target not in handler_ids:
                r.fail(
                    target_node,
                    f"step {spec.id!r} notifies {target!r}, which is not a handler; "
                    + (
                        _suggest(target, sorted(handler_ids))
                        if handler_ids
                        else "add it under 'handlers:'"
                    ),
                )
        checker.step_ids = set(step_ids) if not spec.handler else {s.id for s in steps}
        _check_step(r, checker, spec, entries)
        if not spec.handler:
            step_ids.append(spec.id)

    service = _read_service(r, top["service"][1], artifacts, checker) if "service" in top else None
    return Playbook(
        path=path,
        name=name,
        vars=variables,
        secrets=secrets,
        artifacts=artifacts,
        steps=tuple(steps),
        handlers=tuple(handlers),
        service=service,
        defaults=defaults,
    )


def _literal_secret(field_name: str) -> str:
    return (
        f"{field_name} holds a literal secret; secrets never go in a playbook: declare it "
        "under 'secrets:' as a reference into the export ({secret: NAME} or {parameter: NAME}) "
        "and use it as '{{ secrets.NAME }}'"
    )


def _read_secrets(r: _Reader, node: yaml.Node) -> dict[str, SecretRef]:
    refs = {}
    for key, (key_node, value_node) in r.mapping(node, (), "secrets").items():
        if not _ID.fullmatch(key):
            r.fail(key_node, f"secrets: {key!r} is not a usable name (letters, digits, _)")
        if not isinstance(value_node, yaml.MappingNode):
            r.fail(value_node, _literal_secret(f"secrets.{key}"))
        entries = r.mapping(value_node, ("secret", "parameter", "key", "region"), f"secrets.{key}")
        sources = [s for s in ("secret", "parameter") if s in entries]
        if len(sources) != 1:
            r.fail(
                value_node,
                f"secrets.{key}: give exactly one of 'secret: NAME' (Secrets Manager) or "
                "'parameter: NAME' (SSM)",
            )
        source = sources[0]
        refs[key] = SecretRef(
            name=key,
            source=source,
            source_name=r.text(entries[source][1], f"secrets.{key}.{source}"),
            key=r.text(entries["key"][1], f"secrets.{key}.key") if "key" in entries else None,
            region=r.text(entries["region"][1], f"secrets.{key}.region")
            if "region" in entries
            else None,
            where=r.where(value_node),
        )
    return refs


def _check_key(r: _Reader, node: yaml.Node, key: str, what: str) -> str:
    if ".." in key.split("/") or key.startswith("/"):
        r.fail(node, f"{what}: {key!r} must be a relative manifest key without '..'")
    return key


def _read_artifacts(
    r: _Reader, node: yaml.Node, manifest_keys: set[str] | None
) -> dict[str, ArtifactRef]:
    artifacts = {}
    for name, (key_node, value_node) in r.mapping(node, (), "artifacts").items():
        if not _ID.fullmatch(name):
            r.fail(key_node, f"artifacts: {name!r} is not a usable name (letters, digits, _)")
        key = prefix = None
        if isinstance(value_node, yaml.MappingNode):
            entries = r.mapping(value_node, ("key", "prefix"), f"artifacts.{name}")
            if len(entries) != 1:
                r.fail(value_node, f"artifacts.{name}: give one of 'key: K' or 'prefix: P/'")
            field_name, (_, at) = next(iter(entries.items()))
            text = _check_key(
                r, at, r.text(at, f"artifacts.{name}.{field_name}"), f"artifacts.{name}"
            )
            key, prefix = (text, None) if field_name == "key" else (None, text)
        else:
            at = value_node
            key = _check_key(r, at, r.text(at, f"artifacts.{name}"), f"artifacts.{name}")
        if manifest_keys is not None:
            if key is not None and key not in manifest_keys:
                close = difflib.get_close_matches(key, sorted(manifest_keys), n=1, cutoff=0.6)
                r.fail(
                    at,
                    f"artifacts.{name}: {key!r} is not in the export's manifest"
                    + (
                        f"; did you mean {close[0]!r}?"
                        if close
                        else "; `exitplan verify` lists what was saved"
                    )
                    + " (was it exported? see the run's report)",
                )
            if prefix is not None and not any(k.startswith(prefix) for k in manifest_keys):
                r.fail(
                    at, f"artifacts.{name}: nothing in the export's manifest starts with {prefix!r}"
                )
        artifacts[name] = ArtifactRef(name, key, prefix, r.where(at))
    return artifacts


def _step_setting(r: _Reader, key: str, node: yaml.Node, what: str) -> Any:
    if key in ("timeout", "retry_delay"):
        return r.number(node, f"{what}.{key}", low=0)
    if key == "retries":
        value = r.number(node, f"{what}.retries", low=0)
        if value != int(value):
            r.fail(node, f"{what}.retries must be a whole number")
        return int(value)
    if key == "on_failure":
        text = r.text(node, f"{what}.on_failure")
        if text not in ON_FAILURE:
            r.fail(node, f"{what}.on_failure: {text!r}; use abort or continue")
        return text
    raise AssertionError(key)


def _notify_nodes(
    r: _Reader, entries: Mapping[str, tuple[yaml.Node, yaml.Node]]
) -> list[tuple[str, yaml.Node]]:
    if "notify" not in entries:
        return []
    return r.strings(entries["notify"][1], "notify")


def _read_step(
    r: _Reader,
    node: yaml.Node,
    defaults: Mapping[str, Any],
    seen: dict[str, yaml.Node],
    *,
    handler: bool,
) -> StepSpec:
    what = "handler" if handler else "step"
    entries = r.mapping(node, (), what)
    if "id" not in entries:
        r.fail(node, f"this {what} has no 'id:'; give it a stable id, e.g. '- id: app-config'")
    id_node = entries["id"][1]
    step_id = r.text(id_node, "id")
    if not _ID.fullmatch(step_id):
        r.fail(id_node, f"id {step_id!r}: use letters, digits, '-', '_' and '.'")
    if step_id in seen:
        line = seen[step_id].start_mark.line + 1
        r.fail(id_node, f"duplicate step id {step_id!r} (first at line {line}); ids must be unique")
    seen[step_id] = id_node
    ops = [key for key in entries if key not in STEP_KEYS]
    if not ops:
        r.fail(node, f"{what} {step_id!r} has no op; add one of: {', '.join(sorted(OPS))}")
    for key in ops:
        if key not in OPS:
            r.fail(
                entries[key][0],
                f"{what} {step_id!r}: unknown op or key {key!r}; "
                + _suggest(key, [*sorted(OPS), *STEP_KEYS]),
            )
    if len(ops) > 1:
        r.fail(
            entries[ops[1]][0],
            f"{what} {step_id!r} has two ops ({', '.join(ops)}); one op per step",
        )
    op_name = ops[0]
    op = OPS[op_name]
    args = _read_args(r, op, entries[op_name][1], step_id)
    settings = dict(defaults)
    for key in DEFAULT_KEYS:
        if key in entries:
            settings[key] = _step_setting(r, key, entries[key][1], step_id)
    condition = None
    if "if" in entries:
        condition = r.text(entries["if"][1], "if")
    undo: Any = None
    if "undo" in entries:
        undo_node = entries["undo"][1]
        value = r.value(undo_node)
        if value in ("none", False):
            undo = "none"
        elif isinstance(undo_node, yaml.MappingNode):
            undo_entries = r.mapping(undo_node, sorted(OPS), f"{step_id}.undo")
            if len(undo_entries) != 1:
                r.fail(undo_node, f"{step_id}.undo: give one op, e.g. 'undo: {{command: [...]}}'")
            undo_op, (_, undo_args) = next(iter(undo_entries.items()))
            undo = {undo_op: _read_args(r, OPS[undo_op], undo_args, f"{step_id}.undo")}
        else:
            r.fail(
                undo_node,
                f"{step_id}.undo: write 'none' or one op mapping, e.g. {{command: [...]}}",
            )
    return StepSpec(
        id=step_id,
        op=op_name,
        args=args,
        name=r.text(entries["name"][1], "name") if "name" in entries else "",
        condition=condition,
        timeout=float(settings.get("timeout", DEFAULT_TIMEOUT_S)),
        retries=int(settings.get("retries", 0)),
        retry_delay=float(settings.get("retry_delay", 1.0)),
        on_failure=str(settings.get("on_failure", "abort")),
        notify=tuple(t for t, _ in _notify_nodes(r, entries)),
        undo=undo,
        where=r.where(id_node),
        handler=handler,
    )


def _read_args(r: _Reader, op: Op, node: yaml.Node, step_id: str) -> dict[str, Any]:
    what = f"{step_id}: {op.name}"
    if not isinstance(node, yaml.MappingNode):
        if op.short is None:
            r.fail(node, f"{what} takes a mapping of arguments ({', '.join(op.args)})")
        entries_values = {op.short: (node, node)}
    else:
        entries_values = r.mapping(node, list(op.args), what)
    args: dict[str, Any] = {}
    for key, (_, value_node) in entries_values.items():
        spec = op.args[key]
        value = r.value(value_node)
        _check_literal(r, spec, value, value_node, f"{what}.{key}")
        if _SECRETIVE.search(key) and isinstance(value, str) and value and not is_template(value):
            r.fail(value_node, _literal_secret(f"{what}.{key}"))
        if spec.kind == "env" and isinstance(value, dict):
            for env_name, env_value in value.items():
                if (
                    _SECRETIVE.search(str(env_name))
                    and isinstance(env_value, str)
                    and env_value
                    and not is_template(env_value)
                ):
                    r.fail(value_node, _literal_secret(f"{what}.{key}.{env_name}"))
        args[key] = value
    for key, spec in op.args.items():
        if spec.required and key not in args:
            r.fail(node, f"{what}: required argument {key!r} is missing ({spec.doc})")
    return args


def _check_literal(r: _Reader, spec: Arg, value: Any, node: yaml.Node, what: str) -> None:
    """Types of values written literally (a template is checked when it is rendered)."""
    if isinstance(value, str) and is_template(value):
        return
    kind = spec.kind
    if kind in ("argv", "strings"):
        if kind == "argv" and isinstance(value, str):
            r.fail(
                node,
                f"{what} must be a list of arguments, e.g. [pg_ctl, start]; a command line as "
                "one string would need a shell: use the 'shell' op for that, on purpose",
            )
        items = value if isinstance(value, list) else [value]
        if kind == "argv" and not items:
            r.fail(node, f"{what} is empty: name the program to run")
        for item, item_node in zip(
            items, node.value if isinstance(node, yaml.SequenceNode) else [node], strict=False
        ):
            if isinstance(item, dict | list) or item is None:
                r.fail(item_node, f"{what}: each argument must be text or a number")
    elif kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        r.fail(node, f"{what} must be a whole number")
    elif kind == "float" and (isinstance(value, bool) or not isinstance(value, int | float)):
        r.fail(node, f"{what} must be a number")
    elif kind == "bool" and not isinstance(value, bool):
        r.fail(node, f"{what} must be true or false")
    elif kind == "env" and not isinstance(value, dict):
        r.fail(node, f"{what} must be a mapping of NAME: value")
    elif kind in ("path", "local") and isinstance(value, str):
        if ".." in value.split("/"):
            r.fail(node, f"{what}: {value!r} contains '..'; write the path without it")
        if kind == "path" and not value.startswith("/"):
            r.fail(node, f"{what}: {value!r} must be an absolute path on the host")
        if kind == "local" and value.startswith("/"):
            r.fail(node, f"{what}: {value!r} must be relative to the playbook's directory")


class _TemplateChecker:
    """Every template names only what is defined; secrets only where they may go."""

    def __init__(
        self,
        r: _Reader,
        names: set[str],
        secrets: Mapping[str, SecretRef],
        artifacts: Mapping[str, ArtifactRef],
    ) -> None:
        self.r = r
        self.names = names
        self.secrets = secrets
        self.artifacts = artifacts
        self.step_ids: set[str] = set()

    def check_text(
        self, text: str, node: yaml.Node, *, secret_ok: bool, arg: str, expression: bool = False
    ) -> None:
        if not expression and not is_template(text):
            return
        source = "{{ " + text + " }}" if expression else text
        try:
            used = condition_names(text) if expression else undeclared_names(text)
        except TemplateSyntaxError as exc:
            self.r.fail(node, f"{arg}: template syntax error: {exc.message}")
        unknown = sorted(used - self.names)
        if unknown:
            known = sorted(self.names - set(ENVIRONMENT.globals))
            self.r.fail(
                node,
                f"{arg}: undefined variable {unknown[0]!r}; define it under 'vars:' "
                f"({_suggest(unknown[0], known)})",
            )
        for root, declared, fix in (
            ("secrets", set(self.secrets), "declare it under 'secrets:'"),
            ("artifacts", set(self.artifacts), "declare it under 'artifacts:'"),
            ("steps", self.step_ids, "name a step that runs before this one"),
        ):
            for name in sorted(attribute_uses(source, root) - declared):
                self.r.fail(node, f"{arg}: {root}.{name} is not defined; {fix}")
        if "secrets" in used and not secret_ok:
            self.r.fail(
                node,
                f"{arg}: a secret here would show in process listings and logs; secrets reach "
                "the host only through 'env:' or a file the 'template' op writes with mode 0600",
            )

    def walk(self, value: Any, node: yaml.Node, *, secret_ok: bool, arg: str) -> None:
        if isinstance(value, str):
            self.check_text(value, node, secret_ok=secret_ok, arg=arg)
        elif isinstance(value, list) and isinstance(node, yaml.SequenceNode):
            for item, item_node in zip(value, node.value, strict=False):
                self.walk(item, item_node, secret_ok=secret_ok, arg=arg)
        elif isinstance(value, dict) and isinstance(node, yaml.MappingNode):
            for (_, value_node), item in zip(node.value, value.values(), strict=False):
                self.walk(item, value_node, secret_ok=secret_ok, arg=arg)


def _check_step(
    r: _Reader,
    checker: _TemplateChecker,
    spec: StepSpec,
    entries: Mapping[str, tuple[yaml.Node, yaml.Node]],
) -> None:
    op = OPS[spec.op]
    op_node = entries[spec.op][1]
    arg_nodes: dict[str, yaml.Node] = {}
    if isinstance(op_node, yaml.MappingNode):
        for key_node, value_node in op_node.value:
            arg_nodes[str(key_node.value)] = value_node
    elif op.short:
        arg_nodes[op.short] = op_node
    for key, value in spec.args.items():
        arg_spec = op.args[key]
        checker.walk(
            value,
            arg_nodes.get(key, op_node),
            secret_ok=arg_spec.secret_ok,
            arg=f"{spec.id}: {op.name}.{key}",
        )
        if (
            arg_spec.kind == "artifact"
            and isinstance(value, str)
            and not is_template(value)
            and value not in checker.artifacts
        ):
            r.fail(
                arg_nodes.get(key, op_node),
                f"{spec.id}: {op.name}.{key}: no artifact {value!r}; declare it under 'artifacts:'",
            )
    if spec.condition is not None:
        checker.check_text(
            spec.condition, entries["if"][1], secret_ok=False, arg=f"{spec.id}: if", expression=True
        )
    if isinstance(spec.undo, dict):
        ((_, undo_args),) = spec.undo.items()
        checker.walk(undo_args, entries["undo"][1], secret_ok=False, arg=f"{spec.id}: undo")
    if op.name == "template" and "src" in spec.args:
        _check_template_file(r, checker, spec, arg_nodes.get("src", op_node))


def _check_template_file(
    r: _Reader, checker: _TemplateChecker, spec: StepSpec, node: yaml.Node
) -> None:
    src = spec.args["src"]
    if not isinstance(src, str) or is_template(src):
        return
    path = Path(r.source).parent / src
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        r.fail(
            node, f"{spec.id}: template.src: no file {path}; put the template next to the playbook"
        )
    try:
        checker.check_text(text, node, secret_ok=True, arg=f"{spec.id}: template {src}")
    except ConfigError as exc:
        raise ConfigError(
            str(exc).replace("template syntax error", f"in {src}: template syntax error")
        ) from None


def _read_service(
    r: _Reader, node: yaml.Node, artifacts: Mapping[str, ArtifactRef], checker: _TemplateChecker
) -> ServiceSpec:
    entries = r.mapping(node, ("url", "health", "checks"), "service")
    if "url" not in entries:
        r.fail(node, "service: needs 'url:', where the service answers once it is up")
    url = r.text(entries["url"][1], "service.url")
    checker.check_text(url, entries["url"][1], secret_ok=False, arg="service.url")
    health = r.text(entries["health"][1], "service.health") if "health" in entries else "/"
    checks = []
    if "checks" in entries:
        checks_node = entries["checks"][1]
        if not isinstance(checks_node, yaml.SequenceNode):
            r.fail(checks_node, "service.checks must be a list")
        for item in checks_node.value:
            fields = r.mapping(
                item, ("rows", "files", "path", "artifact", "database", "sample"), "service.checks"
            )
            kinds = [k for k in ("rows", "files") if k in fields]
            if len(kinds) != 1:
                r.fail(item, "service.checks: each check is 'rows: true' or 'files: true'")
            for needed in ("path", "artifact"):
                if needed not in fields:
                    r.fail(item, f"service.checks: '{needed}:' is missing")
            artifact = r.text(fields["artifact"][1], "artifact")
            if artifact not in artifacts:
                r.fail(
                    fields["artifact"][1],
                    f"service.checks: no artifact {artifact!r}; declare it under 'artifacts:'",
                )
            checks.append(
                ServiceCheckSpec(
                    kind=kinds[0],
                    path=r.text(fields["path"][1], "path"),
                    artifact=artifact,
                    database=r.text(fields["database"][1], "database")
                    if "database" in fields
                    else "",
                    sample=int(r.number(fields["sample"][1], "sample", low=1))
                    if "sample" in fields
                    else 1,
                )
            )
    return ServiceSpec(url=url, health=health, checks=tuple(checks))
