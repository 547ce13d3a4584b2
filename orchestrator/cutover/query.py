"""Asking an authoritative server directly over DNS (UDP or TCP), with dnspython.

What a provider's API says it holds and what its server answers can differ
(a cache, a disabled record, a backend that did not reload), so the cutover
checks answers on the wire. Queries go to one server with recursion off;
nothing here uses the machine's resolver.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from providers.interfaces.dns import canonical_value

Transport = Literal["udp", "tcp"]

#: The EDNS buffer size we advertise (the DNS flag day 2020 value).
EDNS_PAYLOAD = 1232


@dataclass(frozen=True)
class AuthoritativeEndpoint:
    """One authoritative server: where to send queries, and what to call it in reports."""

    host: str
    port: int = 53
    label: str = ""

    def describe(self) -> str:
        where = f"{self.host}:{self.port}"
        return f"{self.label} ({where})" if self.label else where


@dataclass(frozen=True)
class DnsAnswer:
    """What a server answered for (name, type) over one transport.

    ``rcode`` is the response code (``NOERROR``, ``NXDOMAIN``, ``REFUSED``,
    ...) or ``TIMEOUT``/``ERROR`` when no usable response came. ``values``
    are the rdata of the matching set in presentation form, sorted; ``ttl``
    its TTL; ``section`` is ``answer``, or ``authority`` for a referral's NS
    set; ``authoritative`` is the AA bit; ``truncated`` the TC bit.
    """

    name: str
    type: str
    transport: Transport
    rcode: str
    values: tuple[str, ...] = ()
    ttl: int | None = None
    section: str = ""
    authoritative: bool = False
    truncated: bool = False
    error: str = ""

    @property
    def has_data(self) -> bool:
        return self.rcode == "NOERROR" and bool(self.values)


def rdata_key(rtype: str, value: str) -> bytes:
    """A comparison key for one value: its DNSSEC canonical wire form (RFC 4034 6.2).

    Equal keys mean the same data however it was spelled (case of host
    names, IPv6 compression, TXT quoting). A value that does not parse is
    keyed by its text, so it never equals a parsed one.
    """
    try:
        rdata = dns.rdata.from_text(
            dns.rdataclass.IN, rtype, canonical_value(rtype, value), origin=dns.name.root
        )
    except (dns.exception.DNSException, ValueError):
        return b"\x00unparsed:" + value.encode()
    return bytes(rdata.to_digestable(dns.name.root))


def same_values(rtype: str, left: Iterable[str], right: Iterable[str]) -> bool:
    """Whether two value lists hold the same data (as sets, compared by ``rdata_key``)."""
    return {rdata_key(rtype, v) for v in left} == {rdata_key(rtype, v) for v in right}


def query_authoritative(
    endpoint: AuthoritativeEndpoint,
    name: str,
    rtype: str,
    *,
    transport: Transport,
    timeout: float = 2.0,
) -> DnsAnswer:
    """Ask ``endpoint`` for (name, type) with recursion off; never raises for DNS trouble.

    A timeout, refused connection or garbled response becomes a ``DnsAnswer``
    whose ``rcode`` is ``TIMEOUT`` or ``ERROR`` with ``error`` set, so a
    comparison can report it. Retry-safe: yes (a read).
    """
    query = dns.message.make_query(name, rtype, use_edns=0, payload=EDNS_PAYLOAD)
    query.flags &= ~dns.flags.RD
    try:
        if transport == "udp":
            response = dns.query.udp(query, endpoint.host, port=endpoint.port, timeout=timeout)
        else:
            response = dns.query.tcp(query, endpoint.host, port=endpoint.port, timeout=timeout)
    except dns.exception.Timeout:
        return DnsAnswer(name, rtype, transport, "TIMEOUT", error=f"no answer in {timeout:g} s")
    except (OSError, dns.exception.DNSException, EOFError) as exc:
        return DnsAnswer(name, rtype, transport, "ERROR", error=f"{type(exc).__name__}: {exc}")
    qname = dns.name.from_text(name)
    rdtype = dns.rdatatype.from_text(rtype)
    section = ""
    found = None
    for label, rrsets in (("answer", response.answer), ("authority", response.authority)):
        for rrset in rrsets:
            if rrset.name == qname and rrset.rdtype == rdtype:
                found, section = rrset, label
                break
        if found is not None:
            break
    if section == "authority" and rdtype != dns.rdatatype.NS:
        found, section = None, ""  # an SOA in authority is a negative answer, not data
    return DnsAnswer(
        name=name,
        type=rtype,
        transport=transport,
        rcode=dns.rcode.to_text(response.rcode()),
        values=tuple(sorted(rd.to_text() for rd in found)) if found is not None else (),
        ttl=found.ttl if found is not None else None,
        section=section,
        authoritative=bool(response.flags & dns.flags.AA),
        truncated=bool(response.flags & dns.flags.TC),
    )
