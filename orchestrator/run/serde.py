"""Typed step outputs to JSON and back.

A step's output is a frozen dataclass. It is kept in the journal as JSON and
read back as the same type on resume, so a later step gets the chosen host
with its pinned key and login, not a dict that lost them on the way.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

T = TypeVar("T")


def to_json(value: Any) -> Any:
    """A JSON-able copy of ``value`` (dataclasses, datetimes, paths, enums, sets)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(to_json(v) for v in value)
    return value


def from_json(kind: Any, data: Any) -> Any:
    """Rebuild a value of type ``kind`` from what ``to_json`` made of it.

    Raises ``ValueError`` when ``data`` does not have that shape (a journal
    from another version of a step): the caller runs the step again.
    """
    if kind is Any or (data is None and _is_optional(kind)):
        return data
    origin = get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in get_args(kind) if arg is not type(None)]
        errors = []
        for option in options:
            try:
                return from_json(option, data)
            except (ValueError, TypeError, KeyError) as exc:
                errors.append(str(exc))
        raise ValueError(f"{data!r} fits none of {kind}: {'; '.join(errors)}")
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        if not isinstance(data, Mapping):
            raise ValueError(f"{kind.__name__}: expected an object, got {type(data).__name__}")
        hints = get_type_hints(kind)
        values = {}
        for field in dataclasses.fields(kind):
            if field.name in data:
                values[field.name] = from_json(hints[field.name], data[field.name])
            elif (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                raise ValueError(f"{kind.__name__}: missing field {field.name!r}")
        return kind(**values)
    if kind is datetime:
        return datetime.fromisoformat(data)
    if kind is timedelta:
        return timedelta(seconds=float(data))
    if kind is Path:
        return Path(data)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(data)
    if origin in (list, tuple, set, frozenset):
        args = get_args(kind)
        item = args[0] if args else Any
        items = [from_json(item, v) for v in data]
        return origin(items) if origin is not list else items
    if origin in (dict, Mapping) or kind is dict:
        args = get_args(kind)
        item = args[1] if len(args) == 2 else Any
        return {k: from_json(item, v) for k, v in data.items()}
    if kind in (int, float, str, bool):
        if kind is float and isinstance(data, int):
            return float(data)
        if not isinstance(data, kind):
            raise ValueError(f"expected {kind.__name__}, got {type(data).__name__}")
        return data
    return data


def _is_optional(kind: Any) -> bool:
    return get_origin(kind) in (typing.Union, types.UnionType) and type(None) in get_args(kind)
