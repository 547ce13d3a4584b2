"""ObjectStore over libcloud storage drivers.

``LocalObjectStore`` drives libcloud's LOCAL driver (a directory), and
``S3CompatibleObjectStore`` its MinIO driver, which speaks plain S3 to any
host and port (MinIO, Backblaze B2's S3 endpoint, Wasabi, Spaces, or a moto
server in tests).

Keys look like ``group/rest/of/key``. For the LOCAL driver the first segment
is the libcloud container (a directory under the base path), for S3 endpoints
the whole key lives in the one configured bucket.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from libcloud.common.types import LibcloudError
from libcloud.storage.base import Container, Object, StorageDriver
from libcloud.storage.drivers.local import LocalStorageDriver
from libcloud.storage.drivers.minio import MinIOConnectionAWS4, MinIOStorageDriver
from libcloud.storage.types import (
    ContainerAlreadyExistsError,
    ContainerDoesNotExistError,
    ObjectDoesNotExistError,
)

from orchestrator.errors import ChecksumMismatch, ConfigError, FatalError
from providers.interfaces.object_store import (
    ObjectNotFound,
    ObjectStore,
    PartWriter,
    StoredObject,
    check_object_key,
)

#: Staging directory inside each LOCAL container; never listed.
STAGING_DIR = ".exitplan-partial"
#: Staging copies older than this are leftovers of a killed run.
_STALE_STAGING_SECONDS = 3600.0
#: Part-written staging files are kept longer: a resume picks them up.
_STALE_PARTS_SECONDS = 7 * 24 * 3600.0
PARTS_SUFFIX = ".parts"

_CHUNK = 1024 * 1024


class _Measured:
    """Wraps a chunk iterator: counts and hashes what the store consumed, and
    remembers whether it ended cleanly.

    The remembering matters: libcloud's LOCAL driver without locking
    (``NoOpLockLocalStorage.__exit__`` returns the exception) swallows any
    error raised while it consumes the stream, so a failed source would look
    like a short, successful upload. We never trust the driver on this.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.error: BaseException | None = None
        self.finished = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._chunks:
                self.size += len(chunk)
                self.sha256.update(chunk)
                yield chunk
        except BaseException as exc:
            self.error = exc
            raise
        self.finished = True

    def raise_unless_finished(self) -> None:
        if self.error is not None:
            raise self.error
        if not self.finished:
            raise RuntimeError("the store stopped reading before the stream ended")


