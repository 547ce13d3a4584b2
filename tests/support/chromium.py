"""Headless Chromium (Debian's ``chromium``) as a person opening an HTML report.

``screenshot`` and ``dump_dom`` run the browser once each on a local file,
with a throw-away profile, no network services, and a hard timeout after
which the browser's whole process group (started here, in its own session)
is killed. ``decode_png`` reads the screenshot with zlib alone, so counting
pixels needs no imaging library.

Without Chromium, ``require_chromium`` fails when ``CI`` is set and skips
otherwise, saying what to install.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTALL_HINT = "install Debian's chromium (apt-get install chromium)"
TIMEOUT_S = 90.0
FLAGS = (
    "--headless",
    "--no-sandbox",  # root in containers; the page is our own file, without script
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


def require_chromium() -> str:
    """The chromium binary; fail in CI, skip elsewhere, when it is missing."""
    binary = find_chromium()
    if binary is None:
        message = f"chromium not found: {INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def _run(binary: str, args: Sequence[str], profile: Path) -> str:
    """Run chromium with ``args`` on a fresh profile; return its stdout."""
    profile.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HOME": str(profile),
        "XDG_CONFIG_HOME": str(profile / "config"),
        "XDG_CACHE_HOME": str(profile / "cache"),
    }
    process = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={profile / 'data'}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise AssertionError(f"chromium did not finish in {TIMEOUT_S:.0f}s") from None
    if process.returncode != 0:
        raise AssertionError(f"chromium exited {process.returncode}: {err[-2000:]}")
    return out


def screenshot(
    html: Path, png: Path, profile: Path, *, width: int = 1280, height: int = 2000
) -> bytes:
    """A PNG of the page as a window of ``width`` x ``height`` shows it."""
    binary = require_chromium()
    _run(
        binary,
        [f"--screenshot={png}", f"--window-size={width},{height}", html.resolve().as_uri()],
        profile,
    )
    assert png.is_file(), f"chromium wrote no screenshot at {png}"
    return png.read_bytes()


def print_pdf(html: Path, pdf: Path, profile: Path) -> bytes:
    """The page printed to PDF, as a person pressing Print would get it (A4 by the page's CSS)."""
    binary = require_chromium()
    _run(
        binary,
        ["--no-pdf-header-footer", f"--print-to-pdf={pdf}", html.resolve().as_uri()],
        profile,
    )
    assert pdf.is_file(), f"chromium wrote no PDF at {pdf}"
    return pdf.read_bytes()


def dump_dom(html: Path, profile: Path) -> str:
    """The DOM Chromium built from the page, serialised."""
    binary = require_chromium()
    return _run(binary, ["--dump-dom", html.resolve().as_uri()], profile)


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    channels: int
    pixels: bytes  # rows top to bottom, ``channels`` bytes per pixel, 8 bits each

    def pixel(self, x: int, y: int) -> tuple[int, ...]:
        start = (y * self.width + x) * self.channels
        return tuple(self.pixels[start : start + self.channels])

    def count(self, predicate_rgb: object, region: tuple[int, int, int, int] | None = None) -> int:
        """Pixels in ``region`` (x0, y0, x1, y1) whose (r, g, b) satisfy the predicate."""
        x0, y0, x1, y1 = region or (0, 0, self.width, self.height)
        test = predicate_rgb
        assert callable(test)
        c = self.channels
        total = 0
        for y in range(y0, y1):
            row = self.pixels[(y * self.width + x0) * c : (y * self.width + x1) * c]
            for i in range(0, len(row), c):
                if test(row[i], row[i + 1], row[i + 2]):
                    total += 1
        return total


def decode_png(data: bytes) -> Image:
    """Decode an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset = 8
    idat = []
    width = height = channels = 0
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0, "only 8-bit, non-interlaced PNGs"
            channels = {2: 3, 6: 4}[colour]
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    out = bytearray(stride * height)
    previous = bytearray(stride)
    pos = 0
    for y in range(height):
        filter_type = raw[pos]
        line = bytearray(raw[pos + 1 : pos + 1 + stride])
        pos += 1 + stride
        _unfilter(filter_type, line, previous, channels)
        out[y * stride : (y + 1) * stride] = line
        previous = line
    return Image(width, height, channels, bytes(out))


def _unfilter(kind: int, line: bytearray, prior: bytearray, bpp: int) -> None:
    n = len(line)
    if kind == 0:
        return
    if kind == 1:  # Sub
        for i in range(bpp, n):
            line[i] = (line[i] + line[i - bpp]) & 0xFF
    elif kind == 2:  # Up
        for i in range(n):
            line[i] = (line[i] + prior[i]) & 0xFF
    elif kind == 3:  # Average
        for i in range(n):
            left = line[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + ((left + prior[i]) >> 1)) & 0xFF
    elif kind == 4:  # Paeth
        for i in range(n):
            a = line[i - bpp] if i >= bpp else 0
            b = prior[i]
            c = prior[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            if pa <= pb and pa <= pc:
                predictor = a
            elif pb <= pc:
                predictor = b
            else:
                predictor = c
            line[i] = (line[i] + predictor) & 0xFF
    else:
        raise AssertionError(f"unknown PNG filter {kind}")
