"""A loopback stand-in for the part of DigitalOcean's v2 API libcloud's driver uses.

It answers ``/v2/account``, ``/v2/sizes``, ``/v2/regions``, ``/v2/images``
and ``/v2/droplets`` (create, get, list, delete) on 127.0.0.1, so libcloud's
real ``DigitalOcean_v2_NodeDriver`` runs end to end. Each created droplet is a
real sshd on its own 127.0.0.x address that honours the cloud-init parts of
the user-data exitplan sends: ``ssh_keys`` (its host key) and
``ssh_authorized_keys``. Droplets start as ``new`` and turn ``active`` once
their sshd listens, as real ones do.

``mode`` switches behaviour at any time:

- ``"normal"``;
- ``"locked"``: ``/v2/account`` reports ``status: locked`` with a message
  and every other call answers 403, as DigitalOcean does for a locked account;
- ``"full"``: regions report ``available: false`` and creating a droplet
  answers 422 "region is currently unavailable";
- ``"refuse-create"``: everything looks available, but creating a droplet
  answers 422 as ``"full"`` does (capacity gone between probe and create).
"""

from __future__ import annotations

import getpass
import json
import secrets
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from tests.support.sshd import (
    KeyPair,
    SshdServer,
    generate_key,
    require_openssh,
    start_sshd,
)

Mode = Literal["normal", "locked", "full", "refuse-create"]

SIZES = [
    {"slug": "s-1vcpu-1gb", "vcpus": 1, "memory": 1024, "disk": 25, "price_hourly": 0.00893},
    {"slug": "s-2vcpu-4gb", "vcpus": 2, "memory": 4096, "disk": 80, "price_hourly": 0.03571},
    {"slug": "s-4vcpu-8gb", "vcpus": 4, "memory": 8192, "disk": 160, "price_hourly": 0.07143},
]
REGIONS = [("ams3", "Amsterdam 3"), ("fra1", "Frankfurt 1"), ("nyc3", "New York 3")]
IMAGES = [{"id": 1001, "slug": "debian-12-x64", "name": "12 x64", "distribution": "Debian"}]
CREATED_AT = "2024-01-01T00:00:00Z"
#: Droplet addresses: away from the .2-.4 the sshd fixtures use.
ADDRESSES = tuple(f"127.0.0.{n}" for n in range(201, 251))

LOCKED_MESSAGE = "This account is locked: billing review pending. Contact support."
FULL_MESSAGE = "The region is currently unavailable for new droplets; select another region."


def _port_free(address: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def start_sshd_with_key(
    workdir: Path, address: str, port: int, host_private: str | None, authorized_keys: list[str]
) -> SshdServer:
    """sshd on ``address:port`` with the given host key (generated when None).

    The host key comes from the droplet's user-data, which is what lets
    exitplan pin it in advance.
    """
    require_openssh()
    workdir.mkdir(parents=True, exist_ok=True)
    key_path = workdir / "ssh_host_ed25519_key"
    if host_private is None:
        host_key = generate_key(key_path, comment=f"droplet-{address}")
    else:
        key_path.write_text(host_private)
        key_path.chmod(0o600)
        public = subprocess.run(
            ["ssh-keygen", "-y", "-f", str(key_path)], check=True, capture_output=True, text=True
        ).stdout.strip()
        key_path.with_suffix(".pub").write_text(public + "\n")
        host_key = KeyPair(private=key_path, public_line=public)
    return start_sshd(workdir, address, authorized_keys, port=port, host_key=host_key)


@dataclass
class Droplet:
    id: int
    name: str
    region: str
    size: dict[str, Any]
    image: dict[str, Any]
    address: str
    user_data: str
    status: str = "new"
    sshd: SshdServer | None = None
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "memory": self.size["memory"],
            "vcpus": self.size["vcpus"],
            "disk": self.size["disk"],
            "locked": False,
            "created_at": CREATED_AT,
            "features": [],
            "backup_ids": [],
            "snapshot_ids": [],
            "tags": [],
            "kernel": None,
            "image": self.image,
            "size": self.size,
            "size_slug": self.size["slug"],
            "networks": {"v4": [{"ip_address": self.address, "type": "public"}], "v6": []},
            "region": {"slug": self.region, "name": dict(REGIONS)[self.region]},
        }


