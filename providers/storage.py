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

import errno
import fcntl
import hashlib
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

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
    StoreWriteError,
    check_object_key,
)

#: Staging directory inside each LOCAL container; never listed.
STAGING_DIR = ".exitplan-partial"
#: Resumable part-written staging files nobody has touched for this long are
#: leftovers of an item that will not come back (its source changed).
_STALE_PARTS_SECONDS = 7 * 24 * 3600.0
PARTS_SUFFIX = ".parts"
#: Mode of every exported file: never group-writable or world-readable. The
#: umask applies on top, so a stricter umask (077) makes them 0600.
FILE_MODE = 0o640

_CHUNK = 1024 * 1024


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" or n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _mount_of(path: Path) -> tuple[str, str]:
    """(mount point, file system type) holding ``path``, from /proc/self/mounts."""
    best, fstype = "/", "file system"
    try:
        lines = Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return str(path), fstype
    target = str(path)
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        # Spaces and tabs in mount points are written as octal escapes.
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, fields[2]
    return best, fstype


def describe_space(path: Path) -> str:
    """``20 MiB tmpfs at /srv/vault, 0 B free``: what holds ``path``, for messages."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    point, fstype = _mount_of(existing.resolve())
    try:
        stats = os.statvfs(existing)
    except OSError:
        return f"{fstype} at {point}"
    total = stats.f_blocks * stats.f_frsize
    free = stats.f_bavail * stats.f_frsize
    return f"{_human_bytes(total)} {fstype} at {point}, {_human_bytes(free)} free"


def write_failure(store: str, exc: OSError, path: Path) -> StoreWriteError:
    """The OS error of a failed write, in plain words, with where and what to do."""
    reason = (exc.strerror or type(exc).__name__).lower()
    if exc.errno == errno.ENOSPC:
        return StoreWriteError(
            f"destination {store}: no space left on device ({describe_space(path)}): "
            "free space and run `exitplan resume`"
        )
    if exc.errno == errno.EDQUOT:
        return StoreWriteError(
            f"destination {store}: disk quota exceeded ({describe_space(path)}): "
            "raise the quota or free space, and run `exitplan resume`"
        )
    if exc.errno == errno.EFBIG:
        return StoreWriteError(
            f"destination {store}: file too large for the file-size limit of this process "
            f"or of the file system ({describe_space(path)}) writing {path}: raise the limit "
            "(`ulimit -f`) and run `exitplan resume`"
        )
    return StoreWriteError(f"destination {store}: cannot write {path}: {reason}")


def _write_all(fd: int, data: bytes, digest: Any) -> int:
    """Write every byte of ``data``; hash what the OS accepted. Returns the count."""
    view = memoryview(data)
    written = 0
    while view:
        accepted = os.write(fd, view)
        if accepted <= 0:  # never loop on a file that takes nothing
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        digest.update(view[:accepted])
        written += accepted
        view = view[accepted:]
    return written


def _open_locked(path: Path, flags: int) -> int:
    """Open ``path`` and hold a shared lock on it while it is being written.

    The sweep removes only staging files it can lock exclusively, so a file
    another worker or process is writing is never taken from under it. The
    sweep may win the race between our open and our lock and unlink the
    file: then the name no longer leads to our file, and we open afresh.
    """
    for _ in range(5):
        fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
    raise OSError(errno.EBUSY, "another process keeps removing this staging file", str(path))


class _LocalPartWriter(PartWriter):
    """A sparse staging file written with pwrite, published with os.replace."""

    def __init__(self, store: str, staging: Path, final: Path, key: str, size: int) -> None:
        self.store = store
        self.staging = staging
        self.final = final
        self.key = key
        self.size = size
        self._fd: int | None = None
        try:
            staging.parent.mkdir(parents=True, exist_ok=True)
            self._fd = _open_locked(staging, os.O_RDWR | os.O_CREAT)
            # A file of another size is not ours to resume (the source
            # changed): start it over. Truncating up leaves holes, so untouched
            # ranges of an image (EBS blocks never written) take no space.
            if os.fstat(self._fd).st_size != size:
                os.ftruncate(self._fd, 0)
                os.ftruncate(self._fd, size)
        except OSError as exc:
            self.close()
            raise write_failure(store, exc, staging) from exc

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
        try:
            while view:
                written = os.pwrite(fd, view, offset)
                if written <= 0:  # never loop on a file that takes nothing
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[written:]
                offset += written
        except OSError as exc:
            raise write_failure(self.store, exc, self.staging) from exc

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
        try:
            os.fsync(fd)
            if os.fstat(fd).st_size != self.size:
                raise ChecksumMismatch(
                    f"{self.key}: staged file holds {os.fstat(fd).st_size} of {self.size} bytes"
                )
            self.final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.staging, self.final)
        except OSError as exc:
            raise write_failure(self.store, exc, self.final) from exc
        finally:
            os.close(fd)
            self._fd = None
        return StoredObject(key=self.key, size=self.size)

    def abort(self) -> None:
        self.close()
        self.staging.unlink(missing_ok=True)

    def close(self) -> None:
        """Let go of the file but keep it, so a later attempt resumes it."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LocalObjectStore(ObjectStore):
    """A directory, through libcloud's LOCAL driver, with atomic publish.

    Reads, listings, stats and deletes go through libcloud's LOCAL driver.
    Writes do not: its ``upload_object_via_stream`` writes straight to the
    final path (a crash leaves a truncated file under the real name), without
    locking it swallows every error raised while it writes
    (``NoOpLockLocalStorage.__exit__`` returns the exception, so a full disk
    looked like a finished upload), and it makes every file 0664. So
    ``put_stream`` writes a staging file in the container's ``STAGING_DIR``
    (same file system) itself, counting and hashing what each write call
    accepted, fsyncs it, checks its size and ``os.replace``s it onto the
    final path. Files are created ``FILE_MODE`` (0640), narrowed by the umask.

    Staging files a killed process left behind are removed when a store is
    opened on the directory (the next run, a resume, a verify); resumable
    ``.parts`` files are kept for the item they belong to, which resumes
    them, publishes them or, when it fails for good, removes them.
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
        # libcloud's per-path inter-process locks would only cost a lock file
        # per object: each write has its own staging name.
        self._driver: LocalStorageDriver = LocalStorageDriver(
            str(self.base_path), ex_use_locking=False
        )
        self._containers: dict[str, Container] = {}
        self.remove_stale_staging()

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
            except OSError as exc:
                raise write_failure(self.name, exc, self.base_path / group) from exc
        self._containers[group] = container
        return container

    def remove_stale_staging(self) -> int:
        """Remove what killed writers left in every container's staging directory.

        A staging file nobody holds locked belongs to no running write: a
        whole-object staging copy is removed at once, a resumable ``.parts``
        file only after ``_STALE_PARTS_SECONDS`` untouched (its item resumes
        it before then). Returns how many files were removed.
        """
        removed = 0
        now = time.time()
        try:
            groups = [entry for entry in os.scandir(self.base_path) if entry.is_dir()]
        except OSError:
            return 0
        for group in groups:
            staging = Path(group.path) / STAGING_DIR
            try:
                leftovers = list(os.scandir(staging))
            except OSError:
                continue
            for leftover in leftovers:
                if leftover.name.endswith(PARTS_SUFFIX):
                    try:
                        if leftover.stat().st_mtime >= now - _STALE_PARTS_SECONDS:
                            continue
                    except FileNotFoundError:
                        continue
                removed += _unlink_unless_locked(Path(leftover.path))
        return removed

    @staticmethod
    def _split(key: str) -> tuple[str, str]:
        check_object_key(key)
        group, sep, rest = key.partition("/")
        if not sep:
            raise ValueError(f"object key {key!r} needs a group: 'group/name'")
        return group, rest

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> StoredObject:
        """Write a staging file, fsync it, check it, rename it onto the key.

        The size and sha256 returned are of what the write calls accepted,
        and the file's size is checked against them before it is published.
        Raises ``StoreWriteError`` for a failed write (no space, quota,
        file-size limit, I/O), naming the OS error and the file system.
        """
        group, rest = self._split(key)
        self._container(group, create=True)
        staging_path = self.base_path / group / STAGING_DIR / uuid.uuid4().hex
        final_path = self.base_path / group / rest
        digest = hashlib.sha256()
        size = 0
        fd: int | None = None
        try:
            try:
                staging_path.parent.mkdir(parents=True, exist_ok=True)
                fd = _open_locked(staging_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except OSError as exc:
                raise write_failure(self.name, exc, staging_path) from exc
            for chunk in chunks:  # the source's errors propagate unchanged
                try:
                    size += _write_all(fd, chunk, digest)
                except OSError as exc:
                    raise write_failure(self.name, exc, final_path) from exc
            try:
                os.fsync(fd)
                on_disk = os.fstat(fd).st_size
                if on_disk != size:
                    raise StoreWriteError(
                        f"destination {self.name}: {final_path} holds {on_disk} bytes "
                        f"after {size} were written"
                    )
                final_path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging_path, final_path)
            except OSError as exc:
                raise write_failure(self.name, exc, final_path) from exc
        except BaseException:
            staging_path.unlink(missing_ok=True)
            raise
        finally:
            if fd is not None:
                os.close(fd)
        return StoredObject(key=key, size=size, sha256=digest.hexdigest())

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
        return _LocalPartWriter(self.name, staging, self.base_path / group / rest, key, size)

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
        except LibcloudError as exc:  # a directory where an object was expected
            raise ObjectNotFound(f"{self.name}: {key!r} is not an object") from exc
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


def _unlink_unless_locked(path: Path) -> int:
    """Remove a staging file unless a writer holds it; 1 if removed, else 0."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return 0  # being written right now
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return 0
        if not same:
            return 0
        path.unlink(missing_ok=True)
        return 1
    finally:
        os.close(fd)


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
        # libcloud keeps each request's response on the connection object
        # (LibcloudConnection.response), so two threads sharing one driver can
        # read each other's responses: one driver per thread.
        self._drivers = threading.local()
        self._make_driver = lambda: _make_s3_driver(host, port, secure, key, secret, region)
        try:
            self._bucket: Container = self._driver.get_container(container)
        except ContainerDoesNotExistError:
            self._bucket = self._driver.create_container(container)
        except LibcloudError as exc:
            raise FatalError(
                f"destination {name!r}: cannot reach bucket {container!r} at "
                f"{self.describe()}: {type(exc).__name__}; check host, port and credentials"
            ) from None

    @property
    def _driver(self) -> StorageDriver:
        driver: StorageDriver | None = getattr(self._drivers, "driver", None)
        if driver is None:
            driver = self._drivers.driver = self._make_driver()
        return driver

    def describe(self) -> str:
        scheme = "https" if self.secure else "http"
        port = f":{self.port}" if self.port else ""
        return f"s3:{scheme}://{self.host}{port}/{self.bucket}"

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> StoredObject:
        """A multipart upload; each part is sent with its Content-MD5, which the
        server checks, so the sha256 returned is of bytes the server accepted."""
        check_object_key(key)
        counted = _Counted(chunks)
        obj = self._driver.upload_object_via_stream(iter(counted), self._bucket, key)
        if not counted.finished or int(obj.size) != counted.size:
            # A driver that stops reading early must never pass for a whole upload.
            self.delete(key)
            raise StoreWriteError(
                f"destination {self.name}: {key} took {int(obj.size)} bytes of the "
                f"{counted.size} read{'' if counted.finished else ' (it stopped reading)'}"
            )
        return StoredObject(key=key, size=counted.size, sha256=counted.sha256.hexdigest())

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


class _Counted:
    """Counts and hashes the chunks a driver consumes, and whether it read them all."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.finished = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.size += len(chunk)
            self.sha256.update(chunk)
            yield chunk
        self.finished = True


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
