"""A directory with little room in it, to fill up on purpose.

As root (CI), a real tmpfs of the given size is mounted on the directory and
a filler file takes all but ``free`` bytes of it; ``make_room`` deletes the
filler, as a person freeing space would. Elsewhere, where mounting is not
allowed, the fallback is a file-size limit (RLIMIT_FSIZE) on the process
that writes: writes past it fail with EFBIG ("file too large"), and
``make_room`` lifts the limit.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024


@dataclass
class Room:
    path: Path
    #: "tmpfs" (a small file system, ENOSPC) or "rlimit" (a file-size limit, EFBIG).
    kind: str
    #: Bytes each write may still take (tmpfs: in all; rlimit: per file).
    free: int
    #: What the error says when it fills up.
    message: str
    #: For a subprocess that writes there: a preexec_fn setting the limit (rlimit only).
    preexec: Callable[[], None] | None
    _filler: Path | None = None
    _saved_limit: tuple[int, int] | None = None

    def make_room(self) -> None:
        """Free space: delete the filler (tmpfs) or lift the limit (rlimit)."""
        if self._filler is not None:
            self._filler.unlink(missing_ok=True)
        if self._saved_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, self._saved_limit)
            self._saved_limit = None
        self.preexec = None


def _mount_tmpfs(path: Path, size: int) -> bool:
    # EXITPLAN_TEST_NO_MOUNT=1 tries the fallback where mounting would work.
    if os.environ.get("EXITPLAN_TEST_NO_MOUNT") or os.geteuid() != 0 or not shutil.which("mount"):
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    return result.returncode == 0


def _fill(path: Path, leave: int) -> Path:
    """A file taking all of the file system at ``path`` but ``leave`` bytes."""
    stats = os.statvfs(path)
    available = stats.f_bavail * stats.f_frsize
    filler = path / "filler.bin"
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(0, available - leave))
    return filler


@contextmanager
def little_room(
    path: Path, *, free: int, total: int = 64 * MiB, in_process: bool
) -> Iterator[Room]:
    """``path`` (created) with about ``free`` bytes of room.

    ``in_process``: whether this process writes there (the rlimit fallback is
    then set on this process, and lifted by ``make_room`` or at the end), or
    a subprocess started with ``room.preexec`` does.
    """
    path.mkdir(parents=True, exist_ok=True)
    if _mount_tmpfs(path, total):
        try:
            room = Room(
                path=path,
                kind="tmpfs",
                free=free,
                message="no space left on device",
                preexec=None,
            )
            room._filler = _fill(path, free)
            yield room
        finally:
            subprocess.run(["umount", "-l", str(path)], check=False)
        return

    def limit() -> None:
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (free, hard))

    room = Room(path=path, kind="rlimit", free=free, message="file too large", preexec=limit)
    if in_process:
        saved = resource.getrlimit(resource.RLIMIT_FSIZE)
        limit()
        room._saved_limit = saved
        room.preexec = None
        try:
            yield room
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, saved)
        return
    yield room
