"""A DNS target that runs with nothing installed: zones in a file, served on 127.0.0.1.

``LocalDnsProvider`` is a ``DnsProvider`` whose zones live in one JSON file
(by default in the workspace), so a later process (``resume``, ``rollback``)
sees the state an earlier one left. ``LocalDnsServer`` is a small
authoritative DNS server (dnspython, UDP and TCP, in threads of this process)
that answers from that file and re-reads it whenever it changes, so a change
applied through the provider, in this process or another, is served at once.

What the server does, as an authoritative server should: answers with the AA
bit for names in its zones; NXDOMAIN or NODATA with the zone's SOA in the
authority section (its TTL the smaller of the SOA's TTL and minimum, RFC
2308); referrals below a zone cut (NS in authority, glue in additional, AA
off); wildcard synthesis (RFC 4592); in-zone CNAME chasing; REFUSED for names
outside its zones; truncation (TC) over UDP when the answer does not fit.
Not done: zone transfers (AXFR/IXFR answer NOTIMP), DNSSEC, dynamic update.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from orchestrator.errors import ConfigError, FatalError
from providers.interfaces.dns import (
    DnsProvider,
    DnsZoneNotFound,
    RecordChange,
    RecordSet,
    absolute_name,
    canonical_value,
)

#: Format marker of the state file; bump when its shape changes.
STATE_FORMAT = "exitplan.local-dns/1"

#: TTL of the SOA and apex NS sets the provider writes at zone creation.
APEX_TTL = 3600

#: The SOA minimum of created zones: how long resolvers cache "no such name"
#: (RFC 2308). Short, so a name created during a cutover is seen soon.
NEGATIVE_TTL = 300

#: Types the server can hold; a value of any other type is refused at apply.
SUPPORTED_TYPES = frozenset(
    {"A", "AAAA", "CAA", "CNAME", "DS", "MX", "NAPTR", "NS", "PTR", "SOA", "SPF", "SRV", "SSHFP"}
    | {"TLSA", "TXT"}
)

_UDP_DEFAULT_PAYLOAD = 512
_MAX_CNAME_CHAIN = 8
_TCP_IDLE_TIMEOUT_S = 10.0


def _parse_value(rtype: str, value: str) -> str:
    """``value`` validated for ``rtype`` and returned in the form it is stored in.

    Host names are made absolute (``canonical_value``), then the value must
    parse as that type's presentation form. Raises ``FatalError`` naming the
    value and type otherwise.
    """
    canonical = canonical_value(rtype, value)
    try:
        dns.rdata.from_text(dns.rdataclass.IN, rtype, canonical, origin=dns.name.root)
    except (dns.exception.DNSException, ValueError) as exc:
        raise FatalError(
            f"{rtype} value {value!r} is not valid DNS presentation form: {exc}"
        ) from None
    return canonical


def _record_set_to_json(rs: RecordSet) -> dict[str, Any]:
    return {"name": rs.name, "type": rs.type, "ttl": rs.ttl, "values": list(rs.values)}


def _record_set_from_json(data: Mapping[str, Any]) -> RecordSet:
    return RecordSet(
        name=str(data["name"]),
        type=str(data["type"]),
        ttl=int(data["ttl"]),
        values=tuple(str(v) for v in data["values"]),
    )


class _StateFile:
    """The JSON file that holds every zone, read and written under an exclusive lock.

    Writes go to a temporary file in the same directory and replace the
    state file atomically, so a reader (another process, the server thread)
    sees the old state or the new one, never half of it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self) -> dict[str, Any]:
        """The state as a dict; an absent file is an empty state."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {"format": STATE_FORMAT, "zones": {}}
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise FatalError(
                f"{self.path}:{exc.lineno}:{exc.colno}: not a valid local DNS state file "
                f"({exc.msg}); restore it or remove it to start with no zones"
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
            raise FatalError(
                f"{self.path}: not an exitplan local DNS state file (expected format "
                f"{STATE_FORMAT}); point dns.path at another file"
            )
        return doc

    def write(self, doc: Mapping[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, sort_keys=True, indent=1) + "\n")
        os.replace(tmp, self.path)


class LocalDnsProvider(DnsProvider):
    """A ``DnsProvider`` over a state file, served by ``LocalDnsServer``.

    ``path`` is the state file (created on first write). ``listen`` and
    ``port`` say where ``serve()`` listens; port 0 picks a free port at
    start. Every method reads the file afresh, so several providers (and
    processes) on one file agree. Changes are applied under the file's lock
    and bump the zone's SOA serial. Retry-safe: every method.
    """

    capabilities = frozenset({"create_zone", "managed_soa"})

    def __init__(self, name: str, path: str | Path, listen: str = "127.0.0.1", port: int = 0):
        super().__init__(name)
        self.path = Path(path).resolve()
        if self.path.is_dir():
            raise ConfigError(
                f"dns.path {self.path} is a directory; name the file that holds the zones, "
                "e.g. <workspace>/dns/zones.json"
            )
        if not 0 <= port <= 65535:
            raise ConfigError(f"dns.port {port} is not a port number (0-65535; 0 = any free)")
        self.listen = listen
        self.port = port
        self._state = _StateFile(self.path)

    def describe(self) -> str:
        return f"local:{self.path}"

    def serve(self) -> LocalDnsServer:
        """Start an authoritative server on ``listen:port`` for this file; the caller stops it."""
        return LocalDnsServer(self.path, host=self.listen, port=self.port).start()

    # -- DnsProvider ---------------------------------------------------------

    def list_zones(self) -> list[str]:
        return sorted(self._state.read()["zones"])

    def create_zone(self, zone_name: str, *, nameservers: Sequence[str]) -> None:
        zone = absolute_name(zone_name)
        servers = sorted({canonical_value("NS", ns) for ns in nameservers})
        if not servers:
            raise ConfigError(f"zone {zone}: name at least one name server for its NS set")
        with self._state.locked():
            doc = self._state.read()
            if zone in doc["zones"]:
                return
            serial = 1
            soa = f"{servers[0]} hostmaster.{zone} {serial} 10800 3600 604800 {NEGATIVE_TTL}"
            doc["zones"][zone] = {
                "record_sets": [
                    _record_set_to_json(RecordSet(zone, "SOA", APEX_TTL, (soa,))),
                    _record_set_to_json(RecordSet(zone, "NS", APEX_TTL, tuple(servers))),
                ]
            }
            self._state.write(doc)

    def list_records(self, zone_name: str) -> list[RecordSet]:
        zone = absolute_name(zone_name)
        zones = self._state.read()["zones"]
        if zone not in zones:
            raise DnsZoneNotFound(
                f"zone {zone!r} does not exist at {self.describe()}; create it first"
            )
        sets = [_record_set_from_json(r) for r in zones[zone]["record_sets"]]
        return sorted(sets, key=lambda rs: rs.key)

    def apply(self, zone_name: str, changes: Sequence[RecordChange]) -> None:
        zone = absolute_name(zone_name)
        # Validate everything first: a change set is applied whole or not at all.
        prepared: list[tuple[str, RecordSet]] = []
        for change in changes:
            rs = change.record_set
            name = absolute_name(rs.name)
            if rs.alias is not None:
                raise FatalError(
                    f"{name} {rs.type} is a Route53 alias; {self.describe()} cannot hold "
                    "aliases: leave it out (portable_record_sets) or replace it with records"
                )
            if rs.set_identifier is not None:
                raise FatalError(
                    f"{name} {rs.type} ({rs.set_identifier}) uses a routing policy; "
                    f"{self.describe()} has one set per name and type"
                )
            if name != zone and not name.endswith("." + zone):
                raise FatalError(f"{name} is not inside zone {zone}; it cannot be changed there")
            if change.action == "delete":
                prepared.append(("delete", RecordSet(name, rs.type, rs.ttl)))
                continue
            if rs.type not in SUPPORTED_TYPES:
                raise FatalError(
                    f"{name}: type {rs.type} is not served by {self.describe()}; supported: "
                    + ", ".join(sorted(SUPPORTED_TYPES))
                )
            if rs.ttl is None or rs.ttl < 0:
                raise FatalError(f"{name} {rs.type} needs a TTL of 0 or more seconds")
            if not rs.values:
                raise FatalError(f"{name} {rs.type} has no values; delete the set instead")
            values = tuple(sorted({_parse_value(rs.type, v) for v in rs.values}))
            prepared.append(("upsert", RecordSet(name, rs.type, rs.ttl, values)))
        if not prepared:
            return
        with self._state.locked():
            doc = self._state.read()
            if zone not in doc["zones"]:
                raise DnsZoneNotFound(
                    f"zone {zone!r} does not exist at {self.describe()}; create it first"
                )
            sets = {
                (r["name"], r["type"]): _record_set_from_json(r)
                for r in doc["zones"][zone]["record_sets"]
            }
            for action, rs in prepared:
                if action == "delete":
                    sets.pop((rs.name, rs.type), None)
                else:
                    sets[(rs.name, rs.type)] = rs
            soa = sets.get((zone, "SOA"))
            if soa is not None and soa.values:
                sets[(zone, "SOA")] = RecordSet(
                    zone, "SOA", soa.ttl, (_bump_serial(soa.values[0]),)
                )
            doc["zones"][zone]["record_sets"] = [
                _record_set_to_json(rs) for _, rs in sorted(sets.items())
            ]
            self._state.write(doc)


def _bump_serial(soa_value: str) -> str:
    fields = soa_value.split()
    if len(fields) == 7 and fields[2].isdigit():
        fields[2] = str((int(fields[2]) + 1) % 2**32)
    return " ".join(fields)


# ---------------------------------------------------------------------------
# The server.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Zone:
    origin: dns.name.Name
    #: owner name -> type -> rrset
    nodes: dict[dns.name.Name, dict[int, dns.rrset.RRset]]
    soa: dns.rrset.RRset | None

    def exists(self, name: dns.name.Name) -> bool:
        """Whether ``name`` owns records or is an empty non-terminal (has names below it)."""
        if name in self.nodes:
            return True
        return any(owner.is_subdomain(name) for owner in self.nodes)


def _load_zones(doc: Mapping[str, Any]) -> dict[dns.name.Name, _Zone]:
    zones: dict[dns.name.Name, _Zone] = {}
    for zone_name, body in doc.get("zones", {}).items():
        origin = dns.name.from_text(zone_name)
        nodes: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = {}
        for raw in body.get("record_sets", []):
            rs = _record_set_from_json(raw)
            owner = dns.name.from_text(rs.name)
            rrset = dns.rrset.from_text_list(
                owner, rs.ttl or 0, dns.rdataclass.IN, rs.type, list(rs.values), origin=None
            )
            nodes.setdefault(owner, {})[rrset.rdtype] = rrset
        soa = nodes.get(origin, {}).get(dns.rdatatype.SOA)
        zones[origin] = _Zone(origin, nodes, soa)
    return zones


class _Answerer:
    """Turns a query into an authoritative response from the zones it holds."""

    def __init__(self, state: _StateFile) -> None:
        self._state = state
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._zones: dict[dns.name.Name, _Zone] = {}

    def _current_zones(self) -> dict[dns.name.Name, _Zone]:
        # Re-read when the file changed: a change applied by another process
        # (or this one) is served by the next query.
        try:
            st = self._state.path.stat()
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0, 0)
        with self._lock:
            if stamp != self._stamp:
                self._zones = _load_zones(self._state.read()) if stamp != (0, 0, 0) else {}
                self._stamp = stamp
            return self._zones

    def respond(self, wire: bytes, *, max_size: int | None) -> bytes | None:
        """The response to one query in wire form; None for garbage that deserves no answer."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if query.flags & dns.flags.QR:
            return None
        response = dns.message.make_response(query)
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
        elif len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
        else:
            question = query.question[0]
            self._answer(response, question.name, question.rdtype, question.rdclass)
        limit = 65535
        if max_size is not None:
            limit = max(max_size, query.payload) if query.edns >= 0 else max_size
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            # Over UDP the client retries over TCP when it sees TC.
            response.answer.clear()
            response.authority.clear()
            response.additional.clear()
            response.flags |= dns.flags.TC
            return response.to_wire(max_size=limit)

    def _answer(
        self, response: dns.message.Message, qname: dns.name.Name, qtype: int, qclass: int
    ) -> None:
        if qclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            return
        if qtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
            response.set_rcode(dns.rcode.NOTIMP)
            return
        zones = self._current_zones()
        zone = next(
            (zones[o] for o in sorted(zones, key=len, reverse=True) if qname.is_subdomain(o)),
            None,
        )
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return
        name = qname
        for _ in range(_MAX_CNAME_CHAIN):
            follow = self._answer_in_zone(response, zone, name, qtype)
            if follow is None or not follow.is_subdomain(zone.origin):
                return
            name = follow

    def _answer_in_zone(
        self, response: dns.message.Message, zone: _Zone, qname: dns.name.Name, qtype: int
    ) -> dns.name.Name | None:
        """Add the answer for ``qname`` to ``response``; the CNAME target to chase, if any."""
        # A zone cut between the apex and qname makes this a referral.
        labels = len(qname) - len(zone.origin)
        for depth in range(1, labels + 1):
            cut = qname.split(len(zone.origin) + depth)[1]
            ns = zone.nodes.get(cut, {}).get(dns.rdatatype.NS)
            if ns is not None and not (cut == qname and qtype == dns.rdatatype.DS):
                self._refer(response, zone, ns)
                return None
        response.flags |= dns.flags.AA
        node = zone.nodes.get(qname)
        owner = qname
        if node is None and not zone.exists(qname):
            encloser = qname.parent()
            while not zone.exists(encloser) and encloser != zone.origin:
                encloser = encloser.parent()
            wildcard = dns.name.Name((b"*", *encloser.labels))
            node = zone.nodes.get(wildcard)
            if node is None:
                # Also at the end of a CNAME chain: the code is the last name's (RFC 6604).
                response.set_rcode(dns.rcode.NXDOMAIN)
                self._add_soa(response, zone)
                return None
        node = node or {}
        if qtype == dns.rdatatype.ANY and node:
            for rrset in node.values():
                response.answer.append(_owned_by(rrset, owner))
            return None
        found = node.get(qtype)
        if found is not None:
            response.answer.append(_owned_by(found, owner))
            return None
        cname = node.get(dns.rdatatype.CNAME)
        if cname is not None:
            response.answer.append(_owned_by(cname, owner))
            target: dns.name.Name = cname[0].target
            return target
        if not response.answer:
            self._add_soa(response, zone)  # NODATA
        return None

    def _refer(self, response: dns.message.Message, zone: _Zone, ns: dns.rrset.RRset) -> None:
        response.authority.append(ns)
        for rdata in ns:
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                glue = zone.nodes.get(rdata.target, {}).get(rdtype)
                if glue is not None:
                    response.additional.append(glue)

    def _add_soa(self, response: dns.message.Message, zone: _Zone) -> None:
        if zone.soa is None:
            return
        negative_ttl = min(zone.soa.ttl, zone.soa[0].minimum)
        soa = dns.rrset.RRset(zone.origin, dns.rdataclass.IN, dns.rdatatype.SOA)
        soa.update(zone.soa)
        soa.ttl = negative_ttl
        response.authority.append(soa)


