"""Ops that run programs: ``command``, ``shell``, ``packages``, ``user``.

``command`` takes an argv list and nothing else: each argument reaches the
program as written, whatever quotes, ``$`` or ``;`` a variable holds. A
shell script is its own op, ``shell``, so a plan shows where one runs.
Secrets reach a command only through ``env:`` (the playbook check refuses
them in argv, where ``ps`` would show them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from orchestrator.replay.ops.base import Arg, Check, Op, OpContext, OpFailed
from providers.interfaces.host import Host

#: How much of a command's output a step registers (redacted): enough to read, not a log.
OUTPUT_TAIL = 4000

_GUARDS: dict[str, Arg] = {
    "creates": Arg("path", doc="skip when this path exists"),
    "removes": Arg("path", doc="skip when this path does not exist"),
    "unless": Arg("argv", doc="skip when this command exits 0"),
    "cwd": Arg("path", doc="working directory"),
    "env": Arg(
        "env", secret_ok=True, doc="extra environment (the only way a secret reaches a command)"
    ),
    "user": Arg("str", doc="run as this user (runuser, when logged in as root)"),
}


class CommandOp(Op):
    name: ClassVar[str] = "command"
    summary: ClassVar[str] = (
        "run a program (argv list, never a shell string), with creates/removes/unless guards"
    )
    args: ClassVar[dict[str, Arg]] = {
        "argv": Arg("argv", required=True, doc="the program and its arguments, as a list"),
        **_GUARDS,
    }
    short: ClassVar[str | None] = "argv"

    def argv(self, args: Mapping[str, Any]) -> list[str]:
        return list(args["argv"])

    def check(self, ctx: OpContext, args: Mapping[str, Any]) -> Check:
        run_as = {"env": args.get("env"), "user": args.get("user"), "cwd": args.get("cwd")}
        if args.get("creates") and ctx.run(["test", "-e", args["creates"]]).ok:
            return Check(True, f"{args['creates']} exists", output={"skipped": "creates"})
        if args.get("removes") and not ctx.run(["test", "-e", args["removes"]]).ok:
            return Check(True, f"{args['removes']} does not exist", output={"skipped": "removes"})
        if args.get("unless") and ctx.run(args["unless"], **run_as).ok:
            return Check(True, "its 'unless' command exits 0", output={"skipped": "unless"})
        return Check(False, f"run {self.describe(args)}")

    def apply(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> dict[str, Any]:
        result = ctx.run(
            self.argv(args), env=args.get("env"), user=args.get("user"), cwd=args.get("cwd")
        )
        output: dict[str, Any] = {
            "rc": result.exit_status,
            "stdout": result.stdout[-OUTPUT_TAIL:].decode("utf-8", "replace"),
            "stderr": result.stderr[-OUTPUT_TAIL:].decode("utf-8", "replace"),
        }
        if not result.ok:
            tail = str(output["stderr"] or output["stdout"]).strip()[-1500:]
            raise OpFailed(
                f"{self.describe(args)} exited with status {result.exit_status}"
                + (f": {tail}" if tail else "")
            )
        return output

    def verify(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> None:
        if args.get("creates") and not ctx.run(["test", "-e", args["creates"]]).ok:
            raise OpFailed(f"{self.describe(args)} ran but did not create {args['creates']}")

    def describe(self, args: Mapping[str, Any]) -> str:
        import shlex

        return "`" + shlex.join(self.argv(args)) + "`"


class ShellOp(CommandOp):
    name: ClassVar[str] = "shell"
    summary: ClassVar[str] = "run a shell script with sh -c (its own op, so plans show it)"
    args: ClassVar[dict[str, Arg]] = {
        "script": Arg("str", required=True, doc="the script, run by sh -c"),
        "interpreter": Arg("str", default="sh", doc="default sh"),
        **_GUARDS,
    }
    short: ClassVar[str | None] = "script"
    marker: ClassVar[str] = "shell"

    def argv(self, args: Mapping[str, Any]) -> list[str]:
        return [args["interpreter"], "-c", args["script"]]

    def describe(self, args: Mapping[str, Any]) -> str:
        first = str(args["script"]).strip().splitlines()[0] if str(args["script"]).strip() else ""
        return f"shell script ({first[:60]}{'...' if len(first) > 60 else ''})"


class PackagesOp(Op):
    name: ClassVar[str] = "packages"
    summary: ClassVar[str] = (
        "Debian packages installed (checked with dpkg-query, installed with apt-get)"
    )
    args: ClassVar[dict[str, Arg]] = {
        "names": Arg("strings", required=True, doc="package names"),
        "update": Arg("bool", default=False, doc="apt-get update first"),
    }
    short: ClassVar[str | None] = "names"

    def _missing(self, ctx: OpContext, names: list[str]) -> list[str]:
        result = ctx.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n", *names])
        installed = set()
        for line in result.stdout.decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1].startswith("ii"):
                installed.add(parts[0].split(":")[0])
        return [n for n in names if n not in installed]

    def check(self, ctx: OpContext, args: Mapping[str, Any]) -> Check:
        missing = self._missing(ctx, args["names"])
        if not missing:
            return Check(True, f"installed: {', '.join(args['names'])}", output={"installed": []})
        return Check(False, f"install {', '.join(missing)}", state={"missing": missing})

    def apply(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> dict[str, Any]:
        if ctx.facts().uid != 0:
            raise OpFailed(
                f"installing {', '.join(check.state['missing'])} needs root; log in as root"
            )
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        if args["update"]:
            ctx.must(["apt-get", "update", "-q"], "apt-get update", env=env)
        ctx.must(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *check.state["missing"]],
            "apt-get install",
            env=env,
        )
        return {"installed": check.state["missing"]}

    def undo_record(self, args: Mapping[str, Any], check: Check) -> dict[str, Any] | None:
        return {"packages": check.state["missing"]}

    @classmethod
    def undo(cls, host: Host, record: Mapping[str, Any]) -> str:
        names = list(record["packages"])
        result = host.run(
            ["apt-get", "remove", "-y", "-q", *names],
            timeout=900,
            env={"DEBIAN_FRONTEND": "noninteractive"},
        )
        if not result.ok:
            raise OpFailed(
                f"apt-get remove {' '.join(names)} failed: {result.stderr.decode(errors='replace')[-300:]}"
            )
        return f"removed packages {', '.join(names)}"

    def describe(self, args: Mapping[str, Any]) -> str:
        return f"packages {', '.join(args['names'])}"


class UserOp(Op):
    name: ClassVar[str] = "user"
    summary: ClassVar[str] = "a local user exists (useradd; needs root)"
    args: ClassVar[dict[str, Arg]] = {
        "name": Arg("str", required=True, doc="user name"),
        "system": Arg("bool", default=True, doc="a system account (default)"),
        "home": Arg("path", doc="home directory (not created)"),
        "shell": Arg("str", default="/usr/sbin/nologin", doc="login shell"),
    }
    short: ClassVar[str | None] = "name"

    def _entry(self, ctx: OpContext, name: str) -> dict[str, Any] | None:
        result = ctx.run(["getent", "passwd", name])
        if not result.ok:
            return None
        fields = result.stdout.decode().strip().split(":")
        return {"name": fields[0], "uid": int(fields[2]), "gid": int(fields[3]), "home": fields[5]}

    def check(self, ctx: OpContext, args: Mapping[str, Any]) -> Check:
        entry = self._entry(ctx, args["name"])
        if entry is not None:
            return Check(True, f"user {args['name']} exists", output=entry)
        return Check(False, f"create user {args['name']}")

    def apply(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> dict[str, Any]:
        argv = ["useradd", "--shell", args["shell"], "--no-create-home", "--user-group"]
        if args["system"]:
            argv.append("--system")
        if args.get("home"):
            argv += ["--home-dir", args["home"]]
        ctx.must([*argv, args["name"]], f"useradd {args['name']}")
        entry = self._entry(ctx, args["name"])
        if entry is None:
            raise OpFailed(f"useradd {args['name']} succeeded but getent does not find the user")
        return entry

    def verify(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> None:
        """``apply`` already read the new entry back."""

    def undo_record(self, args: Mapping[str, Any], check: Check) -> dict[str, Any] | None:
        return {"user": args["name"]}

    @classmethod
    def undo(cls, host: Host, record: Mapping[str, Any]) -> str:
        name = str(record["user"])
        if not host.run(["getent", "passwd", name], timeout=30).ok:
            return f"user {name}: already gone"
        result = host.run(["userdel", name], timeout=60)
        if not result.ok:
            raise OpFailed(
                f"userdel {name} failed: {result.stderr.decode(errors='replace')[-300:]}"
            )
        return f"removed user {name}"

    def describe(self, args: Mapping[str, Any]) -> str:
        return f"user {args['name']}"
