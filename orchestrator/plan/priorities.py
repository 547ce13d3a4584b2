"""What to save first: priority tiers from config, applied to every item.

A rule matches a source description (``{"kind": "s3", "bucket": ...}``)
when every field it names matches one of its glob patterns. The first rule
that matches gives the tier; earlier rules save first. Sources no rule names
come last, in the tier ``unranked``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

UNRANKED = "unranked"


@dataclass(frozen=True)
class Rule:
    tier: str
    match: Mapping[str, tuple[str, ...]]

    def matches(self, source: Mapping[str, Any], only: Iterable[str] | None = None) -> bool:
        fields = self.match if only is None else {k: self.match[k] for k in only if k in self.match}
        for field, patterns in fields.items():
            value = source.get(field)
            if value is None or not any(fnmatchcase(str(value), p) for p in patterns):
                return False
        return True


class Prioritizer:
    """Callable: source description -> tier name; ``rank`` gives the order."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)

    def __call__(self, source: Mapping[str, Any]) -> str:
        index = self.rank(source)
        return self.rules[index].tier if index < len(self.rules) else UNRANKED

    def rank(self, source: Mapping[str, Any]) -> int:
        for index, rule in enumerate(self.rules):
            if rule.matches(source):
                return index
        return len(self.rules)

    def kind_rank(self, kind: str) -> int:
        """The earliest rule that could match anything of ``kind``."""
        for index, rule in enumerate(self.rules):
            if rule.matches({"kind": kind}, only=("kind",)):
                return index
        return len(self.rules)

    def order_kinds(self, kinds: Iterable[str]) -> list[str]:
        """Kinds in the order their most important items should be saved."""
        kinds = list(kinds)
        return sorted(kinds, key=lambda kind: (self.kind_rank(kind), kinds.index(kind)))