def _owned_by(rrset: dns.rrset.RRset, owner: dns.name.Name) -> dns.rrset.RRset:
    if rrset.name == owner:
        return rrset
    synthesized = dns.rrset.RRset(owner, rrset.rdclass, rrset.rdtype)
    synthesized.update(rrset)
    return synthesized


class _UdpHandler(socketserver.BaseRequestHandler):
    server: _UdpServer

    def handle(self) -> None:
        data, sock = self.request
        reply = self.server.answerer.respond(data, max_size=_UDP_DEFAULT_PAYLOAD)
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _TcpHandler(socketserver.BaseRequestHandler):
    server: _TcpServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(_TCP_IDLE_TIMEOUT_S)
        try:
            while True:
                header = _read_exact(sock, 2)
                if header is None:
                    return
                (length,) = struct.unpack("!H", header)
                body = _read_exact(sock, length)
                if body is None:
                    return
                reply = self.server.answerer.respond(body, max_size=None)
                if reply is None:
                    return
                sock.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            return


def _read_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


class _UdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, address: tuple[str, int], answerer: _Answerer) -> None:
        self.answerer = answerer
        super().__init__(address, _UdpHandler)


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], answerer: _Answerer) -> None:
        self.answerer = answerer
        super().__init__(address, _TcpHandler)


