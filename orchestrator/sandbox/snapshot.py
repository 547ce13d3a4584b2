"""The state of moto's in-process backends as bytes, and back.

Seeding the sandbox through boto3 takes seconds (two thousand S3 puts, EC2's
catalogue, ...); loading what a seeding left behind takes a fraction of that.
:func:`capture_moto_state` pickles every moto backend in use, with the state
of moto's id generator, and :func:`restore_moto_state` puts them back into a
freshly reset ``mock_aws``, so the account is the same object for object and
id for id, and the next id moto draws is the one a fresh seeding would draw.

A pickle can run code when it is loaded, so these bytes must only ever come
from a file this user wrote (see ``orchestrator.sandbox.account``), and the
loader resolves only the classes a moto snapshot is made of.
"""

from __future__ import annotations

import collections
import functools
import importlib
import io
import pickle  # nosec B403 # only this user's own sandbox cache, by a restricted loader
import sys
import types
from typing import Any, BinaryIO

#: Bumped when the layout of the pickled payload changes.
SNAPSHOT_FORMAT = 1

#: Modules whose classes and functions a moto snapshot names (found by saving
#: one). Whatever else a file names refuses to load, so a file that is not a
#: snapshot fails instead of calling something arbitrary; builtins are limited
#: to plain data types.
_ALLOWED_MODULES = (
    "moto",
    "collections",
    "datetime",
    "functools",
    "ipaddress",
    "re",
    "requests.structures",
    "orchestrator.sandbox.snapshot",
)
_ALLOWED_BUILTINS = frozenset(
    {"dict", "list", "set", "frozenset", "tuple", "bytes", "bytearray", "str", "int", "float"}
)


class SnapshotError(Exception):
    """The moto state could not be captured or restored; seed instead."""


def _new_mapping(cls: type[dict[Any, Any]], factory: Any) -> dict[Any, Any]:
    """An empty ``cls`` made without its ``__init__`` (moto's take other arguments)."""
    if issubclass(cls, collections.defaultdict):
        made = collections.defaultdict.__new__(cls)
        collections.defaultdict.__init__(made, factory)
        return made
    return dict.__new__(cls)


def _fill_mapping(
    made: dict[Any, Any], state: tuple[dict[Any, Any], dict[str, Any] | None]
) -> None:
    """Put back the raw entries (past any ``__setitem__`` override) and attributes."""
    entries, attributes = state
    dict.update(made, entries)
    if attributes:
        made.__dict__.update(attributes)


def _portable_factory(factory: Any) -> Any:
    """``factory`` in a form pickle can name: a lambda becomes what it builds.

    moto writes ``defaultdict(lambda: defaultdict(dict))``; calling the lambda
    shows the shape, which ``functools.partial`` reproduces.
    """
    if factory is None or getattr(factory, "__name__", "") != "<lambda>":
        return factory
    sample = factory()
    if isinstance(sample, collections.defaultdict) and sample.default_factory in (
        dict,
        list,
        set,
        int,
    ):
        return functools.partial(collections.defaultdict, sample.default_factory)
    if type(sample) in (dict, list, set, int) and not sample:
        return type(sample)
    raise SnapshotError(f"cannot save a defaultdict whose factory builds {type(sample).__name__}")


def _load_private_key(der: bytes) -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.load_der_private_key(der, password=None)


def _new_object(cls: Any) -> Any:
    """An instance of ``cls`` made without ``__init__``; its state follows."""
    return cls.__new__(cls)


def _set_s3_key_state(key: Any, state: dict[str, Any]) -> None:
    """S3's ``FakeKey.__setstate__``, keeping the size and disposal the key had.

    A multipart upload's part keys are disposed once the upload completes
    (their bytes live on in the object), yet S3 still answers with their
    size (``HeadObject PartNumber=1``). moto saves a disposed key's bytes as
    empty and its ``__setstate__`` then takes the size from those bytes: 0.
    """
    key.__setstate__(state)
    key.contentsize = state["contentsize"]
    if state.get("disposed"):
        key._value_buffer.close()


def _method_of(owner: Any, name: str) -> Any:
    """``owner.name`` for a saved bound method; never a dunder (no way to ``__globals__``)."""
    if name.startswith("__"):
        raise SnapshotError(f"a sandbox snapshot may not name the method {name}")
    return getattr(owner, name)


def _load_certificate(der: bytes) -> Any:
    from cryptography import x509

    return x509.load_der_x509_certificate(der)