@dataclass
class DigitalOceanStandIn:
    """The running stand-in; ``host``/``port`` go into the candidate's config."""

    workdir: Path
    token: str
    ssh_port: int
    mode: Mode = "normal"
    #: Cleared, new droplets stay "new" (no sshd) until it is set again.
    boot_allowed: threading.Event = field(default_factory=threading.Event)
    droplet_limit: int = 10
    host: str = "127.0.0.1"
    port: int = 0
    droplets: dict[int, Droplet] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next_id: int = 3000001
    _server: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        self.boot_allowed.set()

    # -- data --------------------------------------------------------------

    def size_json(self, size: dict[str, Any]) -> dict[str, Any]:
        return {
            **size,
            "transfer": 1.0,
            "price_monthly": round(size["price_hourly"] * 672, 2),
            "regions": [slug for slug, _ in REGIONS],
            "available": True,
            "description": "Basic",
        }

    def image_json(self, image: dict[str, Any]) -> dict[str, Any]:
        return {
            **image,
            "public": True,
            "regions": [slug for slug, _ in REGIONS],
            "min_disk_size": 10,
            "created_at": CREATED_AT,
            "type": "base",
        }

    def regions_json(self) -> list[dict[str, Any]]:
        return [
            {
                "slug": slug,
                "name": name,
                "available": self.mode != "full",
                "features": ["backups", "ipv6", "metadata"],
                "sizes": [s["slug"] for s in SIZES],
            }
            for slug, name in REGIONS
        ]

    def account_json(self) -> dict[str, Any]:
        locked = self.mode == "locked"
        return {
            "droplet_limit": self.droplet_limit,
            "floating_ip_limit": 3,
            "volume_limit": 10,
            "email": "ops@example.test",
            "uuid": "b6fr89dbf6d9156cace5f3c78dc9851d957381ef",
            "email_verified": True,
            "status": "locked" if locked else "active",
            "status_message": LOCKED_MESSAGE if locked else "",
        }

    # -- droplets -----------------------------------------------------------

    def _free_address(self) -> str:
        used = {d.address for d in self.droplets.values()}
        for address in ADDRESSES:
            if address not in used and _port_free(address, self.ssh_port):
                return address
        raise RuntimeError("the DigitalOcean stand-in ran out of loopback addresses")

    def create_droplet(self, body: dict[str, Any]) -> Droplet:
        size = next((s for s in SIZES if s["slug"] == body.get("size")), None)
        image = next(
            (i for i in IMAGES if body.get("image") in (i["slug"], i["id"], str(i["id"]))), None
        )
        if size is None or image is None or body.get("region") not in dict(REGIONS):
            raise ValueError("size, image or region is not valid")
        with self._lock:
            droplet = Droplet(
                id=self._next_id,
                name=str(body.get("name")),
                region=str(body["region"]),
                size=self.size_json(size),
                image=self.image_json(image),
                address=self._free_address(),
                user_data=str(body.get("user_data") or ""),
            )
            self._next_id += 1
            self.droplets[droplet.id] = droplet
        # Booting happens after the API has answered, as on the real thing.
        threading.Thread(target=self._boot, args=(droplet,), daemon=True).start()
        return droplet

    def _boot(self, droplet: Droplet) -> None:
        # A test holds boots back (``boot_allowed.clear()``) to act while a server is new.
        self.boot_allowed.wait()
        cloud: dict[str, Any] = {}
        if droplet.user_data.startswith("#cloud-config"):
            cloud = yaml.safe_load(droplet.user_data) or {}
        keys = cloud.get("ssh_keys") or {}
        try:
            sshd = start_sshd_with_key(
                self.workdir / f"droplet-{droplet.id}",
                droplet.address,
                self.ssh_port,
                keys.get("ed25519_private"),
                list(cloud.get("ssh_authorized_keys") or []),
            )
        except Exception as exc:
            droplet.error = str(exc)
            return
        with self._lock:
            if droplet.id in self.droplets:
                droplet.sshd = sshd
                droplet.status = "active"
                return
        sshd.stop()  # deleted while booting

    def delete_droplet(self, droplet_id: int) -> bool:
        with self._lock:
            droplet = self.droplets.pop(droplet_id, None)
        if droplet is None:
            return False
        if droplet.sshd is not None:
            droplet.sshd.stop()
        return True

    # -- server ---------------------------------------------------------------

    def start(self) -> None:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean; requests are recorded instead

            def _reply(self, status: int, body: dict[str, Any] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                path = self.path.split("?", 1)[0].rstrip("/")
                standin.requests.append((method, path))
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.headers.get("Authorization") != f"Bearer {standin.token}":
                    self._reply(
                        401, {"id": "unauthorized", "message": "Unable to authenticate you"}
                    )
                    return
                if path == "/v2/account":
                    self._reply(200, {"account": standin.account_json()})
                    return
                if standin.mode == "locked":
                    self._reply(403, {"id": "forbidden", "message": LOCKED_MESSAGE})
                    return
                self._route(method, path, raw)

            def _route(self, method: str, path: str, raw: bytes) -> None:
                meta = {"links": {}, "meta": {"total": 0}}
                if method == "GET" and path == "/v2/sizes":
                    sizes = [standin.size_json(s) for s in SIZES]
                    self._reply(200, {"sizes": sizes, **meta})
                elif method == "GET" and path == "/v2/regions":
                    self._reply(200, {"regions": standin.regions_json(), **meta})
                elif method == "GET" and path == "/v2/images":
                    self._reply(200, {"images": [standin.image_json(i) for i in IMAGES], **meta})
                elif method == "GET" and path == "/v2/droplets":
                    with standin._lock:
                        droplets = [d.to_json() for d in standin.droplets.values()]
                    self._reply(200, {"droplets": droplets, **meta})
                elif method == "POST" and path == "/v2/droplets":
                    if standin.mode in ("full", "refuse-create"):
                        self._reply(422, {"id": "unprocessable_entity", "message": FULL_MESSAGE})
                        return
                    if len(standin.droplets) >= standin.droplet_limit:
                        message = "creating this droplet will exceed your droplet limit"
                        self._reply(422, {"id": "unprocessable_entity", "message": message})
                        return
                    try:
                        droplet = standin.create_droplet(json.loads(raw or b"{}"))
                    except ValueError as exc:
                        self._reply(422, {"id": "unprocessable_entity", "message": str(exc)})
                        return
                    self._reply(202, {"droplet": droplet.to_json(), "links": {}})
                elif path.startswith("/v2/droplets/") and path[13:].isdigit():
                    droplet_id = int(path[13:])
                    if method == "DELETE":
                        found = standin.delete_droplet(droplet_id)
                        self._reply(204) if found else self._not_found()
                        return
                    droplet = standin.droplets.get(droplet_id)
                    if method == "GET" and droplet is not None:
                        self._reply(200, {"droplet": droplet.to_json()})
                    else:
                        self._not_found()
                else:
                    self._not_found()

            def _not_found(self) -> None:
                message = "The resource you were accessing could not be found."
                self._reply(404, {"id": "not_found", "message": message})

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for droplet_id in list(self.droplets):
            self.delete_droplet(droplet_id)

    def candidate_options(self, **overrides: object) -> dict[str, object]:
        """Options for ``LibcloudComputeProvider`` pointed at this stand-in."""
        options: dict[str, object] = {
            "driver": "digitalocean",
            "key": self.token,
            "size": "s-2vcpu-4gb",
            "region": "ams3",
            "image": "debian-12-x64",
            "host": self.host,
            "port": self.port,
            "secure": False,
            "ssh_port": self.ssh_port,
            "ssh_user": getpass.getuser(),
            "poll_interval_s": 0.05,
        }
        options.update(overrides)
        return options


def _common_free_port() -> int:
    """A port free on every droplet address (checked again per droplet)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if all(_port_free(address, port) for address in ADDRESSES[:8]):
            return port
    raise RuntimeError("no port free on the droplet addresses")


@pytest.fixture
def digitalocean(tmp_path: Path) -> Iterator[DigitalOceanStandIn]:
    """A DigitalOcean stand-in for one test; its droplets' sshd are stopped afterwards."""
    require_openssh()
    standin = DigitalOceanStandIn(
        workdir=tmp_path / "digitalocean", token=secrets.token_hex(16), ssh_port=_common_free_port()
    )
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()
