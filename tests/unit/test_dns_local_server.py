"""The sandbox's DNS server answers like an authoritative server, over UDP and TCP, from its file."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.cutover.query import AuthoritativeEndpoint, DnsAnswer, query_authoritative
from orchestrator.errors import FatalError
from providers.dns_local import NEGATIVE_TTL, LocalDnsProvider, LocalDnsServer
from providers.interfaces.dns import RecordChange, RecordSet

REPO = Path(__file__).resolve().parents[2]
ZONE = "blog.test."


@pytest.fixture
def provider(tmp_path: Path) -> LocalDnsProvider:
    dns = LocalDnsProvider("local", tmp_path / "dns" / "zones.json")
    dns.create_zone(ZONE, nameservers=["ns1.blog.test."])
    dns.apply(
        ZONE,
        [
            RecordChange("create", RecordSet(f"www.{ZONE}", "A", 60, ("192.0.2.1", "192.0.2.2"))),
            RecordChange("create", RecordSet(f"www.{ZONE}", "AAAA", 60, ("2001:db8::1",))),
            RecordChange("create", RecordSet(f"ns1.{ZONE}", "A", 300, ("192.0.2.53",))),
            RecordChange("create", RecordSet(f"lb.{ZONE}", "CNAME", 120, (f"www.{ZONE}",))),
            RecordChange("create", RecordSet(f"dev.{ZONE}", "NS", 600, (f"ns.dev.{ZONE}",))),
            RecordChange("create", RecordSet(f"ns.dev.{ZONE}", "A", 600, ("192.0.2.60",))),
            RecordChange("create", RecordSet(f"*.cdn.{ZONE}", "A", 30, ("198.51.100.9",))),
            RecordChange("create", RecordSet(f"a.deep.{ZONE}", "TXT", 30, ('"x"',))),
        ],
    )
    return dns


@pytest.fixture
def server(provider: LocalDnsProvider) -> Iterator[LocalDnsServer]:
    with provider.serve() as running:
        yield running


def ask(server: LocalDnsServer, name: str, rtype: str, transport: str = "udp") -> DnsAnswer:
    endpoint = AuthoritativeEndpoint(server.host, server.port)
    return query_authoritative(endpoint, name, rtype, transport=transport)  # type: ignore[arg-type]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_answers_authoritatively_with_every_value_and_the_ttl(
    server: LocalDnsServer, transport: str
) -> None:
    answer = ask(server, f"www.{ZONE}", "A", transport)
    assert (answer.rcode, answer.authoritative, answer.ttl) == ("NOERROR", True, 60)
    assert answer.values == ("192.0.2.1", "192.0.2.2")
    assert ask(server, f"WWW.{ZONE.upper()}", "AAAA", transport).values == ("2001:db8::1",)


def test_negative_answers_carry_the_soa_minimum(server: LocalDnsServer) -> None:
    missing = ask(server, f"nope.{ZONE}", "A")
    assert (missing.rcode, missing.authoritative, missing.values) == ("NXDOMAIN", True, ())
    nodata = ask(server, f"www.{ZONE}", "TXT")
    assert (nodata.rcode, nodata.values) == ("NOERROR", ())
    # deep.blog.test. holds nothing but has a name below it: it exists (NODATA, not NXDOMAIN).
    assert ask(server, f"deep.{ZONE}", "A").rcode == "NOERROR"
    import dns.message
    import dns.query

    query = dns.message.make_query(f"nope.{ZONE}", "A")
    response = dns.query.udp(query, server.host, port=server.port, timeout=2)
    (soa,) = response.authority
    assert soa.ttl == NEGATIVE_TTL  # min(SOA TTL 3600, minimum 300), RFC 2308


def test_delegation_below_a_zone_cut_is_a_referral(server: LocalDnsServer) -> None:
    import dns.message
    import dns.query

    referral = ask(server, f"host.dev.{ZONE}", "A", "tcp")
    assert (referral.rcode, referral.authoritative, referral.values) == ("NOERROR", False, ())
    ns = ask(server, f"dev.{ZONE}", "NS")
    assert (ns.section, ns.values) == ("authority", (f"ns.dev.{ZONE}",))
    response = dns.query.udp(
        dns.message.make_query(f"host.dev.{ZONE}", "A"), server.host, port=server.port, timeout=2
    )
    assert [rrset.to_text() for rrset in response.additional] == [
        f"ns.dev.{ZONE} 600 IN A 192.0.2.60"
    ]


def test_wildcards_cnames_and_foreign_names(server: LocalDnsServer) -> None:
    synthesized = ask(server, f"img.cdn.{ZONE}", "A")
    assert (synthesized.rcode, synthesized.values, synthesized.ttl) == (
        "NOERROR",
        ("198.51.100.9",),
        30,
    )
    assert ask(server, f"lb.{ZONE}", "CNAME").values == (f"www.{ZONE}",)
    import dns.message
    import dns.query

    chased = dns.query.tcp(
        dns.message.make_query(f"lb.{ZONE}", "A"), server.host, port=server.port, timeout=2
    )
    assert [r.rdtype for r in chased.answer] == [5, 1]  # CNAME, then the target's A
    assert ask(server, "example.org.", "A").rcode == "REFUSED"


def test_an_answer_too_big_for_udp_is_truncated_and_complete_over_tcp(
    provider: LocalDnsProvider, server: LocalDnsServer
) -> None:
    values = tuple(f'"{i:03d}{"k" * 200}"' for i in range(20))
    provider.apply(ZONE, [RecordChange("create", RecordSet(f"big.{ZONE}", "TXT", 60, values))])
    over_udp = ask(server, f"big.{ZONE}", "TXT", "udp")
    assert over_udp.truncated and not over_udp.values
    over_tcp = ask(server, f"big.{ZONE}", "TXT", "tcp")
    assert not over_tcp.truncated and len(over_tcp.values) == 20


def test_a_change_made_by_another_process_is_served_at_once(
    provider: LocalDnsProvider, server: LocalDnsServer
) -> None:
    assert ask(server, f"api.{ZONE}", "A").rcode == "NXDOMAIN"
    code = (
        "import sys\n"
        "from providers.dns_local import LocalDnsProvider\n"
        "from providers.interfaces.dns import RecordChange, RecordSet\n"
        "dns = LocalDnsProvider('other', sys.argv[1])\n"
        "dns.apply(sys.argv[2], [RecordChange('create', RecordSet('api.' + sys.argv[2], 'A', 60,"
        " ('203.0.113.7',)))])\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(provider.path), ZONE], cwd=REPO, check=True, timeout=60
    )
    assert ask(server, f"api.{ZONE}", "A").values == ("203.0.113.7",)
    # And a provider opened later on the same file (a resumed run) sees it.
    again = LocalDnsProvider("resumed", provider.path)
    assert RecordSet(f"api.{ZONE}", "A", 60, ("203.0.113.7",)) in again.list_records(ZONE)
    soa = next(rs for rs in again.list_records(ZONE) if rs.type == "SOA")
    assert soa.values[0].split()[2] == "3"  # one serial per apply


def test_a_taken_port_is_a_clear_error(provider: LocalDnsProvider, server: LocalDnsServer) -> None:
    with pytest.raises(FatalError, match=rf"cannot listen on 127.0.0.1:{server.port}"):
        LocalDnsServer(provider.path, port=server.port).start()


def test_a_bad_value_is_refused_and_nothing_changes(provider: LocalDnsProvider) -> None:
    before = provider.list_records(ZONE)
    with pytest.raises(FatalError, match="not valid DNS presentation form"):
        provider.apply(
            ZONE,
            [
                RecordChange("create", RecordSet(f"ok.{ZONE}", "A", 60, ("192.0.2.9",))),
                RecordChange("create", RecordSet(f"bad.{ZONE}", "A", 60, ("not-an-ip",))),
            ],
        )
    assert provider.list_records(ZONE) == before


def test_a_damaged_state_file_names_the_position(tmp_path: Path) -> None:
    path = tmp_path / "zones.json"
    path.write_text('{"format": "exitplan.local-dns/1",\n "zones": {,}}\n')
    with pytest.raises(FatalError, match=rf"{path}:2:12: not a valid local DNS state file"):
        LocalDnsProvider("local", path).list_zones()


def test_curl_resolve_reaches_a_service_by_its_name(
    provider: LocalDnsProvider, server: LocalDnsServer
) -> None:
    """The sandbox check: resolve the service's name here, then curl --resolve it."""
    if shutil.which("curl") is None:
        if os.environ.get("CI"):
            pytest.fail("curl is missing: install curl")
        pytest.skip("curl is not installed: install curl")

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"hello from {self.headers['Host']}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=web.serve_forever, daemon=True)
    thread.start()
    try:
        provider.apply(ZONE, [RecordChange("update", RecordSet(ZONE, "A", 60, ("127.0.0.1",)))])
        (address,) = ask(server, ZONE, "A", "tcp").values
        port = web.server_address[1]
        out = subprocess.run(
            [
                "curl",
                "-sS",
                "--max-time",
                "10",
                "--resolve",
                f"blog.test:{port}:{address}",
                f"http://blog.test:{port}/",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        assert out.stdout == f"hello from blog.test:{port}"
    finally:
        web.shutdown()
        web.server_close()