class LocalDnsServer:
    """An authoritative DNS server for the zones in a ``LocalDnsProvider`` state file.

    ``start()`` binds UDP and TCP on the same port of ``host`` (port 0: a
    free one, then readable from ``port``) and serves from threads of this
    process until ``stop()``. Also a context manager. Raises ``FatalError``
    when the port is taken.
    """

    def __init__(self, path: str | Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.path = Path(path).resolve()
        self.host = host
        self.port = port
        self._answerer = _Answerer(_StateFile(self.path))
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> LocalDnsServer:
        if self._servers:
            return self
        last_error: OSError | None = None
        for _ in range(20 if self.port == 0 else 1):
            try:
                udp = _UdpServer((self.host, self.port), self._answerer)
            except OSError as exc:
                last_error = exc
                continue
            port = int(udp.server_address[1])
            try:
                tcp = _TcpServer((self.host, port), self._answerer)
            except OSError as exc:
                udp.server_close()
                last_error = exc
                continue
            self.port = port
            self._servers = [udp, tcp]
            break
        if not self._servers:
            raise FatalError(
                f"the local DNS server cannot listen on {self.host}:{self.port} (UDP and TCP): "
                f"{last_error}; choose another dns.port or 0 for any free port"
            )
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"local-dns-{type(server).__name__}-{self.port}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving and close the sockets. Safe to call twice."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join()
        self._servers = []
        self._threads = []

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __enter__(self) -> LocalDnsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