class _LocalPartWriter(PartWriter):
    """A sparse staging file written with pwrite, published with os.replace."""

    def __init__(self, staging: Path, final: Path, key: str, size: int) -> None:
        self.staging = staging
        self.final = final
        self.key = key
        self.size = size
        staging.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(staging, os.O_RDWR | os.O_CREAT, 0o644)
        # A file of another size is not ours to resume (the source changed):
        # start it over. Truncating up leaves holes, so untouched ranges of an
        # image (EBS blocks never written) take no space.
        if os.fstat(self._fd).st_size != size:
            os.ftruncate(self._fd, 0)
            os.ftruncate(self._fd, size)

    def _descriptor(self) -> int:
        if self._fd is None:
            raise RuntimeError(f"part writer for {self.key!r} is closed")
        return self._fd

    def write_at(self, offset: int, data: bytes) -> None:
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError(
                f"{self.key}: write of {len(data)} bytes at {offset} is outside its {self.size} bytes"
            )
        fd = self._descriptor()
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view = view[written:]
            offset += written

    def read_back(self) -> Iterator[bytes]:
        fd = self._descriptor()
        offset = 0
        while offset < self.size:
            chunk = os.pread(fd, min(_CHUNK, self.size - offset), offset)
            if not chunk:
                raise ChecksumMismatch(f"{self.key}: staged file ends at {offset} of {self.size}")
            offset += len(chunk)
            yield chunk

    def commit(self) -> StoredObject:
        fd = self._descriptor()
        os.fsync(fd)
        os.close(fd)
        self._fd = None
        self.final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.staging, self.final)
        return StoredObject(key=self.key, size=self.size)

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.staging.unlink(missing_ok=True)

    def close(self) -> None:
        """Let go of the file but keep it, so a later attempt resumes it."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LocalObjectStore(ObjectStore):
    """A directory, through libcloud's LOCAL driver, with atomic publish.

    libcloud's LOCAL driver writes straight to the final path, so a crash
    would leave a truncated file under the real name. We upload through the
    driver to a staging name in the same container (same file system) and
    ``os.replace`` it onto the final path once the stream is complete.
    """

    capabilities = frozenset({"ranged_get", "delete", "sha256", "part_write"})

    def __init__(self, name: str, path: str | Path) -> None:
        super().__init__(name)
        self.base_path = Path(path).resolve()
        try:
            self.base_path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"destination {name!r}: cannot create directory {self.base_path}: "
                f"{exc.strerror}; choose a writable storage.path"
            ) from exc
        # Each put writes its own staging name, so libcloud's per-path
        # inter-process locks would only cost a lock file per object.
        self._driver: LocalStorageDriver = LocalStorageDriver(
            str(self.base_path), ex_use_locking=False
        )
        self._containers: dict[str, Container] = {}

    def describe(self) -> str:
        return f"local:{self.base_path}"

    def _container(self, group: str, create: bool) -> Container | None:
        container = self._containers.get(group)
        if container is not None:
            return container
        try:
            container = self._driver.get_container(group)
        except ContainerDoesNotExistError:
            if not create:
                return None
            try:
                container = self._driver.create_container(group)
            except ContainerAlreadyExistsError:  # another worker won the race
                container = self._driver.get_container(group)
            self._remove_stale_staging(group)
        self._containers[group] = container
        return container

    def _remove_stale_staging(self, group: str) -> None:
        staging = self.base_path / group / STAGING_DIR
        if not staging.is_dir():
            return
        now = time.time()
        for leftover in staging.iterdir():
            keep_for = (
                _STALE_PARTS_SECONDS
                if leftover.name.endswith(PARTS_SUFFIX)
                else _STALE_STAGING_SECONDS
            )
            try:
                if leftover.stat().st_mtime < now - keep_for:
                    leftover.unlink()
            except FileNotFoundError:
                pass

    @staticmethod
    def _split(key: str) -> tuple[str, str]:
        check_object_key(key)
        group, sep, rest = key.partition("/")
        if not sep:
            raise ValueError(f"object key {key!r} needs a group: 'group/name'")
        return group, rest

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> StoredObject:
        group, rest = self._split(key)
        container = self._container(group, create=True)
        assert container is not None
        staging_name = f"{STAGING_DIR}/{uuid.uuid4().hex}"
        staging_path = self.base_path / group / staging_name
        final_path = self.base_path / group / rest
        measured = _Measured(chunks)
        try:
            self._driver.upload_object_via_stream(iter(measured), container, staging_name)
            measured.raise_unless_finished()
            final_path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging_path, final_path)
        except BaseException:
            staging_path.unlink(missing_ok=True)
            raise
        return StoredObject(key=key, size=measured.size, sha256=measured.sha256.hexdigest())

    def open_part_writer(self, key: str, size: int, resume_token: str) -> PartWriter:
        """In-place writes to a sparse staging file in the key's container.

        libcloud's LOCAL driver can only write whole streams, so this provider
        extra writes the staging file itself, in the same directory libcloud
        manages, and publishes it with ``os.replace`` like ``put_stream``.
        """
        group, rest = self._split(key)
        if not resume_token.isalnum():
            raise ValueError(f"resume token {resume_token!r} must be letters and digits")
        self._container(group, create=True)
        staging = self.base_path / group / STAGING_DIR / f"{resume_token}{PARTS_SUFFIX}"
        return _LocalPartWriter(staging, self.base_path / group / rest, key, size)

    def stat(self, key: str) -> StoredObject | None:
        group, rest = self._split(key)
        try:
            obj = self._driver.get_object(group, rest)
        except (ObjectDoesNotExistError, ContainerDoesNotExistError):
            return None
        except LibcloudError:  # a directory where an object was expected
            return None
        return StoredObject(key=key, size=int(obj.size))

    def get(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        group, rest = self._split(key)
        try:
            obj = self._driver.get_object(group, rest)
        except (ObjectDoesNotExistError, ContainerDoesNotExistError) as exc:
            raise ObjectNotFound(f"{self.name}: no object {key!r}") from exc
        return _download(self._driver, obj, start, end)

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        for container in self._driver.iterate_containers():
            for obj in self._driver.iterate_container_objects(container):
                if obj.name.startswith(STAGING_DIR + "/"):
                    continue
                key = f"{container.name}/{obj.name}"
                if key.startswith(prefix):
                    yield StoredObject(key=key, size=int(obj.size))

    def delete(self, key: str) -> None:
        group, rest = self._split(key)
        try:
            obj = self._driver.get_object(group, rest)
        except (ObjectDoesNotExistError, ContainerDoesNotExistError):
            return
        self._driver.delete_object(obj)


class S3CompatibleObjectStore(ObjectStore):
    """One bucket at any S3-compatible endpoint, through libcloud's MinIO driver.

    Uploads are streamed as multipart uploads; libcloud aborts the upload when
    the stream raises, so nothing partial is ever visible.
    """

    capabilities = frozenset({"ranged_get", "delete"})

    def __init__(
        self,
        name: str,
        *,
        host: str,
        container: str,
        key: str,
        secret: str,
        port: int | None = None,
        secure: bool = True,
        region: str = "us-east-1",
    ) -> None:
        super().__init__(name)
        self.host = host
        self.port = port
        self.secure = secure
        self.bucket = container
        self._driver = _make_s3_driver(host, port, secure, key, secret, region)
        try:
            self._bucket: Container = self._driver.get_container(container)
        except ContainerDoesNotExistError:
            self._bucket = self._driver.create_container(container)
        except LibcloudError as exc:
            raise FatalError(
                f"destination {name!r}: cannot reach bucket {container!r} at "
                f"{self.describe()}: {type(exc).__name__}; check host, port and credentials"
            ) from None

    def describe(self) -> str:
        scheme = "https" if self.secure else "http"
        port = f":{self.port}" if self.port else ""
        return f"s3:{scheme}://{self.host}{port}/{self.bucket}"

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> StoredObject:
        check_object_key(key)
        measured = _Measured(chunks)
        obj = self._driver.upload_object_via_stream(iter(measured), self._bucket, key)
        measured.raise_unless_finished()
        return StoredObject(key=key, size=int(obj.size), sha256=measured.sha256.hexdigest())

    def stat(self, key: str) -> StoredObject | None:
        try:
            obj = self._driver.get_object(self.bucket, key)
        except ObjectDoesNotExistError:
            return None
        return StoredObject(key=key, size=int(obj.size))

    def get(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        try:
            obj = self._driver.get_object(self.bucket, key)
        except ObjectDoesNotExistError as exc:
            raise ObjectNotFound(f"{self.name}: no object {key!r}") from exc
        return _download(self._driver, obj, start, end)

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        for obj in self._driver.iterate_container_objects(self._bucket, prefix=prefix or None):
            yield StoredObject(key=obj.name, size=int(obj.size))

    def delete(self, key: str) -> None:
        try:
            obj = self._driver.get_object(self.bucket, key)
        except ObjectDoesNotExistError:
            return
        self._driver.delete_object(obj)


def _download(driver: StorageDriver, obj: Object, start: int, end: int | None) -> Iterator[bytes]:
    if start == 0 and end is None:
        return iter(driver.download_object_as_stream(obj, chunk_size=_CHUNK))
    return iter(
        driver.download_object_range_as_stream(
            obj, start_bytes=start, end_bytes=end, chunk_size=_CHUNK
        )
    )


def _make_s3_driver(
    host: str, port: int | None, secure: bool, key: str, secret: str, region: str
) -> StorageDriver:
    # libcloud's MinIO driver stores the host on its connection *class*, so two
    # destinations at different hosts would share one. A subclass per store
    # keeps each host its own.
    connection_cls = type("_ExitplanS3Connection", (MinIOConnectionAWS4,), {"host": host})
    driver_cls = type(
        "_ExitplanS3Driver",
        (MinIOStorageDriver,),
        {"connectionCls": connection_cls, "region_name": region},
    )
    return driver_cls(key=key, secret=secret, secure=secure, host=host, port=port)
