"""Templating for playbooks: Jinja2's sandboxed environment, strict about names,
and the redactor that keeps secret values out of everything a step reports.

Templates are data from a file a person wrote, so they run in
``SandboxedEnvironment`` (no attribute access to Python internals, no
``__class__`` tricks) with ``StrictUndefined`` (a name that is not defined is
an error, never an empty string that turns ``rm -rf {{ dir }}/`` into
``rm -rf /``). Nothing is HTML-escaped: the output is command arguments and
config files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.meta import find_undeclared_variables
from jinja2.sandbox import SandboxedEnvironment

#: Names every template may use besides the playbook's ``vars``.
BUILTIN_NAMES = frozenset({"secrets", "artifacts", "facts", "steps", "host", "exitplan"})


def _from_json(text: str) -> Any:
    return json.loads(text)


def _to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _octal(value: Any) -> str:
    return format(int(str(value), 8), "04o")


def _hash_int(value: Any) -> int:
    """A stable number from text (a port that stays the same for the same target)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(str(value).encode()).digest()[:4], "big")


def _dirname(value: Any) -> str:
    return str(value).rstrip("/").rpartition("/")[0] or "/"


def make_environment() -> SandboxedEnvironment:
    """The one environment every playbook template is parsed and rendered in."""
    env = SandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=False,
    )
    env.filters["from_json"] = _from_json
    env.filters["to_json"] = _to_json
    env.filters["octal"] = _octal
    env.filters["hash_int"] = _hash_int
    env.filters["dirname"] = _dirname
    return env


ENVIRONMENT = make_environment()


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


def undeclared_names(text: str) -> set[str]:
    """Top-level names a template reads; raises ``TemplateError`` for bad syntax."""
    return set(find_undeclared_variables(ENVIRONMENT.parse(text)))


def attribute_uses(text: str, root: str) -> set[str]:
    """Names used as ``root.NAME`` or ``root['NAME']`` in a template (static ones only)."""
    found: set[str] = set()
    for node in ENVIRONMENT.parse(text).find_all((nodes.Getattr, nodes.Getitem)):
        target = getattr(node, "node", None)
        if not (isinstance(target, nodes.Name) and target.name == root):
            continue
        if isinstance(node, nodes.Getattr):
            found.add(node.attr)
        elif isinstance(node, nodes.Getitem):
            arg = node.arg
            if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
                found.add(arg.value)
    return found


class RenderError(Exception):
    """A template failed at render time (a name missing from the context, a bad filter)."""


def render_text(text: str, context: Mapping[str, Any]) -> str:
    """Render one string; a plain string (no ``{{``/``{%``) comes back as is."""
    if not is_template(text):
        return text
    try:
        return ENVIRONMENT.from_string(text).render(context)
    except TemplateError as exc:
        raise RenderError(str(exc)) from None


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside ``value`` (lists and mappings walked, keys kept)."""
    if isinstance(value, str):
        return render_text(value, context)
    if isinstance(value, list | tuple):
        return [render_value(v, context) for v in value]
    if isinstance(value, Mapping):
        return {k: render_value(v, context) for k, v in value.items()}
    return value


def evaluate_condition(expression: str, context: Mapping[str, Any]) -> bool:
    """An ``if:`` expression (Jinja expression syntax, no braces) as a boolean."""
    try:
        return bool(ENVIRONMENT.compile_expression(expression)(**context))
    except TemplateError as exc:
        raise RenderError(str(exc)) from None


def condition_names(expression: str) -> set[str]:
    """Top-level names an ``if:`` expression reads."""
    return undeclared_names("{{ " + expression + " }}")


# --------------------------------------------------------------------------- redaction

#: Shorter values would blank out ordinary words; a secret that short is no secret.
MIN_SECRET_LENGTH = 4


class Redactor:
    """Replaces every known secret value with ``<secret:NAME>``.

    Values are registered when the bundle is opened, with the forms they take
    on the way out: as written, JSON-escaped (a value inside a JSON output or
    a diff of a JSON file) and, for a secret that is itself a JSON object, each
    string inside it. Longest first, so a value containing another is
    replaced whole. Thread-safe for reading once filled.
    """

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._pattern: re.Pattern[str] | None = None

    def add(self, name: str, value: str) -> None:
        for form in _forms(value):
            if len(form) >= MIN_SECRET_LENGTH:
                self._values.setdefault(form, name)
        self._pattern = None

    def values(self) -> Iterable[str]:
        return tuple(self._values)

    def __bool__(self) -> bool:
        return bool(self._values)

    def text(self, text: str) -> str:
        """``text`` with every secret value replaced."""
        if not self._values or not text:
            return text
        if self._pattern is None:
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))
        return self._pattern.sub(lambda m: f"<secret:{self._values[m.group(0)]}>", text)

    def value(self, value: Any) -> Any:
        """A copy of a JSON-able ``value`` with every string redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        return value

    def contains_secret(self, text: str) -> bool:
        return bool(self._values) and self.text(text) != text


def _forms(value: str) -> list[str]:
    forms = [value, json.dumps(value)[1:-1]]
    try:
        inner = json.loads(value)
    except ValueError:
        inner = None
    if isinstance(inner, Mapping | list):
        forms.extend(_strings(inner))
    for line in value.splitlines():
        if line.strip() and line != value:
            forms.append(line)
    return forms


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
        yield json.dumps(value)[1:-1]
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
