"""Ops for a running service: ``service``, ``wait_for``, ``http_check``, ``pause``.

``service`` uses systemd where the host runs it (``manager: auto`` picks,
``systemd`` or ``supervised`` force one). Without systemd (a container, the
sandbox, a user without root) the process runs under a small POSIX ``sh``
supervisor: its own session, stdin from /dev/null and both output streams
to the log file (a background start that keeps a stream open would hang the
SSH channel), the supervisor's pid in the pidfile, the program restarted a
second after it exits, and stopped with its own signal when the supervisor
gets SIGTERM.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping
from typing import Any, ClassVar

from orchestrator.replay.ops.base import Arg, Check, Op, OpContext, OpFailed
from providers.interfaces.host import Host, parse_proc_net_tcp

# $1 pidfile, $2 log, $3 stop signal, $4 restart (yes/no), then the argv.
_START = r"""
pidfile=$1; log=$2; sig=$3; restart=$4; shift 4
setsid sh -c '
  sig=$1; restart=$2; shift 2; child=
  stop() { if [ -n "$child" ]; then kill -s "$sig" "$child" 2>/dev/null; wait "$child"; fi; exit 0; }
  trap stop TERM INT
  while :; do
    "$@" &
    child=$!
    wait "$child"; status=$?
    echo "exitplan-supervise: $1 exited with status $status" >&2
    [ "$restart" = yes ] || exit "$status"
    sleep 1
  done' exitplan-supervise "$sig" "$restart" "$@" </dev/null >>"$log" 2>&1 &