class _SnapshotPickler(pickle.Pickler):
    """Pickles moto's objects, including the few kinds plain pickle refuses."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, dict) and type(obj) is not dict:
            # moto's dict subclasses override items() (S3's versioned key
            # store shows the latest version only) and __init__; save the raw
            # entries instead, and rebuild without either.
            if isinstance(obj, collections.defaultdict):
                factory = _portable_factory(obj.default_factory)
            elif type(obj).__module__.startswith("moto."):
                factory = None
            else:
                return NotImplemented
            raw = (dict(dict.items(obj)), getattr(obj, "__dict__", None) or None)
            return (_new_mapping, (type(obj), factory), raw, None, None, _fill_mapping)
        if hasattr(obj, "_value_buffer") and type(obj).__module__ == "moto.s3.models":
            return (_new_object, (type(obj),), obj.__getstate__(), None, None, _set_s3_key_state)
        if isinstance(obj, types.MethodType):
            # Plain pickle names these through builtins.getattr, which the
            # loader does not allow (it reaches everything).
            return (_method_of, (obj.__self__, obj.__func__.__name__))
        module = type(obj).__module__
        if module.startswith("cryptography."):
            from cryptography import x509
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import ec, rsa

            if isinstance(obj, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                der = obj.private_bytes(
                    serialization.Encoding.DER,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                return (_load_private_key, (der,))
            if isinstance(obj, x509.Certificate):
                return (_load_certificate, (obj.public_bytes(serialization.Encoding.DER),))
        return NotImplemented


class _SnapshotUnpickler(pickle.Unpickler):
    """Builds only classes and functions defined in the allowed modules."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins":
            if name not in _ALLOWED_BUILTINS:
                raise SnapshotError(f"a sandbox snapshot may not name builtins.{name}")
            return super().find_class(module, name)
        if "." in name or not _allowed_module(module):
            raise SnapshotError(f"a sandbox snapshot may not name {module}.{name}")
        found = super().find_class(module, name)
        # A name imported into an allowed module (``os`` in moto's) is not allowed.
        defined_in = getattr(found, "__module__", None) or ""
        if not isinstance(found, type | types.FunctionType) or not _allowed_module(defined_in):
            raise SnapshotError(f"a sandbox snapshot may not name {module}.{name}")
        return found


def _allowed_module(module: str) -> bool:
    return any(
        module == allowed or module.startswith(allowed + ".") for allowed in _ALLOWED_MODULES
    )


def _backend_dicts() -> list[Any]:
    from moto.core.base_backend import BackendDict

    return list(BackendDict._instances)  # type: ignore[misc]


def _where(backend_dict: Any) -> tuple[str, str]:
    """The module and attribute under which moto keeps ``backend_dict``."""
    module_name = backend_dict.backend.__module__
    module = sys.modules[module_name]
    for name, value in vars(module).items():
        if value is backend_dict:
            return module_name, name
    raise SnapshotError(f"moto's {backend_dict.service_name} backends are not a module attribute")


def capture_moto_state(out: BinaryIO) -> None:
    """Write every moto backend in use in this process, and moto's id generator, to ``out``.

    Call inside ``mock_aws`` with nothing else running in moto. Raises
    ``SnapshotError`` when some backend holds an object that cannot be saved
    (``out`` then holds a partial snapshot: discard it).
    """
    from moto.moto_api._internal import mock_random

    payload = {
        "format": SNAPSHOT_FORMAT,
        "backends": [(_where(bd), dict(bd)) for bd in _backend_dicts()],
        "random_state": mock_random.getstate(),
    }
    try:
        _SnapshotPickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(payload)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise SnapshotError(f"moto's state cannot be saved: {exc}") from None


def restore_moto_state(data: BinaryIO | bytes) -> None:
    """Put the backends and id generator saved by :func:`capture_moto_state` back.

    Call right after ``mock_aws`` started (its reset leaves every backend
    empty). Only classes from moto and a few standard modules can be named by
    ``data``; ``data`` must still come from a file only this user can write,
    as pickled moto objects are trusted once built. Raises ``SnapshotError``
    if ``data`` is not such a snapshot; nothing is changed then.
    """
    from moto.core.base_backend import BackendDict
    from moto.moto_api._internal import mock_random

    try:
        source = io.BytesIO(data) if isinstance(data, bytes) else data
        payload = _SnapshotUnpickler(source).load()
    except SnapshotError:
        raise
    except Exception as exc:  # a truncated or foreign file fails in many ways
        raise SnapshotError(f"not a sandbox snapshot ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotError("not a sandbox snapshot of this format")
    targets = []
    for (module_name, attribute), accounts in payload["backends"]:
        backend_dict = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(backend_dict, BackendDict):
            raise SnapshotError(f"{module_name}.{attribute} is not a moto backend")
        targets.append((backend_dict, accounts))
    in_use: list[Any] = BackendDict._instances  # type: ignore[misc]
    for backend_dict, accounts in targets:
        dict.update(backend_dict, accounts)
        if backend_dict not in in_use:
            # mock_aws resets exactly the backends listed here when it stops.
            in_use.append(backend_dict)
    mock_random.setstate(payload["random_state"])
