"""Typed results to JSON and back: how a step's output survives in the journal.

A step's output is a frozen dataclass built from str, int, float, bool,
None, timezone-aware datetimes (ISO 8601), timedeltas (seconds), paths,
enums, tuples, lists, sets, dicts with string keys, Literals, and other
such dataclasses. ``to_json`` turns one into plain JSON values;
``from_json`` rebuilds it from its type hints, so
``from_json(T, to_json(x)) == x``. A resumed run therefore gets the chosen
host back with its pinned key and login, not a dict that lost them.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def to_json(value: Any) -> Any:
    """``value`` as JSON-serialisable data (dicts, lists, str, int, float, bool, None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: exitplan's times are timezone-aware")
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(to_json(v) for v in value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"{type(value).__name__} is not a JSON-able result type")


def from_json(cls: Any, data: Any) -> Any:
    """Rebuild a ``cls`` written by ``to_json``.

    Raises ``ValueError`` naming where ``data`` does not fit (a journal written
    by another version of a step): the caller runs the step again.
    """
    return _decode(cls, data, getattr(cls, "__name__", str(cls)))


def _decode(hint: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return data
    if origin in (typing.Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _decode(arg, data, where)
            except (ValueError, TypeError, KeyError) as exc:
                errors.append(str(exc))
        raise ValueError(f"{where}: {data!r} fits none of {args}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if data not in args:
            raise ValueError(f"{where}: {data!r} is not one of {args}")
        return data
    if origin is tuple:
        items = _list(data, where)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(items))
        if not args:
            return tuple(items)
        if len(args) != len(items):
            raise ValueError(f"{where}: expected {len(args)} items, got {len(items)}")
        return tuple(
            _decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, items, strict=True))
        )
    if origin in (list, set, frozenset):
        item = args[0] if args else Any
        values = [_decode(item, v, f"{where}[{i}]") for i, v in enumerate(_list(data, where))]
        return values if origin is list else origin(values)
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
        item = args[1] if len(args) == 2 else Any
        return {str(k): _decode(item, v, f"{where}.{k}") for k, v in data.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
        hints = typing.get_type_hints(hint)
        kwargs = {}
        for f in dataclasses.fields(hint):
            if not f.init:
                continue
            if f.name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ValueError(f"{where}: missing field {f.name!r}")
                continue
            kwargs[f.name] = _decode(hints[f.name], data[f.name], f"{where}.{f.name}")
        return hint(**kwargs)
    if hint is datetime:
        if not isinstance(data, str):
            raise ValueError(f"{where}: expected an ISO 8601 time, got {data!r}")
        parsed = datetime.fromisoformat(data)
        if parsed.tzinfo is None:
            raise ValueError(f"{where}: {data!r} has no timezone")
        return parsed
    if hint is timedelta and isinstance(data, int | float) and not isinstance(data, bool):
        return timedelta(seconds=float(data))
    if hint is Path and isinstance(data, str):
        return Path(data)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(data)
        except ValueError:
            raise ValueError(f"{where}: {data!r} is not a {hint.__name__}") from None
    if hint is float and isinstance(data, int | float) and not isinstance(data, bool):
        return float(data)
    if hint in (str, int, bool) and type(data) is hint:
        return data
    if hint is type(None) and data is None:
        return None
    raise ValueError(f"{where}: {data!r} is not a {getattr(hint, '__name__', hint)}")


def _list(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise ValueError(f"{where}: expected a list, got {type(data).__name__}")
    return data