echo $! >"$pidfile"
"""

# $1 pidfile, $2 seconds to wait: 0 = stopped (or was not running), 1 = still running.
_STOP = r"""
pid=$(cat "$1" 2>/dev/null) || exit 0
[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || { rm -f "$1"; exit 0; }
kill -TERM "$pid"
n=0
while kill -0 "$pid" 2>/dev/null; do
  n=$((n + 1)); [ "$n" -gt $(($2 * 10)) ] && { kill -KILL "$pid"; break; }
  sleep 0.1
done
rm -f "$1"
"""

_RUNNING = r"""
pid=$(cat "$1" 2>/dev/null) || exit 1
[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
"""

STATES = ("started", "stopped", "restarted")


def supervised_running(host: Host, pidfile: str) -> int | None:
    result = host.run(["sh", "-c", _RUNNING, "exitplan-running", pidfile], timeout=30)
    text = result.stdout.decode().strip()
    return int(text) if result.ok and text.isdigit() else None


def stop_supervised(host: Host, pidfile: str, wait_s: int = 30) -> bool:
    """Stop the supervisor named by ``pidfile`` (and so its program). Returns whether one ran."""
    was = supervised_running(host, pidfile) is not None
    host.run(["sh", "-c", _STOP, "exitplan-stop", pidfile, str(wait_s)], timeout=wait_s + 30)
    return was


class ServiceOp(Op):
    name: ClassVar[str] = "service"
    summary: ClassVar[str] = (
        "a long-running process: systemd unit, or supervised with pidfile and log"
    )
    args: ClassVar[dict[str, Arg]] = {
        "name": Arg("str", required=True, doc="service name"),
        "command": Arg("argv", doc="the program to run, as a list (needed to start)"),
        "state": Arg("str", default="started", doc="started | stopped | restarted"),
        "manager": Arg("str", default="auto", doc="auto | systemd | supervised"),
        "user": Arg("str", doc="run as this user"),
        "cwd": Arg("path", doc="working directory"),
        "env": Arg("env", secret_ok=True, doc="environment of the process"),
        "pidfile": Arg("path", doc="supervised: where the supervisor's pid goes"),
        "log": Arg("path", doc="supervised: where stdout and stderr go"),
        "stop_signal": Arg(
            "str", default="TERM", doc="signal that stops the program (PostgreSQL: INT)"
        ),
        "restart": Arg("bool", default=True, doc="supervised: restart the program when it exits"),
    }

    def _manager(self, ctx: OpContext, args: Mapping[str, Any]) -> str:
        manager = args["manager"]
        if manager not in ("auto", "systemd", "supervised"):
            raise OpFailed(
                f"service {args['name']}: manager {manager!r}; use auto, systemd or supervised"
            )
        if manager == "auto":
            facts = ctx.facts()
            return "systemd" if facts.systemd and facts.uid == 0 else "supervised"
        return str(manager)

    def _paths(self, args: Mapping[str, Any]) -> tuple[str, str]:
        if not args.get("pidfile") or not args.get("log"):
            raise OpFailed(
                f"service {args['name']}: a supervised service needs 'pidfile:' and 'log:'"
            )
        return args["pidfile"], args["log"]

    def _running(self, ctx: OpContext, args: Mapping[str, Any], manager: str) -> bool:
        if manager == "systemd":
            return ctx.run(["systemctl", "is-active", "--quiet", f"{args['name']}.service"]).ok
        return supervised_running(ctx.host, self._paths(args)[0]) is not None

    @staticmethod
    def signature(args: Mapping[str, Any]) -> str:
        """What the running process was started with (hashed; kept beside the pidfile, 0600)."""
        material = [
            args.get("command"),
            args.get("env"),
            args.get("user"),
            args.get("cwd"),
            args["stop_signal"],
        ]
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    def check(self, ctx: OpContext, args: Mapping[str, Any]) -> Check:
        state = args["state"]
        if state not in STATES:
            raise OpFailed(
                f"service {args['name']}: state {state!r}; use one of {', '.join(STATES)}"
            )
        manager = self._manager(ctx, args)
        running = self._running(ctx, args, manager)
        output = {"name": args["name"], "manager": manager, "running": state != "stopped"}
        facts = {"manager": manager, "was_running": running}
        if state == "started" and running and manager == "supervised":
            found = ctx.run(["cat", "--", self._paths(args)[0] + ".sig"]).stdout.decode().strip()
            if found != self.signature(args):
                return Check(
                    False,
                    f"restart {args['name']}: its command or environment changed",
                    state={**facts, "restart": True},
                )
        if state == "started" and running:
            return Check(True, f"{args['name']} is running", output=output, state=facts)
        if state == "stopped" and not running:
            return Check(True, f"{args['name']} is not running", output=output, state=facts)
        verb = {"started": "start", "stopped": "stop", "restarted": "restart"}[state]
        return Check(False, f"{verb} {args['name']} ({manager})", state=facts)

    def apply(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> dict[str, Any]:
        manager = check.state["manager"]
        state = args["state"]
        if manager == "systemd":
            self._systemd(ctx, args, state)
        else:
            pidfile, log = self._paths(args)
            if state in ("stopped", "restarted") or check.state.get("restart"):
                stop_supervised(ctx.host, pidfile)
            if state in ("started", "restarted"):
                if not args.get("command"):
                    raise OpFailed(f"service {args['name']}: 'command:' is needed to start it")
                ctx.must(
                    [
                        "sh",
                        "-c",
                        _START,
                        "exitplan-start",
                        pidfile,
                        log,
                        args["stop_signal"],
                        "yes" if args["restart"] else "no",
                        *args["command"],
                    ],
                    f"start {args['name']}",
                    env=args.get("env"),
                    user=args.get("user"),
                    cwd=args.get("cwd"),
                )
                ctx.host.put_bytes(self.signature(args).encode(), pidfile + ".sig", mode=0o600)
        return {"name": args["name"], "manager": manager, "running": state != "stopped"}

    def _systemd(self, ctx: OpContext, args: Mapping[str, Any], state: str) -> None:
        unit = f"{args['name']}.service"
        if state == "stopped":
            ctx.must(["systemctl", "stop", unit], f"stop {unit}")
            return
        if not args.get("command"):
            raise OpFailed(f"service {args['name']}: 'command:' is needed to start it")
        env_file = f"/etc/exitplan/{args['name']}.env"
        lines = [
            "[Unit]",
            f"Description={args['name']} (exitplan replay)",
            "",
            "[Service]",
            "ExecStart=" + " ".join(_systemd_quote(a) for a in args["command"]),
            f"EnvironmentFile=-{env_file}",
            "Restart=on-failure",
            f"KillSignal=SIG{args['stop_signal']}",
        ]
        if args.get("user"):
            lines.append(f"User={args['user']}")
        if args.get("cwd"):
            lines.append(f"WorkingDirectory={args['cwd']}")
        lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
        ctx.must(["mkdir", "-p", "/etc/exitplan"], "mkdir /etc/exitplan")
        environment = "".join(f"{k}={json.dumps(v)}\n" for k, v in (args.get("env") or {}).items())
        ctx.host.put_bytes(environment.encode(), env_file, mode=0o600)
        ctx.host.put_bytes("\n".join(lines).encode(), f"/etc/systemd/system/{unit}", mode=0o644)
        ctx.must(["systemctl", "daemon-reload"], "systemctl daemon-reload")
        verb = "restart" if state == "restarted" else "start"
        ctx.must(["systemctl", "enable", unit], f"enable {unit}")
        ctx.must(["systemctl", verb, unit], f"{verb} {unit}")

    def verify(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> None:
        running = self._running(ctx, args, check.state["manager"])
        if running != (args["state"] != "stopped"):
            raise OpFailed(
                f"{args['name']} is {'running' if running else 'not running'} after the change"
            )

    def undo_record(self, args: Mapping[str, Any], check: Check) -> dict[str, Any] | None:
        if args["state"] == "stopped" or check.state.get("was_running"):
            return None
        if check.state["manager"] == "systemd":
            return {"systemd": args["name"]}
        if check.state.get("restart"):
            return None
        return {"pidfile": args["pidfile"], "name": args["name"]}

    @classmethod
    def undo(cls, host: Host, record: Mapping[str, Any]) -> str:
        if "systemd" in record:
            unit = f"{record['systemd']}.service"
            host.run(["systemctl", "disable", "--now", unit], timeout=120)
            host.run(
                [
                    "rm",
                    "-f",
                    f"/etc/systemd/system/{unit}",
                    f"/etc/exitplan/{record['systemd']}.env",
                ],
                timeout=30,
            )
            host.run(["systemctl", "daemon-reload"], timeout=60)
            return f"stopped and removed {unit}"
        was = stop_supervised(host, str(record["pidfile"]))
        return f"stopped {record['name']}" if was else f"{record['name']}: not running"

    def describe(self, args: Mapping[str, Any]) -> str:
        return f"service {args['name']} {args['state']}"


def _systemd_quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "/._-=:,@+" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


class WaitForOp(Op):
    name: ClassVar[str] = "wait_for"
    summary: ClassVar[str] = "a TCP port is listening on the host"
    args: ClassVar[dict[str, Arg]] = {
        "port": Arg("int", required=True, doc="TCP port"),
        "timeout": Arg("float", default=60.0, doc="seconds to wait (default 60)"),
        "interval": Arg("float", default=0.1, doc="seconds between looks"),
    }
    short: ClassVar[str | None] = "port"

    def _listening(self, ctx: OpContext, port: int) -> bool:
        result = ctx.run(["cat", "/proc/net/tcp", "/proc/net/tcp6"])
        return port in parse_proc_net_tcp(result.stdout.decode("ascii", "replace"))

    def check(self, ctx: OpContext, args: Mapping[str, Any]) -> Check:
        if self._listening(ctx, args["port"]):
            return Check(True, f"port {args['port']} is listening", output={"port": args["port"]})
        return Check(False, f"wait for port {args['port']}")

    def apply(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> dict[str, Any]:
        import time

        give_up = time.monotonic() + args["timeout"]
        while not self._listening(ctx, args["port"]):
            if time.monotonic() >= give_up:
                raise OpFailed(f"nothing listens on port {args['port']} after {args['timeout']:g}s")
            if ctx.cancel.wait(args["interval"]):
                ctx.cancel.raise_if_set()
        return {"port": args["port"]}

    def describe(self, args: Mapping[str, Any]) -> str:
        return f"wait for port {args['port']}"


# Run on the host by its python3: $1 url, $2 timeout. Prints the status, a newline, the body.
_FETCH = r"""
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as r:
        status, body = r.status, r.read(65536)
except urllib.error.HTTPError as e:
    status, body = e.code, e.read(65536)
except Exception as e:
    status, body = 0, str(e).encode()
sys.stdout.buffer.write(str(status).encode() + b"\n" + body)
"""


def http_get(ctx_host: Host, python: str, url: str, timeout: float) -> tuple[int, bytes]:
    """GET ``url`` from the host itself (the service may listen on its loopback only)."""
    if not python:
        raise OpFailed("http_check needs python3 on the host to make the request there")
    result = ctx_host.run([python, "-c", _FETCH, url, str(timeout)], timeout=timeout + 30)
    if result.exit_status == 127:
        raise FileNotFoundError(python)
    head, _, body = result.stdout.partition(b"\n")
    try:
        return int(head), body
    except ValueError:
        raise OpFailed(
            f"could not request {url} on the host: {result.stderr.decode(errors='replace')[-300:]}"
        ) from None


class HttpCheckOp(Op):
    name: ClassVar[str] = "http_check"
    summary: ClassVar[str] = "a URL (requested on the host) answers with a status and body, retried"
    args: ClassVar[dict[str, Arg]] = {
        "url": Arg("str", required=True, doc="e.g. http://127.0.0.1:8080/healthz"),
        "status": Arg("int", default=200, doc="expected status (default 200)"),
        "contains": Arg("str", doc="text the body must contain"),
        "retries": Arg("int", default=30, doc="tries before failing (default 30)"),
        "interval": Arg("float", default=0.5, doc="seconds between tries"),
        "request_timeout": Arg("float", default=5.0, doc="seconds per request"),
    }
    short: ClassVar[str | None] = "url"

    def _try(self, ctx: OpContext, args: Mapping[str, Any]) -> tuple[bool, str]:
        try:
            # python3 on the PATH first: no facts to read for the common case.
            status, body = http_get(ctx.host, "python3", args["url"], args["request_timeout"])
        except FileNotFoundError:
            status, body = http_get(
                ctx.host, ctx.facts().python3, args["url"], args["request_timeout"]
            )
        if status != args["status"]:
            return False, f"{args['url']} answered {status or 'nothing'}, not {args['status']}"
        if args.get("contains") and args["contains"].encode() not in body:
            return (
                False,
                f"{args['url']} answered {status} without {args['contains']!r} in the body",
            )
        return True, f"{args['url']} answered {status}"

    def check(self, ctx: OpContext, args: Mapping[str, Any]) -> Check:
        ok, why = self._try(ctx, args)
        output = {"url": args["url"], "status": args["status"]}
        return (
            Check(True, why, output=output) if ok else Check(False, why, state={"output": output})
        )

    def apply(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> dict[str, Any]:
        why = check.reason
        for _ in range(max(1, args["retries"])):
            if ctx.cancel.wait(args["interval"]):
                ctx.cancel.raise_if_set()
            ok, why = self._try(ctx, args)
            if ok:
                return dict(check.state["output"])
        raise OpFailed(f"{why} (after {args['retries']} tries)")

    def verify(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> None:
        """``apply`` only returns once the check passed."""

    def describe(self, args: Mapping[str, Any]) -> str:
        return f"GET {args['url']}"


class PauseOp(Op):
    name: ClassVar[str] = "pause"
    summary: ClassVar[str] = (
        "wait for a person's approval (non-interactive runs fail at once unless --yes)"
    )
    args: ClassVar[dict[str, Arg]] = {"prompt": Arg("str", required=True, doc="what to approve")}
    short: ClassVar[str | None] = "prompt"

    def check(self, ctx: OpContext, args: Mapping[str, Any]) -> Check:
        return Check(False, f"ask: {args['prompt']}")

    def apply(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> dict[str, Any]:
        if ctx.approve is None:
            raise OpFailed(
                f"pause {args['prompt']!r} needs a person's approval and nobody can answer "
                "(no terminal): run at a terminal, or pass --yes to approve in advance"
            )
        if not ctx.approve(args["prompt"]):
            raise OpFailed(f"not approved: {args['prompt']}")
        return {"approved": True}

    def verify(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> None:
        """An approval is what it is."""

    def describe(self, args: Mapping[str, Any]) -> str:
        return f"pause: {args['prompt']}"


def quote(argv: list[str]) -> str:
    return shlex.join(argv)


# Run on the host by its python3: $1 url, $2 timeout. Prints status, size and sha256 of the body.
_DIGEST = r"""
import hashlib, sys, urllib.request, urllib.error
digest, size, status = hashlib.sha256(), 0, 0
try:
    with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as r:
        status = r.status
        for chunk in iter(lambda: r.read(1 << 20), b""):
            digest.update(chunk); size += len(chunk)
except urllib.error.HTTPError as e:
    status = e.code
except Exception:
    status = 0
print(status, size, digest.hexdigest())
"""


def http_digest(host: Host, python: str, url: str, timeout: float) -> tuple[int, int, str]:
    """(status, size, sha256) of the body of GET ``url``, requested on the host."""
    if not python:
        raise OpFailed("checking the service needs python3 on the host")
    result = host.run([python, "-c", _DIGEST, url, str(timeout)], timeout=timeout + 30)
    parts = result.stdout.decode().split()
    if len(parts) != 3:
        raise OpFailed(
            f"could not request {url} on the host: {result.stderr.decode(errors='replace')[-300:]}"
        )
    return int(parts[0]), int(parts[1]), parts[2]
